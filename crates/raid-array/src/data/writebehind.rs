//! Write-behind: a file's shards start going to the disks while the file is
//! still being written.
//!
//! Member writes land in the members' page caches, and the kernel starts
//! writing dirty pages back only once a tenth of memory is dirty. Left
//! alone, a large sequential write ran its computation first and its disk
//! writes second, all in the `fsync` or `close` that ended it, with 1.33x
//! (RAID-5 of 4) to 1.5x (RAID-6 of 6) the file's bytes dirty in memory on
//! the way, a lot on a Pi with 1–4 GB. Each time a write crosses a
//! [`STEP`] boundary of the file, the members' bytes of its stripes up to
//! [`LAG`] behind the write go to a thread of their own, which asks each
//! member to write them back without waiting (`posix_fadvise(DONTNEED)`:
//! write-back of dirty pages starts, pages already on disk leave the
//! cache). The disks then write while later stripes are computed. The
//! stripes just behind the write, which the next partial-stripe write reads
//! back, stay cached.
//!
//! It only makes data reach the disks earlier; durability still comes from
//! `fdatasync` alone ([`super::DataStore::sync`]), so errors here are only
//! logged: the next sync meets them again and fails the member.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tracing::debug;

use crate::member::MemberFile;

/// File bytes written between two write-back requests for a file.
pub(crate) const STEP: u64 = 8 << 20;
/// File bytes just behind the write left alone: the next write may read
/// back its partial stripe.
pub(crate) const LAG: u64 = 4 << 20;

/// Write back the first `upto` bytes of each file.
struct Job {
    files: Vec<Arc<dyn MemberFile>>,
    upto: u64,
}

/// The write-back thread, started on the first request.
#[derive(Default)]
pub(crate) struct WriteBehind {
    inner: Mutex<Option<(SyncSender<Job>, JoinHandle<()>)>>,
}

impl WriteBehind {
    /// Ask for write-back of the first `upto` bytes of `files`; never
    /// blocks. Dropped while the thread is still busy: requests cover a
    /// file from its start, so the next one covers this one's bytes.
    pub(crate) fn request(&self, files: Vec<Arc<dyn MemberFile>>, upto: u64) {
        if files.is_empty() || upto == 0 {
            return;
        }
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if g.is_none() {
            let (tx, rx) = sync_channel(1);
            match std::thread::Builder::new()
                .name("raidfs-writeback".into())
                .spawn(move || run(&rx))
            {
                Ok(h) => *g = Some((tx, h)),
                Err(e) => {
                    debug!(error = %e, "cannot start the write-back thread");
                    return;
                }
            }
        }
        if let Some((tx, _)) = g.as_ref() {
            match tx.try_send(Job { files, upto }) {
                Ok(()) | Err(TrySendError::Full(_)) => {}
                Err(TrySendError::Disconnected(_)) => debug!("write-back thread is gone"),
            }
        }
    }
}

impl WriteBehind {
    /// Let the thread finish what it was given and stop it, so that no
    /// member file stays open behind a closed array (a later request
    /// starts it again).
    pub(crate) fn stop(&self) {
        let taken = self.inner.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some((tx, h)) = taken {
            drop(tx);
            let _ = h.join();
        }
    }
}

impl Drop for WriteBehind {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(rx: &Receiver<Job>) {
    // Ends when the sender (the store) is dropped.
    while let Ok(job) = rx.recv() {
        for f in &job.files {
            if let Err(e) = f.write_behind(job.upto) {
                debug!(error = %e, "background write-back failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    /// A file that only records the write-back requests it gets.
    #[derive(Default)]
    struct Recording(Mutex<Vec<u64>>);

    impl MemberFile for Recording {
        fn read_at(&self, _offset: u64, _buf: &mut [u8]) -> io::Result<usize> {
            Ok(0)
        }
        fn write_at(&self, _offset: u64, _data: &[u8]) -> io::Result<()> {
            Ok(())
        }
        fn sync_data(&self) -> io::Result<()> {
            Ok(())
        }
        fn len(&self) -> io::Result<u64> {
            Ok(0)
        }
        fn set_len(&self, _len: u64) -> io::Result<()> {
            Ok(())
        }
        fn write_behind(&self, upto: u64) -> io::Result<()> {
            self.0.lock().unwrap().push(upto);
            Ok(())
        }
    }

    #[test]
    fn requests_reach_every_file_and_the_thread_stops_with_the_store() {
        let files: Vec<Arc<Recording>> = (0..3).map(|_| Arc::default()).collect();
        let wb = WriteBehind::default();
        // Nothing to do: no thread, no call.
        wb.request(Vec::new(), 1 << 20);
        wb.request(files.iter().map(|f| Arc::clone(f) as _).collect(), 0);
        assert!(wb.inner.lock().unwrap().is_none());
        wb.request(files.iter().map(|f| Arc::clone(f) as _).collect(), 5 << 20);
        // Stopping joins the thread after it has drained.
        wb.stop();
        assert!(wb.inner.lock().unwrap().is_none());
        for f in &files {
            assert_eq!(*f.0.lock().unwrap(), vec![5 << 20]);
        }
    }
}
