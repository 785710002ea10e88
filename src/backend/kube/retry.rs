//! Which failed requests are worth another try, and how long to wait (pure).
//!
//! Retried: 429 Too Many Requests (after the server's Retry-After when it
//! gives one), 500/502/503/504, and transport failures (a reset connection,
//! a timeout). Never retried: any other 4xx — a validation error, a conflict
//! or a forbidden request fails the same way every time, and retrying would
//! only delay the report.

use std::time::Duration;

/// How a request failed, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// An HTTP status from the server, with its retry-after hint in seconds.
    Status { code: u16, retry_after: Option<u32> },
    /// The request did not complete: connection refused or reset, timeout.
    Transport,
    /// Anything else (a response canopy could not read): not retried.
    Other,
}

impl Failure {
    pub fn of(e: &kube::Error) -> Failure {
        match e {
            kube::Error::Api(s) => Failure::Status {
                code: s.code,
                retry_after: s
                    .details
                    .as_ref()
                    .map(|d| d.retry_after_seconds)
                    .filter(|s| *s > 0),
            },
            kube::Error::HyperError(_) | kube::Error::Service(_) => Failure::Transport,
            _ => Failure::Other,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Tries in all, the first included.
    pub attempts: u32,
    pub base: Duration,
    pub max: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            attempts: 5,
            base: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

impl Policy {
    /// The wait before try number `attempt + 1` (`attempt` counts from 1),
    /// or `None` when this failure is not retried or the tries are used up.
    pub fn delay(&self, failure: Failure, attempt: u32) -> Option<Duration> {
        if attempt >= self.attempts {
            return None;
        }
        let backoff = self
            .base
            .saturating_mul(1u32 << (attempt - 1).min(16))
            .min(self.max);
        match failure {
            Failure::Status {
                code: 429,
                retry_after,
            } => Some(
                retry_after.map_or(backoff, |s| Duration::from_secs(u64::from(s)).min(self.max)),
            ),
            Failure::Status {
                code: 500 | 502 | 503 | 504,
                ..
            } => Some(backoff),
            // Connection refused is what an unreachable cluster answers:
            // two more tries, not five, so a dead cluster is reported soon.
            Failure::Transport if attempt < 3 => Some(backoff),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retried_and_not() {
        let p = Policy::default();
        let status = |code| Failure::Status {
            code,
            retry_after: None,
        };
        for code in [429, 500, 502, 503, 504] {
            assert_eq!(p.delay(status(code), 1), Some(Duration::from_millis(100)));
        }
        for code in [400, 401, 403, 404, 409, 422] {
            assert_eq!(p.delay(status(code), 1), None, "{code}");
        }
        assert_eq!(p.delay(Failure::Other, 1), None);
    }

    #[test]
    fn backoff_doubles_is_capped_and_ends() {
        let p = Policy::default();
        let f = Failure::Status {
            code: 503,
            retry_after: None,
        };
        let waits: Vec<_> = (1..=5).map(|a| p.delay(f, a)).collect();
        assert_eq!(
            waits,
            vec![
                Some(Duration::from_millis(100)),
                Some(Duration::from_millis(200)),
                Some(Duration::from_millis(400)),
                Some(Duration::from_millis(800)),
                None
            ]
        );
        let slow = Policy { attempts: 30, ..p };
        assert_eq!(slow.delay(f, 20), Some(Duration::from_secs(5)));
    }

    #[test]
    fn retry_after_is_honoured_and_transport_gives_up_sooner() {
        let p = Policy::default();
        let f = Failure::Status {
            code: 429,
            retry_after: Some(2),
        };
        assert_eq!(p.delay(f, 1), Some(Duration::from_secs(2)));
        assert!(p.delay(Failure::Transport, 2).is_some());
        assert_eq!(p.delay(Failure::Transport, 3), None);
    }
}
