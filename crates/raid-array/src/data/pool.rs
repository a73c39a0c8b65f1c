//! The thread pool that runs member I/O.
//!
//! Member reads, writes and `fdatasync`s block on the disks, not on the
//! CPU, so they must not share rayon's global pool (one thread per core: two
//! on a small machine, which would let only two of four members work at a
//! time). One long-lived pool with a few threads per member is started on
//! first use and shared by every array in the process; no call spawns a
//! thread of its own.
//!
//! The caller takes part: [`map`] hands jobs to the pool and works on the
//! calling thread too, inside a scope (`rayon::ThreadPool::in_place_scope`)
//! that returns once every job is done, so jobs may borrow the caller's
//! buffers. Running everything inside the pool (`ThreadPool::install`, used
//! before) put the caller to sleep for every call and cost a wake-up at its
//! end: on warm data a call's member reads take a few tens of microseconds,
//! about what one hand-off between threads costs (docs/PERF-NOTES.md, "The
//! caller takes part"). Items are claimed one at a time from a shared
//! counter, by the caller and by one pool job per other item, so whichever
//! thread is free takes the next item: warm, the caller and one pool thread
//! share the work evenly instead of the caller doing one item and waiting
//! for the rest; cold, every item can still be in flight at once, so a
//! member read or write that blocks does not hold up the others. [`join`]
//! runs one closure on the caller and the other on the pool.
//!
//! Nesting: a job may itself call [`map`] or [`join`] (the rebuild pipeline
//! does). On a pool thread the scope's jobs go to that thread's own queue,
//! and while it waits for them it runs other pool work, like `rayon::join`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

/// Threads of the I/O pool: enough for every member of a wide array to have
/// a request in flight for two concurrent callers.
const IO_THREADS: usize = 16;

static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();

/// The shared pool, started on first use; `None` if its threads could not be
/// started (thread limit), in which case jobs run on the caller one after
/// the other: slower, but correct.
fn pool() -> Option<&'static rayon::ThreadPool> {
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(IO_THREADS)
            .thread_name(|i| format!("raidfs-io-{i}"))
            .build()
            .map_err(|e| {
                tracing::warn!(
                    error = %e,
                    "cannot start the I/O pool; member I/O runs on the calling thread"
                );
            })
            .ok()
    })
    .as_ref()
}

/// Apply `f` to every item in parallel on the I/O pool and return the
/// results in the items' order. The caller works on items too and returns
/// once every item is done, so `f` and the items may borrow from the
/// caller's stack. A panic in any job is raised again here, after all jobs
/// have finished.
pub(crate) fn map<T, R, F>(items: impl IntoIterator<Item = T>, f: F) -> Vec<R>
where
    T: Send,
    R: Send,
    F: Fn(T) -> R + Sync,
{
    let items: Vec<T> = items.into_iter().collect();
    let n = items.len();
    match pool() {
        Some(p) if n > 1 => {
            // Items are claimed in order from a shared counter by the caller
            // and by n - 1 pool jobs, so a thread that finishes early takes
            // the next item instead of waiting.
            let items: Vec<Mutex<Option<T>>> =
                items.into_iter().map(|t| Mutex::new(Some(t))).collect();
            let out: Vec<Mutex<Option<R>>> = (0..n).map(|_| Mutex::new(None)).collect();
            let next = AtomicUsize::new(0);
            let work = || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(cell) = items.get(i) else { break };
                    let item = cell.lock().unwrap_or_else(PoisonError::into_inner).take();
                    if let Some(item) = item {
                        let r = f(item);
                        *out[i].lock().unwrap_or_else(PoisonError::into_inner) = Some(r);
                    }
                }
            };
            let work = &work;
            p.in_place_scope(|scope| {
                for _ in 1..n {
                    scope.spawn(move |_| work());
                }
                work();
            });
            // Every slot was filled: the scope above returns only after its
            // jobs ran, and together they claimed every item.
            let out: Vec<R> = out
                .into_iter()
                .filter_map(|m| m.into_inner().unwrap_or_else(PoisonError::into_inner))
                .collect();
            debug_assert_eq!(out.len(), n);
            out
        }
        _ => items.into_iter().map(f).collect(),
    }
}

/// Run `a` and `b` in parallel (`a` on the caller, `b` on the I/O pool) and
/// return both results once both are done; like `rayon::join`, either may
/// borrow from the caller's stack, and a panic in either is raised here.
pub(crate) fn join<A, B, RA, RB>(a: A, b: B) -> (RA, RB)
where
    A: FnOnce() -> RA + Send,
    B: FnOnce() -> RB + Send,
    RA: Send,
    RB: Send,
{
    let Some(p) = pool() else {
        return (a(), b());
    };
    let mut rb = None;
    let slot = &mut rb;
    let ra = p.in_place_scope(|scope| {
        scope.spawn(move |_| *slot = Some(b()));
        a()
    });
    match rb {
        Some(rb) => (ra, rb),
        // The scope returned, so `b` ran and filled its slot.
        None => unreachable!("a joined job left no result"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::panic;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::thread;
    use std::time::Duration;

    /// Tests that hold pool threads would starve each other if they ran at
    /// once (each waiting for threads the other holds): one at a time.
    fn exclusive() -> std::sync::MutexGuard<'static, ()> {
        static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
        ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[test]
    fn map_keeps_order_and_writes_through_borrows() {
        let _only = exclusive();
        let mut bufs = vec![vec![0u8; 4096]; 9];
        let lens = map(bufs.iter_mut().enumerate(), |(i, b)| {
            b.fill(i as u8 + 1);
            b.len() * (i + 1)
        });
        assert_eq!(lens, (1..=9).map(|i| 4096 * i).collect::<Vec<_>>());
        for (i, b) in bufs.iter().enumerate() {
            assert!(b.iter().all(|&x| x == i as u8 + 1), "buffer {i}");
        }
    }

    #[test]
    fn map_of_nothing_and_of_one() {
        let _only = exclusive();
        let none: Vec<u32> = map(Vec::<u32>::new(), |x| x);
        assert!(none.is_empty());
        assert_eq!(map([7u32], |x| x * 2), vec![14]);
    }

    /// Jobs run on several named pool threads at once, not one after the
    /// other: each of four jobs waits until all four have started.
    #[test]
    fn jobs_run_concurrently_on_named_threads() {
        let _only = exclusive();
        let started = AtomicUsize::new(0);
        let names = Mutex::new(BTreeSet::new());
        let caller = thread::current().id();
        let on_caller = AtomicUsize::new(0);
        map(0..4, |_| {
            started.fetch_add(1, Ordering::SeqCst);
            if thread::current().id() == caller {
                on_caller.fetch_add(1, Ordering::SeqCst);
            } else if let Some(n) = thread::current().name() {
                names.lock().unwrap().insert(n.to_string());
            }
            // Bounded so a broken pool fails the assertion below instead of hanging.
            for _ in 0..2000 {
                if started.load(Ordering::SeqCst) == 4 {
                    break;
                }
                thread::sleep(Duration::from_millis(5));
            }
            assert_eq!(started.load(Ordering::SeqCst), 4, "jobs did not overlap");
        });
        assert_eq!(on_caller.load(Ordering::SeqCst), 1, "caller runs one job");
        let names = names.into_inner().unwrap();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(
            names.iter().all(|n| n.starts_with("raidfs-io-")),
            "{names:?}"
        );
    }

    /// Items go to whichever thread is free: with every pool thread held up
    /// elsewhere, the caller works through all of its items itself instead
    /// of leaving them queued behind the busy pool (the call still returns
    /// only once the pool has run the jobs it was handed, which then find
    /// nothing left to do).
    #[test]
    fn a_free_caller_takes_the_items_a_busy_pool_cannot() {
        let _only = exclusive();
        let release = AtomicUsize::new(0);
        let held = AtomicUsize::new(0);
        let wait_for_release = || {
            for _ in 0..2000 {
                if release.load(Ordering::SeqCst) == 1 {
                    return;
                }
                thread::sleep(Duration::from_millis(5));
            }
        };
        let done = AtomicUsize::new(0);
        let caller = thread::current().id();
        let on_caller = AtomicUsize::new(0);
        thread::scope(|s| {
            // Hold every pool thread (and this helper's own thread).
            s.spawn(|| {
                map(0..=IO_THREADS, |_| {
                    held.fetch_add(1, Ordering::SeqCst);
                    wait_for_release();
                })
            });
            for _ in 0..10_000 {
                if held.load(Ordering::SeqCst) == IO_THREADS + 1 {
                    break;
                }
                thread::sleep(Duration::from_millis(1));
            }
            assert_eq!(held.load(Ordering::SeqCst), IO_THREADS + 1, "pool not held");
            // Let the pool go once our items are done, or after a while
            // if they are stuck behind it (the assertion below then fails).
            s.spawn(|| {
                for _ in 0..400 {
                    if done.load(Ordering::SeqCst) == 3 {
                        break;
                    }
                    thread::sleep(Duration::from_millis(5));
                }
                release.store(1, Ordering::SeqCst);
            });
            map(0..3, |_| {
                if thread::current().id() == caller {
                    on_caller.fetch_add(1, Ordering::SeqCst);
                }
                done.fetch_add(1, Ordering::SeqCst);
            });
        });
        assert_eq!(on_caller.load(Ordering::SeqCst), 3);
    }

    /// The rebuild's shape: a join whose second half joins again, with a
    /// map inside each half. Every level must finish with its results.
    #[test]
    fn nested_joins_and_maps_complete() {
        let _only = exclusive();
        let mut a = [0u64; 6];
        let mut b = [0u64; 6];
        for round in 0..50u64 {
            let (x, (y, z)) = join(
                || map(a.iter_mut(), |v| *v += round).len(),
                || {
                    join(
                        || map(b.iter_mut(), |v| *v += 2 * round).len(),
                        || map(0..5u64, |i| i * round).into_iter().sum::<u64>(),
                    )
                },
            );
            assert_eq!((x, y, z), (6, 6, 10 * round));
        }
        let total: u64 = (0..50).sum();
        assert!(a.iter().all(|&v| v == total));
        assert!(b.iter().all(|&v| v == 2 * total));
    }

    #[test]
    fn join_returns_both_results_in_place() {
        let _only = exclusive();
        let mut left = [0u8; 16];
        let mut right = [0u8; 16];
        let (l, r) = join(
            || {
                left.fill(1);
                "left"
            },
            || {
                right.fill(2);
                "right"
            },
        );
        assert_eq!((l, r), ("left", "right"));
        assert_eq!((left, right), ([1; 16], [2; 16]));
    }

    /// A panicking job reaches the caller and leaves the pool working.
    #[test]
    fn a_panic_reaches_the_caller_and_the_pool_survives() {
        let _only = exclusive();
        for _ in 0..(IO_THREADS + 2) {
            let r = panic::catch_unwind(|| {
                map(0..4, |i| {
                    if i == 2 {
                        panic!("job {i} failed");
                    }
                    i
                })
            });
            let msg = r.expect_err("the panic must reach the caller");
            assert_eq!(msg.downcast_ref::<String>().unwrap(), "job 2 failed");
            let r = panic::catch_unwind(|| join(|| 1, || -> u32 { panic!("right side") }));
            assert!(r.is_err());
        }
        // More panics than threads happened; every worker is still there.
        assert_eq!(map(0..IO_THREADS, |i| i + 1).len(), IO_THREADS);
    }
}
