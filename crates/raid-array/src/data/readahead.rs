//! Read-ahead for sequential readers.
//!
//! The kernel hands a FUSE filesystem reads of at most 128 KiB, one after
//! the other; served one by one, each costs a round trip to two or three
//! members and cold sequential reads stall far below what the disks give.
//! So when a file is read sequentially, the data path reads *windows* of
//! whole stripes (about 1 MiB of data, every member in parallel, one
//! contiguous request per member) a few windows ahead of the reader, keeps
//! them in memory and serves the following reads from them.
//!
//! Bounds: at most [`MAX_STREAMS`] files are followed by default (least
//! recently used first out), each using [`AHEAD`] + 1 windows (and, while it
//! moves on, up to [`AHEAD`] more still shared with its previous fill), so
//! memory stays a few tens of MiB however many files are open. The budget
//! is an option ([`ReadAhead::set_budget`], the mount's `cache=`): it sets
//! how many files are followed at once (about 7 windows each at worst), and
//! 0 turns read-ahead off. Up to [`SPARE`] buffers no
//! window uses any more are kept for the next fills: a fresh allocation of
//! a few MiB is zeroed page by page, which costs about as much as reading
//! it from the page cache. A fill overwrites every byte of its buffer, so a
//! reused buffer never shows another window's bytes.
//!
//! Consistency: windows are filled and used while the caller holds the
//! inode's read lock, and every change of a file's bytes ([`DataStore`]
//! write, truncate, remove) drops its windows under the write lock, so a
//! window never outlives the bytes it copied.
//!
//! [`DataStore`]: super::DataStore

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::Result;

/// Files followed at once by default.
pub(crate) const MAX_STREAMS: usize = 8;
/// Most files followed at once whatever the budget.
const STREAMS_CAP: usize = 256;
/// Windows read ahead of the one being read, in one go.
pub(crate) const AHEAD: u64 = 3;
/// Target bytes of data per window (rounded to whole stripes).
pub(crate) const WINDOW_BYTES: u64 = 1 << 20;
/// How far from the expected offset a read still counts as sequential.
const SLACK: u64 = 256 << 10;
/// Sequential reads in a row before windows are read: a random reader that
/// happens to land near its last read must not pay for megabytes.
const MIN_RUN: u32 = 2;
/// Fill buffers kept for reuse.
const SPARE: usize = 2;

/// Bytes `[start, end)` of a file; `data` is `None` until filled, and stays
/// `None` if the fill failed (the reader then reads directly and gets the
/// error or the repaired bytes itself).
struct Window {
    start: u64,
    end: u64,
    data: Mutex<Option<Filled>>,
}

/// A window's bytes: a range of a buffer read in one go for several
/// windows (shared, so filling them copies nothing).
struct Filled {
    buf: Arc<Vec<u8>>,
    /// Offset of the window's first byte in `buf`.
    at: usize,
}

struct Stream {
    ino: u64,
    /// Where the next sequential read is expected.
    next: u64,
    /// Sequential reads in a row.
    run: u32,
    windows: VecDeque<Arc<Window>>,
}

/// The read-ahead state of one data store.
pub(crate) struct ReadAhead {
    /// Most recently used last.
    streams: Mutex<Vec<Stream>>,
    /// Buffers of dropped windows, for the next fills.
    spare: Mutex<Vec<Vec<u8>>>,
    /// Files followed at once (0: read-ahead off).
    max_streams: AtomicUsize,
}

impl Default for ReadAhead {
    fn default() -> Self {
        ReadAhead {
            streams: Mutex::new(Vec::new()),
            spare: Mutex::new(Vec::new()),
            max_streams: AtomicUsize::new(MAX_STREAMS),
        }
    }
}

/// Memory one followed file may hold at most, in windows: the windows it
/// uses (`AHEAD + 1`) and, while the last window of an older fill is still
/// read, that fill's shared buffer (`AHEAD` more).
const WINDOWS_PER_STREAM: u64 = 2 * AHEAD + 1;
/// Memory one followed file may hold with windows of `window` bytes.
pub fn bytes_per_stream(window: u64) -> u64 {
    WINDOWS_PER_STREAM * window
}
/// The default budget: [`MAX_STREAMS`] files with 1 MiB windows (56 MiB).
pub const DEFAULT_BUDGET: u64 = MAX_STREAMS as u64 * WINDOWS_PER_STREAM * WINDOW_BYTES;

impl std::fmt::Debug for ReadAhead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadAhead").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ReadAhead {
    /// Bound the memory of read-ahead windows of `window` bytes to about
    /// `bytes` (as many files followed as that allows, at least one; 0 turns
    /// read-ahead off). Returns the number of files followed. Up to
    /// [`SPARE`] fill buffers kept for reuse come on top.
    pub(crate) fn set_budget(&self, bytes: u64, window: u64) -> usize {
        let n = if bytes == 0 {
            0
        } else {
            usize::try_from(bytes / bytes_per_stream(window).max(1))
                .unwrap_or(STREAMS_CAP)
                .clamp(1, STREAMS_CAP)
        };
        self.max_streams.store(n, Ordering::Relaxed);
        let mut streams = lock(&self.streams);
        while streams.len() > n {
            let old = streams.remove(0);
            self.recycle(old.windows);
        }
        n
    }

    /// Forget the windows of `ino` (its bytes change). Caller holds the
    /// inode's write lock.
    pub(crate) fn invalidate(&self, ino: u64) {
        let mut streams = lock(&self.streams);
        while let Some(pos) = streams.iter().position(|s| s.ino == ino) {
            let st = streams.remove(pos);
            self.recycle(st.windows);
        }
    }

    /// Keep the buffers of dropped windows that nobody else uses.
    fn recycle(&self, dropped: impl IntoIterator<Item = Arc<Window>>) {
        for w in dropped {
            let Ok(w) = Arc::try_unwrap(w) else { continue };
            let filled = w.data.into_inner().unwrap_or_else(|e| e.into_inner());
            let Some(f) = filled else { continue };
            // Shared with later windows until the last of them goes.
            let Ok(buf) = Arc::try_unwrap(f.buf) else {
                continue;
            };
            let mut spare = lock(&self.spare);
            if spare.len() < SPARE {
                spare.push(buf);
            }
        }
    }

    /// A buffer of `len` bytes whose contents the caller overwrites.
    fn take(&self, len: usize) -> Vec<u8> {
        let mut v = lock(&self.spare).pop().unwrap_or_default();
        v.resize(len, 0);
        v
    }

    /// Serve a read of `out.len()` bytes at `offset` of `ino` (logical size
    /// `size`) from windows of `window` bytes, reading missing windows with
    /// `fill(start, buf)` when the file is read sequentially. Returns
    /// whether `out` was filled; if not, the caller reads directly. Caller
    /// holds the inode's read lock.
    pub(crate) fn read(
        &self,
        ino: u64,
        offset: u64,
        out: &mut [u8],
        size: u64,
        window: u64,
        fill: impl Fn(u64, &mut [u8]) -> Result<()>,
    ) -> bool {
        let max_streams = self.max_streams.load(Ordering::Relaxed);
        if max_streams == 0 {
            return false;
        }
        let end = offset + out.len() as u64;
        // Windows to fill now (created here, their data locked until filled).
        let mut created: Vec<Arc<Window>> = Vec::new();
        let mut wanted: Vec<Arc<Window>> = Vec::new();
        let mut guards: Vec<MutexGuard<'_, Option<Filled>>>;
        {
            let mut streams = lock(&self.streams);
            let Some(pos) = streams.iter().position(|s| s.ino == ino) else {
                if streams.len() >= max_streams {
                    let old = streams.remove(0);
                    self.recycle(old.windows);
                }
                streams.push(Stream {
                    ino,
                    next: end,
                    run: 0,
                    windows: VecDeque::new(),
                });
                return false;
            };
            let mut st = streams.remove(pos);
            // Sequential: near where the last read ended (the kernel may
            // send the reads of its own read-ahead a little out of order).
            let sequential = offset + SLACK >= st.next && offset <= st.next + SLACK;
            st.next = st.next.max(end);
            if !sequential {
                st.next = end;
                st.run = 0;
                self.recycle(st.windows.drain(..));
                streams.push(st);
                return false;
            }
            st.run = st.run.saturating_add(1);
            if st.run < MIN_RUN && st.windows.is_empty() {
                streams.push(st);
                return false;
            }
            while st.windows.front().is_some_and(|w| w.end <= offset) {
                self.recycle(st.windows.pop_front());
            }
            let first = offset / window;
            let last = (end - 1) / window;
            // Read ahead in one go when the window after this read is missing.
            let upto = if st.windows.iter().any(|w| w.start == (last + 1) * window) {
                last
            } else {
                last + AHEAD
            };
            for k in first..=upto {
                let start = k * window;
                if start >= size {
                    break;
                }
                let w = match st.windows.iter().find(|w| w.start == start) {
                    Some(w) => w.clone(),
                    None => {
                        let w = Arc::new(Window {
                            start,
                            end: (start + window).min(size),
                            data: Mutex::new(None),
                        });
                        st.windows.push_back(w.clone());
                        created.push(w.clone());
                        w
                    }
                };
                if k <= last {
                    wanted.push(w);
                }
            }
            st.windows.make_contiguous().sort_by_key(|w| w.start);
            streams.push(st);
            // Lock the new windows before the stream is visible again, so
            // that other readers of them wait for the fill (ours).
            guards = created.iter().map(|w| lock(&w.data)).collect();
        }
        if !created.is_empty() {
            let (a, z) = (created[0].start, created[created.len() - 1].end);
            let contiguous = created.windows(2).all(|p| p[0].end == p[1].start);
            if contiguous {
                let mut buf = self.take((z - a) as usize);
                if fill(a, &mut buf).is_ok() {
                    let buf = Arc::new(buf);
                    for (w, g) in created.iter().zip(guards.iter_mut()) {
                        **g = Some(Filled {
                            buf: buf.clone(),
                            at: (w.start - a) as usize,
                        });
                    }
                }
            } else {
                for (w, g) in created.iter().zip(guards.iter_mut()) {
                    let mut buf = self.take((w.end - w.start) as usize);
                    if fill(w.start, &mut buf).is_ok() {
                        **g = Some(Filled {
                            buf: Arc::new(buf),
                            at: 0,
                        });
                    }
                }
            }
        }
        // Filled (or failed): let waiting readers in, and ourselves below.
        drop(guards);
        // Copy what the read wants; any piece not covered means a direct read.
        let mut at = offset;
        for w in &wanted {
            if at >= end {
                break;
            }
            let g = lock(&w.data);
            let Some(d) = g.as_ref() else { return false };
            if at < w.start || at >= w.end {
                return false;
            }
            let z = end.min(w.end);
            out[(at - offset) as usize..(z - offset) as usize].copy_from_slice(
                &d.buf[d.at + (at - w.start) as usize..d.at + (z - w.start) as usize],
            );
            at = z;
        }
        at >= end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(off: u64, buf: &mut [u8]) {
        for (i, b) in buf.iter_mut().enumerate() {
            *b = ((off + i as u64) % 251) as u8;
        }
    }

    #[test]
    fn sequential_reads_come_from_windows_and_match_the_file() {
        let ra = ReadAhead::default();
        let fills = AtomicUsize::new(0);
        let fill = |off: u64, buf: &mut [u8]| {
            fills.fetch_add(1, Ordering::Relaxed);
            pattern(off, buf);
            Ok(())
        };
        let size = 10_000_000;
        let mut served = 0;
        let mut off = 0;
        while off < size {
            let n = (128 * 1024).min(size - off) as usize;
            let mut out = vec![0u8; n];
            if ra.read(7, off, &mut out, size, 1_000_000, fill) {
                served += 1;
                let mut want = vec![0u8; n];
                pattern(off, &mut want);
                assert_eq!(out, want, "wrong bytes at {off}");
            }
            off += n as u64;
        }
        // The first reads miss (no run yet); windows are filled a few at a time.
        assert_eq!(
            served,
            10_000_000usize.div_ceil(128 * 1024) - MIN_RUN as usize
        );
        assert!(fills.load(Ordering::Relaxed) <= 4, "{fills:?} fills");
    }

    #[test]
    fn the_budget_bounds_the_files_followed_and_zero_turns_it_off() {
        let ra = ReadAhead::default();
        let fill = |off: u64, buf: &mut [u8]| {
            pattern(off, buf);
            Ok(())
        };
        // Three sequential reads of `ino`: the third is served from windows
        // if the file is still followed.
        let third_served = |ino: u64| {
            let mut out = vec![0u8; 4096];
            (0..3)
                .map(|k| ra.read(ino, k * 4096, &mut out, 1 << 30, 1 << 20, fill))
                .last()
                .unwrap_or(false)
        };
        let w = WINDOW_BYTES;
        assert_eq!(ra.set_budget(DEFAULT_BUDGET, w), MAX_STREAMS);
        // Wider windows (wide stripes): fewer files for the same memory.
        assert_eq!(ra.set_budget(DEFAULT_BUDGET, 2 * w), MAX_STREAMS / 2);
        // Any non-zero budget follows at least one file.
        assert_eq!(ra.set_budget(1, w), 1);
        assert_eq!(ra.set_budget(2 * bytes_per_stream(w) + 1, w), 2);
        assert!(third_served(1));
        assert!(third_served(2));
        // A third file pushes the first out: it starts over.
        assert!(third_served(3));
        let mut out = vec![0u8; 4096];
        assert!(!ra.read(1, 3 * 4096, &mut out, 1 << 30, 1 << 20, fill));
        // Off: nothing is ever served from windows.
        assert_eq!(ra.set_budget(0, w), 0);
        assert!(!third_served(4));
        assert!(!ra.read(3, 3 * 4096, &mut out, 1 << 30, 1 << 20, fill));
        assert_eq!(ra.set_budget(u64::MAX, w), STREAMS_CAP);
    }

    #[test]
    fn random_reads_and_invalidated_files_are_read_directly() {
        let ra = ReadAhead::default();
        let fill = |off: u64, buf: &mut [u8]| {
            pattern(off, buf);
            Ok(())
        };
        let mut out = vec![0u8; 4096];
        assert!(!ra.read(1, 0, &mut out, 1 << 30, 1 << 20, fill));
        assert!(!ra.read(1, 4096, &mut out, 1 << 30, 1 << 20, fill));
        assert!(ra.read(1, 8192, &mut out, 1 << 30, 1 << 20, fill));
        let mut want = vec![0u8; 4096];
        pattern(8192, &mut want);
        assert_eq!(out, want);
        assert!(!ra.read(1, 500 << 20, &mut out, 1 << 30, 1 << 20, fill));
        // One read near the last one is not yet a run.
        assert!(!ra.read(1, (500 << 20) + 100_000, &mut out, 1 << 30, 1 << 20, fill));
        assert!(!ra.read(1, 900 << 20, &mut out, 1 << 30, 1 << 20, fill));
        ra.invalidate(1);
        assert!(!ra.read(1, (900 << 20) + 4096, &mut out, 1 << 30, 1 << 20, fill));
    }

    #[test]
    fn reused_buffers_show_only_the_bytes_of_their_new_window() {
        let ra = ReadAhead::default();
        let size = 12_000_000u64;
        // File 1 read through to its end, then file 2 with other bytes:
        // its windows land in file 1's old buffers.
        for (ino, salt) in [(1u64, 0u64), (2, 77)] {
            let fill = |off: u64, buf: &mut [u8]| {
                pattern(off + salt, buf);
                Ok(())
            };
            let mut off = 0;
            let mut served = 0;
            while off < size {
                let n = (128 * 1024).min(size - off) as usize;
                let mut out = vec![0u8; n];
                if ra.read(ino, off, &mut out, size, 1_000_000, fill) {
                    served += 1;
                    let mut want = vec![0u8; n];
                    pattern(off + salt, &mut want);
                    assert_eq!(out, want, "file {ino}: wrong bytes at {off}");
                }
                off += n as u64;
            }
            assert!(served > 0);
            assert!(
                !lock(&ra.spare).is_empty(),
                "file {ino}: no buffer kept for reuse"
            );
        }
        // The same after a change of the file: new bytes, no old ones.
        ra.invalidate(2);
        let fill = |off: u64, buf: &mut [u8]| {
            pattern(off + 5, buf);
            Ok(())
        };
        for k in 0..40u64 {
            let off = k * 4096;
            let mut out = vec![0u8; 4096];
            if ra.read(2, off, &mut out, size, 1_000_000, fill) {
                let mut want = vec![0u8; 4096];
                pattern(off + 5, &mut want);
                assert_eq!(out, want, "rewritten file: wrong bytes at {off}");
            }
        }
    }

    #[test]
    fn a_failed_fill_leaves_the_read_to_the_caller() {
        let ra = ReadAhead::default();
        let fail = |_: u64, _: &mut [u8]| Err(crate::ArrayError::Invalid("boom".into()));
        let mut out = vec![0u8; 4096];
        for k in 0..4 {
            assert!(!ra.read(3, k * 4096, &mut out, 1 << 30, 1 << 20, fail));
        }
    }

    #[test]
    fn concurrent_readers_of_one_file_get_its_bytes() {
        let ra = ReadAhead::default();
        let size = 6_000_000u64;
        std::thread::scope(|sc| {
            for t in 0..4u64 {
                let ra = &ra;
                sc.spawn(move || {
                    let fill = |off: u64, buf: &mut [u8]| {
                        pattern(off, buf);
                        Ok(())
                    };
                    let mut off = t * 4096;
                    while off < size {
                        let n = (128 * 1024).min(size - off) as usize;
                        let mut out = vec![0u8; n];
                        if ra.read(9, off, &mut out, size, 1_000_000, fill) {
                            let mut want = vec![0u8; n];
                            pattern(off, &mut want);
                            assert_eq!(out, want, "wrong bytes at {off}");
                        }
                        off += n as u64;
                    }
                });
            }
        });
    }
}
