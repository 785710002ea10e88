//! The stages chained for the commands: load → validate → schedule → render.
//! Each command is a thin wrapper around these (cargo's `ops` idea), so the
//! CLI, the tests and the benchmarks run exactly the same code.

use std::path::Path;

use crate::diag::Diagnostics;
use crate::load::{self, LoadError};
use crate::render::Renderer;
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

/// Everything `canopy validate` reports: load and validation diagnostics,
/// then placement problems (such as all weights zero) when the fleet is
/// otherwise valid. The fleet comes back when there is no error.
pub fn check_all(
    dir: &Path,
    name: Option<&str>,
) -> Result<(Option<Checked>, Diagnostics), LoadError> {
    let (fleet, mut diags) = load::load(dir, name)?;
    let (checked, more) = validate::check(fleet);
    diags.extend(more);
    if let Some(c) = &checked {
        if !diags.has_errors() {
            diags.extend(Renderer::new(c).diagnostics);
        }
    }
    let diags = diags.sorted();
    let checked = checked.filter(|_| !diags.has_errors());
    Ok((checked, diags))
}

/// Loads and validates a fleet from `(path, text)` pairs (a Git revision).
pub fn check_files(
    name: String,
    files: Vec<(String, String)>,
) -> Result<(Checked, Diagnostics), PipelineError> {
    let (fleet, mut diags) = load::load_files(name, files);
    let (checked, more) = validate::check(fleet);
    diags.extend(more);
    let diags = diags.sorted();
    match checked {
        Some(c) if !diags.has_errors() => Ok((c, diags)),
        _ => Err(PipelineError::Invalid(diags)),
    }
}
