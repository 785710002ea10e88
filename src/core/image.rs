//! Container image references and the `image` override (registry,
//! repository, tag rewrite), as Karmada's imageOverrider and Clusternet's
//! Localization do it.

use serde_json::Value;

use crate::core::model::ImageRewrite;

/// An image reference split into its parts: `[registry/]repository[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub registry: Option<String>,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl ImageRef {
    /// Docker's rule: the first component is a registry if it has a `.` or a
    /// `:` or is `localhost`, and more components follow.
    ///
    /// ```
    /// use canopy::core::image::ImageRef;
    /// let r = ImageRef::parse("ghcr.io/acme/web:1.2");
    /// assert_eq!(r.registry.as_deref(), Some("ghcr.io"));
    /// assert_eq!(r.repository, "acme/web");
    /// assert_eq!(ImageRef::parse("nginx").registry, None);
    /// ```
    pub fn parse(s: &str) -> ImageRef {
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(d.to_string())),
            None => (s, None),
        };
        let (registry, path) = match rest.split_once('/') {
            Some((first, tail))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (Some(first.to_string()), tail)
            }
            _ => (None, rest),
        };
        let last_slash = path.rfind('/').map_or(0, |i| i + 1);
        let (repository, tag) = match path[last_slash..].rfind(':') {
            Some(i) => (
                path[..last_slash + i].to_string(),
                Some(path[last_slash + i + 1..].to_string()),
            ),
            None => (path.to_string(), None),
        };
        ImageRef {
            registry,
            repository,
            tag,
            digest,
        }
    }

    /// Applies a rewrite. A new tag drops the digest, which would otherwise
    /// still pin the old image.
    pub fn rewrite(&mut self, r: &ImageRewrite) {
        if let Some(reg) = &r.registry {
            self.registry = Some(reg.clone());
        }
        if let Some(repo) = &r.repository {
            self.repository = repo.clone();
        }
        if let Some(tag) = &r.tag {
            self.tag = Some(tag.clone());
            self.digest = None;
        }
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(r) = &self.registry {
            write!(f, "{r}/")?;
        }
        f.write_str(&self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Rewrites the image of every container and initContainer anywhere in the
/// object (Pods, workload templates, CronJobs and custom kinds alike).
/// Returns how many images were rewritten.
pub fn rewrite_images(obj: &mut Value, r: &ImageRewrite) -> usize {
    let mut n = 0;
    walk(obj, r, &mut n);
    n
}

fn walk(v: &mut Value, r: &ImageRewrite, n: &mut usize) {
    match v {
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                if k == "containers" || k == "initContainers" {
                    if let Value::Array(items) = child {
                        for item in items.iter_mut() {
                            if let Some(Value::String(img)) = item.get_mut("image") {
                                let mut parsed = ImageRef::parse(img);
                                parsed.rewrite(r);
                                *img = parsed.to_string();
                                *n += 1;
                            }
                        }
                        continue;
                    }
                }
                walk(child, r, n);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| walk(i, r, n)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_references() {
        let r = ImageRef::parse("nginx");
        assert_eq!(
            (r.registry, r.repository.as_str(), r.tag),
            (None, "nginx", None)
        );
        let r = ImageRef::parse("ghcr.io/acme/web:1.2");
        assert_eq!(r.registry.as_deref(), Some("ghcr.io"));
        assert_eq!(r.repository, "acme/web");
        assert_eq!(r.tag.as_deref(), Some("1.2"));
        let r = ImageRef::parse("localhost:5000/web@sha256:abc");
        assert_eq!(r.registry.as_deref(), Some("localhost:5000"));
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_deref(), Some("sha256:abc"));
        assert_eq!(ImageRef::parse("library/nginx:1").registry, None);
        for s in [
            "nginx",
            "ghcr.io/acme/web:1.2",
            "localhost:5000/web@sha256:abc",
        ] {
            assert_eq!(ImageRef::parse(s).to_string(), s);
        }
    }

    #[test]
    fn rewrites_every_container() {
        let mut obj = json!({"spec": {"template": {"spec": {
            "initContainers": [{"name": "init", "image": "busybox:1.36"}],
            "containers": [{"name": "web", "image": "ghcr.io/acme/web:1.2@sha256:abc"}]}}}});
        let n = rewrite_images(
            &mut obj,
            &ImageRewrite {
                registry: Some("eu.registry.example.com".into()),
                repository: None,
                tag: Some("1.3".into()),
            },
        );
        assert_eq!(n, 2);
        assert_eq!(
            obj.pointer("/spec/template/spec/containers/0/image")
                .unwrap(),
            "eu.registry.example.com/acme/web:1.3"
        );
        assert_eq!(
            obj.pointer("/spec/template/spec/initContainers/0/image")
                .unwrap(),
            "eu.registry.example.com/busybox:1.3"
        );
    }
}
