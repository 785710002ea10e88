//! Where a fleet comes from: the working tree, or a Git revision.

pub mod git;
