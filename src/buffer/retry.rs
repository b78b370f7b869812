//! When a failed chunk is tried again, and when it is given up on. Pure functions of the
//! attempt count and the time of the first failure, so they are tested without timers.

use std::time::Duration;

use crate::config::buffer::{RetryConfig, RetryType};

/// What to do with a chunk after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Try again after this long.
    RetryIn(Duration),
    /// Give up: the chunk goes to the backup directory (`retry_max_times` or
    /// `retry_timeout` reached).
    GiveUp,
}

/// The policy of one buffer.
#[derive(Debug, Clone)]
pub struct Policy {
    config: RetryConfig,
}

impl Policy {
    /// The policy a `<buffer>` section describes.
    pub fn new(config: RetryConfig) -> Self {
        Policy { config }
    }

    /// The delay before attempt `attempts + 1`, after `attempts` failures (at least 1),
    /// given how long ago the first failure was. `retry_after` (an endpoint's
    /// `Retry-After`) replaces the computed delay, capped like it by `retry_max_interval`
    /// (an endpoint cannot park a chunk for longer than the operator allows). `jitter` is a number in `[0, 1)`:
    /// exponential backoff uses "full jitter" (a uniform delay up to the computed one)
    /// when `retry_randomize` is on.
    pub fn next(
        &self,
        attempts: u32,
        since_first_failure: Duration,
        retry_after: Option<Duration>,
        jitter: f64,
    ) -> Next {
        let c = &self.config;
        if !c.forever {
            let too_many = c.max_times.is_some_and(|max| u64::from(attempts) > max);
            if too_many || since_first_failure >= c.timeout {
                return Next::GiveUp;
            }
        }
        let cap = c.max_interval.unwrap_or(Duration::from_secs(24 * 3600));
        if let Some(after) = retry_after {
            return Next::RetryIn(after.min(cap));
        }
        let delay = match c.retry_type {
            RetryType::Periodic => c.wait,
            RetryType::ExponentialBackoff => {
                let factor = c
                    .exponential_backoff_base
                    .powi(i32::try_from(attempts.saturating_sub(1)).unwrap_or(i32::MAX));
                let secs = (c.wait.as_secs_f64() * factor).min(cap.as_secs_f64());
                let secs = if c.randomize {
                    secs * jitter.clamp(0.0, 1.0)
                } else {
                    secs
                };
                Duration::from_secs_f64(secs.max(0.0))
            }
        };
        Next::RetryIn(delay.min(cap))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(forever: bool, max_times: Option<u64>, randomize: bool) -> RetryConfig {
        RetryConfig {
            retry_type: RetryType::ExponentialBackoff,
            wait: Duration::from_secs(1),
            exponential_backoff_base: 2.0,
            max_interval: Some(Duration::from_secs(10)),
            max_times,
            timeout: Duration::from_secs(3600),
            forever,
            randomize,
        }
    }

    #[test]
    fn exponential_up_to_the_cap() {
        let p = Policy::new(config(true, None, false));
        let delays: Vec<Next> = (1..=6)
            .map(|a| p.next(a, Duration::ZERO, None, 0.5))
            .collect();
        let secs = |s| Next::RetryIn(Duration::from_secs(s));
        assert_eq!(
            delays,
            [secs(1), secs(2), secs(4), secs(8), secs(10), secs(10)]
        );
    }

    #[test]
    fn periodic_waits_alike_and_the_base_sets_the_growth() {
        let periodic = Policy::new(RetryConfig {
            retry_type: RetryType::Periodic,
            ..config(true, None, false)
        });
        assert_eq!(
            periodic.next(5, Duration::ZERO, None, 0.5),
            Next::RetryIn(Duration::from_secs(1))
        );
        let base3 = Policy::new(RetryConfig {
            exponential_backoff_base: 3.0,
            max_interval: None,
            ..config(true, None, false)
        });
        assert_eq!(
            base3.next(3, Duration::ZERO, None, 0.5),
            Next::RetryIn(Duration::from_secs(9))
        );
    }

    #[test]
    fn full_jitter_stays_within_the_computed_delay() {
        let p = Policy::new(config(true, None, true));
        for attempt in 1..20 {
            for j in [0.0, 0.3, 0.999] {
                let Next::RetryIn(d) = p.next(attempt, Duration::ZERO, None, j) else {
                    panic!()
                };
                assert!(d <= Duration::from_secs(10));
            }
        }
        assert_eq!(
            p.next(3, Duration::ZERO, None, 0.5),
            Next::RetryIn(Duration::from_secs(2))
        );
    }

    #[test]
    fn limits_give_up_unless_forever() {
        let p = Policy::new(config(false, Some(3), false));
        assert!(matches!(
            p.next(3, Duration::ZERO, None, 0.0),
            Next::RetryIn(_)
        ));
        assert_eq!(p.next(4, Duration::ZERO, None, 0.0), Next::GiveUp);
        assert_eq!(
            p.next(1, Duration::from_secs(3600), None, 0.0),
            Next::GiveUp
        );
        let forever = Policy::new(config(true, Some(3), false));
        assert!(matches!(
            forever.next(100, Duration::from_secs(1 << 30), None, 0.0),
            Next::RetryIn(_)
        ));
    }

    #[test]
    fn retry_after_is_capped_by_retry_max_interval() {
        let mut c = config(true, None, false);
        c.max_interval = Some(Duration::from_secs(30));
        let p = Policy::new(c);
        assert_eq!(
            p.next(1, Duration::ZERO, Some(Duration::from_secs(u64::MAX)), 0.0),
            Next::RetryIn(Duration::from_secs(30))
        );
        let mut c = config(true, None, false);
        c.max_interval = None;
        let unset = Policy::new(c);
        assert_eq!(
            unset.next(1, Duration::ZERO, Some(Duration::MAX), 0.0),
            Next::RetryIn(Duration::from_secs(24 * 3600))
        );
    }

    #[test]
    fn retry_after_overrides_the_backoff() {
        let p = Policy::new(config(true, None, true));
        assert_eq!(
            p.next(5, Duration::ZERO, Some(Duration::from_secs(1)), 0.9),
            Next::RetryIn(Duration::from_secs(1))
        );
    }
}
