//! `canopy watch`: a long-running loop around the same pipeline as `apply`.
//!
//! Three things start a round:
//! - **a change** of the source: a new commit on the followed ref (a local
//!   source is watched with `notify`, a remote is fetched every `poll`), or a
//!   fleet file edited in a watched folder;
//! - **the drift check** every `resync`: every cluster is diffed against
//!   live state, and drift is put back (or only reported);
//! - **a retry**: a cluster that failed is tried again after its backoff.
//!
//! A change is incremental. Each cluster has a fingerprint of everything its
//! render reads ([`Renderer::fingerprints`]); only the clusters whose
//! fingerprint differs from the one they were last reconciled at are
//! rendered, diffed and applied, so one new cluster or one workload's
//! replicas cost what they touch, not the fleet's size.
//!
//! A revision that does not load, validate or render is reported once and
//! skipped: nothing of it is applied and nothing is pruned, and the last good
//! revision stays. A cluster that fails waits (doubling, capped) before it
//! is tried again, with its subtree; every other cluster goes on.

pub mod backoff;
pub mod metrics;
pub mod trigger;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use crate::core::diag::Diagnostics;
use crate::core::validate::Checked;
use crate::ops::apply::{self, Outcome, Skip};
use crate::ops::{OpsError, Selection, Session};
use crate::source::input::Input;
use crate::source::Revision;
use crate::state::rendering::Rendering;

use backoff::Backoff;
use metrics::{ClusterLabels, Metrics, RoundLabels};
use trigger::Event;

/// How the loop behaves (the `canopy watch` flags).
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// How often a remote is fetched.
    pub poll: Duration,
    /// How often every cluster is diffed for drift; `None`: never.
    pub resync: Option<Duration>,
    /// Put drift back (otherwise only report it).
    pub correct_drift: bool,
    /// prune, prune_clusters, concurrency (dry_run is set per round, and
    /// each round renders only the clusters it reconciles).
    pub apply: apply::Options,
    /// `--cluster` / `--subtree` names, looked up in every revision.
    pub selection: Selection,
    /// The longest wait before a failing cluster is retried.
    pub max_backoff: Duration,
    /// After a file event, how long the source must stay quiet before it is
    /// read (a commit or an editor's save touches several files).
    pub debounce: Duration,
    /// `--fleet-name`.
    pub fleet_name: Option<String>,
    /// How often the hubs are asked whether a join request waits or a
    /// member changed; `None`: never between rounds.
    pub join_poll: Option<Duration>,
    /// Where relative kubeconfig paths start (for the hubs).
    pub base: std::path::PathBuf,
}

/// Why a round ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Start,
    Change,
    Drift,
    Retry,
    /// A rollout's pause ended, or `canopy rollout continue` asked.
    Rollout,
    /// A join request waits in a hub, or a member came, left or got new
    /// credentials.
    Join,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Start => "start",
            Trigger::Change => "change",
            Trigger::Drift => "drift",
            Trigger::Retry => "retry",
            Trigger::Rollout => "rollout",
            Trigger::Join => "join",
        }
    }
}

/// The fleet at the last revision that loaded and rendered.
struct Good {
    checked: Checked,
    revision: Revision,
}

/// What one round did, for its log line and for tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoundSummary {
    pub revision: String,
    /// Clusters reconciled (rendered and diffed).
    pub clusters: usize,
    pub totals: apply::Totals,
    /// The revision did not load or render and was skipped.
    pub skipped_revision: bool,
}

/// The loop's state between rounds.
pub struct Watch<'a> {
    /// The state folder, the backends (clients, rate limiters and
    /// discovery caches live across rounds) and the records.
    session: Session<'a>,
    opts: WatchOptions,
    metrics: Metrics,
    backoff: Backoff,
    good: Option<Good>,
    /// The last revision read, good or not: a bad one is reported once.
    seen: Option<String>,
    /// Per cluster, the fingerprint it was last reconciled at.
    applied: HashMap<String, u64>,
    /// Per cluster, the revision it was last reconciled at.
    at_revision: HashMap<String, String>,
    /// Where the first round counts its clusters (taken by it).
    first_progress: Option<Arc<crate::ops::progress::Progress>>,
    /// What an earlier process was rendering when it died, until a render
    /// of this one finishes (see [`crate::state::rendering`]).
    died_rendering: Option<Rendering>,
    /// The fleet's hubs: members join each revision, and join requests
    /// are answered every round.
    joiner: Option<crate::ops::join::Joiner>,
    /// Reads the clusters' Kubernetes version and APIs for Helm charts, at
    /// most every [`crate::ops::capabilities::FRESH_FOR`] per cluster.
    observer: crate::ops::capabilities::Observer,
    /// Where the current round's time went, for its log line.
    phases: Phases,
}

/// Where a round's time went, in milliseconds, logged with it: what an
/// operator of a large fleet looks at first when rounds slow down.
#[derive(Debug, Clone, Copy, Default)]
struct Phases {
    /// Reading the revision (Git or the folder) and parsing what changed.
    read: u64,
    /// Validating it.
    check: u64,
    /// Placing (failover, capacity, scheduling) and the fingerprints.
    place: u64,
    /// Rendering the clusters reconciled.
    render: u64,
    /// Diffing and writing them, and the records.
    apply: u64,
}

/// Milliseconds since `t`, rounded.
fn ms_since(t: Instant) -> u64 {
    (t.elapsed().as_secs_f64() * 1000.0).round() as u64
}

impl<'a> Watch<'a> {
    /// A loop over `session`, which holds the state folder's lock.
    pub fn new(mut session: Session<'a>, opts: WatchOptions, metrics: Metrics) -> Self {
        // Each round places a revision a commit away from the last one's.
        session.carry_over = true;
        let died_rendering = Rendering::left_behind(&session.state).unwrap_or_else(|e| {
            warn!(error = %e, "cannot read which revision the last watch was rendering");
            None
        });
        if let Some(d) = &died_rendering {
            warn!(
                revision = d.revision.as_str(),
                deaths = d.attempts,
                "an earlier watch process ended while rendering this revision (canopy's memory limit per template render, or killed)"
            );
        }
        let opts_base = opts.base.clone();
        let observer = crate::ops::capabilities::Observer::new(
            opts.base.clone(),
            crate::backend::kube::KubeOptions::default(),
        );
        Watch {
            observer,
            died_rendering,
            session,
            backoff: Backoff::new(opts.max_backoff),
            opts,
            metrics,
            good: None,
            seen: None,
            applied: HashMap::new(),
            at_revision: HashMap::new(),
            first_progress: None,
            phases: Phases::default(),
            joiner: crate::ops::join::Joiner::new(opts_base, crate::ops::join::Role::Reconcile)
                .map_err(|e| warn!(error = %e, "cannot start the runtime for the hubs; members are left out"))
                .ok(),
        }
    }

    /// Counts the first round's clusters in `progress` (later rounds touch
    /// few clusters and are logged).
    pub fn first_round_progress(mut self, progress: Arc<crate::ops::progress::Progress>) -> Self {
        self.first_progress = Some(progress);
        self
    }

    /// Runs until `stop` is set or an [`Event::Stop`] arrives. The first
    /// round reconciles every cluster.
    pub fn run(&mut self, events: &Receiver<Event>, stop: &Arc<AtomicBool>) {
        self.session.cancel = Some(stop.clone());
        // Each round reads the revision again: parse only what changed.
        // (`CANOPY_PARSE_ALL` parses everything every time, to compare.)
        if std::env::var_os("CANOPY_PARSE_ALL").is_none() {
            crate::core::load::keep_parsed();
        }
        let remote = matches!(self.session.input, Some(Input::Git(r)) if r.is_remote());
        self.round(Trigger::Start);
        let mut next_poll = remote.then(|| Instant::now() + self.opts.poll);
        let mut next_resync = self.opts.resync.map(|d| Instant::now() + d);
        let mut next_join = self.opts.join_poll.map(|d| Instant::now() + d);
        while !stop.load(Ordering::SeqCst) {
            let now = Instant::now();
            let deadline = [
                next_poll,
                next_resync,
                next_join,
                self.backoff.next_retry(now),
                self.rollout_check(now),
            ]
            .into_iter()
            .flatten()
            .min();
            let got = match deadline {
                Some(d) => events.recv_timeout(d.saturating_duration_since(now)),
                None => events.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match got {
                Ok(Event::Stop) => break,
                Ok(Event::SourceChanged) => {
                    if self.settle(events) {
                        break;
                    }
                    self.round(Trigger::Change);
                }
                Err(RecvTimeoutError::Disconnected) if deadline.is_none() => break,
                Err(_) => {
                    let now = Instant::now();
                    if next_poll.is_some_and(|t| t <= now) {
                        next_poll = Some(now + self.opts.poll);
                        self.round(Trigger::Change);
                    }
                    if next_join.is_some_and(|t| t <= now) {
                        next_join = self.opts.join_poll.map(|d| Instant::now() + d);
                        if self
                            .joiner
                            .as_mut()
                            .is_some_and(|j| j.has_hubs() && j.changed())
                        {
                            self.round(Trigger::Join);
                        }
                    }
                    if next_resync.is_some_and(|t| t <= now) {
                        next_resync = self.opts.resync.map(|d| Instant::now() + d);
                        self.round(Trigger::Drift);
                    } else if self.backoff.due(now) {
                        self.round(Trigger::Retry);
                    } else if self.rollout_due() {
                        self.round(Trigger::Rollout);
                    }
                }
            }
        }
        info!(
            revision = self
                .good
                .as_ref()
                .map(|g| g.revision.to_string())
                .unwrap_or_default(),
            "stopped: the clusters in flight finished, state is written"
        );
    }

    /// When to look at rollouts next: at the end of a timed pause, and
    /// every second while one waits for `canopy rollout continue`.
    fn rollout_check(&self, now: Instant) -> Option<Instant> {
        use crate::state::rollouts::Phase;
        let until = crate::ops::rollout::next_wakeup(&self.session.rollouts).map(|t| {
            now + t
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default()
        });
        let waiting = self.session.rollouts.workloads.values().any(|r| {
            matches!(r.phase, Phase::Paused | Phase::Failed | Phase::RolledBack)
                && r.paused_until.is_none()
        });
        let poll = waiting.then(|| now + Duration::from_secs(1));
        [until, poll].into_iter().flatten().min()
    }

    /// A pause is over or a continue request waits.
    fn rollout_due(&self) -> bool {
        let now = std::time::SystemTime::now();
        crate::ops::rollout::next_wakeup(&self.session.rollouts).is_some_and(|t| t <= now)
            || !crate::state::rollouts::pending_requests(&self.session.state).is_empty()
    }

    /// Waits until the source has been quiet for `debounce`; true when a
    /// stop arrived meanwhile.
    fn settle(&self, events: &Receiver<Event>) -> bool {
        loop {
            match events.recv_timeout(self.opts.debounce) {
                Ok(Event::Stop) => return true,
                Ok(Event::SourceChanged) => continue,
                Err(RecvTimeoutError::Timeout) => return false,
                Err(RecvTimeoutError::Disconnected) => return false,
            }
        }
    }

    /// One round; returns what it did.
    pub fn round(&mut self, trigger: Trigger) -> RoundSummary {
        let started = Instant::now();
        self.phases = Phases::default();
        let summary = match trigger {
            Trigger::Start | Trigger::Change | Trigger::Join => self.change_round(trigger),
            Trigger::Drift | Trigger::Retry | Trigger::Rollout => match self.good.take() {
                Some(good) => {
                    let s = self.reconcile(&good, trigger);
                    self.good = Some(good);
                    s.ok()
                }
                None => None,
            },
        };
        let Some(summary) = summary else {
            return RoundSummary::default();
        };
        let secs = started.elapsed().as_secs_f64();
        let t = summary.totals;
        let result = if summary.skipped_revision {
            "skipped"
        } else if t.failed + t.skipped > 0 {
            "partial"
        } else {
            "success"
        };
        self.metrics
            .reconciles
            .get_or_create(&RoundLabels {
                trigger: trigger.as_str().into(),
                result: result.into(),
            })
            .inc();
        if !summary.skipped_revision {
            self.metrics.duration.observe(secs);
            info!(
                trigger = trigger.as_str(),
                revision = summary.revision.as_str(),
                clusters = summary.clusters,
                changed = t.changed,
                unchanged = t.unchanged,
                failed = t.failed,
                skipped = t.skipped,
                created = t.created,
                updated = t.updated,
                deleted = t.deleted,
                duration_ms = (secs * 1000.0).round() as u64,
                read_ms = self.phases.read,
                check_ms = self.phases.check,
                place_ms = self.phases.place,
                render_ms = self.phases.render,
                apply_ms = self.phases.apply,
                "reconciled"
            );
        }
        summary
    }

    /// Reads the source; a new revision that loads is reconciled
    /// incrementally, a bad one is reported once and skipped.
    fn change_round(&mut self, trigger: Trigger) -> Option<RoundSummary> {
        let name = self.opts.fleet_name.clone();
        let t = Instant::now();
        let read = match self.session.input.expect("a watch follows a fleet source") {
            Input::Git(repo) => {
                if let Err(e) = repo.fetch() {
                    error!(error = %e, "cannot fetch the repository; the last good revision stays applied");
                    return None;
                }
                let revision = match repo.resolve() {
                    Ok(r) => r,
                    Err(e) => {
                        error!(error = %e, "cannot resolve the ref; the last good revision stays applied");
                        return None;
                    }
                };
                let text = revision.to_string();
                if trigger == Trigger::Change && self.seen.as_deref() == Some(text.as_str()) {
                    return None;
                }
                crate::source::input::read_git(repo, &revision, name.as_deref())
                    .map(|(f, d)| (f, d, revision))
                    .map_err(|e| e.to_string())
            }
            input @ Input::Dir(_) => input.read(name.as_deref()).map_err(|e| e.to_string()),
        };
        let (mut fleet, mut diags, revision) = match read {
            Ok(x) => x,
            Err(e) => {
                error!(error = %e, "cannot read the fleet; the last good revision stays applied");
                return None;
            }
        };
        if let Some(j) = self.joiner.as_mut() {
            let (warnings, events) = j.gather(&mut fleet);
            for e in events {
                info!("{e}");
            }
            for w in &warnings.0 {
                warn!("{w}");
            }
        }
        let read = crate::ops::capabilities::Read::Live {
            fresh_for: crate::ops::capabilities::FRESH_FOR,
            keep: true,
        };
        for w in &self
            .observer
            .observe(&mut fleet, &self.session.state, read, None)
            .0
        {
            warn!("{w}");
        }
        let text = revision.to_string();
        let first_look = self.seen.as_deref() != Some(text.as_str());
        self.seen = Some(text.clone());
        self.phases.read = ms_since(t);
        let t = Instant::now();
        let prev = self.good.as_ref().map(|g| &g.checked);
        let (checked, more) = crate::source::input::check_fleet_after(fleet, prev);
        self.phases.check = ms_since(t);
        diags.extend(more);
        let diags = diags.sorted();
        let checked = match checked.filter(|_| !diags.has_errors()) {
            Some(c) => c,
            None => {
                if first_look {
                    self.report_bad(&text, "is invalid", &diags);
                }
                return Some(self.skipped(text));
            }
        };
        let good = Good { checked, revision };
        match self.reconcile(&good, trigger) {
            Ok(s) => {
                self.good = Some(good);
                Some(s)
            }
            Err(diags) => {
                if first_look {
                    self.report_bad(&text, "does not render", &diags);
                }
                Some(self.skipped(text))
            }
        }
    }

    fn skipped(&self, revision: String) -> RoundSummary {
        RoundSummary {
            revision,
            skipped_revision: true,
            ..RoundSummary::default()
        }
    }

    fn report_bad(&self, revision: &str, what: &str, diags: &Diagnostics) {
        let last = self
            .good
            .as_ref()
            .map(|g| g.revision.to_string())
            .unwrap_or_else(|| "none".into());
        error!(
            revision,
            errors = diags.errors().count(),
            last_good = last.as_str(),
            "revision {what}: skipped, nothing of it applied or pruned"
        );
        for d in diags.errors().take(20) {
            error!(revision, "{d}");
        }
    }

    /// Reconciles the clusters of `good` that need it: for a drift check
    /// every cluster, otherwise those whose fingerprint changed (or that
    /// failed and whose wait is over). Clusters still waiting after a
    /// failure, and their subtrees, are left for later. `Err` is a render
    /// error: nothing was written.
    fn reconcile(&mut self, good: &Good, trigger: Trigger) -> Result<RoundSummary, Diagnostics> {
        let checked = &good.checked;
        let topo = &checked.topo;
        // Failover: a cluster down for longer than its workloads'
        // failover.after gives its Divided replicas to its siblings, and
        // takes them back once it answers again.
        let t = Instant::now();
        let placed = match self.session.place(checked) {
            Ok(p) => p,
            Err(OpsError::Place(d)) => return Err(d),
            Err(e) => {
                error!(error = %e, "cannot place the fleet");
                return Ok(RoundSummary {
                    revision: good.revision.to_string(),
                    ..RoundSummary::default()
                });
            }
        };
        let r = &placed.renderer;
        let fingerprints = r.fingerprints();
        self.phases.place = ms_since(t);
        // What this round renders, by content: a folder outside Git is
        // always `unversioned`, so the revision alone does not tell one
        // edit from the next.
        let rendering = {
            let mut h = crate::core::hash::StableHasher::new();
            for f in &fingerprints {
                h.u64(*f);
            }
            format!("{}#{:016x}", good.revision, h.finish())
        };
        if self
            .died_rendering
            .as_ref()
            .is_some_and(|d| d.kills(&rendering))
        {
            let mut d = Diagnostics::default();
            d.push(
                crate::core::diag::Diagnostic::error(format!(
                    "this revision ended the watch process each time it was rendered ({} times: canopy's memory limit per template render, or the kernel's OOM killer)",
                    crate::state::rendering::DEATHS_BEFORE_SKIP
                ))
                .hint("`canopy validate` names the template; the next commit is applied"),
            );
            return Err(d);
        }
        let scope = self.scope(checked);
        let now = Instant::now();
        let mut blocked = vec![false; topo.len()];
        for &c in topo.preorder() {
            blocked[c] = self.backoff.waiting(topo.name(c), now)
                || topo.parent(c).is_some_and(|p| blocked[p]);
        }
        // A rollout in motion (new, unfinished, or asked to continue) looks
        // at every cluster: its stages span clusters whose fingerprints did
        // not move.
        let plans = crate::ops::rollout::plans(r);
        let rolling = crate::ops::rollout::in_motion(&plans, &self.session.rollouts)
            || trigger == Trigger::Rollout;
        let full = matches!(trigger, Trigger::Drift) || rolling;
        // The clusters below a relay are its agent's.
        let own = crate::core::relay::reconciled_by(checked, None);
        let targets: BTreeSet<usize> = topo
            .preorder()
            .iter()
            .copied()
            .filter(|&c| own.as_ref().is_none_or(|o| o.contains(&c)))
            .filter(|&c| scope.as_ref().is_none_or(|s| s.contains(&c)) && !blocked[c])
            .filter(|&c| full || self.applied.get(topo.name(c)) != Some(&fingerprints[c]))
            .collect();
        // Clusters that left the fleet: every cluster with state at start
        // and on a drift check, otherwise those this loop reconciled before.
        let orphans: Vec<String> = if scope.is_some() {
            Vec::new()
        } else if matches!(trigger, Trigger::Start | Trigger::Drift) {
            self.session.orphans(checked).unwrap_or_default()
        } else {
            let mut gone: Vec<String> = self
                .applied
                .keys()
                .filter(|n| topo.get(n).is_none())
                .cloned()
                .collect();
            gone.sort();
            gone
        };
        let revision = good.revision.to_string();
        if targets.is_empty() && orphans.is_empty() {
            return Ok(RoundSummary {
                revision,
                ..RoundSummary::default()
            });
        }
        let dry_run = trigger == Trigger::Drift && !self.opts.correct_drift;
        let opts = apply::Options {
            dry_run,
            ..self.opts.apply.clone()
        };
        // Recorded while it renders: if this process dies of the render,
        // the next one knows which revision it was.
        if let Err(e) = Rendering::start(
            &self.session.state,
            &rendering,
            self.died_rendering.as_ref(),
        ) {
            warn!(error = %e, "cannot record the revision being rendered");
        }
        let t = Instant::now();
        let desired = self.session.render(&placed, Some(&targets), &good.revision);
        self.phases.render = ms_since(t);
        let t = Instant::now();
        if let Err(e) = Rendering::finish(&self.session.state) {
            warn!(error = %e, "cannot clear the record of the revision being rendered");
        }
        // A render of the revision that killed a process finished: it was
        // not the cause (or no longer is).
        if self
            .died_rendering
            .as_ref()
            .is_some_and(|d| d.revision == rendering)
        {
            self.died_rendering = None;
        }
        let mut desired = desired?;
        // Only the first round that applies counts its clusters.
        self.session.progress = self.first_progress.take();
        let crate::ops::rollout::Applied {
            report,
            events,
            unsaved,
        } = self
            .session
            .apply(&placed, &mut desired, &good.revision, &orphans, &opts);
        // The clusters written before the record failed are still
        // recorded and logged below; the next round tries again.
        if let Some(e) = &unsaved {
            error!(error = %e, "cannot write the rollout records; the rollout stopped before its next wave");
        }
        for e in &events {
            if e.failed {
                warn!(workload = e.workload.as_str(), "rollout: {}", e.message);
            } else {
                info!(workload = e.workload.as_str(), "rollout: {}", e.message);
            }
        }
        // A cluster where a rollout holds a workload back is not at this
        // revision's fingerprint: it is looked at again once it may move.
        let held = crate::ops::rollout::holds(&plans, &self.session.rollouts, r);
        if !dry_run {
            if let Err(e) = self.session.record(&placed, &report) {
                error!(error = %e, "cannot write the health records");
            }
            // What the relays among them read of their subtrees' Kubernetes
            // versions and APIs: charts render for it from the next round.
            crate::ops::capabilities::learn(
                &self.session.state,
                r,
                Some(&targets),
                &[],
                &self.session.backends,
            );
        }
        let now = Instant::now();
        for cr in &report.clusters {
            let name = cr.cluster.as_str();
            let c = topo.get(name).expect("reported clusters are the fleet's");
            match &cr.outcome {
                Outcome::Changed(ch) | Outcome::Unchanged(ch) => {
                    let objects = ch.changes.len();
                    if trigger == Trigger::Drift && objects > 0 {
                        self.metrics.drifted.inc_by(objects as u64);
                        if dry_run {
                            warn!(
                                cluster = name,
                                objects, "drift found (not corrected: --no-correct-drift)"
                            );
                            continue;
                        }
                        warn!(cluster = name, objects, "drift corrected");
                    }
                    if !dry_run {
                        self.metrics.changes.inc_by(objects as u64);
                    }
                    // Held back, or a workload pending on a dependency:
                    // not at this revision yet, looked at again.
                    if held.contains_key(name) || !ch.pending.is_empty() {
                        self.applied.remove(name);
                    } else {
                        self.applied.insert(name.to_string(), fingerprints[c]);
                    }
                    self.backoff.succeeded(name);
                    self.metrics
                        .failures
                        .get_or_create(&ClusterLabels {
                            cluster: name.to_string(),
                        })
                        .set(0);
                    let old = self.at_revision.insert(name.to_string(), revision.clone());
                    self.metrics.set_revision(name, old.as_deref(), &revision);
                }
                Outcome::Failed { error, changed } => {
                    self.applied.remove(name);
                    let wait = self.backoff.failed(name, now);
                    self.metrics
                        .failures
                        .get_or_create(&ClusterLabels {
                            cluster: name.to_string(),
                        })
                        .set(i64::from(self.backoff.failures(name)));
                    let changed: Vec<String> = changed.iter().map(|k| k.to_string()).collect();
                    warn!(
                        cluster = name,
                        error = %error,
                        changed_before_failure = changed.join(", "),
                        retry_in = %humantime::format_duration(wait),
                        "cluster failed; its subtree waits for it"
                    );
                }
                Outcome::Skipped { reason } => {
                    self.applied.remove(name);
                    if *reason != Skip::Stopping {
                        info!(cluster = name, reason = %reason, "cluster skipped");
                    }
                }
            }
        }
        for o in &report.orphans {
            self.applied.remove(&o.cluster);
            self.at_revision.remove(&o.cluster);
            match &o.outcome {
                Outcome::Skipped { reason } => {
                    warn!(
                        cluster = o.cluster.as_str(),
                        reason = %reason,
                        "cluster left the fleet"
                    )
                }
                Outcome::Failed { error, .. } => {
                    warn!(
                        cluster = o.cluster.as_str(),
                        error = %error,
                        "cluster left the fleet; cleaning it up failed"
                    )
                }
                _ => {}
            }
        }
        self.backoff.retain(|c| topo.get(c).is_some());
        self.phases.apply = ms_since(t);
        Ok(RoundSummary {
            revision,
            clusters: targets.len(),
            totals: report.totals(),
            skipped_revision: false,
        })
    }

    /// The clusters `--cluster` and `--subtree` name in this revision
    /// (`None`: all). A name the revision does not have is warned about.
    fn scope(&self, checked: &Checked) -> Option<BTreeSet<usize>> {
        let resolved: Result<_, std::convert::Infallible> =
            self.opts.selection.resolve(checked, |n, subtree| {
                let flag = if subtree { "--subtree" } else { "--cluster" };
                warn!(cluster = n, "{flag} names no cluster of this revision");
                Ok(())
            });
        resolved.unwrap_or_else(|never| match never {})
    }
}
