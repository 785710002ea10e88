//! Exit codes, and how an operation's error becomes the message and code a
//! user sees.

use std::io::Write;

use crate::core::diag::Diagnostics;
use crate::core::load::LoadError;
use crate::ops::base::BaseError;
use crate::ops::OpsError;
use crate::source::git::GitError;

/// Exit codes (also in `--help`): 0 ok, 1 differences (diff), 2 user
/// error, 3 I/O or state error, 4 some cluster failed or was skipped.
pub const EXIT_DIFF: u8 = 1;
pub const EXIT_USER: u8 = 2;
pub const EXIT_IO: u8 = 3;
pub const EXIT_CLUSTERS: u8 = 4;

/// A failed command: what to print and which code to exit with.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn user(message: impl Into<String>) -> Self {
        Failure {
            code: EXIT_USER,
            message: message.into(),
        }
    }
    /// The command already printed its report; only the exit code remains.
    pub fn silent(code: u8) -> Self {
        Failure {
            code,
            message: String::new(),
        }
    }
    pub fn io(message: impl Into<String>) -> Self {
        Failure {
            code: EXIT_IO,
            message: message.into(),
        }
    }
}

pub fn print_diags(d: &Diagnostics) {
    let mut err = std::io::stderr().lock();
    for x in &d.0 {
        let _ = writeln!(err, "{x}");
    }
}

pub fn summary(d: &Diagnostics) -> String {
    let errors = d.errors().count();
    let warnings = d.0.len() - errors;
    format!("{errors} error(s), {warnings} warning(s)")
}

/// Prints what an error lists (diagnostics) and says it with its code.
impl From<OpsError> for Failure {
    fn from(e: OpsError) -> Failure {
        let listed = |d: &Diagnostics, what: String| {
            print_diags(d);
            Failure::user(format!("{what}: {}", summary(d)))
        };
        match e {
            OpsError::Git(e) => git_failure(e),
            OpsError::Load(e) => load_failure(e),
            OpsError::Invalid { label, diags } => {
                listed(&diags, format!("fleet {label} is invalid"))
            }
            OpsError::Place(d) => listed(&d, "cannot place the fleet's workloads".into()),
            OpsError::Render(d) => listed(
                &d,
                "render failed, so nothing was applied and nothing pruned".into(),
            ),
            OpsError::Base(e) => base_failure(e),
            e @ (OpsError::State(_)
            | OpsError::Store(_)
            | OpsError::Runtime(_)
            | OpsError::Records(_)) => Failure::io(format!("error: {e}")),
            e @ (OpsError::Unknown { .. } | OpsError::Refused(_)) => {
                Failure::user(format!("error: {e}"))
            }
        }
    }
}

/// A Git failure: something wrong with the arguments is a usage error; a
/// remote that cannot be reached or refuses us, or a cache that cannot be
/// written, is an I/O error.
pub fn git_failure(e: GitError) -> Failure {
    let msg = format!("error: {e}");
    match e {
        GitError::Unreachable { .. }
        | GitError::Auth { .. }
        | GitError::Certificate { .. }
        | GitError::Cache { .. }
        | GitError::Read { .. } => Failure::io(msg),
        _ => Failure::user(msg),
    }
}

pub fn load_failure(e: LoadError) -> Failure {
    let msg = format!("error: {e}");
    match &e {
        LoadError::Root { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            Failure::user(format!("{msg}\n  help: pass the folder that holds the fleet, e.g. `canopy validate fleet-example`"))
        }
        LoadError::NotADirectory { .. } => Failure::user(msg),
        LoadError::Root { .. } => Failure::io(msg),
    }
}

/// The fleet at `diff --base REF` could not be had.
fn base_failure(e: BaseError) -> Failure {
    match e {
        BaseError::Git(e) => Failure::user(format!(
            "error: {e}\n  help: pass a branch, tag or commit that exists, e.g. --base origin/main"
        )),
        BaseError::Invalid { rev, commit, diags } => {
            print_diags(&diags);
            Failure::user(format!(
                "the fleet at {rev} ({commit}) is invalid: {}",
                summary(&diags)
            ))
        }
        BaseError::Render { rev, commit, diags } => {
            print_diags(&diags);
            Failure::user(format!(
                "the fleet at {rev} ({commit}) does not render: {}",
                summary(&diags)
            ))
        }
    }
}
