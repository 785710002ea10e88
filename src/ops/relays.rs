//! The level above a relay: after writing a relay's handoff, wait (bounded)
//! for the relay's report on it, and say per relay subtree how it went.
//!
//! A relay writes its report at the end of each round, into the status of
//! the `Handoff` object its parent level wrote ([`super::handoff`]). The
//! report names the handoff it is about by revision and digest, so the
//! parent knows it is about *this* handoff and not the last one: the
//! acknowledgement that Open Cluster Management's and argocd-agent's users
//! find stuck when it is an event instead of a state.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::apply::{Desired, Outcome, Report};
use super::handoff;
use crate::backend::fleet::Backends;
use crate::core::relay;
use crate::core::relay_report::{RelayReport, Seen};
use crate::core::render::Renderer;

/// How one relay's subtree went.
#[derive(Debug, Clone)]
pub struct RelayResult {
    pub relay: String,
    /// Clusters below the relay in the fleet.
    pub below: usize,
    /// The handoff written to it in this run.
    pub handed: Seen,
    pub outcome: RelayOutcome,
}

#[derive(Debug, Clone)]
pub enum RelayOutcome {
    /// The relay reconciled its subtree from the handoff (its report may
    /// still name failed clusters).
    Reported(RelayReport),
    /// The relay refused the handoff and keeps its last good one.
    Refused(String),
    /// No report on this handoff within the wait; the last report, if any.
    Waiting {
        waited: Duration,
        last: Option<RelayReport>,
    },
    /// No agent holds the relay's Lease (none runs, or it stopped renewing
    /// it): not waited for. The last report, if any.
    Silent { last: Option<RelayReport> },
    /// The report could not be read.
    Unreadable(String),
}

impl RelayResult {
    /// Whether the subtree is not wholly reconciled from the handoff.
    pub fn failed(&self) -> bool {
        match &self.outcome {
            RelayOutcome::Reported(r) => {
                let c = r.clusters;
                c.failed + c.skipped + c.pending > 0
            }
            _ => true,
        }
    }
}

/// The relays `report` wrote a handoff to, each with the handoff written
/// (as `desired` carried it).
pub fn handed(r: &Renderer<'_>, report: &Report, desired: &Desired) -> Vec<(usize, Seen)> {
    let topo = &r.checked.topo;
    report
        .clusters
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::Changed(_) | Outcome::Unchanged(_)))
        .filter_map(|c| topo.get(&c.cluster))
        .filter_map(|c| desired.handoff(c).map(|seen| (c, seen.clone())))
        .collect()
}

/// What the relay's report says about `handed`, `None` while it says
/// nothing about it yet.
fn judge(report: &RelayReport, handed: &Seen) -> Option<RelayOutcome> {
    if let Some(refused) = report.refused.as_ref().filter(|r| r.handoff == *handed) {
        return Some(RelayOutcome::Refused(refused.reason.clone()));
    }
    (report.observed.as_ref() == Some(handed)).then(|| RelayOutcome::Reported(report.clone()))
}

/// Waits up to `timeout` for each relay's report on the handoff it was
/// given, asking every relay still silent about once a second (sooner at
/// first). Stops early when `cancel` is set.
pub fn wait(
    r: &Renderer<'_>,
    report: &Report,
    desired: &Desired,
    backends: &dyn Backends,
    timeout: Duration,
    cancel: Option<&Arc<AtomicBool>>,
) -> Vec<RelayResult> {
    let topo = &r.checked.topo;
    let start = Instant::now();
    // Each relay with its place in the report (tree order).
    let mut pending: Vec<(usize, Seen, Option<RelayReport>)> = handed(r, report, desired)
        .into_iter()
        .map(|(c, s)| (c, s, None))
        .collect();
    let order: Vec<usize> = pending.iter().map(|(c, _, _)| *c).collect();
    let mut done: Vec<(usize, RelayResult)> = Vec::new();
    // A relay whose Lease no agent holds is not waited for: nothing would
    // answer before the timeout.
    let now = std::time::SystemTime::now();
    pending.retain(|(c, seen, _)| {
        let backend = backends.backend(topo.name(*c));
        if handoff::lease_alive(backend.as_ref(), now) {
            return true;
        }
        let last = handoff::read_report(backend.as_ref()).ok().flatten();
        let outcome = match last.as_ref().and_then(|(_, rep)| judge(rep, seen)) {
            // It reported on this very handoff before it went silent.
            Some(o) => o,
            None => RelayOutcome::Silent {
                last: last.map(|(_, rep)| rep),
            },
        };
        done.push((*c, result(r, *c, seen.clone(), outcome)));
        false
    });
    poll(timeout, cancel, || {
        pending.retain_mut(|(c, seen, last)| {
            let backend = backends.backend(topo.name(*c));
            let outcome = match handoff::read_report(backend.as_ref()) {
                Ok(Some((_, rep))) => {
                    let judged = judge(&rep, seen);
                    *last = Some(rep);
                    judged
                }
                Ok(None) => None,
                Err(e) => Some(RelayOutcome::Unreadable(e.to_string())),
            };
            match outcome {
                Some(outcome) => {
                    done.push((*c, result(r, *c, seen.clone(), outcome)));
                    false
                }
                None => true,
            }
        });
        pending.is_empty().then_some(())
    });
    let waited = start.elapsed();
    for (c, seen, last) in pending {
        done.push((
            c,
            result(r, c, seen, RelayOutcome::Waiting { waited, last }),
        ));
    }
    done.sort_by_key(|(c, _)| order.iter().position(|o| o == c));
    done.into_iter().map(|(_, res)| res).collect()
}

fn result(r: &Renderer<'_>, c: usize, handed: Seen, outcome: RelayOutcome) -> RelayResult {
    let topo = &r.checked.topo;
    RelayResult {
        relay: topo.name(c).to_string(),
        below: topo.subtree(c).len() - 1,
        handed,
        outcome,
    }
}

/// Asks `f` until it answers, at most `timeout` (once when that is zero)
/// and until `cancel` is set: sooner at first, then about once a second.
fn poll<T>(
    timeout: Duration,
    cancel: Option<&Arc<AtomicBool>>,
    mut f: impl FnMut() -> Option<T>,
) -> Option<T> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(50);
    loop {
        if let Some(t) = f() {
            return Some(t);
        }
        let left = timeout.saturating_sub(start.elapsed());
        if left.is_zero() || cancel.is_some_and(|c| c.load(Ordering::SeqCst)) {
            return None;
        }
        std::thread::sleep(pause.min(left));
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

/// The relay this run handed down to that reconciles cluster `c`: its
/// nearest ancestor this run rendered that is a relay. `None` for a cluster
/// this run reconciles itself (or reaches no relay above).
pub fn relay_of(r: &Renderer<'_>, desired: &Desired, c: usize) -> Option<usize> {
    let checked = r.checked;
    if desired.has(c) {
        return None;
    }
    let mut at = checked.topo.parent(c);
    while let Some(a) = at {
        if desired.has(a) && checked.cluster(a).spec.relay.is_some() {
            return Some(a);
        }
        at = checked.topo.parent(a);
    }
    None
}

/// A health gate's verdicts on the clusters of a stage below relays, as
/// the relays report them.
#[derive(Debug, Default)]
pub struct Verdicts {
    /// Per cluster: healthy, or why not.
    pub clusters: Vec<(String, Result<(), String>)>,
    /// Unhealthy clusters the bounded reports do not name.
    pub unnamed: usize,
    /// Whether a relay applied anything of the stage (its pause then
    /// applies, as for a stage that changed something).
    pub changed: bool,
}

/// The gate verdicts of `workload` on `members` (clusters below relays
/// this run handed down to), from each relay's report on the handoff it
/// holds now, waiting at most `wait` for it. `Err` says what the gate
/// still waits for: a report, or a member the handoff still held back
/// (`down`; the next run's handoff releases it).
#[allow(clippy::too_many_arguments)]
pub fn gate_verdicts(
    r: &Renderer<'_>,
    desired: &Desired,
    backends: &dyn Backends,
    workload: &str,
    members: &[usize],
    down: &relay::Above,
    wait: Option<Duration>,
    cancel: Option<&Arc<AtomicBool>>,
) -> Result<Verdicts, String> {
    let topo = &r.checked.topo;
    let mut by_relay: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for &c in members {
        let name = topo.name(c);
        if down.held.get(name).is_some_and(|ws| ws.contains(workload)) {
            return Err(format!(
                "{name}, held back below its relay until the next run hands the stage down"
            ));
        }
        if let Some(rl) = relay_of(r, desired, c) {
            by_relay.entry(rl).or_default().push(c);
        }
    }
    let mut out = Verdicts {
        changed: !members.is_empty(),
        ..Verdicts::default()
    };
    for (rl, cs) in by_relay {
        let relay_name = topo.name(rl);
        let backend = backends.backend(relay_name);
        // One read of the index: its digest and the report in its status.
        let current = || {
            handoff::read_report(backend.as_ref())
                .ok()
                .flatten()
                .filter(|(digest, rep)| {
                    rep.observed.as_ref().is_some_and(|o| &o.digest == digest)
                        && rep.clusters.pending == 0
                })
                .map(|(_, rep)| rep)
        };
        let Some(report) = poll(wait.unwrap_or_default(), cancel, current) else {
            return Err(format!("relay {relay_name}'s report on its handoff"));
        };
        let gate = report.gates.get(workload).cloned().unwrap_or_default();
        out.unnamed += gate.unhealthy.saturating_sub(gate.failed.len());
        for c in cs {
            let name = topo.name(c);
            let verdict = match gate.failed.iter().find(|f| f.cluster == name) {
                Some(f) => Err(format!("{} (reported by relay {relay_name})", f.message)),
                None => Ok(()),
            };
            out.clusters.push((name.to_string(), verdict));
        }
    }
    Ok(out)
}

/// Where a relay's subtree stands against what this level hands it now,
/// as `diff` reports it: the clusters below a relay are not read from
/// here, so drift below a relay is what the relay reports.
#[derive(Debug, Clone)]
pub struct Standing {
    pub relay: String,
    pub below: usize,
    /// What this level would hand the relay now.
    pub handing: Seen,
    pub state: RelayState,
}

#[derive(Debug, Clone)]
pub enum RelayState {
    /// The relay applied this very handoff to its whole subtree.
    InSync(RelayReport),
    /// The relay works from another handoff, or its last round failed
    /// somewhere; its report.
    Differs(RelayReport),
    /// No agent holds its Lease; its last report, if any.
    Silent(Option<RelayReport>),
    /// No report yet.
    Unreported,
}

impl Standing {
    pub fn differs(&self) -> bool {
        !matches!(self.state, RelayState::InSync(_))
    }
}

/// Each relay the run's report reached, against the handoff this level
/// would write it now (`desired`, rendered by the dry run).
pub fn standings(
    r: &Renderer<'_>,
    report: &Report,
    desired: &Desired,
    backends: &dyn Backends,
) -> Vec<Standing> {
    let topo = &r.checked.topo;
    let now = std::time::SystemTime::now();
    let mut out = Vec::new();
    for (c, handing) in handed(r, report, desired) {
        let backend = backends.backend(topo.name(c));
        let alive = handoff::lease_alive(backend.as_ref(), now);
        let last = handoff::read_report(backend.as_ref())
            .ok()
            .flatten()
            .map(|(_, rep)| rep);
        let state = match (alive, last) {
            (false, last) => RelayState::Silent(last),
            (true, None) => RelayState::Unreported,
            (true, Some(rep)) if rep.applied(&handing) => RelayState::InSync(rep),
            (true, Some(rep)) => RelayState::Differs(rep),
        };
        out.push(Standing {
            relay: topo.name(c).to_string(),
            below: topo.subtree(c).len() - 1,
            handing,
            state,
        });
    }
    out
}
