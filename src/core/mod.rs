//! The pure stages of the pipeline and the data they pass along:
//!
//! ```text
//! files ──load──▶ Fleet ──validate──▶ Checked ──schedule──▶ placements
//!                                        └──render──▶ objects per cluster ──diff──▶ changes
//! ```
//!
//! Nothing here talks to a cluster, reads the clock or the environment, or
//! imports from the layers above (`tests/layers.rs` keeps it so): each stage
//! is a function of its inputs, tested in-module. `load::load` reads the
//! folder it is handed; `load::load_files` is the same stage over text.

pub mod aggregate;
pub mod capabilities;
pub mod carry;
pub mod chunks;
pub mod depends;
pub mod diag;
pub mod diff;
pub mod explain;
pub mod failover;
pub mod hash;
pub mod health_rules;
pub mod image;
pub mod join;
pub mod kinds;
pub mod lease;
pub mod load;
pub mod mask;
pub mod model;
pub mod names;
pub mod paths;
pub mod pointer;
pub mod relay;
pub mod relay_report;
pub mod render;
pub mod reserved;
pub mod retain;
pub mod review;
pub mod rollout_plan;
pub mod schedule;
pub mod schema;
pub mod select;
pub mod synth;
pub mod tenancy;
pub mod topology;
pub mod validate;
pub mod yaml;
pub mod yaml_out;
