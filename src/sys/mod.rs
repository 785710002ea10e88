//! Filesystem primitives for canopy's own files (the state folder): the one
//! place they are written, so that every writer gets the same guarantees.
//! Below `backend` and `state`, beside `core`; it imports nothing of
//! canopy's.

pub mod files;
pub mod parallel;
