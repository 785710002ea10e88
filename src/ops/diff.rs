//! `canopy diff`: what `apply` would change, against the clusters (a dry
//! run through the same sequence, rollouts included) or against the fleet
//! at another Git revision (no cluster, no credentials: pull requests).

use super::apply::{self, Options, Pass, Report};
use super::error::OpsError;
use super::run::{FleetSource, Selection, Session};
use crate::backend::ApplyMeta;
use crate::core::diag::Diagnostics;
use crate::source::input::Loaded;

/// Against the clusters: what apply would do now. Workloads a rollout
/// holds back stay out.
pub fn live(
    session: &mut Session<'_>,
    loaded: &Loaded,
    selection: &Selection,
) -> Result<Report, OpsError> {
    Ok(live_through_relays(session, loaded, selection, false)?.0)
}

/// As [`live`], with where each relay's subtree stands: the clusters below
/// a relay are not read from here, so their drift is what the relay
/// reports against the handoff this level would write now. `skip_settled`:
/// see [`Options::skip_settled`].
pub fn live_through_relays(
    session: &mut Session<'_>,
    loaded: &Loaded,
    selection: &Selection,
    skip_settled: bool,
) -> Result<(Report, Vec<super::relays::Standing>), OpsError> {
    let opts = Options {
        dry_run: true,
        keep_values: true,
        read_under_failed_parents: true,
        skip_settled,
        ..Options::default()
    };
    let run = session.run(loaded, selection, opts, true)?;
    let relays = super::relays::standings(
        &run.placed.renderer,
        &run.report,
        &run.desired,
        &session.backends,
    );
    Ok((run.report, relays))
}

/// Against the fleet at revision `base`, read from Git, both placed as if
/// every cluster were healthy. The warnings about the base (links it holds,
/// not followed) come back beside the report.
pub fn against_base(
    src: &FleetSource,
    loaded: &Loaded,
    base: &str,
    selection: &Selection,
) -> Result<(Report, Diagnostics), OpsError> {
    let c = &loaded.checked;
    let opts = Options {
        dry_run: true,
        keep_values: true,
        ..Options::default()
    };
    let pass = Pass {
        targets: selection.resolve_strict(c)?,
        ..Pass::default()
    };
    let r = super::run::placed_healthy(c)?;
    let (base_state, warnings) =
        super::base::render_at_revision(&src.input, base, c, pass.targets.as_ref())?;
    let orphans: Vec<String> = if pass.targets.is_none() {
        base_state
            .clusters
            .keys()
            .filter(|n| c.topo.get(n).is_none())
            .cloned()
            .collect()
    } else {
        Vec::new()
    };
    let meta = ApplyMeta::new(&loaded.revision, std::time::SystemTime::now());
    let report =
        apply::run(&r, &base_state, &orphans, &meta, &opts, &pass).map_err(OpsError::Render)?;
    Ok((report, warnings))
}
