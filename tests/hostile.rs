//! Hostile and careless input (issue 13), through the real binary: each case
//! is refused with its file, line and limit, and nothing is applied or
//! pruned. Cases 1–3 and 8 of the issue; each reproduced the failure on
//! the code before the limits (a 3 GiB alias bomb, a panic on 127 levels, a
//! NUL byte that silently dropped four clusters, bytes read differently
//! from a folder and from Git).

mod common;
use common::*;

use std::path::Path;

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// fleet-example copied, applied once into `state`; returns the copy.
fn applied_example(state: &Path) -> (tempfile::TempDir, std::path::PathBuf) {
    let (tmp, dir) = example_copy();
    let (code, out, err) = canopy(&["apply", s(&dir), "--state", s(state)]);
    assert_eq!(code, 0, "{out}{err}");
    (tmp, dir)
}

/// `apply --prune-clusters` of `dir` is refused with `expected` on stderr,
/// and no state byte changes.
fn refused_without_a_write(dir: &Path, state: &Path, expected: &[&str]) {
    let before = state_files(state);
    assert!(!before.is_empty());
    for cmd in [
        vec!["validate", s(dir)],
        vec!["apply", s(dir), "--state", s(state), "--prune-clusters"],
    ] {
        let (code, out, err) = canopy(&cmd);
        assert_eq!(code, 2, "{cmd:?}: {out}{err}");
        for e in expected {
            assert!(err.contains(e), "{cmd:?} should say {e:?}:\n{err}");
        }
    }
    assert_eq!(state_files(state), before, "nothing applied or pruned");
}

#[test]
fn an_alias_bomb_is_refused_at_the_alias_that_crosses_the_limit() {
    let state = tempfile::tempdir().unwrap();
    let (_tmp, dir) = applied_example(state.path());
    // Ten levels of ten aliases in a cluster's values.
    let values = alias_bomb("    ");
    let path = dir.join("clusters/bomb.yaml");
    std::fs::write(
        &path,
        format!("apiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: bomb}}\nspec:\n  parent: hub\n  values:\n{values}"),
    )
    .unwrap();
    refused_without_a_write(
        &dir,
        state.path(),
        &[
            "error: clusters/bomb.yaml:11: malformed YAML: aliases here expand to more than 100000 nodes (canopy's limit on YAML alias expansion)",
        ],
    );
}

#[test]
fn deep_nesting_is_refused_in_block_and_flow_style_without_a_crash() {
    let state = tempfile::tempdir().unwrap();
    let (_tmp, dir) = applied_example(state.path());
    let manifest = dir.join("workloads/web/deep.yaml");
    // 130 levels in block style: applied and then unreadable (or a panic)
    // before the limit.
    let mut block =
        String::from("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: deep}\ndata:\n");
    let mut nest = String::new();
    for i in 0..130 {
        nest.push_str(&format!("{}k{i}:\n", "  ".repeat(i + 1)));
    }
    block.push_str(&nest);
    std::fs::write(&manifest, &block).unwrap();
    refused_without_a_write(
        &dir,
        state.path(),
        &[
            "workloads/web/deep.yaml:",
            "nest deeper than 100 levels here (canopy's limit)",
        ],
    );
    // 100,000 levels in flow style overflowed the stack before.
    let flow = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: deep}}\nx: {}{}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    std::fs::write(&manifest, flow).unwrap();
    refused_without_a_write(
        &dir,
        state.path(),
        &["workloads/web/deep.yaml:4:", "deeper than 100 levels"],
    );
}

#[test]
fn a_nul_byte_is_an_error_and_no_cluster_silently_vanishes() {
    let state = tempfile::tempdir().unwrap();
    let (_tmp, dir) = applied_example(state.path());
    // A NUL after the first document of clusters/eu.yaml: the reader used
    // to stop there, the other clusters of the file vanished from the fleet,
    // and --prune-clusters deleted their objects.
    let path = dir.join("clusters/eu.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let cut = text.find("\n---").expect("several documents");
    let mut bytes = text.as_bytes().to_vec();
    bytes.insert(cut, 0);
    std::fs::write(&path, &bytes).unwrap();
    let line = text[..cut].matches('\n').count() + 1;
    refused_without_a_write(
        &dir,
        state.path(),
        &[&format!(
            "error: clusters/eu.yaml:{line}: malformed YAML: a NUL byte (at byte {cut}) cannot be in YAML text"
        )],
    );
}

#[test]
fn invalid_utf8_is_the_same_error_from_a_folder_and_from_git() {
    let home = tempfile::tempdir().unwrap();
    let repo_dir = home.path().join("repo");
    let (repo, _) = repo_with_fleet(&repo_dir);
    let path = repo_dir.join("fleet/clusters/hub.yaml");
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len();
    bytes.extend_from_slice(b"# caf\xe9\n");
    std::fs::write(&path, &bytes).unwrap();
    commit_all(&repo, "latin-1");
    let line = bytes[..at].iter().filter(|&&b| b == b'\n').count() + 1;
    let expected = format!(
        "error: clusters/hub.yaml:{line}: not UTF-8 text: invalid byte at offset {} (line {line})",
        at + 5
    );
    let fleet = repo_dir.join("fleet");
    let from_git = vec![
        "validate",
        "--repo",
        s(&repo_dir),
        "--ref",
        "main",
        "--path",
        "fleet",
    ];
    for args in [vec!["validate", s(&fleet)], from_git] {
        let (code, out, err) = canopy_in(home.path(), &[], &args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(
            err.contains(&expected),
            "{args:?} should say {expected:?}:\n{err}"
        );
    }
}

/// A template's loop of loops, or a template that writes gigabytes, is a
/// render error naming the file, the cluster and the limit, found by
/// `validate` too (it renders every cluster); nothing is applied.
#[test]
fn templates_are_bounded_in_steps_and_output() {
    let state = tempfile::tempdir().unwrap();
    let (_tmp, dir) = applied_example(state.path());
    let file = dir.join("workloads/web/loop.yaml.j2");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: loop}\ndata:\n  n: \"{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}\"\n",
    )
    .unwrap();
    let started = std::time::Instant::now();
    refused_without_a_write(
        &dir,
        state.path(),
        &[
            "workloads/web/loop.yaml.j2:5: template error while rendering for cluster",
            "the template used more than 300000 fuel (canopy's limit per render",
        ],
    );
    // A string doubled in a loop: few steps, gigabytes of data. Fuel
    // charges the bytes, so it stops at about 64 MB.
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: double}\ndata:\n  n: \"{% set ns = namespace(x='x' * 1000000) %}{% for i in range(40) %}{% set ns.x = ns.x ~ ns.x %}{% endfor %}{{ ns.x | length }}\"\n",
    )
    .unwrap();
    refused_without_a_write(
        &dir,
        state.path(),
        &[
            "workloads/web/loop.yaml.j2:5: template error while rendering for cluster",
            "the template used more than 300000 fuel (canopy's limit per render",
        ],
    );
    // Two runs of the binary, each stopped by the limit: seconds, not the
    // hours the loop would take.
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    std::fs::write(
        &file,
        format!(
            "{{% for i in range(10000) %}}# {}\n{{% endfor %}}apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: big}}\n",
            "x".repeat(1000)
        ),
    )
    .unwrap();
    refused_without_a_write(
        &dir,
        state.path(),
        &["the rendered text passed 8 MiB (canopy's limit per manifest file)"],
    );
}

/// A rendered Secret that is not valid YAML is reported by its line
/// number; the line, which may hold the value, is not printed.
#[test]
fn a_broken_rendered_secret_is_reported_without_its_value() {
    let state = tempfile::tempdir().unwrap();
    let (_tmp, dir) = applied_example(state.path());
    std::fs::write(
        dir.join("workloads/web/secret.yaml.j2"),
        "apiVersion: v1\nkind: Secret\nmetadata: {name: db}\nstringData:\n  password: {{ 'hunter2: \"oops' }}\n",
    )
    .unwrap();
    let (code, out, err) = canopy(&["validate", s(&dir)]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("rendered manifest is not valid YAML for cluster")
            && err.contains("(not shown: this file renders a Secret)"),
        "{err}"
    );
    assert!(
        !err.contains("hunter2") && !out.contains("hunter2"),
        "{err}"
    );
}

/// Case 6: a repository that commits links in its state folder cannot send
/// canopy's writes elsewhere; case 5's last part and case 7's: the state
/// is private, and temporary files an interrupted run left are swept.
#[cfg(unix)]
#[test]
fn the_state_folder_is_canopys_own_private_and_swept() {
    use std::os::unix::fs::{symlink, PermissionsExt};
    let (tmp, dir) = example_copy();
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("precious"), "keep").unwrap();
    let state = dir.join(".canopy/state");

    // A committed `.canopy` that points out of the repository (issue 28):
    // refused before anything is written, for a write and for a read.
    symlink(&outside, dir.join(".canopy")).unwrap();
    for cmd in ["apply", "status"] {
        let (code, out, err) = canopy(&[cmd, s(&dir)]);
        assert_eq!(code, 3, "{cmd}: {out}{err}");
        assert!(
            err.contains(
                ".canopy is a symbolic link, and canopy does not follow links in its state folder"
            ),
            "{cmd}: {err}"
        );
    }
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        1,
        "nothing written there"
    );
    std::fs::remove_file(dir.join(".canopy")).unwrap();

    // A state folder left open (0755, as `mkdir` makes it) is made private.
    std::fs::create_dir_all(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();

    symlink(&outside, state.join("clusters")).unwrap();
    let (code, out, err) = canopy(&["apply", s(&dir)]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        err.contains(
            "clusters is a symbolic link, and canopy does not follow links in its state folder"
        ),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        1,
        "nothing written there"
    );

    std::fs::remove_file(state.join("clusters")).unwrap();
    symlink(outside.join("precious"), state.join("lock")).unwrap();
    let (code, out, err) = canopy(&["apply", s(&dir)]);
    assert_eq!(code, 3, "{out}{err}");
    assert_eq!(
        std::fs::read_to_string(outside.join("precious")).unwrap(),
        "keep"
    );

    std::fs::remove_file(state.join("lock")).unwrap();
    let (code, out, err) = canopy(&["apply", s(&dir)]);
    assert_eq!(code, 0, "{out}{err}");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&state.join("clusters/hub.json")), 0o600);
    assert_eq!(mode(&state.join("clusters")), 0o700);
    assert_eq!(mode(&state), 0o700, "the open folder was made private");
    assert_eq!(mode(&state.join("health.json")), 0o600);

    // An interrupted run's temporary files go at the next run.
    let stale = state.join("clusters/.hub.json.tmp-4242");
    std::fs::write(&stale, "{").unwrap();
    let (code, _, _) = canopy(&["apply", s(&dir)]);
    assert_eq!(code, 0);
    assert!(!stale.exists());
}

/// Object names and namespaces are checked per kind as the API server
/// would (issue 13, case 9): a path, a slash, 300 characters, a bad
/// namespace and a terminal escape are each refused before anything is
/// written, and the escape is shown escaped, never sent to the terminal.
#[test]
fn object_names_are_checked_as_the_api_server_would() {
    let state = tempfile::tempdir().unwrap();
    let (_tmp, dir) = applied_example(state.path());
    let file = dir.join("workloads/web/named.yaml");
    let long = "a".repeat(300);
    let cases: Vec<(String, String)> = vec![
        (
            "kind: ConfigMap\nmetadata: {name: ../..}".into(),
            "ConfigMap \"../..\" rendered for cluster".into(),
        ),
        (
            "kind: ConfigMap\nmetadata: {name: a/b}".into(),
            "metadata.name is not valid: it must be a DNS-1123 subdomain".into(),
        ),
        (
            format!("kind: ConfigMap\nmetadata: {{name: {long}}}"),
            "metadata.name is not valid: it is longer than 253 characters".into(),
        ),
        (
            "kind: Service\nmetadata: {name: 1api}".into(),
            "metadata.name is not valid: it must be a DNS-1035 label".into(),
        ),
        (
            "kind: ConfigMap\nmetadata: {name: ok, namespace: My_NS}".into(),
            "metadata.namespace \"My_NS\" is not valid".into(),
        ),
        (
            "kind: ConfigMap\nmetadata: {name: \"x\\e[2J\"}".into(),
            "ConfigMap \"x\\u{1b}[2J\" rendered for cluster".into(),
        ),
    ];
    for (doc, expected) in cases {
        std::fs::write(&file, format!("apiVersion: v1\n{doc}\n")).unwrap();
        refused_without_a_write(
            &dir,
            state.path(),
            &["workloads/web/named.yaml: ", &expected],
        );
        let (_, _, err) = canopy(&["validate", s(&dir)]);
        assert!(
            !err.contains('\u{1b}'),
            "an escape reached the terminal: {err:?}"
        );
    }
    // What the API server allows passes: RBAC names with ':' and capitals.
    std::fs::write(
        &file,
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: \"system:canopy:Reader\"}\nrules: []\n",
    )
    .unwrap();
    let (code, out, err) = canopy(&["validate", s(&dir)]);
    assert_eq!(code, 0, "{out}{err}");
}

/// A template includes only templates of its own workload (issue 13, case
/// 5): `{% include %}` of another workload's Secret file into a ConfigMap
/// is refused by name, and the Secret's value is printed nowhere. An
/// include within the workload still works.
#[test]
fn a_template_cannot_include_another_workloads_file() {
    let state = tempfile::tempdir().unwrap();
    let (_tmp, dir) = applied_example(state.path());
    std::fs::write(
        dir.join("workloads/api/secret.yaml.j2"),
        "apiVersion: v1\nkind: Secret\nmetadata: {name: db-{{ cluster.name }}}\nstringData:\n  password: hunter2-s3cret\n",
    )
    .unwrap();
    let leak = dir.join("workloads/web/leak.yaml.j2");
    std::fs::write(
        &leak,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: leak}\ndata:\n  copied: |\n{% filter indent(4, true) %}{% include \"workloads/api/secret.yaml.j2\" %}{% endfilter %}\n",
    )
    .unwrap();
    refused_without_a_write(
        &dir,
        state.path(),
        &[
            "workloads/web/leak.yaml.j2:6: template error while rendering for cluster",
            "tried to include non-existing template 'workloads/api/secret.yaml.j2'",
            "help: a template includes (imports, extends) only templated files of its own workload",
        ],
    );
    let (_, out, err) = canopy(&["validate", s(&dir)]);
    assert!(!format!("{out}{err}").contains("hunter2"), "{out}{err}");
    // Within its own workload the same file can be included: the refusal
    // is the workload boundary, not a missing file.
    std::fs::remove_file(&leak).unwrap();
    std::fs::write(
        dir.join("workloads/api/uses.yaml.j2"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: uses}\ndata:\n  copied: |\n{% filter indent(4, true) %}{% include \"workloads/api/secret.yaml.j2\" %}{% endfilter %}\n",
    )
    .unwrap();
    let (code, out, err) = canopy(&["validate", s(&dir)]);
    assert_eq!(code, 0, "{out}{err}");
}
