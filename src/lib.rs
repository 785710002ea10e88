//! canopy: GitOps for a tree of Kubernetes clusters.
//!
//! Folders are layers, and imports point one way (a test scans them):
//!
//! ```text
//! cli ──▶ watch, agent ──▶ ops ──▶ backend, source, state ──▶ core
//! ```
//!
//! - [`core`]: the pure stages, load → validate → schedule → render → diff,
//!   with explain, aggregate and rollout stage assignment: functions of
//!   their inputs, deterministic, with no network, clock or environment
//!   (`load` alone reads the fleet folder it is given).
//! - [`source`]: where a fleet comes from (a folder, a Git revision, local or
//!   remote) and the revision it was read at.
//! - [`backend`]: where live state is: the `ClusterBackend` trait, the
//!   embedded local store, Kubernetes, and the per-cluster choice of backend.
//! - [`state`]: canopy's own records in the state folder (cluster health,
//!   rollouts), replaced atomically.
//! - [`ops`]: the run sequence, once: a run opens source, state and
//!   backends, places and renders once; apply, diff, status and rollout are
//!   thin functions over it.
//! - [`watch`]: the long-running loop of rounds over [`ops`].
//! - [`agent`]: a relay's own loop over [`ops`]: follow the handoff its
//!   parent level writes, reconcile the relay's subtree, report back.
//! - [`cli`]: clap types and printers; `main.rs` only dispatches.
//! - [`sys`]: beside `core` at the bottom, the filesystem primitives for
//!   canopy's own files (private, atomic, durable, no links followed).
//! - [`alloc`]: below all of them, the binary's allocator and the memory
//!   allowance a template render runs under.
//!
//! Diagnostics are collected, never fail-fast, and each names the file, line
//! and YAML path it is about.

pub mod agent;
pub mod alloc;
pub mod backend;
pub mod cli;
pub mod core;
pub mod ops;
pub mod source;
pub mod state;
pub mod sys;
pub mod watch;
