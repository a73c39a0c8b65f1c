//! The thread pool that runs member I/O.
//!
//! Member reads, writes and `fdatasync`s block on the disks, not on the
//! CPU, so they must not share rayon's global pool (one thread per core: two
//! on a small machine, which would let only two of four members work at a
//! time). One long-lived pool with a few threads per member is started on
//! first use and shared by every array in the process; no call spawns a
//! thread of its own.

use std::sync::OnceLock;

/// Threads of the I/O pool: enough for every member of a wide array to have
/// a request in flight for two concurrent callers.
const IO_THREADS: usize = 16;

static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();

/// Run `f` inside the I/O pool (its parallel iterators then use that pool).
/// If the pool cannot be started (thread limit), `f` runs on the caller's
/// pool, which is slower but correct.
pub(crate) fn install<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let pool = POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(IO_THREADS)
            .thread_name(|i| format!("raidfs-io-{i}"))
            .build()
            .map_err(
                |e| tracing::warn!(error = %e, "cannot start the I/O pool; using the shared one"),
            )
            .ok()
    });
    match pool {
        Some(p) => p.install(f),
        None => f(),
    }
}
