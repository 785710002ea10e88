//! Where a fleet comes from: a folder in the working tree, or a Git
//! repository (local or remote) at a ref.

pub mod git;
pub mod helm;
pub mod input;
pub mod kustomize;
pub mod remote;
pub mod run;

/// The revision a fleet was read at, as recorded with every apply (the
/// `canopy.dev/revision` annotation, `status`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Revision {
    /// The commit, `None` outside Git.
    pub commit: Option<String>,
    /// A tag that points at the commit, where there is one.
    pub tag: Option<String>,
    /// Files of the fleet folder differ from the commit (working tree only).
    pub dirty: bool,
}

impl std::fmt::Display for Revision {
    /// `v1.2.0@<sha>` for a tagged commit, `<sha>` otherwise, `-dirty`
    /// appended for uncommitted changes, `unversioned` outside Git: the form
    /// Flux uses for its revisions, so a tag and its commit read together.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.commit, &self.tag) {
            (None, _) => f.write_str("unversioned")?,
            (Some(c), Some(t)) => write!(f, "{t}@{c}")?,
            (Some(c), None) => f.write_str(c)?,
        };
        if self.dirty && self.commit.is_some() {
            f.write_str("-dirty")?;
        }
        Ok(())
    }
}

impl Revision {
    /// Reads back what [`Revision`]'s `Display` wrote: how a relay learns
    /// the revision its handoff was cut from.
    pub fn parse(text: &str) -> Revision {
        if text == "unversioned" {
            return Revision::default();
        }
        let (text, dirty) = match text.strip_suffix("-dirty") {
            Some(t) => (t, true),
            None => (text, false),
        };
        let (tag, commit) = match text.rsplit_once('@') {
            Some((t, c)) => (Some(t.to_string()), c),
            None => (None, text),
        };
        Revision {
            commit: Some(commit.to_string()),
            tag,
            dirty,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revision_text() {
        let sha = "a".repeat(40);
        let r = |tag: Option<&str>, dirty| Revision {
            commit: Some(sha.clone()),
            tag: tag.map(str::to_string),
            dirty,
        };
        assert_eq!(r(None, false).to_string(), sha);
        assert_eq!(
            r(Some("v1.0.0"), false).to_string(),
            format!("v1.0.0@{sha}")
        );
        assert_eq!(r(None, true).to_string(), format!("{sha}-dirty"));
        assert_eq!(Revision::default().to_string(), "unversioned");
        for r in [
            r(None, false),
            r(Some("v1.0.0"), false),
            r(Some("release@2"), true),
            r(None, true),
            Revision::default(),
        ] {
            assert_eq!(Revision::parse(&r.to_string()), r);
        }
    }
}
