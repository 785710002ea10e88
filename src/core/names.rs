//! Kubernetes object names, checked as the API server would before canopy
//! stores or sends them, and shown safely when they are not.
//!
//! A name from a fleet repository ends up in canopy's state, in reports on
//! a terminal and in API paths. The API server would refuse a bad one, but
//! only on apply, per cluster, after some of the tree was written; the local
//! backend would not refuse it at all. So a rendered object's name and
//! namespace are checked at render, per kind:
//! - `Namespace`: DNS-1123 label; core `Service`: DNS-1035 label (it becomes
//!   a DNS name and an environment variable prefix);
//! - the RBAC kinds: a path segment (they allow `:` and upper case, as in
//!   `system:controller:foo`);
//! - every other built-in kind: DNS-1123 subdomain;
//! - custom resources: a path segment, the least the API server requires of
//!   any name (their CRD may be stricter; the server says so on apply).
//!
//! Every rule also refuses control characters and more than 253 bytes.

use std::borrow::Cow;

/// The most bytes any Kubernetes name may have.
pub const MAX_NAME: usize = 253;

/// How a kind's names are validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Lower-case letters, digits and `-`, at most 63, alphanumeric at both ends.
    Label,
    /// A [`Rule::Label`] that starts with a letter.
    Label1035,
    /// Labels joined by `.`, at most 253.
    Subdomain,
    /// Anything but `/`, `%`, `.` and `..` (and control characters).
    PathSegment,
}

/// The rule the API server applies to names of `kind` in `group`.
pub fn rule_for(group: &str, kind: &str) -> Rule {
    match (group, kind) {
        ("", "Namespace") => Rule::Label,
        ("", "Service") => Rule::Label1035,
        ("rbac.authorization.k8s.io", _) => Rule::PathSegment,
        (g, _) if crate::core::kinds::is_builtin_group(g) => Rule::Subdomain,
        _ => Rule::PathSegment,
    }
}

fn label(s: &str, max: usize) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= max
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Why `name` breaks `rule`, or `None` when it is valid.
pub fn problem(rule: Rule, name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("it is empty");
    }
    if name.len() > MAX_NAME {
        return Some("it is longer than 253 characters");
    }
    if name.chars().any(is_unsafe) {
        return Some("it holds control characters");
    }
    match rule {
        Rule::Label if !label(name, 63) => Some(
            "it must be a DNS-1123 label: at most 63 lower-case letters, digits and '-', starting and ending with a letter or digit",
        ),
        Rule::Label1035
            if !label(name, 63) || !name.as_bytes()[0].is_ascii_lowercase() =>
        {
            Some("it must be a DNS-1035 label: at most 63 lower-case letters, digits and '-', starting with a letter and ending with a letter or digit")
        }
        Rule::Subdomain if !name.split('.').all(|l| label(l, 63)) => Some(
            "it must be a DNS-1123 subdomain: lower-case letters, digits, '-' and '.', starting and ending with a letter or digit",
        ),
        Rule::PathSegment if name == "." || name == ".." || name.contains(['/', '%']) => {
            Some("it may not be '.' or '..', nor contain '/' or '%'")
        }
        _ => None,
    }
}

/// The most characters Helm allows in a release name (it becomes part of
/// object names and labels that stop at 63).
pub const MAX_HELM_RELEASE: usize = 53;

/// Why `name` cannot be a Helm release name, or `None`: Helm's own rule, a
/// DNS-1123 subdomain of at most 53 characters. A name that passes can
/// never be read as a command-line flag (it starts with a letter or digit).
pub fn helm_release_problem(name: &str) -> Option<&'static str> {
    if name.len() > MAX_HELM_RELEASE {
        return Some("it is longer than 53 characters, the most Helm allows");
    }
    problem(Rule::Subdomain, name)
}

/// Why `name` cannot be a chart's name in a chart repository, or `None`:
/// letters, digits, `.`, `_` and `-`, starting with a letter or digit (so
/// never a flag), at most 253.
pub fn chart_name_problem(name: &str) -> Option<&'static str> {
    let ok = name.len() <= MAX_NAME
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    (!ok).then_some(
        "a chart's name is letters, digits, '.', '_' and '-', starting with a letter or digit",
    )
}

/// Characters that must never reach a terminal raw: C0 and C1 controls
/// (escape sequences start with them) and the bidirectional overrides that
/// make text display in another order than it reads.
pub fn is_unsafe(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `s` with every unsafe character written as a `\u{..}` escape, so a
/// hostile name or file name is shown, not obeyed, by a terminal.
pub fn shown(s: &str) -> Cow<'_, str> {
    escaped(s, is_unsafe)
}

/// [`shown`] for text that may hold line breaks and tabs of its own (a
/// message with its hint): those are kept, every other unsafe character is
/// escaped.
pub fn shown_text(s: &str) -> Cow<'_, str> {
    escaped(s, |c| is_unsafe(c) && c != '\n' && c != '\t')
}

/// `s` with each character `escape` picks written as a `\u{..}` escape;
/// borrowed when there is none.
fn escaped(s: &str, escape: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !s.chars().any(&escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if escape(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helm_names_are_never_flags() {
        for ok in ["web", "web-1", "shop.frontend", &"a".repeat(53)] {
            assert_eq!(helm_release_problem(ok), None, "{ok}");
        }
        for bad in [
            "--set-file=x=/proc/self/environ",
            "--post-renderer=/bin/sh",
            "-x",
            "",
            "Web",
            "web_1",
            &"a".repeat(54),
        ] {
            assert!(helm_release_problem(bad).is_some(), "{bad}");
        }
        for ok in ["nginx", "ingress-nginx", "kube_state.metrics2"] {
            assert_eq!(chart_name_problem(ok), None, "{ok}");
        }
        for bad in ["--untardir=/etc", "-x", "", ".hidden", "a b", "a/b", "a\nb"] {
            assert!(chart_name_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn each_kind_gets_the_api_servers_rule() {
        assert_eq!(rule_for("", "Namespace"), Rule::Label);
        assert_eq!(rule_for("", "Service"), Rule::Label1035);
        assert_eq!(rule_for("", "ConfigMap"), Rule::Subdomain);
        assert_eq!(rule_for("apps", "Deployment"), Rule::Subdomain);
        assert_eq!(
            rule_for("rbac.authorization.k8s.io", "ClusterRole"),
            Rule::PathSegment
        );
        assert_eq!(rule_for("example.com", "Widget"), Rule::PathSegment);
    }

    #[test]
    fn names_are_checked_as_kubernetes_does() {
        for ok in ["web", "web-1", "a.b.c", "1abc"] {
            assert_eq!(problem(Rule::Subdomain, ok), None, "{ok}");
        }
        for bad in [
            "", "Web", "-web", "web-", "a..b", "a/b", "../..", "web_1", "a b",
        ] {
            assert!(problem(Rule::Subdomain, bad).is_some(), "{bad:?}");
        }
        assert!(problem(Rule::Subdomain, &"a".repeat(254)).is_some());
        assert!(problem(Rule::Subdomain, &format!("{}.b", "a".repeat(64))).is_some());
        assert_eq!(problem(Rule::Label, "kube-system"), None);
        assert!(problem(Rule::Label, "a.b").is_some());
        assert!(problem(Rule::Label, &"a".repeat(64)).is_some());
        assert_eq!(problem(Rule::Label1035, "api"), None);
        assert!(problem(Rule::Label1035, "1api").is_some());
        assert_eq!(problem(Rule::PathSegment, "system:controller:Foo"), None);
        for bad in [".", "..", "a/b", "a%2f", "a\u{1b}[2J"] {
            assert!(problem(Rule::PathSegment, bad).is_some(), "{bad:?}");
        }
        assert_eq!(
            problem(Rule::Subdomain, "web\u{7}"),
            Some("it holds control characters")
        );
    }

    #[test]
    fn unsafe_characters_are_escaped_for_the_terminal() {
        assert_eq!(shown("web"), "web");
        assert!(matches!(shown("web"), Cow::Borrowed(_)));
        assert_eq!(shown("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(shown("a\nb"), "a\\u{a}b");
        assert_eq!(shown("\u{202e}txt"), "\\u{202e}txt");
        assert_eq!(
            shown_text("line\n  help: \u{1b}x"),
            "line\n  help: \\u{1b}x"
        );
    }
}
