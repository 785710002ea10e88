//! A property harness over the two readers of untrusted text (issue 13's
//! fuzz target, run by `cargo test` within a bounded number of cases): the
//! YAML loader and the template render. Neither may panic, hang or exceed
//! its limits, whatever the bytes; what the loader accepts, canopy can write
//! and read back. The seed corpus is the hostile cases of the issue, each
//! mutated by the generator too.

/// The renders run under the binary's allocator and its memory allowance
/// per render: a generated template that passes it ends this test process
/// (exit 2, naming the template) instead of taking the machine's memory.
#[global_allocator]
static GLOBAL: canopy::alloc::Canopy = canopy::alloc::Canopy;

mod common;
use common::*;

use canopy::core::yaml::{depth, parse_stream, MAX_DEPTH};
use proptest::prelude::*;

/// The hostile inputs of issue 13, as seeds.
fn seeds() -> Vec<String> {
    vec![
        alias_bomb(""),
        format!("x: {}{}\n", "[".repeat(2000), "]".repeat(2000)),
        format!("x: {}{}\n", "{a: ".repeat(300), "}".repeat(300)),
        (0..150)
            .map(|i| format!("{}k{i}:\n", "  ".repeat(i)))
            .collect(),
        "a: 1\n---\nb: 2\0\n---\nc: 3\n".into(),
        "a: &x {k: v}\nb: *x\nc: *nope\n".into(),
        "? [complex, key]\n: v\n".into(),
        "a: !!binary aGk=\nb: !custom x\n".into(),
        "- &a [*a]\n".into(),
    ]
}

/// A document from pieces that stress the reader: anchors, aliases, flow
/// and block nesting, tags, NULs, odd scalars.
fn yamlish() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("a: ".to_string()),
        Just("- ".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just("{".to_string()),
        Just("}".to_string()),
        Just(", ".to_string()),
        Just("\n".to_string()),
        Just("  ".to_string()),
        Just("&a ".to_string()),
        Just("*a".to_string()),
        Just("&b ".to_string()),
        Just("*b".to_string()),
        Just("!!str ".to_string()),
        Just("---\n".to_string()),
        Just("\0".to_string()),
        Just("'q'".to_string()),
        Just("\"\\u0000\"".to_string()),
        Just("0755".to_string()),
        Just("~".to_string()),
        "[a-z0-9]{1,5}",
    ];
    prop::collection::vec(piece, 0..60).prop_map(|p| p.concat())
}

/// Seeds, as they are and with a generated tail.
fn corpus() -> impl Strategy<Value = String> {
    let seeds = seeds();
    prop_oneof![
        yamlish(),
        (0..seeds.len(), yamlish()).prop_map(move |(i, tail)| format!("{}{tail}", seeds[i])),
    ]
}

fn reads_within_limits(text: &str) {
    if let Ok(docs) = parse_stream(text, true) {
        for d in docs {
            assert!(
                depth(&d.value) <= MAX_DEPTH,
                "accepted deeper than the limit"
            );
            let bytes = serde_json::to_vec(&d.value).expect("writes");
            let back: serde_json::Value = serde_json::from_slice(&bytes).expect("reads back");
            assert_eq!(back, d.value);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn the_yaml_reader_never_panics_and_what_it_accepts_reads_back(text in corpus()) {
        reads_within_limits(&text);
    }
}

#[test]
fn every_seed_is_read_within_limits() {
    for s in seeds() {
        reads_within_limits(&s);
    }
}

/// Template pieces: loops (large and nested), repetition, filters and
/// errors. Each render goes through canopy's own renderer.
fn template() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("{% for i in range(100000) %}".to_string()),
        Just("{% for j in range(1000) %}".to_string()),
        Just("{% endfor %}".to_string()),
        Just("{{ 'x' * 1000000 }}".to_string()),
        Just("{{ cluster.name }}".to_string()),
        Just("{{ nope }}".to_string()),
        Just("{{ cluster.labels | tojson }}".to_string()),
        Just("{% if true %}".to_string()),
        Just("{% endif %}".to_string()),
        // Data that doubles: strings by `~`, lists by `+` (more than 32
        // list `+` is a path minijinja's fuel does not charge).
        Just("{% set ns = namespace(s='x' * 1000, l=['x' * 1000]) %}".to_string()),
        Just("{% set ns.s = ns.s ~ ns.s %}".to_string()),
        Just("{% set ns.l = ns.l + ns.l %}".to_string()),
        Just("{{ ns.l | join(',') | length }}".to_string()),
        "[a-z ]{0,8}",
    ];
    prop::collection::vec(piece, 0..8).prop_map(|p| p.concat())
}

proptest! {
    // Each case loads and renders a fleet: fewer cases, still bounded.
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn a_template_renders_or_fails_within_its_limits(body in template()) {
        let manifest = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: t}}\ndata:\n  v: \"{}\"\n",
            body.replace('"', "'")
        );
        let dir = with(&[("workloads/web/t.yaml.j2", &manifest)]);
        let started = std::time::Instant::now();
        // Problems or none; what matters is that it returns, quickly.
        let _ = problems(dir.path());
        prop_assert!(started.elapsed() < std::time::Duration::from_secs(20));
    }
}
