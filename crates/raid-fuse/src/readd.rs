//! The mount option `readd`: a member whose disk is back is re-added.
//!
//! A member that left its slot in sync (a USB disconnect, a disk that was
//! not there at mount) is taken back by a re-add, which rebuilds only the
//! files changed while it was out, as soon as a directory the mount knows
//! for it holds it again: at mount, and while mounted, looked for every few
//! seconds while such a slot is out (as udev's "add" event has `mdadm
//! --incremental` re-add a disk). A member that fails while the mount runs
//! is only taken back from a new mount of its filesystem (the disk
//! unplugged and mounted again), so a disk that fails with I/O errors and
//! stays is not re-added over and over. Never a whole rebuild: a member the
//! array cannot re-add stays out, for `raidfs replace`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use raid_array::Array;
use raid_array::health::MemberState;
use raid_array::ops::RebuildOptions;
use tracing::{info, warn};

use crate::mount::MountRequest;
use crate::spec::{self, Spec};

/// How often the slots that are out are looked at.
pub const POLL: Duration = Duration::from_secs(5);

/// The thread that takes members back.
pub struct Watcher {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Watcher {
    /// Look at once, then every [`POLL`] until stopped.
    pub fn start(array: &Arc<Array>, req: &MountRequest) -> std::io::Result<Watcher> {
        let array = Arc::clone(array);
        let places = Places::new(req);
        let opts = RebuildOptions {
            throttle_bytes_per_sec: req.options.rebuild_throttle_mbps * 1_000_000,
            ..Default::default()
        };
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("raidfs-readd".into())
            .spawn(move || {
                let mut slots = Slots::new(&array);
                loop {
                    slots.look(&array, &places, opts);
                    if !matches!(stopped.recv_timeout(POLL), Err(RecvTimeoutError::Timeout)) {
                        return;
                    }
                }
            })?;
        Ok(Watcher {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Stop the thread; it holds the array, so this comes before closing it.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Where a member may show up again.
struct Places {
    /// The member directories the mount was given or found.
    listed: Vec<PathBuf>,
    /// For an array mounted by name or UUID, the extra directories searched
    /// (`-o members=`) besides every mounted filesystem, searched again on
    /// each look: the disk may come back under another mount point.
    search: Option<Vec<String>>,
}

impl Places {
    fn new(req: &MountRequest) -> Places {
        let by_name = matches!(spec::parse(&req.source), Ok(Spec::Array(_)));
        Places {
            listed: req.members.clone(),
            search: by_name.then(|| req.options.candidates.clone()),
        }
    }

    /// The directories to look in for `slot`'s member: those listed, the
    /// one it was last known at, and for a mount by name every candidate.
    fn for_slot(&self, array: &Array, slot: usize) -> Vec<PathBuf> {
        let mut out = self.listed.clone();
        if let Some(p) = array
            .status()
            .members
            .get(slot)
            .and_then(|m| m.path.clone())
        {
            out.push(PathBuf::from(p));
        }
        if let Some(extra) = &self.search
            && let Ok(found) = spec::candidates(extra)
        {
            out.extend(found);
        }
        out.sort();
        out.dedup();
        out
    }
}

fn is_out(s: MemberState) -> bool {
    matches!(s, MemberState::Failed | MemberState::Missing)
}

/// What the watcher remembers of each slot.
struct Slots {
    /// Whether the slot was out at the last look.
    out: Vec<bool>,
    /// Slots whose member left while this mount ran: taken back only from
    /// a new mount of its filesystem.
    left_here: Vec<bool>,
    /// The last refusal logged for a slot, so that a look every few
    /// seconds does not repeat it.
    refused: HashMap<usize, String>,
}

impl Slots {
    fn new(array: &Array) -> Slots {
        let out: Vec<bool> = array.health().states().into_iter().map(is_out).collect();
        Slots {
            left_here: vec![false; out.len()],
            out,
            refused: HashMap::new(),
        }
    }

    fn look(&mut self, array: &Array, places: &Places, opts: RebuildOptions) {
        let states = array.health().states();
        for (slot, &state) in states.iter().enumerate() {
            let out = is_out(state);
            if out && !self.out[slot] {
                self.left_here[slot] = true;
            }
            self.out[slot] = out;
        }
        // One rebuild at a time: the next look tries again.
        if states
            .iter()
            .any(|s| matches!(s, MemberState::Rebuilding { .. }))
        {
            return;
        }
        for slot in (0..states.len()).filter(|&s| self.out[s] && array.may_readd(s)) {
            let candidates = places.for_slot(array, slot);
            let Some(dir) = array.returned_member(slot, &candidates, self.left_here[slot]) else {
                continue;
            };
            match array.start_readd(slot, &dir, opts) {
                Ok(()) => {
                    self.refused.remove(&slot);
                    info!(
                        member = slot,
                        dir = %dir.display(),
                        "re-adding a member that is back: only the files changed since it left are rebuilt"
                    );
                    // One rebuild at a time.
                    return;
                }
                Err(e) => {
                    let why = e.to_string();
                    if self.refused.get(&slot) != Some(&why) {
                        warn!(
                            member = slot,
                            dir = %dir.display(),
                            error = %why,
                            "a member that is back is not re-added"
                        );
                        self.refused.insert(slot, why);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raid_array::member::faulty::{Fault, FaultyMember, Op};
    use raid_array::member::{DirMember, Member};
    use raid_array::{AssembleOptions, CreateOptions, ROOT_INO};
    use raid_core::layout::Level;
    use std::sync::Mutex;

    /// A RAID-5 array of three directories holding one file, assembled
    /// with fault-injecting members: the directory, the array, member 2's
    /// handle and the file.
    fn three() -> (
        tempfile::TempDir,
        Vec<PathBuf>,
        Array,
        Arc<FaultyMember>,
        u64,
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let dirs: Vec<PathBuf> = (0..3).map(|i| tmp.path().join(format!("m{i}"))).collect();
        dirs.iter().for_each(|d| std::fs::create_dir(d).unwrap());
        let mut o = CreateOptions::new("arr", Level::Raid5(Default::default()), dirs.clone());
        o.allow_same_fs = true;
        o.chunk_size = 4096;
        let a = Array::create(&o).unwrap();
        let f = a
            .create_file(ROOT_INO, std::ffi::OsStr::new("f"), 0o644, 0, 0)
            .unwrap()
            .ino;
        a.write(f, 0, &[1; 50_000]).unwrap();
        a.release(f).unwrap();
        a.close().unwrap();
        let opened: Mutex<Vec<Arc<FaultyMember>>> = Mutex::new(Vec::new());
        let open = |p: &std::path::Path| -> std::io::Result<Arc<dyn Member>> {
            let m = Arc::new(FaultyMember::new(Arc::new(DirMember::open(p)?)));
            opened.lock().unwrap().push(m.clone());
            Ok(m)
        };
        let a = Array::assemble_with(&AssembleOptions::new(dirs.clone()), &open).unwrap();
        let last = opened.into_inner().unwrap().pop().unwrap();
        (tmp, dirs, a, last, f)
    }

    fn listed(dirs: Vec<PathBuf>) -> Places {
        Places {
            listed: dirs,
            search: None,
        }
    }

    fn fail_member_2(a: &Array, m2: &FaultyMember, f: u64) {
        m2.inject(Fault::eio(Op::Write, "data/"));
        a.write(f, 0, &[2; 50_000]).unwrap();
        assert_eq!(a.health().state(2), MemberState::Failed);
        assert!(a.may_readd(2));
    }

    #[test]
    fn a_member_that_fails_while_mounted_and_stays_is_not_taken_back() {
        let (_tmp, dirs, a, m2, f) = three();
        let places = listed(dirs);
        let mut slots = Slots::new(&a);
        fail_member_2(&a, &m2, f);
        // Its directory still holds it, on the mount it failed on.
        slots.look(&a, &places, RebuildOptions::default());
        assert!(slots.left_here[2]);
        assert!(a.wait_rebuild().is_none(), "a re-add started");
        assert!(a.status().degraded);
        a.close().unwrap();
    }

    #[test]
    fn a_member_detached_after_it_failed_is_not_taken_back() {
        let (_tmp, dirs, a, m2, f) = three();
        let places = listed(dirs);
        let mut slots = Slots::new(&a);
        fail_member_2(&a, &m2, f);
        slots.look(&a, &places, RebuildOptions::default());
        // `raidfs remove`: the admin lets the disk go.
        a.remove(2).unwrap();
        slots.look(&a, &places, RebuildOptions::default());
        assert!(a.wait_rebuild().is_none(), "a re-add started");
        assert!(a.status().degraded);
        a.close().unwrap();
    }

    #[test]
    fn a_member_out_when_the_watch_began_is_taken_back() {
        let (_tmp, dirs, a, m2, f) = three();
        let places = listed(dirs);
        fail_member_2(&a, &m2, f);
        // As at mount: the member was already out.
        let mut slots = Slots::new(&a);
        // The wrapper hides the directory that a replace recognises as the
        // old handle's (whose lock it moves): let the lock go by hand.
        Member::unlock(m2.as_ref());
        slots.look(&a, &places, RebuildOptions::default());
        let rep = a.wait_rebuild().expect("a re-add ran").unwrap();
        assert!(rep.complete && rep.readd, "{rep:?}");
        assert!(!a.status().degraded);
        a.close().unwrap();
    }
}
