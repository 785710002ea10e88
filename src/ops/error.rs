//! Why an operation stopped before it could report on every cluster. Each
//! variant carries what the CLI needs to say it (and to pick the exit
//! code); a cluster that fails inside a run is not an error here but an
//! outcome in the run's report.

use crate::backend::BackendError;
use crate::core::diag::Diagnostics;
use crate::core::load::LoadError;
use crate::core::validate::Checked;
use crate::source::git::GitError;
use crate::state::StateError;

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// The repository could not be opened, fetched or read.
    #[error(transparent)]
    Git(#[from] GitError),
    /// The fleet folder could not be read at all.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The fleet was read and has errors; every one is listed.
    #[error("fleet {label} is invalid")]
    Invalid { label: String, diags: Diagnostics },
    /// Workloads cannot be placed (e.g. every weight zero).
    #[error("cannot place the fleet's workloads")]
    Place(Diagnostics),
    /// A cluster's render failed: nothing was applied and nothing pruned.
    #[error("render failed, so nothing was applied and nothing pruned")]
    Render(Diagnostics),
    /// The fleet at `diff --base REF` could not be had.
    #[error(transparent)]
    Base(#[from] crate::ops::base::BaseError),
    /// A record in the state folder could not be read or written.
    #[error(transparent)]
    State(#[from] StateError),
    /// The local store could not be opened or listed (locked, unreadable).
    #[error(transparent)]
    Store(#[from] BackendError),
    #[error("cannot start the Kubernetes client runtime: {0}")]
    Runtime(std::io::Error),
    /// A name on the command line that the fleet does not have.
    #[error("unknown {what} {name:?}\n  help: {what}s of this fleet: {known}")]
    Unknown {
        what: &'static str,
        name: String,
        known: String,
    },
    /// The records kept in the fleet's root cluster could not be read or
    /// written (the message says which and why).
    #[error("{0}")]
    Records(String),
    /// The command cannot be done as asked (the message says why and what
    /// to do).
    #[error("{0}")]
    Refused(String),
}

impl OpsError {
    pub fn unknown_cluster(checked: &Checked, name: &str) -> OpsError {
        let known: Vec<&str> = checked
            .topo
            .preorder()
            .iter()
            .map(|&i| checked.topo.name(i))
            .collect();
        OpsError::Unknown {
            what: "cluster",
            name: name.to_string(),
            known: known.join(", "),
        }
    }

    pub fn unknown_workload(checked: &Checked, name: &str) -> OpsError {
        let known: Vec<&str> = checked.fleet.workloads.iter().map(|w| w.name()).collect();
        OpsError::Unknown {
            what: "workload",
            name: name.to_string(),
            known: known.join(", "),
        }
    }
}
