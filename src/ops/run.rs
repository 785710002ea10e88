//! The run sequence, once. Every command that looks at clusters, each
//! `watch` round and (next) the relay agent go through it:
//!
//! ```text
//! FleetSource::open ─▶ load ─▶ Session::open ─▶ place ─▶ render ─▶ apply ─▶ record
//!  (folder or Git)   (checked)  (state, backends, (recheck down   (once)   (waves,   (health)
//!                                records)          clusters,                gates)
//!                                                  failover)
//! ```
//!
//! [`Session::run`] is the one-shot form (targets from `--cluster` and
//! `--subtree`, orphans from the state folder); `watch` calls
//! [`Session::place`], [`Session::apply`] and [`Session::record`] itself
//! because it picks its targets from render fingerprints, and keeps its
//! session across rounds.

use crate::state::Record;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::SystemTime;

use super::apply::{Desired, Options, Pass, Report};
use super::error::OpsError;
use super::progress::Progress;
use super::rollout::{self, Event};
use crate::backend::fleet::{Backends, FleetBackends};
use crate::backend::kube::KubeOptions;
use crate::backend::local::LocalStore;
use crate::backend::ApplyMeta;
use crate::core::diag::Diagnostics;
use crate::core::failover::Health;
use crate::core::render::{failed_over, Renderer};
use crate::core::validate::Checked;
use crate::source::input::{Input, Loaded};
use crate::source::remote::{self, GitRepo, RepoSpec};
use crate::source::Revision;
use crate::state::rollouts::Rollouts;

/// Where a command was told to read its fleet.
pub enum Location {
    /// A fleet folder.
    Dir(PathBuf),
    /// `--repo` with `--ref` and `--path`.
    Repo(RepoSpec),
}

/// A fleet source, opened: where the fleet is read from, and the defaults
/// that follow from it.
pub struct FleetSource {
    pub input: Input,
    /// Where relative kubeconfig paths start: the fleet folder, or the
    /// current folder for a repository.
    pub base: PathBuf,
    /// The local backend's default state folder.
    pub state: PathBuf,
    /// How messages name the fleet.
    pub label: String,
}

impl FleetSource {
    /// Opens a folder as it is, or a repository (a remote is cloned into
    /// the cache or fetched).
    pub fn open(at: Location) -> Result<FleetSource, OpsError> {
        match at {
            Location::Dir(dir) => Ok(FleetSource {
                input: Input::Dir(dir.clone()),
                base: dir.clone(),
                state: dir.join(".canopy").join("state"),
                label: dir.display().to_string(),
            }),
            Location::Repo(spec) => {
                let reference = spec.reference.clone();
                let repo = GitRepo::open(spec)?;
                let path = &repo.spec().path;
                let state = state_home().join(remote::cache_name(&format!(
                    "{}/{path}",
                    repo.display_url().trim_end_matches('/')
                )));
                let label = if path.is_empty() {
                    format!("{} at {reference}", repo.display_url())
                } else {
                    format!("{} at {reference}, folder {path}", repo.display_url())
                };
                Ok(FleetSource {
                    input: Input::Git(repo),
                    base: std::env::current_dir().unwrap_or_default(),
                    state,
                    label,
                })
            }
        }
    }

    /// Reads and checks the fleet; an invalid one is an error with every
    /// diagnostic.
    pub fn load(&self, name: Option<&str>) -> Result<Loaded, OpsError> {
        self.load_with(name, &mut |_| Diagnostics::default())
    }

    /// [`FleetSource::load`], with `extra` adding to the fleet before it
    /// is checked (joined members).
    pub fn load_with(
        &self,
        name: Option<&str>,
        extra: &mut dyn FnMut(&mut crate::core::model::Fleet) -> Diagnostics,
    ) -> Result<Loaded, OpsError> {
        use crate::source::input::{PipelineError, SourceError};
        self.input.load_with(name, extra).map_err(|e| match e {
            SourceError::Pipeline(PipelineError::Invalid(diags)) => OpsError::Invalid {
                label: self.label.clone(),
                diags,
            },
            SourceError::Pipeline(PipelineError::Load(e)) => OpsError::Load(e),
            SourceError::Git(e) => OpsError::Git(e),
        })
    }

    /// The state folder: the one given, or this source's default. One inside
    /// a fleet folder must stay inside: a folder on its way there (the
    /// fleet's `.canopy`) that is a symbolic link is refused.
    pub fn state_dir(&self, given: Option<&PathBuf>) -> Result<PathBuf, OpsError> {
        let dir = given.cloned().unwrap_or_else(|| self.state.clone());
        if let Input::Dir(fleet) = &self.input {
            crate::sys::files::no_link_below(fleet, &dir).map_err(|source| {
                OpsError::State(crate::state::StateError::Io {
                    path: dir.clone(),
                    source,
                })
            })?;
        }
        Ok(dir)
    }
}

/// `$XDG_STATE_HOME/canopy`, else `~/.local/state/canopy`: where a fleet
/// read from a repository keeps its local-backend state (a cache could be
/// wiped; this is the state of clusters).
fn state_home() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("canopy");
    }
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".local/state/canopy")
}

/// Whether a run may write to the state folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Takes the state folder's lock: `apply`, `watch`.
    Write,
    /// Reads without the lock: dry runs, `diff`, `status`.
    Read,
}

/// `--cluster` and `--subtree`: the clusters a run is limited to.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub clusters: Vec<String>,
    pub subtrees: Vec<String>,
}

impl Selection {
    pub fn is_all(&self) -> bool {
        self.clusters.is_empty() && self.subtrees.is_empty()
    }

    /// The cluster indexes named (`None`: every cluster). `unknown` is told
    /// each name the fleet does not have, with whether it was a subtree;
    /// it decides whether that is an error.
    pub fn resolve<E>(
        &self,
        checked: &Checked,
        mut unknown: impl FnMut(&str, bool) -> Result<(), E>,
    ) -> Result<Option<BTreeSet<usize>>, E> {
        if self.is_all() {
            return Ok(None);
        }
        let topo = &checked.topo;
        let mut set = BTreeSet::new();
        for n in &self.clusters {
            match topo.get(n) {
                Some(c) => {
                    set.insert(c);
                }
                None => unknown(n, false)?,
            }
        }
        for n in &self.subtrees {
            match topo.get(n) {
                Some(c) => set.extend(topo.subtree(c).iter().copied()),
                None => unknown(n, true)?,
            }
        }
        Ok(Some(set))
    }

    /// As [`Selection::resolve`], where a name the fleet lacks is an error.
    pub fn resolve_strict(&self, checked: &Checked) -> Result<Option<BTreeSet<usize>>, OpsError> {
        self.resolve(checked, |n, _| Err(OpsError::unknown_cluster(checked, n)))
    }
}

/// The clusters both in `a` and in `b`, where `None` is every cluster.
fn within(a: Option<BTreeSet<usize>>, b: Option<BTreeSet<usize>>) -> Option<BTreeSet<usize>> {
    match (a, b) {
        (None, x) | (x, None) => x,
        (Some(a), Some(b)) => Some(a.intersection(&b).copied().collect()),
    }
}

/// The fleet placed as if every cluster were healthy: what `render`, `tree`,
/// `diff --base` and a rollout's stages show, with no cluster asked.
pub fn placed_healthy(checked: &Checked) -> Result<Renderer<'_>, OpsError> {
    let r = Renderer::new(checked);
    if r.diagnostics.has_errors() {
        return Err(OpsError::Place(r.diagnostics.clone()));
    }
    Ok(r)
}

/// The fleet placed for one run: the render, and the time the health
/// records were read at (failover and the records written after).
pub struct Placed<'c> {
    pub renderer: Renderer<'c>,
    pub at: SystemTime,
    /// The staged rollouts as this level hands them down to its relays:
    /// the root's own, from its records; a relay's, as handed to it.
    pub above: crate::core::relay::Above,
    /// A relay follows the rollouts its parent level runs (`above`)
    /// instead of running them.
    pub handed: bool,
    /// By revision: the fleets `above`'s rollbacks below relays go back
    /// to (the root's from Git, a relay's from its handoff).
    pub bases: std::collections::BTreeMap<String, crate::core::relay::BaseFleet>,
}

/// What one run did.
pub struct Run<'c> {
    pub placed: Placed<'c>,
    /// The objects the run rendered, once.
    pub desired: Desired,
    pub report: Report,
    pub events: Vec<Event>,
    /// The health records could not be saved after the clusters were
    /// written: the report stands, and this is said after it.
    pub unrecorded: Option<OpsError>,
    /// Per relay child written to: what its report says of its subtree.
    pub relays: Vec<super::relays::RelayResult>,
}

impl Run<'_> {
    /// A cluster of the fleet failed or was skipped, a workload was left
    /// pending on one (its dependency not healthy), an orphan could not be
    /// cleaned up, or a rollout's stage failed its health gate. An orphan
    /// left in place is reported, not a failure.
    pub fn failed(&self) -> bool {
        use super::apply::Outcome as O;
        self.report.clusters.iter().any(|c| match &c.outcome {
            O::Failed { .. } | O::Skipped { .. } => true,
            O::Changed(ch) | O::Unchanged(ch) => !ch.pending.is_empty(),
        }) || self
            .report
            .orphans
            .iter()
            .any(|o| matches!(o.outcome, O::Failed { .. }))
            || self.events.iter().any(|e| e.failed)
            || self.relays.iter().any(|r| r.failed())
    }
}

/// A run's side of the world, opened once: the state folder, each
/// cluster's backend, and canopy's records (who is down since when, where
/// each rollout stands). A one-shot command opens one; `watch` keeps one
/// across rounds.
pub struct Session<'i> {
    /// Where the fleet is read from; `None` for a relay agent, which is
    /// handed its fleet and has no Git history to roll back to.
    pub input: Option<&'i Input>,
    pub state: PathBuf,
    pub backends: FleetBackends,
    pub health: Health,
    pub rollouts: Rollouts,
    /// Set by a signal handler: runs stop between clusters.
    pub cancel: Option<Arc<AtomicBool>>,
    /// Where runs count the clusters they are done with.
    pub progress: Option<Arc<Progress>>,
    /// The records in the fleet's root cluster ([`super::records`]):
    /// `None` until read; then the version read or written (`None`: none
    /// there yet) and the records as they were then.
    records: Option<(Option<String>, (String, String))>,
    /// Whether the run may write the state folder (its records).
    access: Access,
    /// Keep what each placement computed for the next revision's
    /// ([`crate::core::carry`]): set by a loop that places revision after
    /// revision (`watch`).
    pub carry_over: bool,
    carry: Option<crate::core::carry::Carry>,
}

impl<'i> Session<'i> {
    /// Opens the state folder (taking its lock for [`Access::Write`]) and
    /// reads the records; a corrupt record is an error.
    pub fn open(
        input: &'i Input,
        state: PathBuf,
        access: Access,
        base: PathBuf,
        kube: KubeOptions,
    ) -> Result<Self, OpsError> {
        Self::opened(Some(input), state, access, base, kube, true)
    }

    /// As [`Session::open`], but a corrupt record is warned about and
    /// started afresh, so that it cannot stop a long-running loop (`watch`).
    pub fn open_lenient(
        input: &'i Input,
        state: PathBuf,
        access: Access,
        base: PathBuf,
        kube: KubeOptions,
    ) -> Result<Self, OpsError> {
        Self::opened(Some(input), state, access, base, kube, false)
    }

    /// A relay agent's session: its own state folder (locked) for the
    /// clusters of its subtree that live in the local backend and for its
    /// records; no fleet source, since the fleet is handed to it.
    /// Kubeconfig paths of its subtree's clusters start at `base`.
    pub fn for_relay(state: PathBuf, base: PathBuf, kube: KubeOptions) -> Result<Self, OpsError> {
        Self::opened(None, state, Access::Write, base, kube, false)
    }

    fn opened(
        input: Option<&'i Input>,
        state: PathBuf,
        access: Access,
        base: PathBuf,
        kube: KubeOptions,
        strict: bool,
    ) -> Result<Self, OpsError> {
        let store = match access {
            Access::Write => LocalStore::open(&state)?,
            Access::Read => LocalStore::open_read_only(&state),
        };
        let (health, rollouts) = if strict {
            (Health::load(&state)?, Rollouts::load(&state)?)
        } else {
            (
                Health::load_or_warn(&state, "every cluster counts as healthy"),
                Rollouts::load_or_warn(&state, "rollouts start over"),
            )
        };
        Ok(Session {
            input,
            backends: FleetBackends::new(store, base, kube),
            state,
            health,
            rollouts,
            cancel: None,
            progress: None,
            records: None,
            access,
            carry_over: false,
            carry: None,
        })
    }

    /// Places the fleet for this run: the backends follow its clusters,
    /// every cluster recorded down is asked whether it answers now, and
    /// workloads are scheduled with failover as the records then say.
    pub fn place<'c>(&mut self, checked: &'c Checked) -> Result<Placed<'c>, OpsError> {
        self.backends
            .follow(&checked.fleet)
            .map_err(OpsError::Runtime)?;
        self.read_records(checked)?;
        self.inputs(checked, None);
        let at = SystemTime::now();
        let failed = failed_over(checked, &self.health, at);
        let renderer = Renderer::carrying(checked, &failed, self.carry.as_ref());
        if renderer.diagnostics.has_errors() {
            return Err(OpsError::Place(renderer.diagnostics.clone()));
        }
        if self.carry_over {
            self.carry = Some(crate::core::carry::Carry::of(&renderer, &failed));
        }
        let mut above = rollout::above(&renderer, &self.rollouts, &self.state, at);
        let mut bases = std::collections::BTreeMap::new();
        super::relay_rollback::load(
            self.input,
            checked,
            &mut above,
            &std::collections::BTreeMap::new(),
            &mut bases,
        );
        Ok(Placed {
            renderer,
            at,
            above,
            handed: false,
            bases,
        })
    }

    /// As [`Session::place`], for a relay: the subtree of `relay` alone,
    /// each Divided workload with the share its parent level gave it
    /// (`shares`), failing over among the subtree's clusters as this
    /// relay's own records say; with the fleets the rollbacks handed to it
    /// go back to (`bases`).
    pub fn place_subtree<'c>(
        &mut self,
        checked: &'c Checked,
        relay: usize,
        shares: &std::collections::BTreeMap<String, u32>,
        above: &crate::core::relay::Above,
        bases: std::collections::BTreeMap<String, crate::core::relay::BaseFleet>,
    ) -> Result<Placed<'c>, OpsError> {
        self.backends
            .follow(&checked.fleet)
            .map_err(OpsError::Runtime)?;
        self.inputs(checked, Some(relay));
        let at = SystemTime::now();
        let failed = failed_over(checked, &self.health, at);
        let renderer = Renderer::for_subtree(checked, relay, shares, &failed);
        if renderer.diagnostics.has_errors() {
            return Err(OpsError::Place(renderer.diagnostics.clone()));
        }
        Ok(Placed {
            renderer,
            at,
            above: above.clone(),
            handed: true,
            bases,
        })
    }

    /// What the level `level` (`None`: the root process) reads before it
    /// places: who answers now ([`Self::hear`]), the live capacity of the
    /// clusters that want it, and the replicas calm workloads keep.
    fn inputs(&mut self, checked: &Checked, level: Option<usize>) {
        self.hear(checked, level);
        super::capacity::measure(
            checked,
            level,
            &self.backends,
            &self.state,
            self.access == Access::Write,
        );
        super::calm::previous(checked, &self.state);
    }

    /// Brings the health records up to date before placing, for the level
    /// `level` (`None`: the root process): the clusters it reaches that
    /// were down are asked again, and the relays it hands down to are
    /// heard through their Leases.
    fn hear(&mut self, checked: &Checked, level: Option<usize>) {
        let by = crate::core::relay::reconcilers(checked);
        let topo = &checked.topo;
        let mine = |c: &str| topo.get(c).is_none_or(|i| by[i] == level);
        super::health::recheck(&mut self.health, &self.backends, mine);
        super::health::hear_relays(
            &mut self.health,
            checked,
            level,
            &self.backends,
            SystemTime::now(),
        );
    }

    /// Clusters with local state that `checked` no longer has.
    pub fn orphans(&self, checked: &Checked) -> Result<Vec<String>, OpsError> {
        Ok(self
            .backends
            .local()
            .clusters_on_disk()?
            .into_iter()
            .filter(|n| checked.topo.get(n).is_none())
            .collect())
    }

    /// Renders the clusters of `targets` (`None`: all) once for the run;
    /// a render error stops it before anything is written.
    pub fn render(
        &self,
        placed: &Placed<'_>,
        targets: Option<&BTreeSet<usize>>,
        revision: &Revision,
    ) -> Result<Desired, Diagnostics> {
        let mut desired = Desired::render(&placed.renderer, targets)?;
        // A relay places an old fleet's slice with its own failover; the
        // root renders an old fleet whole, as its own rollback does.
        let bases = super::relay_rollback::renderers(&placed.bases, |b| match b.relay {
            Some(_) => crate::core::render::failed_over(&b.checked, &self.health, placed.at),
            None => Vec::new(),
        });
        if placed.handed {
            super::relay_rollback::substitute(
                &mut desired,
                &placed.renderer,
                &placed.above,
                &bases,
            );
        }
        super::handoff::add_to(
            &mut desired,
            &placed.renderer,
            &revision.to_string(),
            &placed.above,
            &bases,
        );
        Ok(desired)
    }

    /// Applies (or, with `dry_run`, computes) the rendered fleet down the
    /// tree with staged rollouts: every cluster of `desired`, the rollout
    /// records deciding which workloads are held back where (and saved as
    /// they move unless this is a dry run). A record that cannot be saved
    /// is in [`rollout::Applied::unsaved`], beside the report.
    pub fn apply(
        &mut self,
        placed: &Placed<'_>,
        desired: &mut Desired,
        revision: &Revision,
        orphans: &[String],
        opts: &Options,
    ) -> rollout::Applied {
        let mut meta = ApplyMeta::new(revision, SystemTime::now());
        meta.impersonate = crate::backend::Impersonation::of(placed.renderer.checked);
        let pass = Pass {
            cancel: self.cancel.clone(),
            progress: self.progress.clone(),
            ..Pass::default()
        };
        let ctx = rollout::Ctx {
            input: self.input,
            revision,
            state: &self.state,
            now: placed.at,
            handed: placed.handed.then_some(&placed.above),
            down: &placed.above,
            bases: &placed.bases,
        };
        rollout::apply(
            &placed.renderer,
            desired,
            &self.backends,
            orphans,
            &meta,
            opts,
            &pass,
            &mut self.rollouts,
            &ctx,
        )
    }

    /// The record of clusters in sync, when this run may use it: asked
    /// to, in the root process (a relay agent is handed its fleet whole),
    /// no rollback fleet to render, no health to wait for, and no rollout
    /// moving or asked to continue.
    fn settled(
        &self,
        placed: &Placed<'_>,
        opts: &Options,
    ) -> Option<crate::state::settled::Settled> {
        let quiet = opts.skip_settled
            && !placed.handed
            && placed.bases.is_empty()
            && opts.wait.is_none()
            && !rollout::in_motion(&rollout::plans(&placed.renderer), &self.rollouts)
            && crate::state::rollouts::pending_requests(&self.state).is_empty();
        quiet.then(|| super::settled::load(&self.state))
    }

    /// After a run that wrote: who answered and who did not, saved; and,
    /// where the fleet's root is a Kubernetes cluster, the health and
    /// rollout records written there too ([`super::records`]).
    pub fn record(&mut self, placed: &Placed<'_>, report: &Report) -> Result<(), OpsError> {
        let checked = placed.renderer.checked;
        let topo = &checked.topo;
        super::health::record(&mut self.health, report, topo, &self.backends, placed.at);
        self.health.save(&self.state)?;
        super::calm::record(&placed.renderer, &self.state);
        if placed.handed {
            return Ok(());
        }
        let (Some(home), Some((read, was))) = (super::records::home(checked), self.records.clone())
        else {
            return Ok(());
        };
        let now = super::records::text(&self.health, &self.rollouts);
        if read.is_some() && now == was {
            return Ok(());
        }
        let backend = self.backends.backend(topo.name(home));
        let written = super::records::save(
            backend.as_ref(),
            &checked.fleet.name,
            &self.health,
            &self.rollouts,
            read.as_deref(),
        )?;
        self.records = Some((Some(written), now));
        Ok(())
    }

    /// The rollout records as this fleet keeps them: the root cluster's
    /// where it keeps them ([`super::records`]), else the state folder's.
    pub fn rollout_records(&mut self, checked: &Checked) -> Result<&Rollouts, OpsError> {
        self.backends
            .follow(&checked.fleet)
            .map_err(OpsError::Runtime)?;
        self.read_records(checked)?;
        Ok(&self.rollouts)
    }

    /// Once per session, before the first placing: the records the
    /// fleet's root cluster keeps win over the state folder's. A root that
    /// does not answer leaves the folder's, and is asked again next time.
    fn read_records(&mut self, checked: &Checked) -> Result<(), OpsError> {
        if self.records.is_some() {
            return Ok(());
        }
        let Some(home) = super::records::home(checked) else {
            return Ok(());
        };
        let backend = self.backends.backend(checked.topo.name(home));
        match super::records::load(backend.as_ref(), &checked.fleet.name) {
            Ok(Some(held)) => {
                self.health = held.health;
                self.rollouts = held.rollouts;
                let was = super::records::text(&self.health, &self.rollouts);
                self.records = Some((Some(held.version), was));
            }
            Ok(None) => {
                let was = super::records::text(&self.health, &self.rollouts);
                self.records = Some((None, was));
            }
            Err(OpsError::Store(e)) => {
                tracing::warn!(error = %e, "cannot read the records in the root cluster; the state folder's are used");
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// The one-shot run: place, take the selected clusters (and, for the
    /// whole fleet, the clusters that left it), apply with rollouts, and
    /// record health unless this is a dry run. `orphans: false` leaves
    /// clusters that left the fleet out (`status`).
    pub fn run<'c>(
        &mut self,
        loaded: &'c Loaded,
        selection: &Selection,
        opts: Options,
        orphans: bool,
    ) -> Result<Run<'c>, OpsError> {
        let checked = &loaded.checked;
        let placed = self.place(checked)?;
        let orphans = if orphans && selection.is_all() {
            self.orphans(checked)?
        } else {
            Vec::new()
        };
        // The clusters below a relay are its agent's to reconcile: one
        // named here cannot be reached from this level.
        let by = crate::core::relay::reconcilers(checked);
        for name in selection.clusters.iter().chain(&selection.subtrees) {
            if let Some(relay) = checked.topo.get(name).and_then(|c| by[c]) {
                let relay = checked.topo.name(relay);
                return Err(OpsError::Refused(format!(
                    "cluster {name} is reconciled by relay {relay}, not from here\n  help: `--subtree {relay}` hands {relay} its handoff, and its agent reconciles {name}"
                )));
            }
        }
        let targets = within(
            selection.resolve_strict(checked)?,
            crate::core::relay::reconciled_by(checked, None),
        );
        self.run_placed(placed, targets, &loaded.revision, &orphans, opts)
    }

    /// The run after placing: render `targets` (`None`: all), apply with
    /// rollouts, record health unless this is a dry run, and wait for the
    /// reports of the relays written to. What a relay agent runs too.
    pub fn run_placed<'c>(
        &mut self,
        placed: Placed<'c>,
        targets: Option<BTreeSet<usize>>,
        revision: &Revision,
        orphans: &[String],
        opts: Options,
    ) -> Result<Run<'c>, OpsError> {
        // Clusters found in sync before and unchanged since are neither
        // rendered nor read (see `super::settled` for when that holds).
        let settled = self.settled(&placed, &opts).map(|record| {
            let keys = super::settled::keys(&placed.renderer, opts.prune);
            let found = super::settled::find(
                &record,
                &placed.renderer,
                &self.backends,
                targets.as_ref(),
                &keys,
            );
            (record, keys, found)
        });
        let render_targets = match &settled {
            Some((_, _, found)) if !found.is_empty() => Some(
                (0..placed.renderer.checked.topo.len())
                    .filter(|c| targets.as_ref().is_none_or(|t| t.contains(c)))
                    .filter(|c| !found.contains_key(c))
                    .collect::<BTreeSet<usize>>(),
            ),
            _ => targets.clone(),
        };
        let mut desired = self
            .render(&placed, render_targets.as_ref(), revision)
            .map_err(OpsError::Render)?;
        let settled = settled.map(|(record, keys, found)| {
            desired.settle(found);
            (record, keys)
        });
        let rollout::Applied {
            report,
            events,
            unsaved,
        } = self.apply(&placed, &mut desired, revision, orphans, &opts);
        if let Some((mut record, keys)) = settled.filter(|_| !opts.dry_run) {
            if super::settled::update(&mut record, &placed.renderer, &report, &keys) {
                if let Err(e) = record.save(&self.state) {
                    tracing::warn!(error = %e, "cannot write the record of clusters in sync; the next run renders them again");
                }
            }
        }
        // Clusters were written: a record that cannot be saved (a full
        // disk) must not take the report of what was written with it.
        let recorded = if opts.dry_run {
            Ok(())
        } else {
            self.record(&placed, &report)
        };
        let unrecorded = unsaved.map(OpsError::from).or(recorded.err());
        let relays = match opts.relay_wait.filter(|_| !opts.dry_run) {
            Some(timeout) => super::relays::wait(
                &placed.renderer,
                &report,
                &desired,
                &self.backends,
                timeout,
                self.cancel.as_ref(),
            ),
            None => Vec::new(),
        };
        if !opts.dry_run {
            super::capabilities::learn(
                &self.state,
                &placed.renderer,
                targets.as_ref(),
                &relays,
                &self.backends,
            );
        }
        Ok(Run {
            placed,
            desired,
            report,
            events,
            unrecorded,
            relays,
        })
    }
}

#[cfg(test)]
mod tests {
    //! The run sequence in-process, on the embedded local backend: no
    //! binary, no cluster.

    use super::*;
    use crate::ops::apply::Outcome as O;
    use std::path::Path;

    const CLUSTERS: &str = "apiVersion: canopy.dev/v1alpha1
kind: Cluster
metadata: {name: hub}
---
apiVersion: canopy.dev/v1alpha1
kind: Cluster
metadata: {name: eu}
spec: {parent: hub}
---
apiVersion: canopy.dev/v1alpha1
kind: Cluster
metadata: {name: eu-1}
spec: {parent: eu}
---
apiVersion: canopy.dev/v1alpha1
kind: Cluster
metadata: {name: us}
spec: {parent: hub}
";

    /// Workload `app`: a Deployment of 4 replicas divided over the leaves,
    /// failed over at once when a leaf is down.
    const APP: &str = "apiVersion: canopy.dev/v1alpha1
kind: Workload
metadata: {name: app}
spec:
  namespace: demo
  placement:
    clusters: {names: [eu-1, us]}
    replicas: {mode: Divided, total: 4}
  failover: {after: 0s}
";

    const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: app}
spec:
  replicas: 1
  selector: {matchLabels: {app: app}}
  template:
    metadata: {labels: {app: app}}
    spec: {containers: [{name: app, image: app:1}]}
";

    fn write(dir: &Path, path: &str, text: &str) {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn fleet() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "clusters.yaml", CLUSTERS);
        write(d.path(), "workloads/app/workload.yaml", APP);
        write(d.path(), "workloads/app/deployment.yaml", DEPLOYMENT);
        d
    }

    fn source(dir: &Path) -> FleetSource {
        FleetSource::open(Location::Dir(dir.to_path_buf())).unwrap()
    }

    fn session(src: &FleetSource, access: Access) -> Session<'_> {
        Session::open(
            &src.input,
            src.state_dir(None).unwrap(),
            access,
            src.base.clone(),
            KubeOptions::default(),
        )
        .unwrap()
    }

    /// An apply of the whole fleet with the default options.
    fn apply_all<'c>(s: &mut Session<'_>, loaded: &'c Loaded) -> Run<'c> {
        s.run(loaded, &Selection::default(), Options::default(), true)
            .unwrap()
    }

    /// Per cluster: changed, unchanged, failed or skipped (with why).
    fn outcomes(report: &Report) -> Vec<(String, String)> {
        report
            .clusters
            .iter()
            .map(|c| {
                let o = match &c.outcome {
                    O::Changed(_) => "changed".to_string(),
                    O::Unchanged(_) => "unchanged".to_string(),
                    O::Failed { .. } => "failed".to_string(),
                    O::Skipped { reason } => format!("skipped: {reason}"),
                };
                (c.cluster.clone(), o)
            })
            .collect()
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    /// The replicas of `app` on a cluster, as the local store holds it.
    fn replicas(src: &FleetSource, cluster: &str) -> Option<u64> {
        let text =
            std::fs::read(src.state.join("clusters").join(format!("{cluster}.json"))).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&text).unwrap();
        v["objects"]
            .as_object()?
            .values()
            .find(|o| o["kind"] == "Deployment")?["spec"]["replicas"]
            .as_u64()
    }

    #[test]
    fn apply_goes_down_the_tree_and_a_failed_parent_skips_its_subtree() {
        let d = fleet();
        let src = source(d.path());
        let loaded = src.load(None).unwrap();
        let mut s = session(&src, Access::Write);
        let run = apply_all(&mut s, &loaded);
        // Clusters without objects are reconciled too (nothing to write).
        assert_eq!(
            outcomes(&run.report),
            pairs(&[
                ("hub", "unchanged"),
                ("eu", "unchanged"),
                ("eu-1", "changed"),
                ("us", "changed")
            ])
        );
        assert!(!run.failed());
        assert_eq!(
            (replicas(&src, "eu-1"), replicas(&src, "us")),
            (Some(2), Some(2))
        );

        // A run counts its clusters as they are done, level by level.
        let progress = Arc::new(Progress::default());
        s.progress = Some(progress.clone());
        apply_all(&mut s, &loaded);
        s.progress = None;
        let p = progress.snapshot();
        assert_eq!((p.done, p.total, p.level, p.levels), (4, 4, 3, 3));

        // eu stops answering: its subtree is skipped, the rest goes on, and
        // the health record says since when eu is down.
        down(&s, "eu", true);
        let run = apply_all(&mut s, &loaded);
        assert_eq!(
            outcomes(&run.report),
            pairs(&[
                ("hub", "unchanged"),
                ("eu", "failed"),
                ("eu-1", "skipped: parent eu failed"),
                ("us", "unchanged")
            ])
        );
        assert!(run.failed());
        // The failure and the skip are typed: nothing reads their text.
        let eu = &run.report.clusters[1].outcome;
        assert!(
            matches!(eu, O::Failed { error, changed } if error.reason() == crate::backend::FailReason::Unreachable && changed.is_empty()),
            "{eu:?}"
        );
        assert!(matches!(
            &run.report.clusters[2].outcome,
            O::Skipped { reason: crate::ops::apply::Skip::ParentFailed(p) } if p == "eu"
        ));
        assert!(s.health.unreachable_since.contains_key("eu"));
        assert_eq!(
            Health::load(&s.state).unwrap(),
            s.health,
            "the record was saved"
        );
    }

    /// Issue 13, case 7: a health record that cannot be written after the
    /// clusters were (as on a full disk) leaves the report whole, with the
    /// error beside it, and no temporary file.
    #[test]
    fn a_record_that_cannot_be_written_loses_no_report() {
        let d = fleet();
        let src = source(d.path());
        let loaded = src.load(None).unwrap();
        let mut s = session(&src, Access::Write);
        std::fs::create_dir_all(s.state.join("health.json")).unwrap();
        let run = apply_all(&mut s, &loaded);
        assert_eq!(run.report.totals().created, 2, "the clusters were written");
        let err = run
            .unrecorded
            .as_ref()
            .expect("the record failed")
            .to_string();
        assert!(err.contains("health.json"), "{err}");
        let leftovers: Vec<String> = std::fs::read_dir(&s.state)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    /// Issue 13, case 7, for rollouts: the rollout record fails to save
    /// between two waves (the disk filled while the canary was applied).
    /// The rollout stops before its next wave, and the report still holds
    /// the canary cluster that was written, with the error beside it.
    #[test]
    fn a_rollout_record_that_fails_between_waves_loses_no_report() {
        use crate::backend::{fleet::Backends, ClusterBackend};
        use std::sync::atomic::{AtomicBool, Ordering};

        /// The local backend, but the first time a cluster is reached
        /// (during the first wave) `rollouts.json` becomes a folder, so
        /// the next save fails.
        struct Obstruct<'a> {
            inner: &'a dyn Backends,
            file: std::path::PathBuf,
            done: AtomicBool,
        }
        impl Backends for Obstruct<'_> {
            fn backend(&self, cluster: &str) -> Box<dyn ClusterBackend + '_> {
                if !self.done.swap(true, Ordering::SeqCst) {
                    let _ = std::fs::remove_file(&self.file);
                    std::fs::create_dir(&self.file).unwrap();
                }
                self.inner.backend(cluster)
            }
        }

        let d = fleet();
        write(
            d.path(),
            "workloads/app/workload.yaml",
            &format!(
                "{APP}  rollout:\n    stages:\n      - {{name: canary, clusters: {{names: [us]}}}}\n      - {{name: rest, percent: 100}}\n"
            ),
        );
        let src = source(d.path());
        let loaded = src.load(None).unwrap();
        let mut s = session(&src, Access::Write);
        let placed = s.place(&loaded.checked).unwrap();
        let mut desired = s.render(&placed, None, &loaded.revision).unwrap();
        let obstruct = Obstruct {
            inner: &s.backends,
            file: s.state.join("rollouts.json"),
            done: AtomicBool::new(false),
        };
        let ctx = rollout::Ctx {
            input: s.input,
            revision: &loaded.revision,
            state: &s.state,
            now: placed.at,
            handed: None,
            down: &placed.above,
            bases: &placed.bases,
        };
        let applied = rollout::apply(
            &placed.renderer,
            &mut desired,
            &obstruct,
            &[],
            &ApplyMeta::new(&loaded.revision, placed.at),
            &Options::default(),
            &Pass::default(),
            &mut s.rollouts,
            &ctx,
        );
        let err = applied.unsaved.expect("the second save failed").to_string();
        assert!(err.contains("rollouts.json"), "{err}");
        let written: Vec<(String, String)> = outcomes(&applied.report)
            .into_iter()
            .filter(|(_, o)| o == "changed")
            .collect();
        assert!(
            written.contains(&("us".to_string(), "changed".to_string())),
            "the canary's write is in the report: {:?}",
            outcomes(&applied.report)
        );
        assert!(
            !written.iter().any(|(c, _)| c == "eu-1"),
            "the next wave did not start: {written:?}"
        );
    }

    #[test]
    fn a_down_leaf_hands_its_replicas_to_its_sibling_and_takes_them_back() {
        let d = fleet();
        let src = source(d.path());
        let loaded = src.load(None).unwrap();
        let mut s = session(&src, Access::Write);
        apply_all(&mut s, &loaded);
        down(&s, "us", true);
        // The run that finds us down records it; failover.after is 0s, so
        // the next run places us's replicas on eu-1.
        apply_all(&mut s, &loaded);
        let run = apply_all(&mut s, &loaded);
        assert_eq!(replicas(&src, "eu-1"), Some(4));
        assert_eq!(
            outcomes(&run.report)[3],
            ("us".to_string(), "failed".to_string())
        );
        // us answers again: the same run asks it first and moves back.
        down(&s, "us", false);
        let run = apply_all(&mut s, &loaded);
        assert!(!run.failed());
        assert!(s.health.unreachable_since.is_empty());
        assert_eq!(
            (replicas(&src, "eu-1"), replicas(&src, "us")),
            (Some(2), Some(2))
        );
    }

    #[test]
    fn a_cluster_that_left_the_fleet_is_an_orphan_kept_until_prune_clusters() {
        let d = fleet();
        let src = source(d.path());
        {
            let loaded = src.load(None).unwrap();
            let mut s = session(&src, Access::Write);
            apply_all(&mut s, &loaded);
        }
        // us leaves the fleet.
        write(
            d.path(),
            "clusters.yaml",
            CLUSTERS.rsplit_once("---").unwrap().0,
        );
        write(
            d.path(),
            "workloads/app/workload.yaml",
            &APP.replace("[eu-1, us]", "[eu-1]"),
        );
        let loaded = src.load(None).unwrap();
        let mut s = session(&src, Access::Write);
        let run = apply_all(&mut s, &loaded);
        assert_eq!(run.report.orphans.len(), 1);
        assert_eq!(run.report.orphans[0].cluster, "us");
        assert!(
            matches!(&run.report.orphans[0].outcome, O::Skipped { reason } if reason.to_string().contains("--prune-clusters")),
            "{:?}",
            run.report.orphans[0].outcome
        );
        assert!(!run.failed(), "an orphan left in place is no failure");
        assert_eq!(replicas(&src, "us"), Some(2), "nothing deleted");
        // A selection leaves orphans alone.
        let only_eu = Selection {
            subtrees: vec!["eu".into()],
            ..Selection::default()
        };
        let run = s.run(&loaded, &only_eu, Options::default(), true).unwrap();
        assert!(run.report.orphans.is_empty());
        assert_eq!(
            outcomes(&run.report),
            pairs(&[("eu", "unchanged"), ("eu-1", "unchanged")])
        );
        let opts = Options {
            prune_clusters: true,
            ..Options::default()
        };
        let run = s.run(&loaded, &Selection::default(), opts, true).unwrap();
        assert!(matches!(run.report.orphans[0].outcome, O::Changed(_)));
        assert_eq!(replicas(&src, "us"), None, "deleted with --prune-clusters");
    }

    #[test]
    fn diff_and_status_read_through_the_same_run_and_write_nothing() {
        let d = fleet();
        let src = source(d.path());
        let loaded = src.load(None).unwrap();
        let before_apply = {
            let mut s = session(&src, Access::Read);
            let report = crate::ops::diff::live(&mut s, &loaded, &Selection::default()).unwrap();
            assert!(report.differs());
            assert_eq!(report.totals().created, 2, "{:?}", outcomes(&report));
            let st = crate::ops::status::status(&mut s, &loaded).unwrap();
            let states: Vec<&str> = st.clusters.iter().map(|l| l.state.as_str()).collect();
            assert_eq!(states, ["in-sync", "in-sync", "not-applied", "not-applied"]);
            s.backends.local().clusters_on_disk().unwrap()
        };
        assert!(before_apply.is_empty(), "a dry run wrote {before_apply:?}");
        {
            let mut s = session(&src, Access::Write);
            apply_all(&mut s, &loaded);
        }
        let mut s = session(&src, Access::Read);
        let report = crate::ops::diff::live(&mut s, &loaded, &Selection::default()).unwrap();
        assert!(!report.differs());
        let st = crate::ops::status::status(&mut s, &loaded).unwrap();
        assert!(st.clusters.iter().all(|l| l.state == "in-sync"));
        let app = st.workloads.iter().find(|w| w.workload == "app").unwrap();
        assert_eq!(app.total.desired, 4);
        // An unknown --cluster is an error that lists the clusters.
        let bad = Selection {
            clusters: vec!["mars".into()],
            ..Selection::default()
        };
        let err = crate::ops::diff::live(&mut s, &loaded, &bad)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown cluster \"mars\"") && err.contains("hub, eu, eu-1, us"),
            "{err}"
        );
    }

    /// A run of the whole fleet with `opts`.
    fn run_with<'c>(s: &mut Session<'_>, loaded: &'c Loaded, opts: Options) -> Run<'c> {
        s.run(loaded, &Selection::default(), opts, true).unwrap()
    }

    /// An apply that may skip the clusters found in sync before.
    fn apply_settling<'c>(s: &mut Session<'_>, loaded: &'c Loaded, prune: bool) -> Run<'c> {
        let opts = Options {
            skip_settled: true,
            prune,
            ..Options::default()
        };
        run_with(s, loaded, opts)
    }

    /// Marks `cluster` of the local backend down (or up again).
    fn down(s: &Session<'_>, cluster: &str, unreachable: bool) {
        s.backends
            .local()
            .cluster(cluster)
            .set_unreachable(unreachable)
            .unwrap();
    }

    /// The clusters a run rendered.
    fn rendered(run: &Run<'_>) -> Vec<String> {
        let topo = &run.placed.renderer.checked.topo;
        run.desired
            .clusters()
            .map(|(c, _)| topo.name(c).to_string())
            .collect()
    }

    /// Per cluster, the objects its report counts unchanged.
    fn unchanged(report: &Report) -> Vec<(String, usize)> {
        report
            .clusters
            .iter()
            .map(|c| {
                (
                    c.cluster.clone(),
                    c.outcome.changes().map_or(0, |ch| ch.unchanged),
                )
            })
            .collect()
    }

    #[test]
    fn clusters_in_sync_and_unchanged_since_are_neither_rendered_nor_read() {
        let d = fleet();
        let src = source(d.path());
        let loaded = src.load(None).unwrap();
        let mut s = session(&src, Access::Write);
        let first = apply_settling(&mut s, &loaded, true);
        assert_eq!(
            rendered(&first),
            ["eu", "eu-1", "hub", "us"],
            "nothing recorded yet"
        );

        // Nothing changed: nothing is rendered, and the report is what a
        // full diff gives.
        let again = apply_settling(&mut s, &loaded, true);
        assert!(rendered(&again).is_empty(), "{:?}", rendered(&again));
        let all_unchanged = pairs(&[
            ("hub", "unchanged"),
            ("eu", "unchanged"),
            ("eu-1", "unchanged"),
            ("us", "unchanged"),
        ]);
        assert_eq!(outcomes(&again.report), all_unchanged);
        let full = run_with(
            &mut s,
            &loaded,
            Options {
                dry_run: true,
                ..Options::default()
            },
        );
        assert_eq!(
            rendered(&full).len(),
            4,
            "without skip_settled all are rendered"
        );
        assert_eq!(unchanged(&again.report), unchanged(&full.report));
        assert!(unchanged(&full.report).iter().any(|(_, n)| *n > 0));

        // A hand edit of eu-1's state (drift): eu-1 alone is read again,
        // and put back.
        let file = s.state.join("clusters/eu-1.json");
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.contains("\"replicas\":2"), "{text}");
        std::fs::write(&file, text.replace("\"replicas\":2", "\"replicas\":7")).unwrap();
        let run = apply_settling(&mut s, &loaded, true);
        assert_eq!(rendered(&run), ["eu-1"]);
        assert_eq!(
            outcomes(&run.report),
            pairs(&[
                ("hub", "unchanged"),
                ("eu", "unchanged"),
                ("eu-1", "changed"),
                ("us", "unchanged"),
            ])
        );
        assert_eq!(replicas(&src, "eu-1"), Some(2));

        // A new total moves the replicas of eu-1 and us: they alone are
        // rendered.
        write(
            d.path(),
            "workloads/app/workload.yaml",
            &APP.replace("total: 4", "total: 6"),
        );
        let loaded = src.load(None).unwrap();
        let run = apply_settling(&mut s, &loaded, true);
        assert_eq!(rendered(&run), ["eu-1", "us"]);
        assert_eq!(
            (replicas(&src, "eu-1"), replicas(&src, "us")),
            (Some(3), Some(3))
        );
        assert!(rendered(&apply_settling(&mut s, &loaded, true)).is_empty());

        // A run that does not prune keeps what a pruning one would delete,
        // so the two do not share entries.
        let run = apply_settling(&mut s, &loaded, false);
        assert_eq!(rendered(&run).len(), 4);
        assert!(rendered(&apply_settling(&mut s, &loaded, false)).is_empty());
        assert_eq!(rendered(&apply_settling(&mut s, &loaded, true)).len(), 4);

        // eu stops answering (its file changes): it is read and fails, and
        // eu-1, settled as it is, is skipped below it, not taken as in sync.
        down(&s, "eu", true);
        let run = apply_settling(&mut s, &loaded, true);
        assert_eq!(rendered(&run), ["eu"]);
        assert_eq!(
            outcomes(&run.report),
            pairs(&[
                ("hub", "unchanged"),
                ("eu", "failed"),
                ("eu-1", "skipped: parent eu failed"),
                ("us", "unchanged"),
            ])
        );
        down(&s, "eu", false);
        // The failed and the skipped cluster lost their entries.
        let run = apply_settling(&mut s, &loaded, true);
        assert_eq!(rendered(&run), ["eu", "eu-1"]);
        assert_eq!(outcomes(&run.report), all_unchanged);

        // A dry run uses the record and writes none.
        let record = std::fs::read(s.state.join("settled.json")).unwrap();
        let dry = run_with(
            &mut s,
            &loaded,
            Options {
                dry_run: true,
                skip_settled: true,
                ..Options::default()
            },
        );
        assert!(rendered(&dry).is_empty());
        assert_eq!(std::fs::read(s.state.join("settled.json")).unwrap(), record);

        // Waiting for health reads every cluster's objects.
        let run = run_with(
            &mut s,
            &loaded,
            Options {
                skip_settled: true,
                wait: Some(std::time::Duration::from_secs(1)),
                ..Options::default()
            },
        );
        assert_eq!(rendered(&run).len(), 4);
    }

    #[test]
    fn a_record_of_clusters_in_sync_that_is_corrupt_costs_one_full_run() {
        let d = fleet();
        let src = source(d.path());
        let loaded = src.load(None).unwrap();
        let mut s = session(&src, Access::Write);
        apply_settling(&mut s, &loaded, true);
        std::fs::write(s.state.join("settled.json"), "{not json").unwrap();
        let run = apply_settling(&mut s, &loaded, true);
        assert_eq!(rendered(&run).len(), 4);
        assert!(!run.failed());
        assert!(rendered(&apply_settling(&mut s, &loaded, true)).is_empty());
    }

    #[test]
    fn a_moving_rollout_renders_every_cluster() {
        let d = fleet();
        let src = source(d.path());
        let mut s = session(&src, Access::Write);
        let loaded = src.load(None).unwrap();
        apply_settling(&mut s, &loaded, true);
        assert!(rendered(&apply_settling(&mut s, &loaded, true)).is_empty());
        // A rollout with a manual pause after its first stage, and a new
        // image: the canary is written, the rollout pauses, and while it
        // is in motion every run looks at every cluster.
        write(
            d.path(),
            "workloads/app/workload.yaml",
            &format!(
                "{APP}  rollout:\n    pause: manual\n    stages:\n      - {{name: canary, clusters: {{names: [us]}}}}\n      - {{name: rest, percent: 100}}\n"
            ),
        );
        write(
            d.path(),
            "workloads/app/deployment.yaml",
            &DEPLOYMENT.replace("app:1", "app:2"),
        );
        let loaded = src.load(None).unwrap();
        for _ in 0..2 {
            let run = apply_settling(&mut s, &loaded, true);
            assert_eq!(rendered(&run).len(), 4, "{:?}", run.events);
        }
        let state = s.state.clone();
        let text =
            |c: &str| std::fs::read_to_string(state.join(format!("clusters/{c}.json"))).unwrap();
        assert!(text("us").contains("app:2") && text("eu-1").contains("app:1"));
        // Continued, it completes; the run after that renders the clusters
        // whose render moved (hub and eu kept their entries from before,
        // their render and state unchanged) and records them, and the one
        // after it renders none.
        let target = s.rollouts.workloads["app"].target.clone();
        crate::state::rollouts::request_continue(&s.state, "app", &target).unwrap();
        apply_settling(&mut s, &loaded, true);
        assert!(text("eu-1").contains("app:2"));
        assert_eq!(
            rendered(&apply_settling(&mut s, &loaded, true)),
            ["eu-1", "us"]
        );
        assert!(rendered(&apply_settling(&mut s, &loaded, true)).is_empty());
    }
}
