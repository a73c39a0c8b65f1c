//! `--bwlimit`: a shared budget of bytes per second for all transfers.
//!
//! A virtual clock: each piece of a request body reserves `len / rate`
//! seconds of the link and is released when its slot begins ([`throttle`]).
//! Pieces are small enough (about half a second of the link divided among
//! the requests in flight) that no body waits long between two pieces: a
//! pause of several seconds looks like a dead connection to the SDK and to
//! S3 (which drops a request whose body stops for about 20 s).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use aws_sdk_s3::primitives::{ByteStream, SdkBody};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// Smallest and largest piece a body is released in.
const MIN_PIECE: usize = 1 << 10;
const MAX_PIECE: usize = 256 << 10;

/// Bandwidth limiter shared by all concurrent transfers.
#[derive(Debug)]
pub struct RateLimit {
    bytes_per_sec: u64,
    /// Bytes released at a time.
    piece: usize,
    next_free: Mutex<Option<Instant>>,
}

impl RateLimit {
    /// `None` (no limit) for a rate of 0. `streams`: requests in flight at
    /// most, which share the link.
    pub fn new(bytes_per_sec: u64, streams: usize) -> Option<Self> {
        let share = bytes_per_sec / (2 * streams.max(1) as u64);
        (bytes_per_sec > 0).then(|| RateLimit {
            bytes_per_sec,
            piece: usize::try_from(share)
                .unwrap_or(MAX_PIECE)
                .clamp(MIN_PIECE, MAX_PIECE),
            next_free: Mutex::new(None),
        })
    }

    /// Reserves `len` bytes; returns when they may start.
    fn reserve(&self, len: u64) -> Instant {
        // A poisoned lock only means another transfer panicked mid-update of
        // an `Option<Instant>`, which is always valid.
        let mut next = self.next_free.lock().unwrap_or_else(|e| e.into_inner());
        reserve(&mut next, Instant::now(), len, self.bytes_per_sec)
    }
}

/// Paces a request body (streamed from a file or in memory) by `limit`;
/// `None` leaves it as it is. Retries rebuild the body and are paced again.
pub fn throttle(body: ByteStream, limit: Option<&Arc<RateLimit>>) -> ByteStream {
    match limit {
        None => body,
        Some(limit) => {
            let limit = limit.clone();
            body.map(move |inner| {
                SdkBody::from_body_1_x(Paced {
                    inner,
                    limit: limit.clone(),
                    rest: None,
                    held: None,
                })
            })
        }
    }
}

/// A body released piece by piece when the link budget reaches each piece.
struct Paced {
    inner: SdkBody,
    limit: Arc<RateLimit>,
    /// What is left of the last frame after its first piece.
    rest: Option<Bytes>,
    /// A piece waiting for its slot, and the wait.
    held: Option<(Pin<Box<Sleep>>, Bytes)>,
}

impl Body for Paced {
    type Data = Bytes;
    type Error = <SdkBody as Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        loop {
            if let Some((sleep, _)) = &mut this.held {
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                if let Some((_, piece)) = this.held.take() {
                    return Poll::Ready(Some(Ok(Frame::data(piece))));
                }
            }
            let mut data = match this.rest.take() {
                Some(rest) => rest,
                None => match Pin::new(&mut this.inner).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                        Ok(data) => data,
                        // Trailers pass as they are.
                        Err(frame) => return Poll::Ready(Some(Ok(frame))),
                    },
                    other => return other,
                },
            };
            if data.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
            if data.len() > this.limit.piece {
                this.rest = Some(data.split_off(this.limit.piece));
            }
            let start = this.limit.reserve(data.len() as u64);
            if start <= Instant::now() {
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
            // Polled at the top of the loop, which registers the waker.
            this.held = Some((Box::pin(tokio::time::sleep_until(start)), data));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_none() && self.rest.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        // Asked for before the first poll (Content-Length), when nothing is
        // held back yet: the inner body's hint is then the whole length.
        self.inner.size_hint()
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
        assert!(RateLimit::new(0, 4).is_none());
    }

    #[test]
    fn pieces_share_half_a_second_of_the_link() {
        let piece = |rate, streams| RateLimit::new(rate, streams).unwrap().piece;
        assert_eq!(piece(64 << 10, 4), 8 << 10);
        assert_eq!(piece(100 << 20, 16), MAX_PIECE);
        assert_eq!(piece(1000, 16), MIN_PIECE);
        assert_eq!(piece(1 << 20, 0), MAX_PIECE);
    }

    /// An in-memory body is cut into pieces too, so no request waits long
    /// between two pieces (a long pause reads as a dead connection).
    #[tokio::test(start_paused = true)]
    async fn an_in_memory_body_goes_in_pieces_with_short_pauses() {
        let data: Vec<u8> = (0..1u32 << 20).map(|i| (i % 253) as u8).collect();
        let limit = Arc::new(RateLimit::new(64 << 10, 4).unwrap());
        let mut body = throttle(ByteStream::from(data.clone()), Some(&limit));
        let t0 = Instant::now();
        let mut last = t0;
        let mut longest = Duration::ZERO;
        let mut got = Vec::new();
        while let Some(piece) = body.try_next().await.unwrap() {
            longest = longest.max(last.elapsed());
            last = Instant::now();
            assert!(piece.len() <= 8 << 10, "{}", piece.len());
            got.extend_from_slice(&piece);
        }
        assert_eq!(got, data);
        assert!(longest <= Duration::from_millis(130), "{longest:?}");
        // (1 MiB - the first piece) at 64 KiB/s.
        assert!(
            t0.elapsed() >= Duration::from_millis(15_870),
            "{:?}",
            t0.elapsed()
        );
    }

    /// A streamed file comes through whole, released chunk by chunk at the
    /// limit (virtual time: the clock is paused and advanced by the waits).
    #[tokio::test(start_paused = true)]
    async fn a_paced_stream_keeps_its_bytes_and_the_rate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..(2u32 << 20) + 777).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let limit = Arc::new(RateLimit::new(1 << 20, 1).unwrap());
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
