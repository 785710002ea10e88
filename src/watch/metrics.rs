//! What `canopy watch --listen ADDR` serves: `/healthz`, and `/metrics` in
//! the Prometheus (OpenMetrics) text format.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoundLabels {
    /// `start`, `change`, `drift` or `retry`.
    pub trigger: String,
    /// `success` (every cluster reconciled), `partial` (some failed or were
    /// skipped) or `skipped` (the revision did not load or render).
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabels {
    pub cluster: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RevisionLabels {
    pub cluster: String,
    pub revision: String,
}

/// The watch's metrics; cloning shares them.
#[derive(Clone)]
pub struct Metrics {
    pub reconciles: Family<RoundLabels, Counter>,
    pub duration: Histogram,
    pub drifted: Counter,
    pub changes: Counter,
    pub failures: Family<ClusterLabels, Gauge>,
    pub revision: Family<RevisionLabels, Gauge>,
    registry: Arc<Registry>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("canopy");
        let reconciles = Family::<RoundLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconcile rounds, by trigger and result",
            reconciles.clone(),
        );
        // 5 ms to ~80 s.
        let duration = Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
            0.005, 2.0, 15,
        ));
        registry.register(
            "reconcile_duration_seconds",
            "Time of one reconcile round, from trigger to state written",
            duration.clone(),
        );
        let drifted = Counter::default();
        registry.register(
            "drifted_objects",
            "Objects found drifted from the fleet by the periodic drift check",
            drifted.clone(),
        );
        let changes = Counter::default();
        registry.register(
            "object_changes",
            "Objects created, updated or deleted",
            changes.clone(),
        );
        let failures = Family::<ClusterLabels, Gauge>::default();
        registry.register(
            "cluster_failures",
            "Failures in a row of a cluster (0 once it succeeds)",
            failures.clone(),
        );
        let revision = Family::<RevisionLabels, Gauge>::default();
        registry.register(
            "cluster_applied_revision",
            "1 for the revision each cluster was last reconciled at",
            revision.clone(),
        );
        Metrics {
            reconciles,
            duration,
            drifted,
            changes,
            failures,
            revision,
            registry: Arc::new(registry),
        }
    }

    /// The text `/metrics` serves.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// Records that `cluster` is now at `revision` (dropping its previous
    /// revision's series).
    pub fn set_revision(&self, cluster: &str, old: Option<&str>, revision: &str) {
        if let Some(old) = old.filter(|o| *o != revision) {
            self.revision.remove(&RevisionLabels {
                cluster: cluster.to_string(),
                revision: old.to_string(),
            });
        }
        self.revision
            .get_or_create(&RevisionLabels {
                cluster: cluster.to_string(),
                revision: revision.to_string(),
            })
            .set(1);
    }
}

/// Serves `/healthz` and `/metrics` on `addr` from a thread of its own until
/// `stop` is set. Binding happens before this returns, so a port in use is
/// an error at start.
pub fn serve(
    addr: std::net::SocketAddr,
    metrics: Metrics,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let server = tiny_http::Server::http(addr).map_err(std::io::Error::other)?;
    Ok(std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            let req = match server.recv_timeout(std::time::Duration::from_millis(200)) {
                Ok(Some(r)) => r,
                Ok(None) => continue,
                Err(_) => break,
            };
            let header = |v: &str| {
                tiny_http::Header::from_bytes(&b"Content-Type"[..], v.as_bytes())
                    .expect("static header")
            };
            let resp = match (req.method(), req.url()) {
                (tiny_http::Method::Get, "/healthz") => {
                    tiny_http::Response::from_string("ok\n").with_header(header("text/plain"))
                }
                (tiny_http::Method::Get, "/metrics") => {
                    tiny_http::Response::from_string(metrics.encode()).with_header(header(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ))
                }
                _ => tiny_http::Response::from_string("not found: try /healthz or /metrics\n")
                    .with_status_code(404),
            };
            let _ = req.respond(resp);
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revision_series_moves_with_the_cluster() {
        let m = Metrics::new();
        m.set_revision("eu", None, "aaa");
        m.set_revision("eu", Some("aaa"), "bbb");
        m.reconciles
            .get_or_create(&RoundLabels {
                trigger: "change".into(),
                result: "success".into(),
            })
            .inc();
        let text = m.encode();
        assert!(
            text.contains(r#"canopy_cluster_applied_revision{cluster="eu",revision="bbb"} 1"#),
            "{text}"
        );
        assert!(!text.contains(r#"revision="aaa""#), "{text}");
        assert!(
            text.contains(r#"canopy_reconciles_total{trigger="change",result="success"} 1"#),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
