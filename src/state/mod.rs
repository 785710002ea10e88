//! canopy's own records, kept in the state folder beside the clusters'
//! state: `health.json` ([`health`]) and `rollouts.json` with continue
//! requests ([`rollouts`]). Each is read whole and replaced atomically, so a
//! crash leaves the old file or the new one and never a torn one.

pub mod capabilities;
pub mod capacity;
pub mod health;
pub mod rendering;
pub mod replicas;
pub mod rollouts;
pub mod settled;

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use std::path::PathBuf;

/// Why a record in the state folder could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state file {path} is corrupt: {detail}; canopy left it untouched (restore it from backup, or delete it to start this record afresh)")]
    Corrupt { path: PathBuf, detail: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Reads `dir/name`; a missing file is the default (nothing recorded yet).
pub fn load<T: DeserializeOwned + Default>(dir: &Path, name: &str) -> Result<T, StateError> {
    let path = dir.join(name);
    match crate::sys::files::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
            path,
            detail: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(source) => Err(StateError::Io { path, source }),
    }
}

/// Replaces `dir/name` with `bytes` atomically and durably, creating `dir`
/// private ([`crate::sys::files`]).
pub fn replace(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StateError> {
    let io = |source| StateError::Io {
        path: dir.join(name),
        source,
    };
    crate::sys::files::own_dir(dir).map_err(io)?;
    crate::sys::files::replace(dir, name, bytes).map_err(io)
}

/// A record kept whole in one JSON file of the state folder, replaced
/// atomically: a missing file is the default (nothing recorded yet), one
/// that does not parse is [`StateError::Corrupt`] and left untouched.
pub trait Record: Serialize + DeserializeOwned + Default {
    /// Its file in the state folder.
    const FILE: &'static str;

    /// Reads the record from the state folder `dir`.
    fn load(dir: &Path) -> Result<Self, StateError> {
        load(dir, Self::FILE)
    }

    /// Replaces the record in `dir` atomically.
    fn save(&self, dir: &Path) -> Result<(), StateError> {
        save(dir, Self::FILE, self)
    }

    /// Reads the record for a run that can do without it: one that cannot
    /// be read is warned about, with what the run does `instead`, and taken
    /// as empty (it is left on disk as it is).
    fn load_or_warn(dir: &Path, instead: &str) -> Self {
        Self::load(dir).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read {}; {instead}", Self::FILE);
            Self::default()
        })
    }
}

/// Replaces `dir/name` with `value` as pretty JSON.
pub fn save<T: Serialize>(dir: &Path, name: &str, value: &T) -> Result<(), StateError> {
    replace(
        dir,
        name,
        &serde_json::to_vec_pretty(value).expect("serializes"),
    )
}
