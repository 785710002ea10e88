//! `--repo URL|PATH --ref REF --path SUBDIR`: fleets read straight from Git
//! (a local repository in place; `file://`, `http://` and `ssh://` remotes
//! through the cache), the revision recorded on every applied object, and sources that
//! cannot be read failing clearly with nothing applied.

mod common;
#[path = "support/git_http.rs"]
mod git_http;
#[path = "support/sshd.rs"]
mod sshd;

use common::*;

use std::path::Path;

/// A folder `served/` below `dir` holding `fleet.git`: a bare clone of a
/// repository with fleet-example in `fleet/`, as a Git host keeps it.
fn served_fleet(dir: &Path) -> std::path::PathBuf {
    let work = dir.join("work");
    repo_with_fleet(&work);
    let served = dir.join("served");
    git2::build::RepoBuilder::new()
        .bare(true)
        .clone(s(&work), &served.join("fleet.git"))
        .unwrap();
    served
}

fn tag(repo: &git2::Repository, name: &str) {
    let head = repo.head().unwrap().peel_to_commit().unwrap();
    repo.tag_lightweight(name, head.as_object(), false).unwrap();
}

/// `metadata.annotations["canopy.dev/revision"]` of every object in a
/// cluster's state file.
fn revisions(state: &Path, cluster: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_slice(
        &std::fs::read(state.join("clusters").join(format!("{cluster}.json"))).unwrap(),
    )
    .unwrap();
    v["objects"]
        .as_object()
        .unwrap()
        .values()
        .map(|o| {
            o["metadata"]["annotations"]["canopy.dev/revision"]
                .as_str()
                .unwrap_or("(none)")
                .to_string()
        })
        .collect()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_local_repository_is_read_at_the_ref_not_from_the_working_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let origin = tmp.path().join("origin");
    let (repo, sha) = repo_with_fleet(&origin);
    tag(&repo, "v1.0.0");
    // An uncommitted edit that breaks the fleet: the ref, not the working
    // tree, is what is read.
    std::fs::write(origin.join("fleet/clusters/hub.yaml"), "kind: [broken").unwrap();
    let state = tmp.path().join("st");
    let args = on_repo("apply", s(&origin), "main", s(&state));
    let (code, out, err) = canopy_in(tmp.path(), &[], &args);
    assert_eq!(code, 0, "{out}{err}");
    let want = format!("v1.0.0@{sha}");
    let revs = revisions(&state, "hub");
    assert!(!revs.is_empty());
    assert!(revs.iter().all(|r| *r == want), "{revs:?}");

    let (code, out, err) = canopy_in(
        tmp.path(),
        &[],
        &on_repo("status", s(&origin), "v1.0.0", s(&state)),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.lines()
            .next()
            .unwrap()
            .contains(&format!("in-sync           revision v1.0.0@{}", &sha[..12])),
        "{out}"
    );

    // A commit that changes one workload: only its objects get the new
    // revision; the rest keep the one that wrote them.
    std::fs::remove_file(origin.join("fleet/clusters/hub.yaml")).unwrap();
    repo.checkout_head(Some(git2::build::CheckoutBuilder::new().force()))
        .unwrap();
    let dep = origin.join("fleet/workloads/web/deployment.yaml");
    let text = std::fs::read_to_string(&dep)
        .unwrap()
        .replace("replicas: 12", "replicas: 15");
    std::fs::write(&dep, text).unwrap();
    let sha2 = commit_all(&repo, "web to 15");
    let (code, out, err) = canopy_in(tmp.path(), &[], &args);
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("clusters/eu-west-1.json")).unwrap())
            .unwrap();
    let objects = v["objects"].as_object().unwrap();
    let rev_of = |id: &str| {
        objects[id]["metadata"]["annotations"]["canopy.dev/revision"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(rev_of(&obj_id("apps", "Deployment", "shop", "web")), sha2);
    assert_eq!(
        rev_of(&obj_id("apps", "Deployment", "shop", "api")),
        want,
        "an object the commit did not change keeps the revision that wrote it"
    );
    assert!(
        !tmp.path().join("cache").exists(),
        "a local repository is not cloned"
    );
}

#[test]
fn a_remote_is_cloned_into_the_cache_and_fetched_on_every_run() {
    let tmp = tempfile::tempdir().unwrap();
    let origin = tmp.path().join("origin");
    let (repo, _) = repo_with_fleet(&origin);
    let url = format!("file://{}", origin.display());
    let state = tmp.path().join("st");
    let args = |cmd: &'static str| {
        vec![
            cmd.to_string(),
            "--repo".into(),
            url.clone(),
            "--ref".into(),
            "main".into(),
            "--path".into(),
            "fleet".into(),
            "--state".into(),
            s(&state).to_string(),
        ]
    };
    let run = |cmd: &'static str| {
        let a = args(cmd);
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        canopy_in(tmp.path(), &[], &refs)
    };
    let (code, out, err) = run("apply");
    assert_eq!(code, 0, "{out}{err}");
    let caches: Vec<_> = std::fs::read_dir(tmp.path().join("cache/repos"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(caches.len(), 1, "one bare clone in the cache");
    assert!(caches[0].path().join("HEAD").exists());
    let (code, out, err) = run("diff");
    assert_eq!(code, 0, "nothing new: {out}{err}");

    let dep = origin.join("fleet/workloads/web/deployment.yaml");
    let text = std::fs::read_to_string(&dep)
        .unwrap()
        .replace("replicas: 12", "replicas: 18");
    std::fs::write(&dep, text).unwrap();
    commit_all(&repo, "web to 18");
    let (code, out, err) = run("diff");
    assert_eq!(code, 1, "the new commit is fetched: {out}{err}");
    assert!(
        out.contains("+  replicas:") || out.contains("replicas"),
        "{out}"
    );
    let again: Vec<_> = std::fs::read_dir(tmp.path().join("cache/repos"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(again.len(), 1, "the cache is reused");
}

#[test]
fn sources_that_cannot_be_read_fail_clearly_and_apply_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let origin = tmp.path().join("origin");
    let (repo, _) = repo_with_fleet(&origin);
    tag(&repo, "v1.0.0");
    let state = tmp.path().join("st");
    let run = |repo_arg: &str, reference: &str, path: &str| {
        canopy_in(
            tmp.path(),
            &[],
            &[
                "apply",
                "--repo",
                repo_arg,
                "--ref",
                reference,
                "--path",
                path,
                "--state",
                s(&state),
            ],
        )
    };
    let o = s(&origin);

    let (code, _, err) = run(o, "nope", "fleet");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown ref \"nope\""), "{err}");
    assert!(err.contains("it has: main, v1.0.0"), "{err}");

    let (code, _, err) = run(o, "main", "nowhere");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("\"nowhere\" does not exist at main"), "{err}");

    let (code, _, err) = run(o, "main", "../escape");
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("must be a folder inside the repository"),
        "{err}"
    );

    let not_repo = tmp.path().join("plain");
    std::fs::create_dir_all(&not_repo).unwrap();
    let (code, _, err) = run(s(&not_repo), "main", "fleet");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is not a Git repository"), "{err}");

    // A port nothing listens on: the remote is unreachable.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (code, _, err) = run(
        &format!("http://127.0.0.1:{port}/fleet.git"),
        "main",
        "fleet",
    );
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains(&format!("cannot fetch http://127.0.0.1:{port}/fleet.git")),
        "{err}"
    );

    assert!(
        state_files(&state).is_empty(),
        "nothing was applied by any failed run"
    );
}

#[test]
fn http_remotes_take_a_token_or_a_credential_helper_and_never_print_it() {
    let tmp = tempfile::tempdir().unwrap();
    let served = served_fleet(tmp.path());
    let token = "s3cret-token-7d1f";
    let server = git_http::GitHttp::start(&served, "bot", token);
    let url = server.url("fleet.git");
    let with_user = url.replacen("http://", "http://bot@", 1);
    let state = tmp.path().join("st");
    let apply = |url: &str, envs: &[(&str, &str)]| {
        canopy_in(tmp.path(), envs, &on_repo("apply", url, "main", s(&state)))
    };

    // No credential at all.
    let (code, out, err) = apply(&with_user, &[]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        err.contains(&format!("authentication to {url} failed")),
        "{err}"
    );
    assert!(err.contains("$CANOPY_GIT_TOKEN"), "{err}");
    assert!(state_files(&state).is_empty());

    // A wrong token, from the environment and inside the URL: never shown.
    let (code, out, err) = apply(&with_user, &[("CANOPY_GIT_TOKEN", "wrong-token-1a2b")]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(!format!("{out}{err}").contains("wrong-token-1a2b"), "{err}");
    let in_url = url.replacen("http://", "http://bot:wrong-token-3c4d@", 1);
    let (code, out, err) = apply(&in_url, &[]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(!format!("{out}{err}").contains("wrong-token-3c4d"), "{err}");
    assert!(
        err.contains(&format!("authentication to {url} failed")),
        "{err}"
    );
    assert!(state_files(&state).is_empty());

    // The right token, from the default variable and from a named one.
    let (code, out, err) = apply(&with_user, &[("CANOPY_GIT_TOKEN", token)]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!format!("{out}{err}").contains(token));
    assert_eq!(state_files(&state).len(), 12);
    let (code, out, err) = canopy_in(
        tmp.path(),
        &[("FLEET_TOKEN", token)],
        &[
            "diff",
            "--repo",
            &with_user,
            "--ref",
            "main",
            "--path",
            "fleet",
            "--state",
            s(&state),
            "--git-token-env",
            "FLEET_TOKEN",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");

    // Git's credential helper, when no token variable is set.
    let creds = tmp.path().join("git-credentials");
    std::fs::write(
        &creds,
        format!("http://bot:{token}@127.0.0.1:{}\n", server.port),
    )
    .unwrap();
    std::fs::write(
        tmp.path().join(".gitconfig"),
        format!(
            "[credential]\n\thelper = store --file={}\n",
            creds.display()
        ),
    )
    .unwrap();
    let (code, out, err) = apply(&with_user, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!format!("{out}{err}").contains(token));
    assert!(server.refused.load(std::sync::atomic::Ordering::SeqCst) > 0);
}

#[test]
fn ssh_remotes_take_a_key_file_or_the_agent_and_check_the_host() {
    let tmp = tempfile::tempdir().unwrap();
    let served = served_fleet(tmp.path()).join("fleet.git");
    let server = sshd::Sshd::start();
    let url = server.url(&served);
    let state = tmp.path().join("st");
    let apply = |envs: &[(&str, &str)], extra: &[&str]| {
        let mut args = on_repo("apply", &url, "main", s(&state));
        args.extend_from_slice(extra);
        canopy_in(tmp.path(), envs, &args)
    };
    let key = s(&server.user_key);

    // The host is not known yet: refused, whatever the key.
    let (code, out, err) = apply(&[], &["--ssh-key", key]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(err.contains("known_hosts"), "{err}");
    assert!(state_files(&state).is_empty());

    let ssh_dir = tmp.path().join(".ssh");
    std::fs::create_dir_all(&ssh_dir).unwrap();
    std::fs::write(ssh_dir.join("known_hosts"), &server.known_host).unwrap();

    // A key the server does not accept.
    let (code, out, err) = apply(&[], &["--ssh-key", s(&server.other_key)]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(err.contains("authentication to ssh://"), "{err}");
    assert!(err.contains("--ssh-key"), "{err}");
    assert!(state_files(&state).is_empty());

    // The key file.
    let (code, out, err) = apply(&[], &["--ssh-key", key]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(state_files(&state).len(), 12);

    // The agent, with no key file anywhere.
    let agent = sshd::Agent::with_key(tmp.path(), &server.user_key);
    let (code, out, err) = canopy_in(
        tmp.path(),
        &[("SSH_AUTH_SOCK", s(&agent.socket))],
        &on_repo("diff", &url, "main", s(&state)),
    );
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn https_remotes_verify_the_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let served = served_fleet(tmp.path());
    let token = "tls-token-9e8f";
    let server = git_http::GitHttp::start(&served, "bot", token);
    let tls = git_http::Tls::start(server.port);
    let url = tls.url("fleet.git").replacen("https://", "https://bot@", 1);
    let state = tmp.path().join("st");
    let args = on_repo("apply", &url, "main", s(&state));

    // A certificate nobody vouches for: refused, nothing applied.
    let empty_ca = tmp.path().join("no-ca.pem");
    std::fs::write(&empty_ca, "").unwrap();
    let (code, out, err) = canopy_in(
        tmp.path(),
        &[
            ("CANOPY_GIT_TOKEN", token),
            ("SSL_CERT_FILE", s(&empty_ca)),
            ("SSL_CERT_DIR", s(tmp.path())),
        ],
        &args,
    );
    assert_eq!(code, 3, "{out}{err}");
    assert!(err.contains("is not trusted"), "{err}");
    assert!(err.contains("SSL_CERT_FILE"), "{err}");
    assert!(!format!("{out}{err}").contains(token));
    assert!(state_files(&state).is_empty());

    // Trusted: the token goes over TLS and the fleet is applied.
    let (code, out, err) = canopy_in(
        tmp.path(),
        &[("CANOPY_GIT_TOKEN", token), ("SSL_CERT_FILE", s(&tls.cert))],
        &args,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(!format!("{out}{err}").contains(token));
    assert_eq!(state_files(&state).len(), 12);
}
