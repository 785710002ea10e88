//! Paths a fleet document names inside the repository (a kustomization, a
//! chart, a values file): resolved against a folder and kept inside it, so
//! no document reaches a file outside what it owns.

/// `a/b/../c` → `a/c`; `None` when it climbs above its start.
pub fn normalize(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for p in path.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

/// `path`, relative to the folder `dir` (itself relative to the fleet
/// root), as a path relative to the fleet root; `None` when it is absolute
/// or leaves `dir`.
pub fn inside(dir: &str, path: &str) -> Option<String> {
    if path.starts_with('/') {
        return None;
    }
    let joined = normalize(&format!("{dir}/{path}"))?;
    (joined == dir || joined.starts_with(&format!("{dir}/"))).then_some(joined)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_stays_in_its_folder() {
        assert_eq!(
            inside("workloads/app", ".").as_deref(),
            Some("workloads/app")
        );
        assert_eq!(
            inside("workloads/app", "overlays/prod").as_deref(),
            Some("workloads/app/overlays/prod")
        );
        assert_eq!(
            inside("workloads/app", "overlays/../base").as_deref(),
            Some("workloads/app/base")
        );
        assert_eq!(inside("workloads/app", "../other"), None);
        assert_eq!(inside("workloads/app", "/etc"), None);
        assert_eq!(inside("workloads/app", "../../.."), None);
    }
}
