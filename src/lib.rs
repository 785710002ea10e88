//! canopy: GitOps for a tree of Kubernetes clusters.
//!
//! The pipeline, each stage a module:
//!
//! ```text
//! repo ──load──▶ Fleet ──validate──▶ Checked ──schedule──▶ placements
//!                                        └──render──▶ objects per cluster
//! ```
//!
//! Every stage here is pure (a function of its inputs, deterministic) except
//! [`load`], which reads files. Diagnostics are collected, never fail-fast,
//! and each names the file, line and YAML path it is about.

pub mod aggregate;
pub mod apply;
pub mod backend;
pub mod cli;
pub mod diag;
pub mod diff;
pub mod explain;
pub mod health;

pub mod image;
pub mod kinds;
pub mod load;
pub mod mask;
pub mod model;
pub mod output;
pub mod pipeline;
pub mod pointer;

pub mod render;
pub mod retain;
pub mod rollout;
pub mod schedule;
pub mod schema;
pub mod select;
pub mod source;
pub mod statefile;
pub mod status;
pub mod synth;

pub mod topology;
pub mod validate;
pub mod watch;
pub mod yaml;
