//! From a cluster's `spec.connection` to a kube-rs client: which kubeconfig
//! file, which context, and an error naming the cluster when either is
//! unusable. Credentials are never printed: errors name files and
//! contexts, never what is in them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::backend::BackendError;
use crate::core::model::Connection;

/// Where a cluster's kubeconfig comes from, for messages.
#[derive(Debug, Clone)]
pub enum Source {
    File(PathBuf),
    /// `$KUBECONFIG`, else `~/.kube/config`, as kubectl reads them.
    Default,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(p) => write!(f, "{}", p.display()),
            Source::Default => f.write_str("$KUBECONFIG or ~/.kube/config"),
        }
    }
}

/// Expands `~` and `$VARS` in the configured path; a relative path is taken
/// from the fleet folder, so a fleet means the same wherever canopy runs.
pub fn source(conn: &Connection, fleet_dir: &Path) -> Result<Source, String> {
    let Some(raw) = conn.kubeconfig.as_deref() else {
        return Ok(Source::Default);
    };
    let expanded = shellexpand::full(raw).map_err(|e| {
        format!(
            "spec.connection.kubeconfig {raw:?} uses ${}, which is not set",
            e.var_name
        )
    })?;
    let p = PathBuf::from(expanded.as_ref());
    Ok(Source::File(if p.is_absolute() {
        p
    } else {
        fleet_dir.join(p)
    }))
}

/// A ready client and the name of the context it uses.
pub struct Connected {
    pub client: kube::Client,
    pub context: String,
}

/// Reads the kubeconfig and builds a client for the chosen context. Must be
/// called inside a Tokio runtime (the client spawns its connection pool).
pub async fn connect(
    cluster: &str,
    conn: &Connection,
    fleet_dir: &Path,
    timeout: Duration,
) -> Result<Connected, BackendError> {
    let fail = |detail: String, help: &str| BackendError::Connect {
        cluster: cluster.to_string(),
        detail,
        help: help.to_string(),
    };
    let (config, context) = configure(cluster, conn, fleet_dir).await?;
    client(config, context, timeout, &fail)
}

/// The configuration [`connect`] builds a client from, and the name of its
/// context.
pub async fn configure(
    cluster: &str,
    conn: &Connection,
    fleet_dir: &Path,
) -> Result<(kube::Config, String), BackendError> {
    let fail = |detail: String, help: &str| BackendError::Connect {
        cluster: cluster.to_string(),
        detail,
        help: help.to_string(),
    };
    if conn.joined {
        let Some(creds) = &conn.credentials else {
            return Err(fail(
                "it is a joined cluster, and its hub holds no credentials for it".into(),
                "the cluster has not joined (or it left): run `canopy join` on it, or see `canopy members list`",
            ));
        };
        let config = pinned_config(creds).map_err(|d| {
            fail(
                d,
                "join the cluster again (`canopy join`) to hand over fresh credentials",
            )
        })?;
        return Ok((config, "joined".into()));
    }
    let src = source(conn, fleet_dir).map_err(|d| {
        fail(
            d,
            "set the variable, or write the path out in the cluster's spec.connection.kubeconfig",
        )
    })?;
    if matches!(src, Source::Default) && in_pod() {
        // A relay agent in its own cluster: the pod's ServiceAccount.
        let config = kube::Config::incluster().map_err(|e| {
            fail(
                format!("the in-cluster configuration cannot be used: {e}"),
                "run the agent with a ServiceAccount token mounted (the default), or give it --kubeconfig",
            )
        })?;
        return Ok((config, "in-cluster".into()));
    }
    let kc = match &src {
        Source::File(p) => Kubeconfig::read_from(p),
        Source::Default => Kubeconfig::read(),
    }
    .map_err(|e| {
        let why = match &e {
            kube::config::KubeconfigError::ReadConfig(io, _) => io.to_string(),
            e => e.to_string(),
        };
        fail(
            format!("kubeconfig {src} cannot be read: {why}"),
            "check the cluster's spec.connection.kubeconfig (or $KUBECONFIG) names a readable kubeconfig file",
        )
    })?;
    let context = match conn.context.clone().or_else(|| kc.current_context.clone()) {
        Some(c) if !c.is_empty() => c,
        _ => {
            return Err(fail(
                format!("kubeconfig {src} has no current-context and the cluster names none"),
                "set spec.connection.context to one of the kubeconfig's contexts",
            ))
        }
    };
    if !kc.contexts.iter().any(|c| c.name == context) {
        let mut known: Vec<&str> = kc.contexts.iter().map(|c| c.name.as_str()).collect();
        known.sort_unstable();
        return Err(fail(
            format!("context {context:?} is not in kubeconfig {src}"),
            &format!(
                "set spec.connection.context to one of: {}",
                if known.is_empty() {
                    "(the kubeconfig has no contexts)".to_string()
                } else {
                    known.join(", ")
                }
            ),
        ));
    }
    let opts = KubeConfigOptions {
        context: Some(context.clone()),
        ..KubeConfigOptions::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kc, &opts)
        .await
        .map_err(|e| {
            fail(
                format!("context {context:?} of kubeconfig {src} is unusable: {e}"),
                "fix the context's cluster and user entries (kubectl --context <name> cluster-info shows the same problem)",
            )
        })?;
    Ok((config, context))
}

/// Whether canopy runs in a pod with no kubeconfig of its own: no
/// `$KUBECONFIG`, no `~/.kube/config`, and the service host Kubernetes
/// sets in every pod.
fn in_pod() -> bool {
    let home_config = std::env::var_os("HOME")
        .map(|h| Path::new(&h).join(".kube/config").exists())
        .unwrap_or(false);
    std::env::var_os("KUBECONFIG").is_none()
        && !home_config
        && std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
}

/// A configuration from a joined member's credentials: its server, only
/// the CA it was pinned to, and its bearer token.
pub fn pinned_config(creds: &crate::core::model::Credentials) -> Result<kube::Config, String> {
    let url = creds
        .server
        .parse::<http::Uri>()
        .map_err(|e| format!("its server URL {:?} is not a URL: {e}", creds.server))?;
    let ca = pem::parse_many(creds.ca_pem.as_bytes())
        .map_err(|e| format!("its CA is not PEM: {e}"))?
        .into_iter()
        .map(|p| p.into_contents())
        .collect::<Vec<_>>();
    if ca.is_empty() {
        return Err("its CA holds no certificate".into());
    }
    let mut config = kube::Config::new(url);
    config.root_cert = Some(ca);
    config.auth_info.token = Some(creds.token.clone().into());
    Ok(config)
}

/// The client of a configuration, with canopy's timeouts.
pub fn client(
    mut config: kube::Config,
    context: String,
    timeout: Duration,
    fail: &dyn Fn(String, &str) -> BackendError,
) -> Result<Connected, BackendError> {
    config.connect_timeout = Some(timeout.min(Duration::from_secs(10)));
    config.read_timeout = Some(timeout);
    config.write_timeout = Some(timeout);
    let client = kube::Client::try_from(config).map_err(|e| {
        fail(
            format!("context {context:?}: cannot build a client: {e}"),
            "check the context's certificates and server URL",
        )
    })?;
    Ok(Connected { client, context })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(k: Option<&str>) -> Connection {
        Connection {
            kubeconfig: k.map(str::to_string),
            ..Default::default()
        }
    }

    #[test]
    fn paths_expand_and_resolve_from_the_fleet() {
        let home = std::env::var("HOME").unwrap();
        let fleet = Path::new("/repo/fleet");
        match source(&conn(Some("~/.kube/a")), fleet).unwrap() {
            Source::File(p) => assert_eq!(p, Path::new(&home).join(".kube/a")),
            s => panic!("{s}"),
        }
        match source(&conn(Some("creds/b.yaml")), fleet).unwrap() {
            Source::File(p) => assert_eq!(p, Path::new("/repo/fleet/creds/b.yaml")),
            s => panic!("{s}"),
        }
        assert!(matches!(
            source(&conn(None), fleet).unwrap(),
            Source::Default
        ));
        let e = source(&conn(Some("$CANOPY_SURELY_UNSET_VAR/x")), fleet).unwrap_err();
        assert!(
            e.contains("$CANOPY_SURELY_UNSET_VAR, which is not set"),
            "{e}"
        );
    }
}
