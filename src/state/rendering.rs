//! The revision `watch` is rendering, recorded while it renders.
//!
//! Render is the one stage where a revision can end the process: canopy's
//! per-render memory limit exits it (a Rust allocator cannot fail a render
//! any other way), and so does the kernel's OOM killer. Under a supervisor
//! the process restarts, renders the same revision and dies again, a crash
//! loop that applies nothing, not even the fix, if it comes later than the
//! restart backoff allows. So `watch` writes this record before it renders
//! and removes it after. A process that finds one left behind knows a
//! revision died while it rendered. It tries that revision once more,
//! since the death may have been unrelated, such as an eviction. After
//! [`DEATHS_BEFORE_SKIP`] deaths the revision is treated as invalid: it is
//! logged and skipped, and the next commit applies.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::StateError;

const FILE: &str = "rendering.json";

/// After this many processes died rendering one revision, it is skipped.
pub const DEATHS_BEFORE_SKIP: u32 = 2;

/// A render in progress.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rendering {
    /// What is rendered: the revision, and a hash of the content (a folder
    /// outside Git is `unversioned` whatever it holds).
    pub revision: String,
    /// Processes that started rendering this revision, this one included.
    pub attempts: u32,
}

impl Rendering {
    /// The record a process that died while rendering left behind (none
    /// when the last render finished).
    pub fn left_behind(dir: &Path) -> Result<Option<Rendering>, StateError> {
        let r: Rendering = crate::state::load(dir, FILE)?;
        Ok((!r.revision.is_empty()).then_some(r))
    }

    /// Records that this process starts rendering `revision`, counting the
    /// deaths `before` records for it.
    pub fn start(dir: &Path, revision: &str, before: Option<&Rendering>) -> Result<(), StateError> {
        let attempts = before
            .filter(|b| b.revision == revision)
            .map_or(0, |b| b.attempts)
            + 1;
        crate::state::save(
            dir,
            FILE,
            &Rendering {
                revision: revision.to_string(),
                attempts,
            },
        )
    }

    /// The render ended (well or with an error): no record is left.
    pub fn finish(dir: &Path) -> Result<(), StateError> {
        crate::sys::files::remove(dir, FILE).map_err(|source| StateError::Io {
            path: dir.join(FILE),
            source,
        })
    }

    /// Whether `revision` killed enough processes to be skipped.
    pub fn kills(&self, revision: &str) -> bool {
        self.revision == revision && self.attempts >= DEATHS_BEFORE_SKIP
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revision_is_skipped_after_two_deaths_and_a_finished_render_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert_eq!(Rendering::left_behind(d).unwrap(), None);
        // First process: starts r1 and dies.
        Rendering::start(d, "r1", None).unwrap();
        let left = Rendering::left_behind(d).unwrap().unwrap();
        assert_eq!(left.attempts, 1);
        assert!(!left.kills("r1"), "one death may be unrelated");
        // Second process: tries r1 again, dies again.
        Rendering::start(d, "r1", Some(&left)).unwrap();
        let left = Rendering::left_behind(d).unwrap().unwrap();
        assert!(left.kills("r1"));
        assert!(!left.kills("r2"), "another revision is rendered");
        // A different revision starts counting afresh; finishing clears.
        Rendering::start(d, "r2", Some(&left)).unwrap();
        assert_eq!(Rendering::left_behind(d).unwrap().unwrap().attempts, 1);
        Rendering::finish(d).unwrap();
        assert_eq!(Rendering::left_behind(d).unwrap(), None);
        Rendering::finish(d).unwrap();
    }
}
