//! A relay's handoff as Kubernetes objects: compressed, content-addressed
//! chunks, and one index that names them.
//!
//! A handoff goes into the relay's own API server, so the relay keeps its
//! desired state when its parent is cut off. Objects there are small. etcd
//! refuses requests over 1.5 MiB, and a ConfigMap holds at most 1 MiB.
//! Rancher Fleet's "etcdserver: request is too large" and OCM's 50 KB
//! ManifestWork cap are what happens when a whole bundle goes into one
//! object. So the handoff is serialized, gzipped and cut into chunks of at
//! most [`CHUNK_BYTES`]. Each chunk is a Secret named after the hash of its
//! bytes, so an unchanged chunk is not written again. It is a Secret and
//! not a ConfigMap because the slice carries the fleet's manifests, Secret
//! manifests included, and they must stay where RBAC and encryption at rest
//! treat them as secrets. A `Handoff` object
//! names the chunks in order, with their hashes and the handoff's digest.
//! Chunks are written before the index that names them, and collected only
//! after the relay has acknowledged a newer index (the writer's side, not
//! here).
//!
//! [`decode`] trusts nothing. Every chunk must match its hash and the
//! whole must match the digest. What the gzip stream inflates to is capped
//! at [`MAX_HANDOFF_BYTES`], so a hostile index cannot make a relay inflate
//! a bomb.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use base64::Engine;
use serde_json::{json, Value};

use crate::core::hash::StableHasher;
use crate::core::relay::Handoff;

/// The namespace canopy keeps its objects in, in a relay cluster.
pub const NAMESPACE: &str = "canopy-system";

/// The most compressed bytes in one chunk. In base64 that is 683 KiB, well
/// under a Secret's 1 MiB and etcd's 1.5 MiB request limit.
pub const CHUNK_BYTES: usize = 512 << 10;

/// The most a handoff may inflate to.
pub const MAX_HANDOFF_BYTES: u64 = 256 << 20;

/// The name of the one index object in a relay cluster.
pub const INDEX_NAME: &str = "handoff";

/// What a handoff is stored as.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// Secrets in [`NAMESPACE`], in order, each named after its content.
    pub chunks: Vec<Value>,
    /// The `Handoff` object that names them. Write it after the chunks.
    pub index: Value,
}

/// Why a stored handoff was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChunkError {
    #[error("the handoff index is malformed: {0}")]
    Index(String),
    #[error("chunk {name} named by the handoff index is missing")]
    Missing { name: String },
    #[error("chunk {name} does not match its hash (the index says {want}, the content is {got})")]
    Corrupt {
        name: String,
        want: String,
        got: String,
    },
    #[error("the handoff does not inflate: {0}")]
    Inflate(String),
    #[error("the handoff inflates to more than {limit} bytes (canopy's limit)")]
    TooLarge { limit: u64 },
    #[error("the handoff does not match its digest (the index says {want}, the content is {got})")]
    Digest { want: String, got: String },
}

fn hash_hex(bytes: &[u8]) -> String {
    format!("{:016x}", StableHasher::new().bytes(bytes).finish())
}

/// What the chunks hold: the slice and the shares, not the revision. A
/// commit that leaves a relay's slice as it was then rewrites only the
/// index, and every chunk keeps its name.
#[derive(serde::Serialize, serde::Deserialize)]
struct Body {
    files: BTreeMap<String, String>,
    shares: BTreeMap<String, u32>,
    #[serde(default)]
    above: crate::core::relay::Above,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    bases: BTreeMap<String, crate::core::relay::Slice>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    picks: crate::core::relay::Picks,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    capabilities: Option<crate::core::capabilities::Table>,
}

/// Stores `h` as chunks and an index.
pub fn encode(h: &Handoff) -> Stored {
    let body = Body {
        files: h.files.clone(),
        shares: h.shares.clone(),
        above: h.above.clone(),
        bases: h.bases.clone(),
        picks: h.picks.clone(),
        capabilities: h.capabilities.clone(),
    };
    let json = serde_json::to_vec(&body).expect("a handoff serializes");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&json).expect("writing to memory");
    let packed = gz.finish().expect("writing to memory");
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut chunks = Vec::new();
    let mut listed = Vec::new();
    for piece in packed.chunks(CHUNK_BYTES) {
        let hash = hash_hex(piece);
        let name = format!("canopy-handoff-{hash}");
        chunks.push(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "canopy.dev/handoff-chunk",
            "metadata": {
                "name": name,
                "namespace": NAMESPACE,
                "labels": {"canopy.dev/handoff-chunk": "true"},
            },
            "data": {"chunk": b64.encode(piece)},
        }));
        listed.push(json!({"name": name, "hash": hash, "bytes": piece.len()}));
    }
    let index = json!({
        "apiVersion": "canopy.dev/v1alpha1",
        "kind": "Handoff",
        "metadata": {"name": INDEX_NAME, "namespace": NAMESPACE},
        "spec": {
            "fleet": h.fleet,
            "relay": h.relay,
            "revision": h.revision,
            "digest": h.digest,
            "encoding": "json+gzip",
            "chunks": listed,
        },
    });
    Stored { chunks, index }
}

/// The chunk names an index lists, in order.
pub fn chunk_names(index: &Value) -> Result<Vec<String>, ChunkError> {
    listed(index).map(|l| l.into_iter().map(|(n, _)| n).collect())
}

fn listed(index: &Value) -> Result<Vec<(String, String)>, ChunkError> {
    let spec = index
        .get("spec")
        .ok_or_else(|| ChunkError::Index("no spec".into()))?;
    if spec.get("encoding").and_then(Value::as_str) != Some("json+gzip") {
        return Err(ChunkError::Index("spec.encoding is not json+gzip".into()));
    }
    let list = spec
        .get("chunks")
        .and_then(Value::as_array)
        .ok_or_else(|| ChunkError::Index("spec.chunks is not a list".into()))?;
    list.iter()
        .enumerate()
        .map(|(i, c)| {
            let field = |k: &str| {
                c.get(k)
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| {
                        ChunkError::Index(format!("spec.chunks[{i}].{k} is not a string"))
                    })
            };
            Ok((field("name")?, field("hash")?))
        })
        .collect()
}

/// Reads a stored handoff back: `chunks` are the Secrets found, by name.
pub fn decode(index: &Value, chunks: &BTreeMap<String, Value>) -> Result<Handoff, ChunkError> {
    decode_within(index, chunks, MAX_HANDOFF_BYTES)
}

/// [`decode`], inflating at most `limit` bytes.
fn decode_within(
    index: &Value,
    chunks: &BTreeMap<String, Value>,
    limit: u64,
) -> Result<Handoff, ChunkError> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut packed = Vec::new();
    for (name, want) in listed(index)? {
        let cm = chunks
            .get(&name)
            .ok_or_else(|| ChunkError::Missing { name: name.clone() })?;
        let text = cm
            .pointer("/data/chunk")
            .and_then(Value::as_str)
            .unwrap_or("");
        let bytes = b64.decode(text).unwrap_or_default();
        let got = hash_hex(&bytes);
        if got != want {
            return Err(ChunkError::Corrupt { name, want, got });
        }
        packed.extend_from_slice(&bytes);
    }
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(packed.as_slice())
        .take(limit + 1)
        .read_to_end(&mut json)
        .map_err(|e| ChunkError::Inflate(e.to_string()))?;
    if json.len() as u64 > limit {
        return Err(ChunkError::TooLarge { limit });
    }
    let body: Body =
        serde_json::from_slice(&json).map_err(|e| ChunkError::Inflate(e.to_string()))?;
    let field = |k: &str| {
        index
            .pointer(&format!("/spec/{k}"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| ChunkError::Index(format!("spec.{k} is not a string")))
    };
    let want = field("digest")?;
    let mut h = Handoff {
        fleet: field("fleet")?,
        relay: field("relay")?,
        revision: field("revision")?,
        files: body.files,
        shares: body.shares,
        above: body.above,
        bases: body.bases,
        picks: body.picks,
        capabilities: body.capabilities,
        digest: String::new(),
    };
    let got = h.compute_digest();
    if got != want {
        return Err(ChunkError::Digest { want, got });
    }
    h.digest = want;
    Ok(h)
}

/// The CustomResourceDefinition of the `Handoff` index: a namespaced kind
/// whose spec names the chunks, with a status the relay writes back.
pub fn crd() -> Value {
    let string = json!({"type": "string"});
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "handoffs.canopy.dev"},
        "spec": {
            "group": "canopy.dev",
            "scope": "Namespaced",
            "names": {
                "kind": "Handoff",
                "plural": "handoffs",
                "singular": "handoff",
                "listKind": "HandoffList",
            },
            "versions": [{
                "name": "v1alpha1",
                "served": true,
                "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "required": ["fleet", "relay", "revision", "digest", "encoding", "chunks"],
                            "properties": {
                                "fleet": string,
                                "relay": string,
                                "revision": string,
                                "digest": string,
                                "encoding": {"type": "string", "enum": ["json+gzip"]},
                                "chunks": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "required": ["name", "hash", "bytes"],
                                        "properties": {
                                            "name": string,
                                            "hash": string,
                                            "bytes": {"type": "integer", "minimum": 0},
                                        },
                                    },
                                },
                            },
                        },
                        "status": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": true,
                        },
                    },
                }},
            }],
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A handoff of `n` files of noise (which gzip cannot shrink much).
    fn big(n: usize) -> Handoff {
        let mut files = BTreeMap::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for i in 0..n {
            let text: String = (0..64 * 1024)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    char::from(b'a' + (x % 26) as u8)
                })
                .collect();
            files.insert(format!("workloads/w/f{i}.yaml"), text);
        }
        let mut h = Handoff {
            fleet: "f".into(),
            relay: "eu".into(),
            revision: "r1".into(),
            files,
            shares: BTreeMap::from([("web".to_string(), 7)]),
            above: crate::core::relay::Above {
                rolled: ["web".to_string()].into(),
                held: BTreeMap::from([("eu-1".to_string(), ["web".to_string()].into())]),
                back: BTreeMap::from([(
                    "api".to_string(),
                    crate::core::relay::Back {
                        revision: "r0".into(),
                        commit: Some("abc".into()),
                        clusters: ["eu-2".to_string()].into(),
                    },
                )]),
            },
            bases: BTreeMap::from([(
                "r0".to_string(),
                crate::core::relay::Slice {
                    files: BTreeMap::from([("workloads/api/w.yaml".to_string(), "x".to_string())]),
                    shares: BTreeMap::new(),
                    picks: BTreeMap::new(),
                },
            )]),
            picks: BTreeMap::from([(
                "chart".to_string(),
                BTreeMap::from([(
                    "eu-1".to_string(),
                    "workloads/chart/helm-1.yaml".to_string(),
                )]),
            )]),
            capabilities: Some(crate::core::capabilities::Table {
                sets: vec![vec!["apps/v1".into(), "monitoring.coreos.com/v1".into()]],
                clusters: BTreeMap::from([(
                    "eu-1".to_string(),
                    crate::core::capabilities::Entry {
                        kubernetes_version: "v1.34.2".into(),
                        set: 0,
                        read_at: 7,
                    },
                )]),
            }),
            digest: String::new(),
        };
        h.digest = h.compute_digest();
        h
    }

    fn by_name(s: &Stored) -> BTreeMap<String, Value> {
        s.chunks
            .iter()
            .map(|c| {
                (
                    c["metadata"]["name"].as_str().unwrap().to_string(),
                    c.clone(),
                )
            })
            .collect()
    }

    #[test]
    fn a_handoff_over_3_mib_round_trips_through_small_chunks() {
        let h = big(56); // 3.5 MiB of files
        let s = encode(&h);
        assert!(s.chunks.len() >= 4, "{} chunks", s.chunks.len());
        for c in &s.chunks {
            let size = serde_json::to_vec(c).unwrap().len();
            assert!(size < 1 << 20, "a chunk object of {size} bytes");
        }
        assert_eq!(chunk_names(&s.index).unwrap().len(), s.chunks.len());
        assert_eq!(decode(&s.index, &by_name(&s)).unwrap(), h);
        // The same content stores under the same names, and a new revision
        // of the same slice changes the index alone.
        assert_eq!(encode(&h), s);
        let mut next = h.clone();
        next.revision = "r2".into();
        next.digest = next.compute_digest();
        let s2 = encode(&next);
        assert_eq!(s2.chunks, s.chunks);
        assert_ne!(s2.index, s.index);
        assert_eq!(decode(&s2.index, &by_name(&s)).unwrap(), next);
    }

    #[test]
    fn a_corrupt_missing_or_forged_chunk_is_refused() {
        let h = big(20);
        let s = encode(&h);
        let mut chunks = by_name(&s);
        let first = chunk_names(&s.index).unwrap()[0].clone();

        let mut bad = chunks.clone();
        let text = bad[&first]["data"]["chunk"].as_str().unwrap().to_string();
        let flipped = if text.starts_with('A') { "B" } else { "A" };
        bad.get_mut(&first).unwrap()["data"]["chunk"] = json!(format!("{flipped}{}", &text[1..]));
        assert!(matches!(
            decode(&s.index, &bad),
            Err(ChunkError::Corrupt { .. })
        ));

        chunks.remove(&first);
        assert_eq!(
            decode(&s.index, &chunks),
            Err(ChunkError::Missing { name: first })
        );

        // An index whose digest does not match what the chunks hold.
        let mut index = s.index.clone();
        index["spec"]["digest"] = json!("0000000000000000");
        assert!(matches!(
            decode(&index, &by_name(&s)),
            Err(ChunkError::Digest { .. })
        ));
    }

    #[test]
    fn a_bomb_is_not_inflated_past_the_limit() {
        // 8 MiB of zeros gzip to a few KiB; the limit here is 1 MiB (the
        // real one, 256 MiB, works the same way).
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..8 {
            gz.write_all(&zeros).unwrap();
        }
        let packed = gz.finish().unwrap();
        let hash = hash_hex(&packed);
        let b64 = base64::engine::general_purpose::STANDARD;
        let index = json!({"spec": {"encoding": "json+gzip", "digest": "x", "fleet": "f", "relay": "r", "revision": "v",
            "chunks": [{"name": "c", "hash": hash}]}});
        let chunks = BTreeMap::from([(
            "c".to_string(),
            json!({"data": {"chunk": b64.encode(&packed)}}),
        )]);
        assert_eq!(
            decode_within(&index, &chunks, 1 << 20),
            Err(ChunkError::TooLarge { limit: 1 << 20 })
        );
    }
}
