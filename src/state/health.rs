//! `health.json`: the failover record ([`Health`]) kept between runs,
//! replaced atomically.

use std::path::Path;

use super::StateError;
use crate::core::failover::Health;

const FILE: &str = "health.json";

impl Health {
    /// Reads `health.json` from the state folder (none yet: nobody is down).
    pub fn load(dir: &Path) -> Result<Health, StateError> {
        super::load(dir, FILE)
    }

    /// Replaces `health.json` atomically.
    pub fn save(&self, dir: &Path) -> Result<(), StateError> {
        super::save(dir, FILE, self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    #[test]
    fn saved_and_loaded_whole() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Health::load(dir.path()).unwrap(), Health::default());
        let mut h = Health::default();
        h.unreachable("eu-west-1", SystemTime::now());
        h.save(dir.path()).unwrap();
        assert_eq!(Health::load(dir.path()).unwrap(), h);
        std::fs::write(dir.path().join("health.json"), "{").unwrap();
        assert!(Health::load(dir.path())
            .unwrap_err()
            .to_string()
            .contains("health.json is corrupt"));
    }
}
