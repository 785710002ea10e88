//! The stages chained for the commands: load → validate → schedule → render.
//! Each command is a thin wrapper around these (cargo's `ops` idea), so the
//! CLI, the tests and the benchmarks run exactly the same code.

use std::path::Path;

use crate::diag::Diagnostics;
use crate::load::{self, LoadError};
use crate::validate::{self, Checked};

/// Why a pipeline stopped.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The fleet could not be read at all (missing folder, permissions).
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The fleet was read and has errors; every one of them is listed.
    #[error("the fleet has {} error(s)", .0.errors().count())]
    Invalid(Diagnostics),
}

/// Loads and validates a fleet. Warnings are returned beside the result.
pub fn load_checked(
    dir: &Path,
    name: Option<&str>,
) -> Result<(Checked, Diagnostics), PipelineError> {
    let (fleet, mut diags) = load::load(dir, name)?;
    let (checked, more) = validate::check(fleet);
    diags.extend(more);
    let diags = diags.sorted();
    match checked {
        Some(c) if !diags.has_errors() => Ok((c, diags)),
        _ => Err(PipelineError::Invalid(diags)),
    }
}
