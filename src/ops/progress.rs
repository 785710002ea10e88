//! How far a run is: clusters reconciled of those it takes, and the level
//! of the tree it is on. Counters only, updated by the executor from its
//! worker threads; whether and how to show them is the CLI's business.

use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug, Default)]
pub struct Progress {
    done: AtomicUsize,
    total: AtomicUsize,
    level: AtomicUsize,
    levels: AtomicUsize,
}

/// One reading of a [`Progress`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    pub done: usize,
    pub total: usize,
    /// 1-based; 0 before the first level starts.
    pub level: usize,
    pub levels: usize,
}

impl Progress {
    /// A pass over `total` clusters in `levels` levels starts (each wave of
    /// a staged rollout is one pass).
    pub fn begin(&self, total: usize, levels: usize) {
        self.done.store(0, Ordering::Relaxed);
        self.level.store(0, Ordering::Relaxed);
        self.levels.store(levels, Ordering::Relaxed);
        self.total.store(total, Ordering::Relaxed);
    }

    /// Level `level` (1-based) of the pass starts.
    pub fn level(&self, level: usize) {
        self.level.store(level, Ordering::Relaxed);
    }

    /// One more cluster is done (reconciled, failed or skipped).
    pub fn cluster_done(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            done: self.done.load(Ordering::Relaxed),
            total: self.total.load(Ordering::Relaxed),
            level: self.level.load(Ordering::Relaxed),
            levels: self.levels.load(Ordering::Relaxed),
        }
    }
}
