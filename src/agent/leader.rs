//! The agent's hold on its Lease ([`crate::core::lease`]): taken before a
//! round, renewed while the round runs, and given up on a clean stop.
//!
//! A round can outlast the Lease (a leaf that does not answer, retries). So
//! the Leader has a connection of its own to the relay's cluster, and a
//! thread renews the Lease every third of its duration while the round
//! writes. When it cannot renew within the renew deadline, or finds another
//! replica holding the Lease, it raises the **fence**: every write of the
//! round's backends checks it and refuses, so this replica has stopped
//! writing before a standby, which waits for the Lease's whole duration by
//! its own clock, may take over.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::backend::BackendError;
use crate::core::lease::{self, Decision};
use crate::ops::handoff;

use super::HomeBackend;

/// One replica's hold on the Lease.
pub struct Leader {
    home: HomeBackend,
    relay: String,
    identity: String,
    duration: Duration,
    /// The Lease's resourceVersion as this replica last saw it, and since
    /// when (its own clock): how long another holder has not renewed.
    seen: Mutex<Option<(String, Instant)>>,
    /// When this replica last wrote the Lease (its own clock).
    renewed: Mutex<Option<Instant>>,
    /// Raised when this replica must stop writing; the round's backends
    /// check it before every write.
    pub fence: Arc<AtomicBool>,
}

impl Leader {
    pub(super) fn new(
        home: HomeBackend,
        relay: String,
        identity: String,
        duration: Duration,
        fence: Arc<AtomicBool>,
    ) -> Leader {
        Leader {
            home,
            relay,
            identity,
            duration,
            seen: Mutex::new(None),
            renewed: Mutex::new(None),
            fence,
        }
    }

    /// Takes or renews the Lease. `Ok(Err(holder))` when another replica
    /// leads (or this one has not yet watched its Lease unchanged for its
    /// duration).
    pub fn lead(&self, now: SystemTime) -> Result<Result<(), String>, BackendError> {
        let home = self.home.backend(&self.relay);
        let (t, key) = handoff::lease_ref();
        let live = home.get(&t, &key)?;
        let version = live
            .as_ref()
            .and_then(|l| l.pointer("/metadata/resourceVersion"))
            .map(|v| v.to_string())
            .unwrap_or_default();
        let unchanged_for = {
            let mut seen = self.seen.lock().expect("not poisoned");
            match &*seen {
                Some((v, since)) if *v == version => since.elapsed(),
                _ => {
                    *seen = Some((version, Instant::now()));
                    Duration::ZERO
                }
            }
        };
        match lease::decide(
            live.as_ref(),
            &self.identity,
            now,
            self.duration,
            unchanged_for,
        ) {
            Decision::Follow { holder, .. } => Ok(Err(holder)),
            Decision::Write { lease, took_over } => match home.put(&lease)? {
                Some(written) => {
                    if took_over {
                        tracing::info!(identity = %self.identity, "took over the lease");
                    }
                    let at = Instant::now();
                    *self.renewed.lock().expect("not poisoned") = Some(at);
                    let v = written
                        .pointer("/metadata/resourceVersion")
                        .map(|v| v.to_string())
                        .unwrap_or_default();
                    *self.seen.lock().expect("not poisoned") = Some((v, at));
                    Ok(Ok(()))
                }
                // Another replica wrote first.
                None => Ok(Err(home
                    .get(&t, &key)?
                    .and_then(|l| lease::held(&l))
                    .map(|(h, _)| h)
                    .unwrap_or_default())),
            },
        }
    }

    /// For a replica that has never watched the Lease (a `--once` run from
    /// cron, a fresh process each time): takes it at once when it is free
    /// or its own, else watches it for up to this replica's Lease duration,
    /// and takes it if it stays unchanged that long (its holder is gone).
    /// Returns as soon as the holder renews it: that replica leads.
    pub fn lead_patiently(&self) -> Result<Result<(), String>, BackendError> {
        let first = self.lead(SystemTime::now())?;
        if first.is_ok() {
            return Ok(first);
        }
        let watched = self.seen.lock().expect("not poisoned").clone();
        let end = Instant::now() + self.duration + Duration::from_millis(200);
        while Instant::now() < end {
            std::thread::sleep(Duration::from_millis(100));
            let r = self.lead(SystemTime::now())?;
            let now_seen = self.seen.lock().expect("not poisoned").clone();
            let renewed = now_seen.map(|(v, _)| v) != watched.as_ref().map(|(v, _)| v.clone());
            if r.is_ok() || renewed {
                return Ok(r);
            }
        }
        self.lead(SystemTime::now())
    }

    /// Gives the Lease up if this replica holds it, so that another
    /// replica takes over at once (a clean stop).
    pub fn release(&self) {
        let home = self.home.backend(&self.relay);
        let (t, key) = handoff::lease_ref();
        if let Ok(Some(live)) = home.get(&t, &key) {
            if let Some(freed) = lease::release(&live, &self.identity) {
                if let Err(e) = home.put(&freed) {
                    tracing::warn!(error = %e, "cannot release the lease; it expires by itself");
                }
            }
        }
    }

    /// Whether this replica may write now: it renewed within the deadline.
    fn may_write(&self) -> bool {
        self.renewed
            .lock()
            .expect("not poisoned")
            .is_some_and(|at| lease::may_write(at.elapsed(), self.duration))
    }

    /// Renews the Lease every third of its duration until `done` is set (a
    /// round's writes are over), raising the fence as soon as this replica
    /// may no longer write. Runs on a thread of its own beside the round.
    pub fn hold(&self, done: &AtomicBool) {
        let every = (self.duration / 3).max(Duration::from_millis(100));
        let mut next = Instant::now() + every;
        while !done.load(Ordering::SeqCst) {
            if Instant::now() >= next {
                next = Instant::now() + every;
                match self.lead(SystemTime::now()) {
                    Ok(Ok(())) => {}
                    Ok(Err(holder)) => {
                        tracing::error!(%holder, "another replica holds the lease; this round stops writing");
                        self.fence.store(true, Ordering::SeqCst);
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot renew the lease during the round"),
                }
            }
            if !self.may_write() && !self.fence.swap(true, Ordering::SeqCst) {
                tracing::error!(
                    deadline = %humantime::format_duration(lease::renew_deadline(self.duration)),
                    "the lease could not be renewed in time; this round stops writing"
                );
            }
            std::thread::sleep(Duration::from_millis(20).min(every));
        }
    }
}
