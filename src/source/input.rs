//! A fleet read from its source and checked: load → validate, from a folder
//! or a Git revision.

use std::path::Path;

use crate::core::diag::Diagnostics;
use crate::core::load::{self, LoadError};
use crate::core::render::Renderer;
use crate::core::validate::Checked;

/// Why a pipeline stopped.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The fleet could not be read at all (missing folder, permissions).
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The fleet was read and has errors; every one of them is listed.
    #[error("the fleet has {} error(s)", .0.errors().count())]
    Invalid(Diagnostics),
}

/// Loads and validates a fleet. Warnings are returned beside the result.
pub fn load_checked(
    dir: &Path,
    name: Option<&str>,
) -> Result<(Checked, Diagnostics), PipelineError> {
    let (mut fleet, mut diags) = load::load(dir, name)?;
    diags.extend(tool_inputs(
        &mut fleet,
        &crate::source::kustomize::OnDisk(dir),
    ));
    validated(fleet, diags)
}

/// What the outside tools make of a fleet read from a folder: kustomize
/// workloads built, Helm workloads' folders read (Helm runs after
/// validation, with each cluster's values).
fn tool_inputs(
    fleet: &mut crate::core::model::Fleet,
    files: &dyn crate::source::kustomize::FolderFiles,
) -> Diagnostics {
    let mut diags = crate::source::kustomize::expand(fleet, files);
    diags.extend(crate::source::helm::gather(fleet, files));
    diags
}

/// [`tool_inputs`] for a fleet read from a Git revision: the YAML files of
/// its workload folders (`held`) and their other files (`extra`).
fn tool_inputs_in_memory(
    fleet: &mut crate::core::model::Fleet,
    held: Vec<(String, Vec<u8>)>,
    extra: &[(String, Vec<u8>)],
) -> Diagnostics {
    if !fleet
        .workloads
        .iter()
        .any(|w| w.spec.kustomize.is_some() || w.spec.helm.is_some())
    {
        return Diagnostics::default();
    }
    let mut all = held;
    all.extend(extra.iter().cloned());
    tool_inputs(fleet, &crate::source::kustomize::InMemory(all))
}

/// Validates `fleet`, renders its Helm workloads and checks the tenants'
/// objects that are the same on every cluster: the fleet as the
/// pipeline's later stages see it, or every problem found.
pub fn check_fleet(fleet: crate::core::model::Fleet) -> (Option<Checked>, Diagnostics) {
    check_fleet_after(fleet, None)
}

/// As [`check_fleet`], after `prev`, the last revision's fleet as checked
/// ([`crate::core::validate::check_after`]).
pub fn check_fleet_after(
    fleet: crate::core::model::Fleet,
    prev: Option<&Checked>,
) -> (Option<Checked>, Diagnostics) {
    let (checked, mut diags) = crate::core::validate::check_after(fleet, prev);
    let checked = checked.map(|mut c| {
        if !diags.has_errors() {
            diags.extend(crate::source::helm::expand(&mut c));
        }
        if !diags.has_errors() {
            diags.extend(crate::core::tenancy::check_manifests(&c));
            diags.extend(crate::core::reserved::check_manifests(&c));
        }
        c
    });
    (checked, diags)
}

/// Validates a loaded fleet; its load diagnostics and validation's together.
fn validated(
    fleet: crate::core::model::Fleet,
    mut diags: Diagnostics,
) -> Result<(Checked, Diagnostics), PipelineError> {
    let (checked, more) = check_fleet(fleet);
    diags.extend(more);
    let diags = diags.sorted();
    match checked {
        Some(c) if !diags.has_errors() => Ok((c, diags)),
        _ => Err(PipelineError::Invalid(diags)),
    }
}

/// Everything `canopy validate` reports: load and validation diagnostics,
/// then placement problems (such as all weights zero) and render errors
/// (templates, limits, duplicate objects) of every cluster when the fleet
/// is otherwise valid. The fleet comes back when there is no error.
pub fn check_all(
    input: &Input,
    name: Option<&str>,
    known: &std::collections::BTreeMap<String, std::sync::Arc<crate::core::capabilities::Observed>>,
) -> Result<(Option<Checked>, Diagnostics), SourceError> {
    let (mut fleet, mut diags, _) = input.read(name)?;
    crate::core::capabilities::give(&mut fleet, known);
    let (checked, more) = check_fleet(fleet);
    diags.extend(more);
    if let Some(c) = &checked {
        if !diags.has_errors() {
            let r = Renderer::new(c);
            diags.extend(r.diagnostics.clone());
            // The whole render, dry: a fleet that validates renders.
            if !r.diagnostics.has_errors() {
                if let Err(d) = crate::core::render::render_map(&r, None, |_, _| ()) {
                    diags.extend(d);
                }
            }
        }
    }
    let diags = diags.sorted();
    let checked = checked.filter(|_| !diags.has_errors());
    Ok((checked, diags))
}

/// Loads and validates a fleet from `(path, text)` pairs (a Git revision),
/// with the other files of its workload folders (`extra`, for kustomize).
pub fn check_files(
    name: String,
    files: Vec<(String, Vec<u8>)>,
    extra: &[(String, Vec<u8>)],
    known: &std::collections::BTreeMap<String, std::sync::Arc<crate::core::capabilities::Observed>>,
) -> Result<(Checked, Diagnostics), PipelineError> {
    let kept = crate::source::kustomize::workload_files(&files);
    let (mut fleet, mut diags) = load::load_files(name, files);
    crate::core::capabilities::give(&mut fleet, known);
    diags.extend(tool_inputs_in_memory(&mut fleet, kept, extra));
    validated(fleet, diags)
}

/// Where a command reads its fleet from.
pub enum Input {
    /// A folder (usually in a Git working tree): what is on disk.
    Dir(std::path::PathBuf),
    /// A Git repository at a ref, read from its object database.
    Git(crate::source::remote::GitRepo),
}

/// Why a fleet could not be had from its source.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Git(#[from] crate::source::git::GitError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
}

/// A checked fleet with where it came from.
pub struct Loaded {
    pub checked: Checked,
    pub warnings: Diagnostics,
    pub revision: crate::source::Revision,
}

impl Input {
    /// Reads the fleet, unchecked: from the folder, or (after a fetch) at
    /// the commit `--ref` names now.
    pub fn read(
        &self,
        name: Option<&str>,
    ) -> Result<
        (
            crate::core::model::Fleet,
            Diagnostics,
            crate::source::Revision,
        ),
        SourceError,
    > {
        match self {
            Input::Dir(dir) => {
                let (mut fleet, mut diags) = load::load(dir, name).map_err(PipelineError::Load)?;
                diags.extend(tool_inputs(
                    &mut fleet,
                    &crate::source::kustomize::OnDisk(dir),
                ));
                Ok((fleet, diags, crate::source::git::revision(dir)))
            }
            Input::Git(repo) => {
                repo.fetch()?;
                let revision = repo.resolve()?;
                let (fleet, diags) = read_git(repo, &revision, name)?;
                Ok((fleet, diags, revision))
            }
        }
    }

    /// Reads and checks the fleet.
    pub fn load(&self, name: Option<&str>) -> Result<Loaded, SourceError> {
        self.load_with(name, &mut |_| Diagnostics::default())
    }

    /// Reads the fleet, lets `extra` add to it (joined members, read from
    /// their hubs), then checks it.
    pub fn load_with(
        &self,
        name: Option<&str>,
        extra: &mut dyn FnMut(&mut crate::core::model::Fleet) -> Diagnostics,
    ) -> Result<Loaded, SourceError> {
        let (mut fleet, mut diags, revision) = self.read(name)?;
        diags.extend(extra(&mut fleet));
        let (checked, warnings) = validated(fleet, diags)?;
        Ok(Loaded {
            checked,
            warnings,
            revision,
        })
    }

    /// The fleet folder's YAML files at Git revision `rev` (`diff --base`).
    pub fn files_at(
        &self,
        rev: &str,
    ) -> Result<crate::source::git::FleetAtRevision, crate::source::git::GitError> {
        match self {
            Input::Dir(dir) => crate::source::git::read_fleet_at(dir, rev),
            Input::Git(repo) => {
                let r = repo.resolve_ref(rev)?;
                repo.files_at(r.commit.as_deref().unwrap_or_default())
            }
        }
    }
}

/// The fleet of `repo` at `revision` (a resolved commit), unchecked. Its
/// name is `name`, else the last part of `--path`, else the repository's
/// name. Symbolic links at the revision are not followed: each is a warning.
pub fn read_git(
    repo: &crate::source::remote::GitRepo,
    revision: &crate::source::Revision,
    name: Option<&str>,
) -> Result<(crate::core::model::Fleet, Diagnostics), crate::source::git::GitError> {
    let at = repo.files_at(revision.commit.as_deref().unwrap_or_default())?;
    let spec = repo.spec();
    let name = name.map(str::to_string).unwrap_or_else(|| {
        let last = if spec.path.is_empty() {
            crate::source::remote::redact(&spec.url)
                .trim_end_matches('/')
                .rsplit(['/', ':'])
                .next()
                .unwrap_or("fleet")
                .trim_end_matches(".git")
                .to_string()
        } else {
            spec.path.rsplit('/').next().unwrap_or("fleet").to_string()
        };
        load::fleet_name_from_dir(Path::new(&last))
    });
    let kept = crate::source::kustomize::workload_files(&at.files);
    let (mut fleet, mut diags) = load::load_files(name, at.files);
    diags.extend(tool_inputs_in_memory(&mut fleet, kept, &at.extra));
    diags.extend(link_warnings(&at.links, &revision.to_string()));
    Ok((fleet, diags))
}

pub(crate) fn link_warnings(links: &[String], rev: &str) -> Diagnostics {
    let mut warnings = Diagnostics::default();
    for l in links {
        warnings.push(
            crate::core::diag::Diagnostic::warning(format!(
                "symbolic link at {rev} is not followed"
            ))
            .in_file(l, 0),
        );
    }
    warnings
}
