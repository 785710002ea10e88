//! Joining, against real kube-apiservers the suite starts on loopback: a
//! hub (the top of the fleet's tree, or a relay running `canopy agent`)
//! and newcomers, each its own API server, driven through the real
//! `canopy` binary (`token create`, `join`, `apply`, `agent --once`,
//! `leave`) and checked with plain API requests.

#[path = "support/api.rs"]
mod api;
#[path = "support/apiserver.rs"]
mod apiserver;
mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// 0: the hub (top of the tree); 1: a relay; 2, 3, 4: newcomers.
fn servers() -> &'static [apiserver::ApiServer] {
    static SERVERS: OnceLock<Vec<apiserver::ApiServer>> = OnceLock::new();
    SERVERS.get_or_init(|| apiserver::start_many(5))
}

fn kubeconfig(i: usize) -> PathBuf {
    servers()[i].kubeconfig.clone()
}

/// The tests share the servers: one runs at a time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn request_at(kubeconfig: &Path, method: &str, path: &str) -> Result<Value, kube::Error> {
    api::send(kubeconfig, method, path, None)
}

fn exists(kc: &Path, path: &str) -> bool {
    match request_at(kc, "GET", path) {
        Ok(_) => true,
        Err(kube::Error::Api(s)) if s.code == 404 => false,
        Err(e) => panic!("GET {path}: {e}"),
    }
}

fn get(kc: &Path, path: &str) -> Value {
    request_at(kc, "GET", path).unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// A fleet whose top `hub` (server 0) has a child `eu` (also server 0:
/// nothing is placed on it) and, `with_relay`, a relay `edge` (server 1);
/// workload `web` goes to clusters labelled tier=edge, with each cluster's
/// name in it.
fn fleet(fleet_name: &str, with_relay: bool) -> tempfile::TempDir {
    let mut clusters = format!(
        "apiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: hub}}\nspec:\n  connection: {{kubeconfig: {k0}}}\n---\n\
apiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: eu}}\nspec:\n  parent: hub\n  connection: {{kubeconfig: {k0}}}\n",
        k0 = kubeconfig(0).display(),
    );
    if with_relay {
        clusters.push_str(&format!(
            "---\napiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: edge}}\nspec:\n  parent: hub\n  relay: {{members: true}}\n  connection: {{kubeconfig: {}}}\n",
            kubeconfig(1).display()
        ));
    }
    let ns = format!("{fleet_name}-web");
    let workload = format!(
        "apiVersion: canopy.dev/v1alpha1\nkind: Workload\nmetadata: {{name: web}}\nspec:\n  namespace: {ns}\n  placement:\n    clusters:\n      selector: {{matchLabels: {{tier: edge}}}}\n"
    );
    let namespace = format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n");
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: hello}\ndata: {cluster: \"{{ cluster.name }}\"}\n";
    common::fleet(&[
        ("clusters.yaml", &clusters),
        ("workloads/web/workload.yaml", &workload),
        ("workloads/web/ns.yaml", &namespace),
        ("workloads/web/cm.yaml.j2", cm),
    ])
}

fn on(dir: &Path, fleet_name: &str, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["--fleet-name", fleet_name];
    all.extend(args.iter().map(|a| {
        if *a == "DIR" {
            dir.to_str().unwrap()
        } else {
            a
        }
    }));
    canopy(&all)
}

/// The join command `token create` printed: URL, token, CA pin.
struct Token {
    url: String,
    token: String,
    ca: String,
    id: String,
}

fn token(dir: &Path, fleet_name: &str, args: &[&str]) -> Token {
    let mut all = vec!["token", "create", "DIR"];
    all.extend_from_slice(args);
    let (code, out, err) = on(dir, fleet_name, &all);
    assert_eq!(code, 0, "token create: {out}{err}");
    let words: Vec<&str> = out.split_whitespace().collect();
    let after = |flag: &str| {
        words[words
            .iter()
            .position(|w| *w == flag)
            .unwrap_or_else(|| panic!("{flag} in {out}"))
            + 1]
        .to_string()
    };
    Token {
        url: words[words.iter().position(|w| *w == "join").unwrap() + 1].to_string(),
        token: after("--token"),
        ca: after("--ca-sha256"),
        id: words[1].to_string(),
    }
}

/// `canopy join` for the cluster of `kc`, with `reconcile` run (an apply
/// at the root, or an agent round) until the join answers.
fn join(
    t: &Token,
    kc: &Path,
    name: &str,
    extra: &[&str],
    reconcile: &dyn Fn(),
) -> (i32, String, String) {
    let mut args: Vec<String> = vec![
        "join".into(),
        t.url.clone(),
        "--token".into(),
        t.token.clone(),
        "--ca-sha256".into(),
        t.ca.clone(),
        "--name".into(),
        name.into(),
        "--kubeconfig".into(),
        kc.display().to_string(),
        "--timeout".into(),
        "60s".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let child = std::thread::spawn(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        canopy(&refs)
    });
    let start = Instant::now();
    while !child.is_finished() {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "the join never answered"
        );
        reconcile();
        std::thread::sleep(Duration::from_millis(100));
    }
    child.join().unwrap()
}

/// Whether the hub keeps a member namespace for `name` (one being deleted
/// does not count: the test servers run no namespace controller, so a
/// deleted namespace stays Terminating).
fn member_ns(hub: usize, name: &str) -> bool {
    let path = format!("/api/v1/namespaces/canopy-member-{name}");
    match request_at(&kubeconfig(hub), "GET", &path) {
        Ok(ns) => ns["metadata"]["deletionTimestamp"].is_null(),
        Err(kube::Error::Api(s)) if s.code == 404 => false,
        Err(e) => panic!("GET {path}: {e}"),
    }
}

/// Secrets handed over and not taken or cleaned up, in a token's namespace.
fn handed_over(hub: usize, id: &str) -> usize {
    get(
        &kubeconfig(hub),
        &format!("/api/v1/namespaces/canopy-join-{id}/secrets"),
    )["items"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0)
}

/// The Cluster document `canopy members export` writes for member `name`.
fn exported(dir: &Path, fleet_name: &str, name: &str) -> String {
    let export = tempfile::tempdir().unwrap();
    let out = export.path().to_str().unwrap();
    let (code, _, err) = on(dir, fleet_name, &["members", "export", "DIR", "--out", out]);
    assert_eq!(code, 0, "{err}");
    std::fs::read_to_string(export.path().join(format!("{name}.yaml"))).unwrap()
}

fn hello(kc: &Path, fleet_name: &str) -> Option<String> {
    match request_at(
        kc,
        "GET",
        &format!("/api/v1/namespaces/{fleet_name}-web/configmaps/hello"),
    ) {
        Ok(v) => v["data"]["cluster"].as_str().map(str::to_string),
        Err(kube::Error::Api(s)) if s.code == 404 => None,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn a_newcomer_joins_gets_its_workloads_and_keeps_its_identity() {
    let _one = serial();
    let f = fleet("jn1", false);
    let dir = f.path();
    let t = token(
        dir,
        "jn1",
        &["--parent", "eu", "--labels", "tier=edge,site=*"],
    );
    let apply = || {
        on(dir, "jn1", &["apply", "DIR"]);
    };
    let (code, out, err) = join(
        &t,
        &kubeconfig(2),
        "shop-a",
        &["--labels", "site=berlin"],
        &apply,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("joined as shop-a under eu"), "{out}");
    // In the tree at once, marked joined, labels from the token and the
    // request; and its workload applied on it.
    let (code, out, err) = on(dir, "jn1", &["apply", "DIR"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(hello(&kubeconfig(2), "jn1").as_deref(), Some("shop-a"));
    let (_, tree, _) = on(dir, "jn1", &["tree", "DIR"]);
    assert!(
        tree.contains("shop-a  [site=berlin, tier=edge]  (joined)"),
        "{tree}"
    );
    let (_, status, _) = on(dir, "jn1", &["status", "DIR"]);
    assert!(
        status
            .lines()
            .any(|l| l.contains("shop-a") && l.contains("(joined)")),
        "{status}"
    );
    let (_, explain, _) = on(dir, "jn1", &["explain", "DIR", "web"]);
    assert!(
        explain.contains("matches the selector (joined)"),
        "{explain}"
    );
    // The member credentials live in the newcomer, never on stdout.
    assert!(exists(
        &kubeconfig(2),
        "/api/v1/namespaces/canopy-system/secrets/canopy-membership"
    ));
    assert!(!out.contains(&t.token));

    // The same cluster joins again: same member, no use counted.
    let (code, out, err) = join(
        &t,
        &kubeconfig(2),
        "shop-a",
        &["--labels", "site=berlin"],
        &apply,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("joined again as shop-a"), "{out}");
    let (_, list, _) = on(dir, "jn1", &["token", "list", "DIR", "-o", "json"]);
    let list: Value = serde_json::from_str(&list).unwrap();
    let mine = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t2| t2["id"] == t.id.as_str())
        .unwrap();
    assert_eq!(mine["policy"]["uses"], 1);
    // It cannot take a second name.
    let (code, _, err) = join(&t, &kubeconfig(2), "shop-a2", &[], &apply);
    assert_eq!(code, 2);
    assert!(err.contains("already joined as \"shop-a\""), "{err}");
    // Another cluster asking for the same name is refused; nothing stays.
    let (code, _, err) = join(&t, &kubeconfig(3), "shop-a", &[], &apply);
    assert_eq!(code, 2);
    assert!(err.contains("taken by another joined cluster"), "{err}");
    assert_eq!(
        handed_over(0, &t.id),
        0,
        "the handed-over Secret of a refused request is deleted"
    );
    // A name Git holds is refused too.
    let (code, _, err) = join(&t, &kubeconfig(3), "eu", &[], &apply);
    assert_eq!(code, 2);
    assert!(err.contains("in the fleet's Git repository"), "{err}");

    // Exported, committed: Git holds it and wins; the credentials it handed
    // over still reach it.
    let doc = exported(dir, "jn1", "shop-a");
    assert!(
        doc.contains("joined: true") && doc.contains("canopy.dev/joined:"),
        "{doc}"
    );
    std::fs::write(
        dir.join("shop-a.yaml"),
        doc.replace("site: berlin", "site: munich"),
    )
    .unwrap();
    let (code, out, err) = on(dir, "jn1", &["apply", "DIR"]);
    assert_eq!(code, 0, "{out}{err}");
    let (_, tree, _) = on(dir, "jn1", &["tree", "DIR"]);
    assert!(
        tree.contains("shop-a  [site=munich, tier=edge]"),
        "Git wins: {tree}"
    );
    std::fs::remove_file(dir.join("shop-a.yaml")).unwrap();

    // It leaves: retired on the next reconcile, its objects stay.
    let (code, out, err) = canopy(&["leave", "--kubeconfig", kubeconfig(2).to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = on(dir, "jn1", &["apply", "DIR"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("left: shop-a"), "{err}");
    assert!(
        !member_ns(0, "shop-a"),
        "{}",
        get(&kubeconfig(0), "/api/v1/namespaces/canopy-member-shop-a")
    );
    let (_, tree, _) = on(dir, "jn1", &["tree", "DIR"]);
    assert!(!tree.contains("shop-a"), "{tree}");
    assert_eq!(hello(&kubeconfig(2), "jn1").as_deref(), Some("shop-a"));
}

#[test]
fn requests_outside_a_tokens_policy_are_refused_and_leave_nothing() {
    let _one = serial();
    let f = fleet("jn2", false);
    let dir = f.path();
    let apply = || {
        on(dir, "jn2", &["apply", "DIR"]);
    };
    let t = token(
        dir,
        "jn2",
        &["--parent", "eu", "--labels", "tier=edge", "--max-uses", "1"],
    );
    let refused = |kc: usize, name: &str, extra: &[&str], t: &Token| {
        let (code, out, err) = join(t, &kubeconfig(kc), name, extra, &apply);
        assert_ne!(code, 0, "{out}");
        assert!(
            !member_ns(0, name),
            "refused {name}, yet its member namespace exists"
        );
        assert!(!err.contains(&t.token), "the token is never printed: {err}");
        err
    };
    let err = refused(3, "bad-label", &["--labels", "site=paris"], &t);
    assert!(
        err.contains("label site=\"paris\" is not allowed by the token"),
        "{err}"
    );
    let err = refused(3, "bad-parent", &["--parent", "hub"], &t);
    assert!(err.contains("allows only \"eu\""), "{err}");
    let mut wrong = token(dir, "jn2", &["--parent", "eu"]);
    wrong.ca = format!("sha256:{}", "0".repeat(64));
    let err = refused(3, "bad-ca", &[], &wrong);
    assert!(
        err.contains("do not match --ca-sha256") && err.contains("nothing was sent"),
        "{err}"
    );
    assert_eq!(handed_over(0, &wrong.id), 0);
    // Uses: the first newcomer takes the only one, the next is refused.
    let (code, out, err) = join(&t, &kubeconfig(3), "only-one", &[], &apply);
    assert_eq!(code, 0, "{out}{err}");
    let err = refused(4, "one-too-many", &[], &t);
    assert!(err.contains("already used 1 time(s)"), "{err}");
    assert_eq!(handed_over(0, &t.id), 0);
    // Expired.
    let short = token(dir, "jn2", &["--parent", "eu", "--ttl", "1s"]);
    std::thread::sleep(Duration::from_millis(2100));
    let err = refused(4, "too-late", &[], &short);
    assert!(err.contains("the token expired"), "{err}");
    assert_eq!(handed_over(0, &short.id), 0);
    // Revoked: the API server itself refuses the token.
    let gone = token(dir, "jn2", &["--parent", "eu"]);
    let (code, out, _) = on(dir, "jn2", &["token", "revoke", "DIR", &gone.id]);
    assert_eq!(code, 0, "{out}");
    let err = refused(4, "revoked", &[], &gone);
    assert!(err.contains("credentials were rejected"), "{err}");
    // Clean up the member for the other tests.
    on(dir, "jn2", &["members", "remove", "DIR", "only-one"]);
    let _ = canopy(&["leave", "--kubeconfig", kubeconfig(3).to_str().unwrap()]);
}

#[test]
fn credentials_are_renewed_and_an_unreachable_hub_costs_nothing() {
    let _one = serial();
    let f = fleet("jn3", false);
    let dir = f.path();
    let t = token(dir, "jn3", &["--parent", "eu", "--labels", "tier=edge"]);
    let apply = || {
        on(dir, "jn3", &["apply", "DIR"]);
    };
    let (code, out, err) = join(&t, &kubeconfig(4), "renewed", &[], &apply);
    assert_eq!(code, 0, "{out}{err}");
    let push = "/api/v1/namespaces/canopy-member-renewed/secrets/push";
    let before = get(&kubeconfig(0), push)["data"]["token"].clone();
    let membership = "/api/v1/namespaces/canopy-system/secrets/canopy-membership";
    let member_before = get(&kubeconfig(4), membership)["data"]["token"].clone();
    // Renew whatever expires within a day: every run renews.
    let (code, out, err) = canopy_in(
        Path::new("."),
        &[("CANOPY_JOIN_RENEW_BEFORE", "86400")],
        &["--fleet-name", "jn3", "apply", dir.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("renewed the credentials that reach renewed"),
        "{err}"
    );
    let after = get(&kubeconfig(0), push)["data"]["token"].clone();
    assert_ne!(before, after, "a new token was stored");
    // The member credentials kept in the member are renewed with them.
    let member_after = get(&kubeconfig(4), membership)["data"]["token"].clone();
    assert_ne!(
        member_before, member_after,
        "the member's own token was renewed"
    );
    // The renewed credentials reach the member: a change is applied.
    std::fs::write(
        dir.join("workloads/web/cm.yaml.j2"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: hello}\ndata: {cluster: \"{{ cluster.name }}-2\"}\n",
    )
    .unwrap();
    let (code, out, err) = on(dir, "jn3", &["apply", "DIR"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(hello(&kubeconfig(4), "jn3").as_deref(), Some("renewed-2"));

    // The hub does not answer: its members are left out of the run, with
    // a warning, and nothing of theirs is touched.
    let clusters = std::fs::read_to_string(dir.join("clusters.yaml")).unwrap();
    let dead = dir.join("dead-kubeconfig");
    let text = std::fs::read_to_string(kubeconfig(0)).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let start = text.find("server: ").unwrap();
    let end = start + text[start..].find('\n').unwrap();
    std::fs::write(
        &dead,
        format!(
            "{}server: https://127.0.0.1:{port}{}",
            &text[..start],
            &text[end..]
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("clusters.yaml"),
        clusters.replacen(
            &kubeconfig(0).display().to_string(),
            &dead.display().to_string(),
            2,
        ),
    )
    .unwrap();
    let (_, _, err) = on(dir, "jn3", &["apply", "DIR", "--request-timeout", "2s"]);
    assert!(
        err.contains("the members of hub hub are left out of this run"),
        "{err}"
    );
    assert_eq!(hello(&kubeconfig(4), "jn3").as_deref(), Some("renewed-2"));
    // Nor would --prune-clusters take them for clusters that left.
    let (code, _, err) = on(
        dir,
        "jn3",
        &[
            "apply",
            "DIR",
            "--prune-clusters",
            "--request-timeout",
            "2s",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--prune-clusters with hub(s) hub unread"),
        "{err}"
    );
    assert_eq!(hello(&kubeconfig(4), "jn3").as_deref(), Some("renewed-2"));
    std::fs::write(dir.join("clusters.yaml"), clusters).unwrap();
    on(dir, "jn3", &["members", "remove", "DIR", "renewed"]);
    let _ = canopy(&["leave", "--kubeconfig", kubeconfig(4).to_str().unwrap()]);
}

#[test]
fn a_newcomer_joins_a_relay_and_its_agent_reconciles_it() {
    let _one = serial();
    let f = fleet("jn4", true);
    let dir = f.path();
    // The root hands the relay its slice.
    let (code, out, err) = on(dir, "jn4", &["apply", "DIR", "--timeout", "1s"]);
    assert!(code == 0 || code == 4, "{out}{err}");
    let state = tempfile::tempdir().unwrap();
    let agent = || {
        canopy(&[
            "agent",
            "--cluster",
            "edge",
            "--kubeconfig",
            kubeconfig(1).to_str().unwrap(),
            "--state",
            state.path().to_str().unwrap(),
            "--once",
            "--lease-duration",
            "1s",
        ])
    };
    // The token lives in the relay's own cluster: its agent is the hub.
    let t = token(dir, "jn4", &["--parent", "edge", "--labels", "tier=edge"]);
    assert!(exists(
        &kubeconfig(1),
        &format!("/api/v1/namespaces/canopy-join-{}", t.id)
    ));
    let (code, out, err) = join(&t, &kubeconfig(3), "below-relay", &[], &|| {
        agent();
    });
    assert_eq!(code, 0, "{out}{err}");
    assert!(member_ns(1, "below-relay"));
    assert!(!member_ns(0, "below-relay"));
    let (code, out, err) = agent();
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(hello(&kubeconfig(3), "jn4").as_deref(), Some("below-relay"));
    on(dir, "jn4", &["members", "remove", "DIR", "below-relay"]);
    let _ = canopy(&["leave", "--kubeconfig", kubeconfig(3).to_str().unwrap()]);
}

/// Twenty newcomers, each its own API server, join the same parent at
/// once while `canopy watch` runs: all are in the tree and applied.
#[test]
fn twenty_newcomers_join_at_once() {
    let newcomers = apiserver::start_many(20);
    let _one = serial();
    let f = fleet("jn5", false);
    let dir = f.path();
    let t = token(dir, "jn5", &["--parent", "eu", "--labels", "tier=edge"]);
    let state = tempfile::tempdir().unwrap();
    let mut watch = std::process::Command::new(canopy_bin())
        .args([
            "--fleet-name",
            "jn5",
            "watch",
            dir.to_str().unwrap(),
            "--state",
        ])
        .arg(state.path())
        .args(["--join-poll", "100ms"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let joins: Vec<_> = newcomers
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let args: Vec<String> = vec![
                "join".into(),
                t.url.clone(),
                "--token".into(),
                t.token.clone(),
                "--ca-sha256".into(),
                t.ca.clone(),
                "--name".into(),
                format!("shop-{i:02}"),
                "--kubeconfig".into(),
                s.kubeconfig.display().to_string(),
                "--timeout".into(),
                "120s".into(),
            ];
            std::thread::spawn(move || {
                let refs: Vec<&str> = args.iter().map(String::as_str).collect();
                canopy(&refs)
            })
        })
        .collect();
    for j in joins {
        let (code, out, err) = j.join().unwrap();
        assert_eq!(code, 0, "{out}{err}");
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    for (i, s) in newcomers.iter().enumerate() {
        while hello(&s.kubeconfig, "jn5").as_deref() != Some(format!("shop-{i:02}").as_str()) {
            assert!(Instant::now() < deadline, "shop-{i:02} was never applied");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    eprintln!("twenty joins applied in {:?}", start.elapsed());
    let _ = watch.kill();
    let _ = watch.wait();
    let (_, tree, _) = on(dir, "jn5", &["tree", "DIR", "-o", "json"]);
    for i in 0..20 {
        on(
            dir,
            "jn5",
            &["members", "remove", "DIR", &format!("shop-{i:02}")],
        );
    }
    let tree: Value = serde_json::from_str(&tree).unwrap();
    let joined = tree["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["joined"] == true && c["parent"] == "eu")
        .count();
    assert_eq!(joined, 20);
}

/// A newcomer its parent cannot reach joins in pull mode: it hands over
/// nothing; the root's apply keeps what it should run in the hub, and its
/// own agent applies it, prunes what it no longer runs, renews its
/// credentials, and keeps what it runs when the hub does not answer.
#[test]
fn a_newcomer_joins_in_pull_mode_and_its_own_agent_applies() {
    let _one = serial();
    let f = fleet("jn6", false);
    let dir = f.path();
    let t = token(dir, "jn6", &["--parent", "eu", "--labels", "tier=edge"]);
    let apply = || {
        on(dir, "jn6", &["apply", "DIR"]);
    };
    let (code, out, err) = join(&t, &kubeconfig(2), "pulled", &["--mode", "pull"], &apply);
    assert_eq!(code, 0, "{out}{err}");
    // Nothing was handed over: the hub holds no credentials to reach it.
    assert!(!exists(
        &kubeconfig(0),
        "/api/v1/namespaces/canopy-member-pulled/secrets/push"
    ));
    let (code, out, err) = on(dir, "jn6", &["apply", "DIR"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(exists(
        &kubeconfig(0),
        "/api/v1/namespaces/canopy-member-pulled/secrets/desired"
    ));
    let agent = |envs: &[(&str, &str)]| {
        canopy_in(
            Path::new("."),
            envs,
            &[
                "agent",
                "joined",
                "--kubeconfig",
                kubeconfig(2).to_str().unwrap(),
                "--once",
            ],
        )
    };
    let (code, out, err) = agent(&[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("2 created"), "{out}");
    assert_eq!(hello(&kubeconfig(2), "jn6").as_deref(), Some("pulled"));
    let report = get(
        &kubeconfig(0),
        "/api/v1/namespaces/canopy-member-pulled/configmaps/applied",
    );
    assert!(
        report["data"]["report"]
            .as_str()
            .unwrap()
            .contains("\"ok\":true"),
        "{report}"
    );

    // A change, then a removal: applied, then pruned, by the member itself.
    std::fs::write(
        dir.join("workloads/web/cm.yaml.j2"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: hello}\ndata: {cluster: \"{{ cluster.name }}-2\"}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: extra}\ndata: {a: b}\n",
    )
    .unwrap();
    let (code, out, err) = on(dir, "jn6", &["apply", "DIR"]);
    assert_eq!(code, 0, "{out}{err}");
    // Renew whatever expires within a day: the round renews.
    let before = get(
        &kubeconfig(2),
        "/api/v1/namespaces/canopy-system/secrets/canopy-membership",
    )["data"]["token"]
        .clone();
    let (code, out, err) = agent(&[("CANOPY_JOIN_RENEW_BEFORE", "86400")]);
    assert_eq!(code, 0, "{out}{err}");
    let after = get(
        &kubeconfig(2),
        "/api/v1/namespaces/canopy-system/secrets/canopy-membership",
    )["data"]["token"]
        .clone();
    assert_ne!(before, after, "the member credentials were renewed");
    assert_eq!(hello(&kubeconfig(2), "jn6").as_deref(), Some("pulled-2"));
    assert!(exists(
        &kubeconfig(2),
        "/api/v1/namespaces/jn6-web/configmaps/extra"
    ));
    std::fs::write(
        dir.join("workloads/web/cm.yaml.j2"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: hello}\ndata: {cluster: \"{{ cluster.name }}-2\"}\n",
    )
    .unwrap();
    on(dir, "jn6", &["apply", "DIR"]);
    let (code, out, err) = agent(&[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 deleted"), "{out}");
    assert!(!exists(
        &kubeconfig(2),
        "/api/v1/namespaces/jn6-web/configmaps/extra"
    ));

    // The hub gone for the member: the round fails, the member keeps what
    // it runs.
    let membership = "/api/v1/namespaces/canopy-system/secrets/canopy-membership";
    let m = get(&kubeconfig(2), membership);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("https://127.0.0.1:{port}"),
    );
    patch_secret(&kubeconfig(2), membership, "server", &dead);
    let (code, _, err) = agent(&[]);
    assert_eq!(code, 3, "{err}");
    assert_eq!(hello(&kubeconfig(2), "jn6").as_deref(), Some("pulled-2"));
    patch_secret(
        &kubeconfig(2),
        membership,
        "server",
        m["data"]["server"].as_str().unwrap(),
    );
    let (code, out, err) = canopy(&["leave", "--kubeconfig", kubeconfig(2).to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    apply();
    assert!(!member_ns(0, "pulled"));
}

/// Sets one (base64) data key of a Secret.
fn patch_secret(kc: &Path, path: &str, key: &str, b64: &str) {
    let body = serde_json::json!({ "data": { key: b64 } });
    api::send(
        kc,
        "PATCH",
        path,
        Some(("application/merge-patch+json", body)),
    )
    .unwrap_or_else(|e| panic!("PATCH {path}: {e}"));
}

/// The `kube-system` UID of the cluster of `kc`: its identity in a join.
fn uid(kc: &Path) -> String {
    get(kc, "/api/v1/namespaces/kube-system")["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string()
}

/// What reaches the API server of `kc` as a push-mode newcomer hands it
/// over: its URL, its CA (the certificates the harness's server made) and
/// its admin token.
fn credentials_of(kc: &Path) -> canopy::core::model::Credentials {
    let doc: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(kc).unwrap()).unwrap();
    let cert = kc.parent().unwrap().join("certs/apiserver.crt");
    canopy::core::model::Credentials {
        server: doc["clusters"][0]["cluster"]["server"]
            .as_str()
            .unwrap()
            .to_string(),
        ca_pem: std::fs::read_to_string(cert).unwrap(),
        token: doc["users"][0]["user"]["token"]
            .as_str()
            .unwrap()
            .to_string(),
    }
}

/// A kubeconfig for the hub (server 0) that authenticates as the holder
/// of join token `t`.
fn as_token_holder(dir: &Path, t: &Token) -> PathBuf {
    let path = dir.join("token-holder.kubeconfig");
    let text = std::fs::read_to_string(kubeconfig(0))
        .unwrap()
        .replace("token: canopy-test-token", &format!("token: {}", t.token));
    std::fs::write(&path, text).unwrap();
    path
}

/// What a token holder can do with the join API by hand: a request for
/// `name` claiming `identity`, signed with an identity key of its own
/// (`seed`), in pull mode or (with `push`) handing over those credentials.
/// Returns the request's name.
fn forged_request(
    holder: &Path,
    t: &Token,
    name: &str,
    identity: &str,
    seed: u8,
    push: Option<&canopy::core::model::Credentials>,
) -> String {
    use base64::Engine;
    use ring::signature::KeyPair;
    let b64 = base64::engine::general_purpose::STANDARD;
    let ns = format!("canopy-join-{}", t.id);
    let public_key = b64.encode([seed; 32]);
    let push_secret = push.map(|c| {
        let s = api::send(
            holder,
            "POST",
            &format!("/api/v1/namespaces/{ns}/secrets"),
            Some((
                "application/json",
                serde_json::json!({
                    "apiVersion": "v1", "kind": "Secret",
                    "metadata": {"generateName": "push-", "labels": {"canopy.dev/member": "handed-over"}},
                    "data": {
                        "server": b64.encode(&c.server), "ca.crt": b64.encode(&c.ca_pem),
                        "token": b64.encode(&c.token), "publicKey": b64.encode(&public_key),
                    }
                }),
            )),
        )
        .unwrap();
        s["metadata"]["name"].as_str().unwrap().to_string()
    });
    let key = ring::signature::Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).unwrap();
    let mut spec = canopy::core::join::RequestSpec {
        cluster: name.into(),
        identity: identity.into(),
        parent: None,
        labels: Default::default(),
        mode: if push.is_some() {
            canopy::core::join::Mode::Push
        } else {
            canopy::core::join::Mode::Pull
        },
        public_key,
        push_secret,
        identity_key: Some(b64.encode(key.public_key().as_ref())),
        signature: None,
    };
    let digest = push
        .map(canopy::core::join::push_digest)
        .unwrap_or_default();
    let message = canopy::core::join::signed_message(&spec, &digest);
    spec.signature = Some(b64.encode(key.sign(&message).as_ref()));
    let r = api::send(
        holder,
        "POST",
        &format!("/apis/canopy.dev/v1alpha1/namespaces/{ns}/joinrequests"),
        Some((
            "application/json",
            serde_json::json!({
                "apiVersion": "canopy.dev/v1alpha1", "kind": "JoinRequest",
                "metadata": {"generateName": format!("{name}-")},
                "spec": spec,
            }),
        )),
    )
    .unwrap();
    r["metadata"]["name"].as_str().unwrap().to_string()
}

/// A member exists only through the hub's own admission (issue 28): its
/// UID is no secret, so a token holder who claims it with another identity
/// key, or hands over another cluster's credentials under it, is refused
/// and the member keeps what reaches it; a namespace someone labels as a
/// member is ignored with a warning that names it; and a member exported
/// into Git is Git's, so a request for its name is refused.
#[test]
fn only_what_the_hub_admitted_is_a_member() {
    let _one = serial();
    let f = fleet("jn7", false);
    let dir = f.path();
    let t = token(
        dir,
        "jn7",
        &["--parent", "eu", "--labels", "tier=edge", "--max-uses", "5"],
    );
    let apply = || {
        on(dir, "jn7", &["apply", "DIR"]);
    };
    let (code, out, err) = join(&t, &kubeconfig(2), "shop-k", &[], &apply);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = on(dir, "jn7", &["apply", "DIR"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(hello(&kubeconfig(2), "jn7").as_deref(), Some("shop-k"));
    let push = "/api/v1/namespaces/canopy-member-shop-k/secrets/push";
    let kept = get(&kubeconfig(0), push)["data"].clone();
    let record = get(
        &kubeconfig(0),
        "/api/v1/namespaces/canopy-system/configmaps/member-shop-k",
    );
    assert!(
        record["data"]["member"]
            .as_str()
            .unwrap()
            .contains("identityKey"),
        "{record}"
    );

    let holder = as_token_holder(dir, &t);
    let verdict = |request: &str| {
        let path = format!(
            "/apis/canopy.dev/v1alpha1/namespaces/canopy-join-{}/joinrequests/{request}",
            t.id
        );
        for _ in 0..50 {
            on(dir, "jn7", &["apply", "DIR"]);
            let status = get(&kubeconfig(0), &path)["status"].clone();
            if !status["phase"].is_null() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("request {request} never answered");
    };
    // Its UID, claimed with another identity key (pull mode: nothing to
    // hand over).
    let status = verdict(&forged_request(
        &holder,
        &t,
        "shop-k",
        &uid(&kubeconfig(2)),
        41,
        None,
    ));
    assert_eq!(status["phase"], "Refused", "{status}");
    assert!(
        status["reason"]
            .as_str()
            .unwrap()
            .contains("is a member whose identity key is another"),
        "{status}"
    );
    // Its UID, handing over what reaches another cluster (server 3).
    let other = credentials_of(&kubeconfig(3));
    let status = verdict(&forged_request(
        &holder,
        &t,
        "shop-k",
        &uid(&kubeconfig(2)),
        42,
        Some(&other),
    ));
    assert_eq!(status["phase"], "Refused", "{status}");
    assert!(
        status["reason"].as_str().unwrap().contains(&format!(
            "reach a cluster whose kube-system UID is \"{}\"",
            uid(&kubeconfig(3))
        )),
        "{status}"
    );
    assert_eq!(
        handed_over(0, &t.id),
        0,
        "the handed-over Secret is deleted"
    );
    assert_eq!(
        get(&kubeconfig(0), push)["data"],
        kept,
        "the member keeps what reaches it"
    );
    assert_eq!(hello(&kubeconfig(3), "jn7"), None);

    // A namespace labelled as a member, by someone who may create one,
    // with what reaches server 3.
    let b64 = |s: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    for (path, obj) in [
        (
            "/api/v1/namespaces",
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {
                "name": "canopy-member-evil", "labels": {"canopy.dev/member": "evil"},
                "annotations": {"canopy.dev/member": "{\"name\":\"evil\",\"identity\":\"x\",\"parent\":\"eu\",\"labels\":{\"tier\":\"edge\"},\"mode\":\"push\",\"token\":\"t\",\"joinedAt\":1}"}}}),
        ),
        (
            "/api/v1/namespaces/canopy-member-evil/secrets",
            serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {
                "name": "push", "labels": {"canopy.dev/member": "push"}},
                "data": {"server": b64(&other.server), "ca.crt": b64(&other.ca_pem), "token": b64(&other.token)}}),
        ),
    ] {
        api::send(
            &kubeconfig(0),
            "POST",
            path,
            Some(("application/json", obj)),
        )
        .unwrap();
    }
    let (code, out, err) = on(dir, "jn7", &["apply", "DIR"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("warning: hub hub: namespace canopy-member-evil is labelled as a member, but canopy never admitted it"),
        "{err}"
    );
    let (_, tree, _) = on(dir, "jn7", &["tree", "DIR"]);
    assert!(!tree.contains("evil") && tree.contains("shop-k"), "{tree}");
    assert_eq!(
        hello(&kubeconfig(3), "jn7"),
        None,
        "nothing sent to server 3"
    );

    // Exported into Git: the name is Git's, even for the member itself.
    std::fs::write(dir.join("shop-k.yaml"), exported(dir, "jn7", "shop-k")).unwrap();
    let (code, _, err) = join(&t, &kubeconfig(2), "shop-k", &[], &apply);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("taken by a cluster in the fleet's Git repository"),
        "{err}"
    );
    std::fs::remove_file(dir.join("shop-k.yaml")).unwrap();

    // The member itself, with its key, joins again.
    let (code, out, err) = join(&t, &kubeconfig(2), "shop-k", &[], &apply);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("joined again as shop-k"), "{out}");
    let (code, out, err) = canopy(&["leave", "--kubeconfig", kubeconfig(2).to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    on(dir, "jn7", &["apply", "DIR"]);
}
