//! `--bwlimit`: a shared budget of bytes per second for all transfers.
//!
//! A virtual clock: each request reserves `len / rate` seconds of the link
//! and waits until its slot begins. The rate is therefore met on average over
//! any span longer than one object or part (bursts are at most one request
//! large); that is the granularity the SDK's request bodies allow.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// Bandwidth limiter shared by all concurrent transfers.
#[derive(Debug)]
pub struct RateLimit {
    bytes_per_sec: u64,
    next_free: Mutex<Option<Instant>>,
}

impl RateLimit {
    /// `None` (no limit) for a rate of 0.
    pub fn new(bytes_per_sec: u64) -> Option<Self> {
        (bytes_per_sec > 0).then(|| RateLimit {
            bytes_per_sec,
            next_free: Mutex::new(None),
        })
    }

    /// Waits until `len` bytes may be sent.
    pub async fn acquire(&self, len: u64) {
        let start = {
            let mut next = self.next_free.lock().await;
            reserve(&mut next, Instant::now(), len, self.bytes_per_sec)
        };
        tokio::time::sleep_until(start).await;
    }
}

/// Reserves `len` bytes on the virtual clock `next`; returns when they may start.
fn reserve(next: &mut Option<Instant>, now: Instant, len: u64, bytes_per_sec: u64) -> Instant {
    let start = next.map_or(now, |n| n.max(now));
    let cost = Duration::from_secs_f64(len as f64 / bytes_per_sec as f64);
    *next = Some(start + cost);
    start
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_follow_the_rate() {
        let t0 = Instant::now();
        let mut next = None;
        assert_eq!(reserve(&mut next, t0, 500, 1000), t0); // at once
        assert_eq!(
            reserve(&mut next, t0, 500, 1000),
            t0 + Duration::from_millis(500)
        );
        assert_eq!(reserve(&mut next, t0, 1, 1000), t0 + Duration::from_secs(1));
        // An idle link does not bank credit for later bursts.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(reserve(&mut next, later, 1, 1000), later);
        assert!(RateLimit::new(0).is_none());
    }
}
