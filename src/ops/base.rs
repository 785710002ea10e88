//! The fleet at another Git revision: what `diff --base` compares with and
//! what a rollout's rollback renders again.

use crate::core::diag::Diagnostics;
use crate::core::render::Renderer;
use crate::core::validate::Checked;
use crate::source::input::{check_files, link_warnings, Input, PipelineError};

/// Why the fleet could not be rendered at a revision.
#[derive(Debug, thiserror::Error)]
pub enum BaseError {
    #[error(transparent)]
    Git(#[from] crate::source::git::GitError),
    #[error("the fleet at {commit} is invalid")]
    Invalid {
        rev: String,
        commit: String,
        diags: Diagnostics,
    },
    #[error("the fleet at {commit} does not render")]
    Render {
        rev: String,
        commit: String,
        diags: Diagnostics,
    },
}

/// The fleet as it is at Git revision `rev`, checked, under the name
/// `name`, with the commit `rev` resolved to and the warnings about links;
/// its Helm charts rendered for the clusters as `now` (the fleet it is
/// compared with or rolled back from) knows them.
pub fn checked_at(
    input: &Input,
    rev: &str,
    name: &str,
    now: &Checked,
) -> Result<(Checked, String, Diagnostics), BaseError> {
    let at = input.files_at(rev)?;
    let commit = at.commit.clone();
    let warnings = link_warnings(&at.links, rev);
    let known = crate::core::capabilities::known(&now.fleet);
    let (checked, _) =
        check_files(name.to_string(), at.files, &at.extra, &known).map_err(|e| match e {
            PipelineError::Invalid(diags) => BaseError::Invalid {
                rev: rev.to_string(),
                commit: commit.clone(),
                diags,
            },
            PipelineError::Load(e) => BaseError::Invalid {
                rev: rev.to_string(),
                commit: commit.clone(),
                diags: {
                    let mut d = Diagnostics::default();
                    d.push(crate::core::diag::Diagnostic::error(e.to_string()));
                    d
                },
            },
        })?;
    Ok((checked, commit, warnings))
}

/// Renders the fleet as it is at Git revision `rev`, read from the
/// object database (no checkout), under `head`'s fleet name: the "live" side
/// of `diff --base`. With `only`, just those clusters of `head`. Links the
/// revision holds (not followed) come back as warnings; the base's other
/// warnings are about an old revision and are left out.
pub fn render_at_revision(
    input: &Input,
    rev: &str,
    head: &Checked,
    only: Option<&std::collections::BTreeSet<usize>>,
) -> Result<(crate::backend::rendered::RenderedState, Diagnostics), BaseError> {
    let (base, commit, warnings) = checked_at(input, rev, &head.fleet.name, head)?;
    let r = Renderer::new(&base);
    let wanted: Option<Vec<usize>> = only.map(|set| {
        set.iter()
            .filter_map(|&i| base.topo.get(head.topo.name(i)))
            .collect()
    });
    let rendered = crate::core::render::render_map(&r, wanted.as_deref(), |_, objs| {
        objs.into_iter().map(|o| o.value).collect::<Vec<_>>()
    })
    .map_err(|diags| BaseError::Render {
        rev: rev.to_string(),
        commit: commit.clone(),
        diags,
    })?;
    let mut state = crate::backend::rendered::RenderedState::default();
    for (c, objs) in rendered {
        state.clusters.insert(base.topo.name(c).to_string(), objs);
    }
    Ok((state, warnings))
}
