//! Diagnostics: what is wrong with a fleet, where, and what to do about it.
//!
//! Stages collect diagnostics instead of failing fast, so one `canopy validate`
//! shows every problem in the repository at once (like a compiler, unlike a
//! controller that reports one condition at a time).

use std::fmt;
use std::path::{Path, PathBuf};

use crate::core::yaml::YamlPath;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One problem, located in the repository.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// File relative to the fleet root (forward slashes), if the problem has one.
    pub file: Option<String>,
    /// 1-based line, 0 when unknown.
    pub line: usize,
    /// YAML path inside the document, if any.
    pub path: Option<String>,
    pub message: String,
    /// What the user can do about it.
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn error(message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            file: None,
            line: 0,
            path: None,
            message: message.into(),
            hint: None,
        }
    }

    pub fn warning(message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(message)
        }
    }

    pub fn at(mut self, loc: &Loc) -> Self {
        self.file = Some(loc.file.clone());
        self.line = loc.line;
        self.path = if loc.path.is_root() {
            None
        } else {
            Some(loc.path.to_string())
        };
        self
    }

    pub fn in_file(mut self, file: &str, line: usize) -> Self {
        self.file = Some(file.to_string());
        self.line = line;
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    fn sort_key(&self) -> (Option<&str>, usize, Option<&str>, &str) {
        (
            self.file.as_deref(),
            self.line,
            self.path.as_deref(),
            &self.message,
        )
    }
}

/// Every part is shown with control characters escaped
/// ([`crate::core::names::shown`]): file names, YAML paths and messages can
/// carry text from the repository, and a terminal must not obey it.
impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::core::names::{shown, shown_text};
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{sev}: ")?;
        if let Some(file) = &self.file {
            if self.line > 0 {
                write!(f, "{}:{}: ", shown(file), self.line)?;
            } else {
                write!(f, "{}: ", shown(file))?;
            }
        }
        if let Some(path) = &self.path {
            write!(f, "{}: ", shown(path))?;
        }
        f.write_str(&shown_text(&self.message))?;
        if let Some(h) = &self.hint {
            write!(f, "\n  help: {}", shown_text(h))?;
        }
        Ok(())
    }
}

/// A location: file, line and YAML path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loc {
    pub file: String,
    pub line: usize,
    pub path: YamlPath,
}

/// Everything a stage found, sorted for stable output.
#[derive(Debug, Clone, Default)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }

    pub fn extend(&mut self, other: Diagnostics) {
        self.0.extend(other.0);
    }

    pub fn has_errors(&self) -> bool {
        self.0.iter().any(Diagnostic::is_error)
    }

    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| d.is_error())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Sorted by file, line, path, message; exact duplicates removed.
    pub fn sorted(mut self) -> Self {
        self.0.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
        self.0.dedup();
        self
    }
}

/// A repository-relative path with forward slashes, the form used in every
/// message so that output is the same on every machine.
pub fn rel_path(root: &Path, file: &Path) -> String {
    let rel: PathBuf = file.strip_prefix(root).unwrap_or(file).to_path_buf();
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}
