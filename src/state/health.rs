//! `health.json`: the failover record ([`Health`]) kept between runs,
//! replaced atomically.

use crate::core::failover::Health;

impl super::Record for Health {
    const FILE: &'static str = "health.json";
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Record;
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
