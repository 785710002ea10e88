//! `canopy agent`: a relay cluster's own reconciler.
//!
//! A relay (`spec.relay` on its Cluster) is handed, by whoever reconciles
//! it, a snapshot of what its subtree needs ([`crate::core::relay`]),
//! stored in the relay's own cluster. The agent runs next to it and, round
//! by round:
//!
//! 1. holds the Lease ([`crate::core::lease`]): of several replicas only
//!    the leader goes on, and the Lease's renewals are the heartbeat the
//!    level above reads;
//! 2. reads the handoff ([`crate::ops::handoff::read`]). One that does not
//!    match its digest, or whose slice does not validate, is refused and
//!    the agent keeps working from its last good one, which it keeps in its
//!    state folder so that it survives a restart while its parent is cut
//!    off;
//! 3. reconciles the clusters it is the reconciler of with the same run
//!    sequence `apply` uses ([`Session::place_subtree`] then
//!    [`Session::run_placed`]): levels, gating, server-side apply, prune,
//!    retain, health records and failover among its own clusters, and the
//!    handoffs of relays below it, whose reports it waits for;
//! 4. writes its report, bounded, into the handoff's status
//!    ([`report::of_run`]).
//!
//! Autonomy falls out of the order: a relay cut off from its parent keeps
//! its last handoff and keeps correcting drift from it. It never advances
//! to a revision it was not handed, and it never prunes a cluster for
//! being absent from an old handoff (clusters that left are orphans,
//! deleted only by an explicit `--prune-clusters` at the root).

pub mod joined;
pub mod leader;
pub mod manifests;
pub mod records;
pub mod report;

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::backend::kube::{KubeFleet, KubeOptions};
use crate::backend::local::LocalStore;
use crate::backend::{BackendError, ClusterBackend};
use crate::core::model::Connection;
use crate::core::relay::{self, Handoff};
use crate::core::relay_report::{Refused, RelayReport, Seen};
use crate::ops::apply::Options;
use crate::ops::error::OpsError;
use crate::ops::handoff;
use crate::ops::run::Session;
use crate::source::Revision;

/// Where the relay's own cluster is: the one its handoff is stored in.
pub enum Home {
    /// A cluster of the embedded local backend, in the state folder of
    /// the level above.
    Local(PathBuf),
    /// A Kubernetes cluster.
    Kube(Connection),
}

/// The relay's own cluster, opened.
pub(crate) enum HomeBackend {
    Local(LocalStore),
    Kube(Box<KubeFleet>, Connection),
}

impl HomeBackend {
    fn open(
        home: &Home,
        base: &std::path::Path,
        kube: &KubeOptions,
    ) -> Result<HomeBackend, OpsError> {
        Ok(match home {
            Home::Local(dir) => HomeBackend::Local(LocalStore::open_read_only(dir)),
            Home::Kube(conn) => HomeBackend::Kube(
                Box::new(
                    KubeFleet::new("", base.to_path_buf(), kube.clone())
                        .map_err(OpsError::Runtime)?,
                ),
                conn.clone(),
            ),
        })
    }

    fn backend(&self, relay: &str) -> Box<dyn ClusterBackend + '_> {
        match self {
            HomeBackend::Local(store) => Box::new(store.cluster(relay)),
            HomeBackend::Kube(k, conn) => k.cluster(relay, conn),
        }
    }
}

/// How an agent runs.
pub struct Config {
    /// The relay cluster's name.
    pub relay: String,
    pub home: Home,
    /// The agent's own state folder: its subtree's local-backend clusters,
    /// its health and rollout records, and its last good handoff.
    pub state: PathBuf,
    /// Where relative kubeconfig paths of its subtree's clusters start.
    pub base: PathBuf,
    pub kube: KubeOptions,
    /// This replica's name in the Lease.
    pub identity: String,
    pub lease: Duration,
    /// How clusters are applied; `relay_wait` bounds the wait for relays
    /// below.
    pub apply: Options,
}

/// What one round did.
#[derive(Debug)]
pub enum Round {
    /// Another replica leads.
    Standby { holder: String },
    /// No handoff has been written into the relay's cluster yet, and none
    /// was kept.
    NoHandoff,
    /// The subtree was reconciled from the handoff at `seen`, and reported.
    Reconciled {
        seen: Seen,
        report: Box<RelayReport>,
        /// The report could not be written (the relay's cluster did not
        /// answer): the level above sees the last one.
        unreported: Option<String>,
    },
    /// The round could not reconcile (the handoff kept cannot be placed or
    /// rendered, the state folder failed).
    Failed(String),
}

/// A running agent: its session over its subtree, kept across rounds.
pub struct Agent {
    cfg: Config,
    home: HomeBackend,
    session: Session<'static>,
    /// The handoff worked from.
    current: Option<Handoff>,
    /// Its chunks in the relay's cluster (unknown for a handoff kept from
    /// before a restart until it is read again).
    current_chunks: Vec<String>,
    /// Its index, as the records in the relay's cluster keep it.
    current_index: Option<serde_json::Value>,
    /// The records in the relay's own cluster ([`records`]), when it is a
    /// Kubernetes cluster: the version and the text last written or read.
    kept: Option<(Option<String>, String)>,
    /// The relay's own cluster as the hub of the clusters that join below
    /// it (a Kubernetes relay only).
    joiner: Option<crate::ops::join::Joiner>,
    /// The Lease, over a connection of its own, renewed while rounds run.
    leader: std::sync::Arc<leader::Leader>,
    /// Reads the capabilities of the clusters it reconciles, when the level
    /// above renders Helm charts for them.
    observer: crate::ops::capabilities::Observer,
}

/// The file in the agent's state folder holding its last good handoff.
const KEPT: &str = "handoff.json";

impl Agent {
    /// Opens the agent's state folder (locked: one agent per folder) and
    /// its relay's cluster, and takes up the handoff it kept, if any.
    pub fn open(mut cfg: Config) -> Result<Agent, OpsError> {
        // The Lease is held over a connection that is never fenced; every
        // other write of the agent (its subtree, its reports, its records)
        // stops when the Lease is not renewed in time.
        let fence = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let leader = leader::Leader::new(
            HomeBackend::open(&cfg.home, &cfg.base, &cfg.kube)?,
            cfg.relay.clone(),
            cfg.identity.clone(),
            cfg.lease,
            fence.clone(),
        );
        cfg.kube.fence = Some(fence.clone());
        cfg.apply.fence = Some(fence);
        let session = Session::for_relay(cfg.state.clone(), cfg.base.clone(), cfg.kube.clone())?;
        let home = HomeBackend::open(&cfg.home, &cfg.base, &cfg.kube)?;
        let current = crate::sys::files::read(&cfg.state.join(KEPT))
            .ok()
            .and_then(|b| serde_json::from_slice::<Handoff>(&b).ok())
            .filter(|h| h.relay == cfg.relay && h.compute_digest() == h.digest);
        let joiner = match &cfg.home {
            Home::Kube(conn) => Some(
                crate::ops::join::Joiner::for_relay(
                    cfg.base.clone(),
                    cfg.relay.clone(),
                    conn.clone(),
                )
                .map_err(OpsError::Runtime)?,
            ),
            Home::Local(_) => None,
        };
        let observer = crate::ops::capabilities::Observer::new(cfg.base.clone(), cfg.kube.clone());
        let mut agent = Agent {
            cfg,
            home,
            session,
            current,
            current_chunks: Vec::new(),
            current_index: None,
            kept: None,
            joiner,
            leader: std::sync::Arc::new(leader),
            observer,
        };
        agent.recover();
        Ok(agent)
    }

    /// A relay in Kubernetes: takes up the records it keeps there (its
    /// health records, and its last good handoff when its state folder has
    /// none, as after a restart in a pod). A cluster that does not answer
    /// leaves the state folder's.
    fn recover(&mut self) {
        if !matches!(self.home, HomeBackend::Kube(..)) {
            return;
        }
        let home = self.home.backend(&self.cfg.relay);
        let kept = match records::load(home.as_ref()) {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the agent's records in the relay's cluster; the state folder's are used");
                return;
            }
        };
        if let Some(h) = kept.health.clone() {
            self.session.health = h;
        }
        if self.current.is_none() {
            if let Some(index) = &kept.index {
                match handoff::read_from(home.as_ref(), index) {
                    Ok(found) => match found.handoff {
                        Ok(h) if h.relay == self.cfg.relay && relay::open(&h).is_ok() => {
                            tracing::info!(revision = %h.revision, "took up the last good handoff kept in the relay's cluster");
                            self.current = Some(h);
                            self.current_chunks = found.chunks;
                            self.current_index = Some(found.index);
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "the handoff kept in the relay's cluster cannot be read")
                        }
                    },
                    Err(e) => tracing::warn!(error = %e, "cannot read the kept handoff's chunks"),
                }
            }
        }
        let text = self.kept_text();
        self.kept = Some((kept.version, text));
    }

    /// The records as [`records::save`] writes them, to tell a change.
    fn kept_text(&self) -> String {
        format!(
            "{}\n{}",
            serde_json::to_string(&self.session.health).expect("records serialize"),
            self.current_index
                .as_ref()
                .map(|i| i["spec"].to_string())
                .unwrap_or_default()
        )
    }

    /// Writes the records into the relay's cluster when they changed.
    fn keep(&mut self) {
        let Some((version, was)) = self.kept.clone() else {
            return;
        };
        let now = self.kept_text();
        if version.is_some() && now == was {
            return;
        }
        let home = self.home.backend(&self.cfg.relay);
        match records::save(
            home.as_ref(),
            &self.session.health,
            self.current_index.as_ref(),
            version.as_deref(),
        ) {
            Ok(Some(v)) => self.kept = Some((Some(v), now)),
            Ok(None) => {
                // Another replica wrote since: take its version, write next round.
                let v = records::load(home.as_ref()).ok().and_then(|k| k.version);
                self.kept = Some((v, String::new()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot write the agent's records in the relay's cluster")
            }
        }
    }

    /// Sets the flag a signal handler raises to stop a round between
    /// clusters.
    pub fn cancel_on(&mut self, flag: std::sync::Arc<std::sync::atomic::AtomicBool>) {
        self.session.cancel = Some(flag);
    }

    /// Takes or renews the Lease. `Err` with the holder when another
    /// replica leads ([`leader::Leader::lead`]).
    pub fn lead(&self, now: SystemTime) -> Result<Result<(), String>, BackendError> {
        self.leader.lead(now)
    }

    /// Gives the Lease up if this replica holds it, so that another
    /// replica takes over at once (a clean stop).
    pub fn release(&self) {
        self.leader.release()
    }

    /// The digest of the handoff the relay's cluster holds now (cheap: the
    /// index only), to tell whether a round has anything new to take.
    pub fn handed_digest(&self) -> Option<String> {
        let home = self.home.backend(&self.cfg.relay);
        handoff::stored_digest(home.as_ref()).ok().flatten()
    }

    /// The digest of the handoff worked from.
    pub fn current_digest(&self) -> Option<&str> {
        self.current.as_ref().map(|h| h.digest.as_str())
    }

    /// One round: lead, read, reconcile, report; the Lease is renewed
    /// while it runs, and its writes stop if it cannot be
    /// ([`leader::Leader::hold`]).
    pub fn round(&mut self) -> Round {
        let lead = self.lead(SystemTime::now());
        self.round_after(lead)
    }

    /// The one round of `canopy agent --once`: as [`Agent::round`], but a
    /// Lease another process holds is watched for up to its duration first
    /// ([`leader::Leader::lead_patiently`]): a fresh process has never seen
    /// it change, and judges its expiry by its own clock only.
    pub fn round_once(&mut self) -> Round {
        let lead = self.leader.lead_patiently();
        self.round_after(lead)
    }

    fn round_after(&mut self, lead: Result<Result<(), String>, BackendError>) -> Round {
        match lead {
            Ok(Ok(())) => {}
            Ok(Err(holder)) => return Round::Standby { holder },
            // The relay's own cluster does not answer: the agent cannot
            // know whether another replica leads, so it writes nothing.
            Err(e) => {
                return Round::Failed(format!(
                    "cannot reach the relay's own cluster for its lease: {e}"
                ))
            }
        }
        self.leader
            .fence
            .store(false, std::sync::atomic::Ordering::SeqCst);
        let leader = self.leader.clone();
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| leader.hold(&done));
            let round = self.led_round();
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            round
        })
    }

    /// A round of the replica that leads.
    fn led_round(&mut self) -> Round {
        let refused = self.take_newest();
        let Some(h) = self.current.clone() else {
            return match refused {
                Some(r) => Round::Failed(format!(
                    "the handoff at revision {} was refused and there is no earlier one: {}",
                    r.handoff.revision, r.reason
                )),
                None => Round::NoHandoff,
            };
        };
        let seen = Seen {
            revision: h.revision.clone(),
            digest: h.digest.clone(),
        };
        // The members of the relay's hub join its slice: answered first,
        // then read once and added to every revision of the handoff.
        // The clusters it reconciles are read for their capabilities (the
        // slice at the handed revision only) when the level above asks.
        let mut first = true;
        let joiner = &mut self.joiner;
        let (observer, state) = (&mut self.observer, &self.session.state);
        let relay_name = self.cfg.relay.as_str();
        let opened = relay::open_with(&h, &mut |fleet| {
            let is_first = std::mem::take(&mut first);
            let mut diags = match joiner.as_mut() {
                None => crate::core::diag::Diagnostics::default(),
                Some(j) if is_first => {
                    let (diags, events) = j.gather(fleet);
                    for e in events {
                        tracing::info!("{e}");
                    }
                    diags
                }
                Some(j) => j.add_last(fleet),
            };
            if is_first && fleet.capabilities_asked {
                let read = crate::ops::capabilities::Read::Live {
                    fresh_for: crate::ops::capabilities::FRESH_FOR,
                    keep: true,
                };
                diags.extend(observer.observe(fleet, state, read, Some(relay_name)));
            }
            for w in &diags.0 {
                tracing::warn!("{w}");
            }
            crate::core::diag::Diagnostics::default()
        });
        let opened = match opened {
            Ok(o) => o,
            Err(d) => {
                return Round::Failed(format!("the kept handoff does not open: {}", text_of(&d)))
            }
        };
        let relay::Opened {
            checked,
            relay: me,
            bases,
        } = opened;
        let checked = &checked;
        let placed = match self
            .session
            .place_subtree(checked, me, &h.shares, &h.above, bases)
        {
            Ok(p) => p,
            Err(e) => return Round::Failed(e.to_string()),
        };
        let targets = relay::reconciled_by(checked, Some(me));
        // Clusters that left an old handoff are orphans: never deleted
        // here, whatever the age of the handoff.
        let orphans = match self.session.orphans(checked) {
            Ok(o) => o,
            Err(e) => return Round::Failed(e.to_string()),
        };
        let revision = Revision::parse(&h.revision);
        let run = match self.session.run_placed(
            placed,
            targets,
            &revision,
            &orphans,
            self.cfg.apply.clone(),
        ) {
            Ok(run) => run,
            Err(e) => return Round::Failed(e.to_string()),
        };
        let mut rep = report::of_run(&run, &self.session.backends, &seen, &h.above);
        rep.capabilities = crate::ops::capabilities::report(
            &self.session.state,
            checked,
            me,
            h.capabilities.as_ref(),
        );
        rep.refused = refused;
        rep.chunks = self.current_chunks.clone();
        rep.at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        let home = self.home.backend(&self.cfg.relay);
        let unreported = handoff::write_report(home.as_ref(), &rep)
            .err()
            .map(|e| e.to_string());
        drop(home);
        self.keep();
        Round::Reconciled {
            seen,
            report: Box::new(rep),
            unreported,
        }
    }

    /// Reads the handoff in the relay's cluster and takes it when it is new
    /// and good (kept in the state folder). What it refused, if anything.
    fn take_newest(&mut self) -> Option<Refused> {
        let home = self.home.backend(&self.cfg.relay);
        let found = match handoff::read(home.as_ref()) {
            Ok(Some(f)) => f,
            // None written yet, or the index is gone: keep what we have.
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the handoff; working from the last good one");
                return None;
            }
        };
        if self.current.as_ref().map(|h| &h.digest) == Some(&found.seen.digest) {
            self.current_chunks = found.chunks;
            self.current_index = Some(found.index);
            return None;
        }
        let refuse = |reason: String| {
            tracing::warn!(revision = %found.seen.revision, %reason, "refused the handoff; working from the last good one");
            Some(Refused {
                handoff: found.seen.clone(),
                reason,
            })
        };
        let h = match found.handoff {
            Ok(h) => h,
            // Chunks are written before their index and pruned after a
            // newer one: a chunk gone since the index was read is a handoff
            // being replaced, not a damaged one. The next poll reads the
            // new one whole.
            Err(crate::core::chunks::ChunkError::Missing { name }) => {
                tracing::info!(chunk = %name, "the handoff is being replaced; reading it again at the next poll");
                return None;
            }
            Err(e) => return refuse(e.to_string()),
        };
        if h.relay != self.cfg.relay {
            return refuse(format!(
                "the handoff is for relay {:?}, and this agent runs relay {:?}",
                h.relay, self.cfg.relay
            ));
        }
        if let Err(d) = relay::open(&h) {
            return refuse(format!("its slice does not validate: {}", text_of(&d)));
        }
        let body = serde_json::to_vec(&h).expect("a handoff serializes");
        if let Err(e) = crate::sys::files::replace(&self.cfg.state, KEPT, &body) {
            tracing::warn!(error = %e, "cannot keep the handoff in the state folder; it is used, but not kept across a restart");
        }
        tracing::info!(revision = %h.revision, digest = %h.digest, "took a new handoff");
        self.current = Some(h);
        self.current_chunks = found.chunks;
        self.current_index = Some(found.index);
        None
    }
}

/// How often a running agent looks.
pub struct Follow {
    /// How often the handoff's index is looked at: a new handoff is taken
    /// within this (one small read each time).
    pub poll: Duration,
    /// How often the Lease is renewed (a third of its duration).
    pub renew: Duration,
    /// How often the whole subtree is reconciled even when nothing new
    /// was handed down: drift is corrected within this.
    pub resync: Duration,
}

impl Agent {
    /// Runs rounds until `stop` is set: a round as soon as a new handoff is
    /// written, else every `resync`; after a round that failed, again
    /// after a wait that doubles up to `resync`; while relays below have
    /// not reported on what they were handed, again at the next poll, so
    /// that the report up follows theirs.
    pub fn follow(&mut self, every: &Follow, stop: &std::sync::atomic::AtomicBool) {
        // Each round opens the handoff again: parse only what changed.
        // (`CANOPY_PARSE_ALL` parses everything every time, to compare.)
        if std::env::var_os("CANOPY_PARSE_ALL").is_none() {
            crate::core::load::keep_parsed();
        }
        use std::sync::atomic::Ordering;
        use std::time::Instant;
        let mut last: Option<Instant> = None;
        let mut renewed = Instant::now();
        let mut backoff = Duration::ZERO;
        let mut again = every.resync;
        let mut standby: Option<String> = None;
        while !stop.load(Ordering::SeqCst) {
            let due = match last {
                None => true,
                Some(at) => {
                    at.elapsed() >= again
                        || self.handed_digest().as_deref() != self.current_digest()
                        || self.joiner.as_mut().is_some_and(|j| j.changed())
                }
            };
            if due {
                renewed = Instant::now();
                let mut failed = false;
                let mut pending = false;
                match self.round() {
                    Round::Standby { holder } => {
                        if standby.as_deref() != Some(holder.as_str()) {
                            tracing::info!(%holder, "another replica leads; standing by");
                        }
                        standby = Some(holder);
                        // Not a round: try to lead again at the next renewal.
                        sleep_unless(stop, every.renew);
                        continue;
                    }
                    Round::NoHandoff => {
                        tracing::info!("no handoff written yet; waiting for the parent level");
                    }
                    Round::Reconciled {
                        seen,
                        report,
                        unreported,
                    } => {
                        let c = report.clusters;
                        pending = c.pending > 0;
                        failed = c.failed + c.skipped > 0 || report.applied.is_none() && !pending;
                        tracing::info!(
                            revision = %seen.revision,
                            clusters = c.total,
                            applied = c.applied,
                            failed = c.failed,
                            skipped = c.skipped,
                            pending = c.pending,
                            "reconciled the subtree"
                        );
                        if let Some(e) = unreported {
                            tracing::warn!(error = %e, "cannot write the report");
                        }
                    }
                    Round::Failed(why) => {
                        failed = true;
                        tracing::error!(error = %why, "round failed");
                    }
                }
                standby = None;
                last = Some(Instant::now());
                backoff = if failed {
                    (backoff * 2).clamp(Duration::from_secs(1), every.resync)
                } else {
                    Duration::ZERO
                };
                again = if failed {
                    backoff
                } else if pending {
                    every.poll
                } else {
                    every.resync
                };
            } else if renewed.elapsed() >= every.renew {
                renewed = Instant::now();
                if let Err(e) = self.lead(SystemTime::now()) {
                    tracing::warn!(error = %e, "cannot renew the lease");
                }
            }
            sleep_unless(stop, every.poll.min(every.renew));
        }
        self.release();
    }
}

/// Sleeps `d`, waking early when `stop` is set.
fn sleep_unless(stop: &std::sync::atomic::AtomicBool, d: Duration) {
    let end = std::time::Instant::now() + d;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let left = end.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}

/// Diagnostics as one line each, joined.
fn text_of(d: &crate::core::diag::Diagnostics) -> String {
    let lines: Vec<String> = d.errors().map(ToString::to_string).collect();
    lines.join("; ")
}
