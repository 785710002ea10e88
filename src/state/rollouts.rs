//! Where each workload's rollout stands, kept in the state folder
//! (`rollouts.json`) between runs: a pause, a failed stage and the revision
//! to roll back to all outlive one `canopy apply`. The transitions are pure
//! functions of a record and what a run observed, so they are unit-tested
//! without clusters.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::StateError;
use crate::core::model::Pause;

/// Every workload's rollout, by workload name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rollouts {
    #[serde(default)]
    pub workloads: BTreeMap<String, Record>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Phase {
    /// Stage `stage` is being applied (or is next to be).
    Progressing,
    /// Stage `stage` passed; the next waits for `pausedUntil`, or for
    /// `canopy rollout continue` when there is none.
    Paused,
    /// Stage `stage` failed its health gate and was left as it is.
    Failed,
    /// Stage `stage` failed its health gate and was applied again at the
    /// revision the rollout started from.
    RolledBack,
    /// Every stage passed.
    Complete,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Progressing => "progressing",
            Phase::Paused => "paused",
            Phase::Failed => "failed",
            Phase::RolledBack => "rolled back",
            Phase::Complete => "complete",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ClusterPhase {
    Pending,
    Applying,
    Healthy,
    Failed,
    RolledBack,
}

impl ClusterPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            ClusterPhase::Pending => "pending",
            ClusterPhase::Applying => "applying",
            ClusterPhase::Healthy => "healthy",
            ClusterPhase::Failed => "failed",
            ClusterPhase::RolledBack => "rolled back",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterRecord {
    pub state: ClusterPhase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StageRecord {
    pub name: String,
    /// Its clusters by name.
    pub clusters: BTreeMap<String, ClusterRecord>,
}

/// A revision to go back to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Base {
    /// As the revision annotation writes it (`v1.0.0@<sha>`).
    pub revision: String,
    /// The commit to render; `None` outside Git.
    pub commit: Option<String>,
}

/// One workload's rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Record {
    /// A hash of what is rolled out (see `Renderer::rollout_hashes`): a new
    /// one starts a new rollout.
    pub target: String,
    /// The revision being rolled out.
    pub revision: Base,
    /// The revision of the last complete rollout: what a failed stage goes
    /// back to. `None` for the first rollout canopy sees.
    #[serde(default)]
    pub from: Option<Base>,
    /// Index of the stage the phase is about.
    pub stage: usize,
    pub phase: Phase,
    /// RFC 3339; with `Paused`, when the next stage starts (absent: manual).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_until: Option<String>,
    /// Why the phase is what it is, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub stages: Vec<StageRecord>,
    /// RFC 3339 of the last change of this record.
    pub updated: String,
}

const FILE: &str = "rollouts.json";

fn requests(dir: &Path) -> PathBuf {
    dir.join("rollout-continue")
}

pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// `rollouts.json` (none yet: no rollout started).
impl crate::state::Record for Rollouts {
    const FILE: &'static str = FILE;
}

/// Asks the next run to go on with `workload`'s rollout at `target`: a
/// file, so that it works while a `watch` holds the state folder's lock, and
/// so that a request made for one rollout cannot continue a later one.
pub fn request_continue(dir: &Path, workload: &str, target: &str) -> Result<(), StateError> {
    crate::state::replace(&requests(dir), workload, target.as_bytes())
}

/// The continue requests waiting, by workload (their targets); they are
/// removed with [`clear_request`] once acted on.
pub fn pending_requests(dir: &Path) -> BTreeMap<String, String> {
    let Ok(entries) = std::fs::read_dir(requests(dir)) else {
        return BTreeMap::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                return None;
            }
            let target = std::fs::read_to_string(e.path()).ok()?;
            Some((name, target.trim().to_string()))
        })
        .collect()
}

pub fn clear_request(dir: &Path, workload: &str) {
    let _ = crate::sys::files::remove(&requests(dir), workload);
}

impl Record {
    /// A new rollout of `target` at `revision`. It goes back to the
    /// revision of `prev` when that one completed, else to where `prev`
    /// would have gone back (a rollout replaced before it finished never
    /// became the good revision).
    pub fn begin(
        prev: Option<&Record>,
        target: String,
        revision: Base,
        stages: Vec<StageRecord>,
        now: SystemTime,
    ) -> Record {
        let from = prev.and_then(|p| match p.phase {
            Phase::Complete => Some(p.revision.clone()),
            _ => p.from.clone(),
        });
        Record {
            target,
            revision,
            from,
            stage: 0,
            phase: Phase::Progressing,
            paused_until: None,
            message: None,
            stages,
            updated: rfc3339(now),
        }
    }

    /// The stage a cluster is in, and its record.
    pub fn cluster_mut(&mut self, cluster: &str) -> Option<&mut ClusterRecord> {
        self.stages
            .iter_mut()
            .find_map(|s| s.clusters.get_mut(cluster))
    }

    /// Whether the workload is held back on clusters of stage `i`: stages
    /// the rollout has not reached, and a stage that was rolled back.
    pub fn holds(&self, i: usize) -> bool {
        match self.phase {
            Phase::Complete => false,
            Phase::Progressing | Phase::Failed => i > self.stage,
            Phase::Paused => i > self.stage,
            Phase::RolledBack => i >= self.stage,
        }
    }

    /// A pause that is over starts the next stage.
    pub fn resume_if_due(&mut self, now: SystemTime) -> bool {
        let due = self.phase == Phase::Paused
            && self
                .paused_until
                .as_deref()
                .and_then(|u| humantime::parse_rfc3339(u).ok())
                .is_some_and(|u| u <= now);
        if due {
            self.next_stage(now);
        }
        due
    }

    /// `canopy rollout continue`: a paused rollout starts its next stage; a
    /// failed or rolled-back one tries its failed stage again.
    pub fn resume(&mut self, now: SystemTime) -> Result<(), String> {
        match self.phase {
            Phase::Paused => {
                self.next_stage(now);
                Ok(())
            }
            Phase::Failed | Phase::RolledBack => {
                self.phase = Phase::Progressing;
                self.message = Some(format!(
                    "{} is tried again (rollout continue)",
                    self.stages[self.stage].name
                ));
                self.updated = rfc3339(now);
                Ok(())
            }
            Phase::Progressing | Phase::Complete => Err(format!(
                "the rollout is {}: there is nothing to continue",
                self.phase.as_str()
            )),
        }
    }

    fn next_stage(&mut self, now: SystemTime) {
        self.stage += 1;
        self.phase = Phase::Progressing;
        self.paused_until = None;
        self.message = None;
        self.updated = rfc3339(now);
    }

    /// The health gate of the current stage has been taken: `unhealthy`
    /// clusters (with why) of its `size`, `allowed` of which may fail.
    /// Returns whether the rollout goes on to another stage now.
    pub fn gate(
        &mut self,
        unhealthy: usize,
        allowed: usize,
        changed: bool,
        pause: Pause,
        now: SystemTime,
    ) -> Gate {
        self.updated = rfc3339(now);
        let name = self.stages[self.stage].name.clone();
        if unhealthy > allowed {
            self.phase = Phase::Failed;
            self.message = Some(format!(
                "{name}: {unhealthy} cluster(s) unhealthy, {allowed} allowed (maxUnavailable)"
            ));
            return Gate::Failed;
        }
        if self.stage + 1 >= self.stages.len() {
            self.phase = Phase::Complete;
            self.message = None;
            return Gate::Complete;
        }
        // A stage that changed nothing carries no risk to wait out.
        match (changed, pause) {
            (true, Pause::Manual) => {
                self.phase = Phase::Paused;
                self.paused_until = None;
                self.message = Some(format!(
                    "{name} is healthy; `canopy rollout continue` starts {}",
                    self.stages[self.stage + 1].name
                ));
                Gate::Paused
            }
            (true, Pause::For(d)) => {
                self.phase = Phase::Paused;
                self.paused_until = Some(rfc3339(now + d));
                self.message = Some(format!(
                    "{name} is healthy; {} starts after {}",
                    self.stages[self.stage + 1].name,
                    humantime::format_duration(d)
                ));
                Gate::Paused
            }
            _ => {
                self.next_stage(now);
                Gate::Next
            }
        }
    }

    /// When the pause ends, if this is a timed pause.
    pub fn paused_until(&self) -> Option<SystemTime> {
        (self.phase == Phase::Paused)
            .then(|| humantime::parse_rfc3339(self.paused_until.as_deref()?).ok())
            .flatten()
    }

    /// Time left of a timed pause at `now`.
    pub fn pause_left(&self, now: SystemTime) -> Option<Duration> {
        self.paused_until()
            .map(|u| u.duration_since(now).unwrap_or_default())
    }
}

/// What a health gate decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// The next stage starts in this run.
    Next,
    Paused,
    Complete,
    Failed,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Record as _;

    fn stages(n: usize) -> Vec<StageRecord> {
        (0..n)
            .map(|i| StageRecord {
                name: format!("stage-{}", i + 1),
                clusters: BTreeMap::new(),
            })
            .collect()
    }

    fn base(r: &str) -> Base {
        Base {
            revision: r.into(),
            commit: Some(r.into()),
        }
    }

    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    #[test]
    fn stages_pass_pause_and_complete() {
        let mut r = Record::begin(None, "h1".into(), base("a"), stages(3), t0());
        assert_eq!(r.from, None);
        assert!(!r.holds(0) && r.holds(1) && r.holds(2));
        let pause = Pause::For(Duration::from_secs(60));
        assert_eq!(r.gate(0, 0, true, pause, t0()), Gate::Paused);
        assert!(r.holds(1), "paused: the next stage waits");
        assert!(!r.resume_if_due(t0() + Duration::from_secs(59)));
        assert_eq!(
            r.pause_left(t0() + Duration::from_secs(59)),
            Some(Duration::from_secs(1))
        );
        assert!(r.resume_if_due(t0() + Duration::from_secs(60)));
        assert_eq!((r.stage, r.phase), (1, Phase::Progressing));
        // Nothing changed in stage 2: no pause.
        assert_eq!(r.gate(0, 0, false, pause, t0()), Gate::Next);
        assert_eq!(r.gate(0, 0, true, pause, t0()), Gate::Complete);
        assert!(!r.holds(2));
        let next = Record::begin(Some(&r), "h2".into(), base("b"), stages(3), t0());
        assert_eq!(
            next.from,
            Some(base("a")),
            "the completed rollout is the base"
        );
        let after = Record::begin(Some(&next), "h3".into(), base("c"), stages(3), t0());
        assert_eq!(after.from, Some(base("a")), "an unfinished one is not");
    }

    #[test]
    fn failure_beyond_max_unavailable_stops_and_continue_retries() {
        let mut r = Record::begin(None, "h".into(), base("a"), stages(3), t0());
        assert_eq!(r.gate(1, 1, true, Pause::None, t0()), Gate::Next);
        assert_eq!(r.gate(2, 1, true, Pause::None, t0()), Gate::Failed);
        assert_eq!((r.stage, r.phase), (1, Phase::Failed));
        assert!(!r.holds(1) && r.holds(2));
        r.phase = Phase::RolledBack;
        assert!(r.holds(1), "a rolled-back stage stays at the old revision");
        r.resume(t0()).unwrap();
        assert_eq!((r.stage, r.phase), (1, Phase::Progressing));
        assert!(r.resume(t0()).is_err());
    }

    #[test]
    fn manual_pause_waits_for_continue() {
        let mut r = Record::begin(None, "h".into(), base("a"), stages(2), t0());
        assert_eq!(r.gate(0, 0, true, Pause::Manual, t0()), Gate::Paused);
        assert!(!r.resume_if_due(t0() + Duration::from_secs(86_400 * 365)));
        r.resume(t0()).unwrap();
        assert_eq!((r.stage, r.phase), (1, Phase::Progressing));
    }

    #[test]
    fn saved_loaded_and_requests() {
        let dir = tempfile::tempdir().unwrap();
        let mut all = Rollouts::default();
        all.workloads.insert(
            "web".into(),
            Record::begin(None, "h".into(), base("a"), stages(2), t0()),
        );
        all.save(dir.path()).unwrap();
        assert_eq!(Rollouts::load(dir.path()).unwrap(), all);
        request_continue(dir.path(), "web", "h").unwrap();
        assert_eq!(
            pending_requests(dir.path()),
            BTreeMap::from([("web".to_string(), "h".to_string())])
        );
        clear_request(dir.path(), "web");
        assert!(pending_requests(dir.path()).is_empty());
    }
}
