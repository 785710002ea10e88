//! JSON records kept in the state folder beside the clusters' state
//! (`health.json`, `rollouts.json`): read whole, replaced atomically, so a
//! crash leaves the old file or the new one and never a torn one.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::backend::BackendError;

/// Reads `dir/name`; a missing file is the default (nothing recorded yet).
pub fn load<T: DeserializeOwned + Default>(dir: &Path, name: &str) -> Result<T, BackendError> {
    let path = dir.join(name);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| BackendError::Corrupt {
            path,
            detail: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(source) => Err(BackendError::Io { path, source }),
    }
}

/// Replaces `dir/name` with `bytes` atomically (a temporary file renamed
/// over it), creating `dir`.
pub fn replace(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), BackendError> {
    let path = dir.join(name);
    let io = |source| BackendError::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)
}

/// Replaces `dir/name` with `value` as pretty JSON.
pub fn save<T: Serialize>(dir: &Path, name: &str, value: &T) -> Result<(), BackendError> {
    replace(
        dir,
        name,
        &serde_json::to_vec_pretty(value).expect("serializes"),
    )
}
