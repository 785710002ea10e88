//! Git repositories as a fleet source (`--repo URL|PATH --ref REF`).
//!
//! A local repository is read in place, from its object database (its
//! working tree is never looked at). Anything else — `file://`, `https://`,
//! `ssh://` or `user@host:path` — is cloned once into canopy's cache as a
//! bare repository and fetched on every use, so a second run transfers only
//! what is new. Credentials come from an environment variable or a Git
//! credential helper (HTTPS) and from the SSH agent or a key file (SSH); they
//! are handed to libgit2 and never formatted into a message: every URL and
//! every libgit2 message that reaches a log or an error goes through
//! [`redact`] first.

use std::cell::Cell;
use std::path::{Path, PathBuf};

use super::git::{read_tree_files, GitError};
use super::Revision;

/// Where the fleet's repository is and which revision to read.
#[derive(Debug, Clone)]
pub struct RepoSpec {
    /// A local path or a URL.
    pub url: String,
    /// Branch, tag, full ref name or commit.
    pub reference: String,
    /// The fleet folder inside the repository ("" for its root).
    pub path: String,
    pub auth: Auth,
}

/// How to authenticate to a remote.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    /// Environment variable holding an HTTPS token (used as the password).
    pub token_env: String,
    /// SSH private key file, tried after the SSH agent.
    pub ssh_key: Option<PathBuf>,
}

/// The default variable for `Auth::token_env`.
pub const DEFAULT_TOKEN_ENV: &str = "CANOPY_GIT_TOKEN";

/// An opened source repository.
pub struct GitRepo {
    spec: RepoSpec,
    repo: git2::Repository,
    /// Whether this is a cache of a remote (fetched) or a local repository
    /// read in place.
    remote: bool,
    /// The last revision's blobs, for a process that reads revision after
    /// revision ([`crate::core::load::keep_parsed`]).
    blobs: super::git::BlobCache,
}

/// Whether `url` names a remote (something to fetch) rather than a
/// repository on this machine.
pub fn is_remote(url: &str) -> bool {
    if url.contains("://") {
        return true;
    }
    // scp-like `user@host:path` (but not a Windows drive or a plain path).
    match url.split_once(':') {
        Some((host, _)) => !host.contains('/') && host.len() > 1,
        None => false,
    }
}

pub use crate::core::mask::redact;

/// A stable, file-name-safe name for a remote's cache folder: a readable
/// slug of the redacted URL and a hash of it (FNV-1a, stable across builds).
pub fn cache_name(url: &str) -> String {
    let clean = redact(url);
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in clean.as_bytes() {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let slug: String = clean
        .rsplit(['/', ':'])
        .find(|s| !s.is_empty())
        .unwrap_or("repo")
        .trim_end_matches(".git")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(40)
        .collect();
    format!("{slug}-{hash:016x}")
}

/// canopy's cache folder: `$CANOPY_CACHE_DIR`, else `$XDG_CACHE_HOME/canopy`,
/// else `~/.cache/canopy`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CANOPY_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("canopy");
    }
    home().join(".cache").join("canopy")
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Checks `--path`: relative, inside the repository, `/`-separated.
pub fn check_subpath(path: &str) -> Result<String, GitError> {
    let trimmed = path.trim_matches('/');
    let bad = path.starts_with('/')
        || trimmed
            .split('/')
            .any(|part| part == ".." || part == "." && trimmed != ".")
        || path.contains('\\');
    if bad {
        return Err(GitError::BadPath {
            path: path.to_string(),
        });
    }
    Ok(if trimmed == "." {
        String::new()
    } else {
        trimmed.to_string()
    })
}

impl GitRepo {
    /// Opens the repository: a local one in place, a remote one from the
    /// cache (cloning it there the first time). Nothing is fetched yet.
    pub fn open(spec: RepoSpec) -> Result<GitRepo, GitError> {
        let spec = RepoSpec {
            path: check_subpath(&spec.path)?,
            ..spec
        };
        if !is_remote(&spec.url) {
            let repo = git2::Repository::open(&spec.url).map_err(|e| GitError::Open {
                url: spec.url.clone(),
                detail: e.message().to_string(),
            })?;
            return Ok(GitRepo {
                spec,
                repo,
                remote: false,
                blobs: Default::default(),
            });
        }
        let dir = cache_dir().join("repos").join(cache_name(&spec.url));
        let io = |e: std::io::Error| GitError::Cache {
            path: dir.display().to_string(),
            detail: e.to_string(),
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        let repo = match git2::Repository::open_bare(&dir) {
            Ok(r) => r,
            Err(_) => git2::Repository::init_bare(&dir).map_err(|e| GitError::Cache {
                path: dir.display().to_string(),
                detail: e.message().to_string(),
            })?,
        };
        Ok(GitRepo {
            spec,
            repo,
            remote: true,
            blobs: Default::default(),
        })
    }

    pub fn spec(&self) -> &RepoSpec {
        &self.spec
    }

    pub fn repository(&self) -> &git2::Repository {
        &self.repo
    }

    /// The URL as it may be shown.
    pub fn display_url(&self) -> String {
        redact(&self.spec.url)
    }

    /// Brings the cache up to date with the remote (every branch and tag);
    /// a local repository needs nothing.
    pub fn fetch(&self) -> Result<(), GitError> {
        if !self.remote {
            return Ok(());
        }
        // One fetch at a time per cache: two canopy processes sharing it
        // would race on its refs.
        let lock_path = self.repo.path().join("canopy-fetch.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| GitError::Cache {
                path: lock_path.display().to_string(),
                detail: e.to_string(),
            })?;
        lock.lock().map_err(|e| GitError::Cache {
            path: lock_path.display().to_string(),
            detail: e.to_string(),
        })?;
        let mut remote = self
            .repo
            .remote_anonymous(&self.spec.url)
            .map_err(|e| self.fetch_error(e, false))?;
        let config = self.repo.config().ok();
        let auth_exhausted = Cell::new(false);
        let auth = &self.spec.auth;
        let mut callbacks = git2::RemoteCallbacks::new();
        let (mut tried_agent, mut tried_key, mut tried_token, mut tried_helper) =
            (false, false, false, false);
        callbacks.credentials(|url, user_from_url, allowed| {
            let user = user_from_url.unwrap_or("git");
            if allowed.contains(git2::CredentialType::SSH_KEY) {
                if !tried_agent {
                    tried_agent = true;
                    if std::env::var_os("SSH_AUTH_SOCK").is_some() {
                        return git2::Cred::ssh_key_from_agent(user);
                    }
                }
                if !tried_key {
                    tried_key = true;
                    if let Some(key) = ssh_key_file(auth) {
                        return git2::Cred::ssh_key(user, None, &key, None);
                    }
                }
            } else if allowed.contains(git2::CredentialType::USER_PASS_PLAINTEXT) {
                if !tried_token {
                    tried_token = true;
                    if let Some(token) = std::env::var(&auth.token_env)
                        .ok()
                        .filter(|t| !t.is_empty())
                    {
                        return git2::Cred::userpass_plaintext(user, &token);
                    }
                }
                if !tried_helper {
                    tried_helper = true;
                    if let Some(c) = config
                        .as_ref()
                        .and_then(|cfg| git2::Cred::credential_helper(cfg, url, user_from_url).ok())
                    {
                        return Ok(c);
                    }
                }
            } else if allowed.contains(git2::CredentialType::USERNAME) {
                return git2::Cred::username(user);
            }
            auth_exhausted.set(true);
            Err(git2::Error::from_str("no credential left to try"))
        });
        let mut opts = git2::FetchOptions::new();
        opts.remote_callbacks(callbacks);
        opts.prune(git2::FetchPrune::On);
        opts.download_tags(git2::AutotagOption::None);
        opts.update_fetchhead(false);
        let refspecs = [
            "+refs/heads/*:refs/remotes/origin/*",
            "+refs/tags/*:refs/tags/*",
        ];
        let fetched = remote.fetch(&refspecs, Some(&mut opts), None);
        drop(opts);
        fetched.map_err(|e| self.fetch_error(e, auth_exhausted.get()))
    }

    fn fetch_error(&self, e: git2::Error, auth_exhausted: bool) -> GitError {
        let url = self.display_url();
        let detail = redact(e.message());
        if auth_exhausted
            || e.code() == git2::ErrorCode::Auth
            || e.class() == git2::ErrorClass::Ssh && detail.contains("authentication")
        {
            return GitError::Auth {
                url,
                detail,
                token_env: self.spec.auth.token_env.clone(),
            };
        }
        if e.code() == git2::ErrorCode::Certificate {
            return GitError::Certificate { url, detail };
        }
        GitError::Unreachable { url, detail }
    }

    /// The commit `--ref` names now, with the tag it carries.
    pub fn resolve(&self) -> Result<Revision, GitError> {
        self.resolve_ref(&self.spec.reference)
    }

    /// The commit a branch, tag, full ref name or commit names, with the
    /// tag it carries.
    pub fn resolve_ref(&self, r: &str) -> Result<Revision, GitError> {
        let r = &r.to_string();
        let candidates: Vec<String> = if r.starts_with("refs/") {
            vec![r.clone()]
        } else if self.remote {
            vec![format!("refs/remotes/origin/{r}"), format!("refs/tags/{r}")]
        } else {
            vec![format!("refs/heads/{r}"), format!("refs/tags/{r}")]
        };
        let mut found = None;
        for name in &candidates {
            if let Ok(reference) = self.repo.find_reference(name) {
                if let Ok(c) = reference.peel_to_commit() {
                    found = Some((c.id(), name.strip_prefix("refs/tags/").map(str::to_string)));
                    break;
                }
            }
        }
        if found.is_none() && !r.starts_with("refs/") {
            // A commit (full or abbreviated), or HEAD~1 and the like.
            if let Ok(c) = self
                .repo
                .revparse_single(r)
                .and_then(|o| o.peel_to_commit())
            {
                found = Some((c.id(), None));
            }
        }
        let Some((id, tag)) = found else {
            return Err(GitError::UnknownRef {
                reference: r.clone(),
                url: self.display_url(),
                known: self.known_refs(),
            });
        };
        let tag = tag.or_else(|| tag_of(&self.repo, id));
        Ok(Revision {
            commit: Some(id.to_string()),
            tag,
            dirty: false,
        })
    }

    /// Up to 12 branches and tags, for an unknown-ref error.
    fn known_refs(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Ok(refs) = self.repo.references() {
            for reference in refs.flatten() {
                let Ok(name) = reference.name() else { continue };
                let short = if self.remote {
                    name.strip_prefix("refs/remotes/origin/")
                } else {
                    name.strip_prefix("refs/heads/")
                }
                .or_else(|| name.strip_prefix("refs/tags/"));
                if let Some(s) = short.filter(|s| *s != "HEAD") {
                    out.push(s.to_string());
                }
            }
        }
        out.sort();
        out.truncate(12);
        out
    }

    /// The fleet folder's YAML files at `commit`.
    pub fn files_at(&self, commit: &str) -> Result<super::git::FleetAtRevision, GitError> {
        let oid = git2::Oid::from_str(commit).map_err(|e| GitError::Read {
            rev: commit.to_string(),
            detail: e.message().to_string(),
        })?;
        let c = self.repo.find_commit(oid).map_err(|e| GitError::Read {
            rev: commit.to_string(),
            detail: e.message().to_string(),
        })?;
        let cache = crate::core::load::keeps_parsed().then_some(&self.blobs);
        read_tree_files(&self.repo, &c, &self.spec.path, &self.spec.reference, cache)
    }

    /// The folders a change of the followed ref shows up in, for watching a
    /// local repository with `notify`: its Git folder (refs, packed-refs).
    pub fn watch_path(&self) -> Option<&Path> {
        (!self.remote).then(|| self.repo.path())
    }

    pub fn is_remote(&self) -> bool {
        self.remote
    }
}

/// The key file to offer: `--ssh-key`, else the usual default names.
fn ssh_key_file(auth: &Auth) -> Option<PathBuf> {
    if let Some(k) = &auth.ssh_key {
        return Some(k.clone());
    }
    let ssh = home().join(".ssh");
    ["id_ed25519", "id_ecdsa", "id_rsa"]
        .iter()
        .map(|n| ssh.join(n))
        .find(|p| p.is_file())
}

/// A tag pointing at `id` (the smallest name when several do).
pub fn tag_of(repo: &git2::Repository, id: git2::Oid) -> Option<String> {
    let mut tags: Vec<String> = Vec::new();
    let refs = repo.references_glob("refs/tags/*").ok()?;
    for reference in refs.flatten() {
        if reference.peel_to_commit().is_ok_and(|c| c.id() == id) {
            if let Some(n) = reference
                .name()
                .ok()
                .and_then(|n| n.strip_prefix("refs/tags/"))
            {
                tags.push(n.to_string());
            }
        }
    }
    tags.sort();
    tags.into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_removes_userinfo_only() {
        assert_eq!(
            redact("fetch https://bot:s3cret@git.example.com/org/fleet.git failed"),
            "fetch https://git.example.com/org/fleet.git failed"
        );
        assert_eq!(
            redact("ssh://git@host:22/x and file:///tmp/r"),
            "ssh://host:22/x and file:///tmp/r"
        );
        assert_eq!(redact("no url here"), "no url here");
        assert!(!redact("http://a:tok@h").contains("tok"));
    }

    #[test]
    fn remote_or_local() {
        assert!(is_remote("https://h/x.git"));
        assert!(is_remote("file:///tmp/x"));
        assert!(is_remote("git@github.com:org/fleet.git"));
        assert!(!is_remote("/tmp/fleet"));
        assert!(!is_remote("./fleet"));
        assert!(!is_remote("fleet"));
    }

    #[test]
    fn cache_name_is_stable_and_ignores_credentials() {
        let a = cache_name("https://bot:one@h/org/fleet.git");
        let b = cache_name("https://bot:two@h/org/fleet.git");
        assert_eq!(a, b);
        assert!(a.starts_with("fleet-"), "{a}");
        assert_ne!(a, cache_name("https://h/org/other.git"));
        assert!(!a.contains("one"));
    }

    #[test]
    fn subpaths_stay_inside_the_repository() {
        assert_eq!(check_subpath("fleets/prod/").unwrap(), "fleets/prod");
        assert_eq!(check_subpath("").unwrap(), "");
        assert_eq!(check_subpath(".").unwrap(), "");
        for bad in ["../x", "/etc", "a/../../b", "a\\b", "a/./b"] {
            assert!(check_subpath(bad).is_err(), "{bad}");
        }
    }
}
