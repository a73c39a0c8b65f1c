//! `--bwlimit`: a shared budget of bytes per second for all transfers.
//!
//! A virtual clock: each transfer reserves `len / rate` seconds of the link
//! and waits until its slot begins. In-memory bodies reserve their whole
//! length before the request (bursts of at most one small object); bodies
//! streamed from a file ([`throttle`]) reserve each chunk as it is read, so
//! a large single PUT or part is paced throughout instead of sent at full
//! speed after one long wait.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use aws_sdk_s3::primitives::{ByteStream, SdkBody};
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

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
        tokio::time::sleep_until(self.reserve(len)).await;
    }

    /// Reserves `len` bytes; returns when they may start.
    fn reserve(&self, len: u64) -> Instant {
        // A poisoned lock only means another transfer panicked mid-update of
        // an `Option<Instant>`, which is always valid.
        let mut next = self.next_free.lock().unwrap_or_else(|e| e.into_inner());
        reserve(&mut next, Instant::now(), len, self.bytes_per_sec)
    }
}

/// Paces a streamed body (a file read in chunks) by `limit`; `None` leaves
/// it as it is. Retries rebuild the stream and are paced again.
pub fn throttle(body: ByteStream, limit: Option<&Arc<RateLimit>>) -> ByteStream {
    match limit {
        None => body,
        Some(limit) => {
            let limit = limit.clone();
            body.map(move |inner| {
                SdkBody::from_body_1_x(Paced {
                    inner,
                    limit: limit.clone(),
                    held: None,
                })
            })
        }
    }
}

/// A body whose chunks are released when the link budget reaches them.
struct Paced {
    inner: SdkBody,
    limit: Arc<RateLimit>,
    /// A chunk read ahead of its slot, and the wait for that slot.
    held: Option<(Pin<Box<Sleep>>, Frame<bytes::Bytes>)>,
}

impl Body for Paced {
    type Data = bytes::Bytes;
    type Error = <SdkBody as Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        if let Some((sleep, _)) = &mut this.held {
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if let Some((_, frame)) = this.held.take() {
                return Poll::Ready(Some(Ok(frame)));
            }
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let len = frame.data_ref().map_or(0, |d| d.len() as u64);
                if len == 0 {
                    return Poll::Ready(Some(Ok(frame)));
                }
                let start = this.limit.reserve(len);
                if start <= Instant::now() {
                    return Poll::Ready(Some(Ok(frame)));
                }
                let mut sleep = Box::pin(tokio::time::sleep_until(start));
                // Registers the waker; the slot is in the future, so pending.
                if sleep.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Ok(frame)));
                }
                this.held = Some((sleep, frame));
                Poll::Pending
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let hint = self.inner.size_hint();
        let held = self
            .held
            .as_ref()
            .and_then(|(_, f)| f.data_ref())
            .map_or(0, |d| d.len() as u64);
        if held == 0 {
            return hint;
        }
        let mut out = SizeHint::new();
        out.set_lower(hint.lower() + held);
        if let Some(upper) = hint.upper() {
            out.set_upper(upper + held);
        }
        out
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

    /// A streamed file comes through whole, released chunk by chunk at the
    /// limit (virtual time: the clock is paused and advanced by the waits).
    #[tokio::test(start_paused = true)]
    async fn a_paced_stream_keeps_its_bytes_and_the_rate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..(2u32 << 20) + 777).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let limit = Arc::new(RateLimit::new(1 << 20).unwrap());
        let body = ByteStream::read_from()
            .path(&path)
            .buffer_size(64 << 10)
            .build()
            .await
            .unwrap();
        let t0 = Instant::now();
        let got = throttle(body, Some(&limit)).collect().await.unwrap();
        let took = t0.elapsed();
        assert_eq!(got.into_bytes().as_ref(), &data[..]);
        // Everything but the first chunk waits for its slot: (2 MiB + 777
        // - 64 KiB) at 1 MiB/s.
        assert!(took >= Duration::from_millis(1930), "{took:?}");
        assert!(took <= Duration::from_millis(2010), "{took:?}");
        // Without a limit the stream is passed through untouched.
        let body = ByteStream::read_from().path(&path).build().await.unwrap();
        let t0 = Instant::now();
        let got = throttle(body, None).collect().await.unwrap();
        assert_eq!(got.into_bytes().len(), data.len());
        assert_eq!(t0.elapsed(), Duration::ZERO);
    }
}
