//! The relay agent's `coordination.k8s.io/v1` Lease: leader election
//! among an agent's replicas, and the heartbeat its parent level reads.
//!
//! As Kubernetes controllers elect a leader (client-go's leaderelection):
//! one Lease object; a replica takes it when it is free or expired and
//! renews it while it leads, also while a round runs; every write carries
//! the `resourceVersion` it read, so of two replicas writing at once one is
//! refused by the server and stays a follower. A replica judges another's
//! Lease expired by its own clock: only once it has seen the Lease
//! unchanged for the Lease's whole duration ([`decide`]), never by the
//! holder's `renewTime`, which another machine's clock wrote. The holder
//! stops writing when it has not renewed within [`renew_deadline`], which
//! is shorter than the duration ([`may_write`]), so a standby never takes
//! over while the holder still writes. The parent level reads the same
//! Lease: a relay whose lease has expired is silent, and its subtree's
//! report is stale.
//!
//! Pure: the time is always passed in.

use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use crate::core::chunks::NAMESPACE;

/// The Lease's name in [`NAMESPACE`].
pub const NAME: &str = "canopy-agent";

/// What a replica does with the Lease as it finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Write `lease` (create it, or replace the version read): this replica
    /// leads if the write is taken.
    Write { lease: Value, took_over: bool },
    /// Another replica holds it until `until`.
    Follow { holder: String, until: SystemTime },
}

/// Who holds a Lease, and until when (its renew time plus its duration).
pub fn held(live: &Value) -> Option<(String, SystemTime)> {
    let spec = live.get("spec")?;
    // An empty holder is a released Lease.
    let holder = spec
        .get("holderIdentity")?
        .as_str()
        .filter(|h| !h.is_empty())?
        .to_string();
    let renewed = spec
        .get("renewTime")
        .and_then(Value::as_str)
        .and_then(|t| humantime::parse_rfc3339_weak(t).ok())?;
    let secs = spec.get("leaseDurationSeconds")?.as_u64()?;
    Some((holder, renewed + Duration::from_secs(secs)))
}

/// Whether the Lease is held past `now` by anyone.
pub fn live_until(live: &Value, now: SystemTime) -> Option<(String, SystemTime)> {
    held(live).filter(|(_, until)| *until > now)
}

fn micro_time(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}

/// How long a holder may go without renewing before it must stop writing:
/// two thirds of the Lease's duration (client-go's ratio of renew deadline
/// to lease duration), so it has stopped before anyone may take over.
pub fn renew_deadline(duration: Duration) -> Duration {
    duration * 2 / 3
}

/// Whether a holder that last renewed `since` ago (by its own clock) may
/// still write.
pub fn may_write(since: Duration, duration: Duration) -> bool {
    since < renew_deadline(duration)
}

/// What replica `me` does at `now` with the Lease `live` (`None`: there is
/// none yet), holding it for `duration` at a time. `unchanged_for` is how
/// long this replica has seen `live` as it is now, by its own clock (zero
/// when it first sees it): another replica's Lease is expired only once it
/// has stayed unchanged for its own duration.
pub fn decide(
    live: Option<&Value>,
    me: &str,
    now: SystemTime,
    duration: Duration,
    unchanged_for: Duration,
) -> Decision {
    let secs = duration.as_secs().max(1);
    let mine = |acquired: Option<&Value>, transitions: u64, rv: Option<&Value>| {
        let mut lease = json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": NAME, "namespace": NAMESPACE},
            "spec": {
                "holderIdentity": me,
                "leaseDurationSeconds": secs,
                "acquireTime": acquired.cloned().unwrap_or_else(|| json!(micro_time(now))),
                "renewTime": micro_time(now),
                "leaseTransitions": transitions,
            },
        });
        if let Some(rv) = rv {
            lease["metadata"]["resourceVersion"] = rv.clone();
        }
        lease
    };
    let Some(live) = live else {
        return Decision::Write {
            lease: mine(None, 0, None),
            took_over: false,
        };
    };
    let rv = live.pointer("/metadata/resourceVersion");
    let transitions = live
        .pointer("/spec/leaseTransitions")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let lasts = live
        .pointer("/spec/leaseDurationSeconds")
        .and_then(Value::as_u64)
        .map(Duration::from_secs);
    match held(live) {
        Some((holder, _)) if holder == me => Decision::Write {
            lease: mine(live.pointer("/spec/acquireTime"), transitions, rv),
            took_over: false,
        },
        Some((holder, _)) if lasts.is_some_and(|d| unchanged_for < d) => Decision::Follow {
            holder,
            until: now + (lasts.unwrap_or_default() - unchanged_for),
        },
        // Free, expired, or unreadable: take it over.
        _ => Decision::Write {
            lease: mine(None, transitions + 1, rv),
            took_over: true,
        },
    }
}

/// The Lease `live`, released by `me` when it holds it (a replica that
/// stops cleanly): its successor need not wait for it to expire. `None`
/// when `me` does not hold it.
pub fn release(live: &Value, me: &str) -> Option<Value> {
    if held(live).map(|(h, _)| h).as_deref() != Some(me) {
        return None;
    }
    let mut lease = live.clone();
    lease["spec"]["holderIdentity"] = json!("");
    Some(lease)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    fn stored(mut lease: Value, rv: &str) -> Value {
        lease["metadata"]["resourceVersion"] = json!(rv);
        lease
    }

    #[test]
    fn a_lease_is_taken_renewed_followed_and_taken_over_when_it_expires() {
        let d = Duration::from_secs(15);
        let seen = |s: u64| Duration::from_secs(s);
        let Decision::Write { lease, took_over } = decide(None, "a", at(0), d, seen(0)) else {
            panic!("a free lease is taken");
        };
        assert!(!took_over);
        assert!(
            lease["metadata"].get("resourceVersion").is_none(),
            "a create"
        );
        assert_eq!(lease["spec"]["renewTime"], "2027-01-15T08:00:00.000000Z");
        let live = stored(lease, "1");
        assert_eq!(held(&live), Some(("a".into(), at(15))));

        // b follows while a's lease runs, as b has seen it.
        assert_eq!(
            decide(Some(&live), "b", at(10), d, seen(10)),
            Decision::Follow {
                holder: "a".into(),
                until: at(15)
            }
        );
        // a renews with the version it read, keeping its acquire time.
        let Decision::Write { lease, took_over } = decide(Some(&live), "a", at(10), d, seen(10))
        else {
            panic!("the holder renews");
        };
        assert!(!took_over);
        assert_eq!(lease["metadata"]["resourceVersion"], "1");
        assert_eq!(lease["spec"]["acquireTime"], live["spec"]["acquireTime"]);
        let live = stored(lease, "2");
        assert_eq!(live_until(&live, at(24)).map(|(h, _)| h), Some("a".into()));
        assert_eq!(live_until(&live, at(25)), None);

        // a stops renewing: once b has seen it unchanged for its whole
        // duration, b takes it over.
        assert!(matches!(
            decide(Some(&live), "b", at(26), d, seen(14)),
            Decision::Follow { .. }
        ));
        let Decision::Write { lease, took_over } = decide(Some(&live), "b", at(26), d, seen(15))
        else {
            panic!("an expired lease is taken over");
        };
        assert!(took_over);
        assert_eq!(lease["spec"]["holderIdentity"], "b");
        assert_eq!(lease["spec"]["leaseTransitions"], 1);
        assert_eq!(lease["metadata"]["resourceVersion"], "2");

        // b stops cleanly and releases it: a takes it at once.
        let live = stored(lease, "3");
        assert_eq!(release(&live, "a"), None, "only the holder releases");
        let freed = stored(release(&live, "b").unwrap(), "4");
        assert_eq!(held(&freed), None);
        assert!(matches!(
            decide(Some(&freed), "a", at(27), d, seen(0)),
            Decision::Write {
                took_over: true,
                ..
            }
        ));
    }

    #[test]
    fn expiry_is_judged_by_the_followers_clock_not_the_holders() {
        let d = Duration::from_secs(15);
        let Decision::Write { lease, .. } = decide(None, "a", at(0), d, Duration::ZERO) else {
            panic!("a free lease is taken");
        };
        let live = stored(lease, "1");
        // b's clock runs an hour ahead of a's: by renewTime the Lease is
        // long expired, but b has only just seen it, so it follows.
        let ahead = at(3600);
        assert!(live_until(&live, ahead).is_none());
        assert!(matches!(
            decide(Some(&live), "b", ahead, d, Duration::ZERO),
            Decision::Follow { .. }
        ));
        // b's clock runs behind: by renewTime the Lease runs for an hour
        // yet, but b has watched it unchanged for its duration.
        let behind = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert!(matches!(
            decide(Some(&live), "b", behind, d, d),
            Decision::Write {
                took_over: true,
                ..
            }
        ));
        // The holder stops writing before then.
        assert!(may_write(Duration::from_secs(9), d));
        assert!(!may_write(Duration::from_secs(10), d));
        assert!(renew_deadline(d) < d);
    }
}
