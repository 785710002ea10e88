//! The run sequence and the operations over it. This is where side effects
//! meet the pure core: a run reads the source, opens the state folder and
//! the backends, asks down clusters whether they answer again (failover),
//! places and renders; `apply`, `diff`, `status` and `rollout` are functions
//! over that.

pub mod apply;
pub mod base;
pub mod calm;
pub mod capabilities;
pub mod capacity;
pub mod diff;
pub mod error;
pub mod handoff;
pub mod health;
pub mod join;
pub mod progress;
pub mod records;
pub mod relay_rollback;
pub mod relays;
pub mod rollout;
pub mod run;
pub mod settled;
pub mod status;

pub use error::OpsError;
pub use run::{Access, FleetSource, Location, Selection, Session};
