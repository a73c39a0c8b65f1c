//! A fault-injecting member for tests: wraps any [`Member`] and
//!
//! - returns EIO on chosen calls ([`Fault`]: by operation, path substring,
//!   after `skip` matching calls, `times` times),
//! - tears writes (only a prefix reaches the inner member),
//! - flips a bit in what a read returns,
//! - refuses hole punching, or fails it for want of space,
//! - "vanishes" (every call fails, like an unplugged disk),
//! - cuts the power after a number of mutating calls ([`Power`], shared by
//!   all members of an array), and
//! - produces a *crash image*: a copy of the member holding only the bytes
//!   that were durable (written then `sync_data`, or `write_atomic`), with
//!   optionally a random subset of the unsynced writes applied, some torn.
//!
//! Durability model (what ext4 with `data=ordered` guarantees an
//! application at least): file creation, removal and rename count as
//! durable at once; written bytes and size changes only after `sync_data`
//! of that file.

use std::collections::HashMap;
use std::io::{self, IoSliceMut};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Member, MemberFile};

/// The calls a [`Fault`] can match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Open,
    Create,
    Read,
    Write,
    Sync,
    SetLen,
    Remove,
    Rename,
    WriteAtomic,
    ReadAll,
    Punch,
}

/// What an injected fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// The call fails with EIO and has no effect.
    Eio,
    /// A write stores only its first `keep` bytes, then fails with EIO.
    Torn { keep: usize },
    /// A read succeeds but one bit of the returned data is flipped.
    FlipBit,
    /// A full disk: a write that would make the file longer fails with
    /// ENOSPC and has no effect, while bytes already there can still be
    /// overwritten (holes, which would need space too, are not modelled);
    /// other calls fail with EIO.
    NoSpace,
    /// A filesystem's largest file size: a write ending past `limit` fails
    /// with EFBIG and has no effect; other calls fail with EIO.
    TooBig { limit: u64 },
    /// A filesystem without the feature, for [`Op::Punch`] (FAT has no
    /// hole punching): the punch fails with `Unsupported` (EOPNOTSUPP) and
    /// has no effect.
    Unsupported,
}

/// One injected fault.
#[derive(Debug, Clone)]
pub struct Fault {
    pub op: Op,
    /// Only paths containing this substring (empty: every path).
    pub path: String,
    /// Matching calls to let through before the fault starts.
    pub skip: u64,
    /// How many calls it hits (`u64::MAX`: forever).
    pub times: u64,
    pub kind: FaultKind,
}

impl Fault {
    /// EIO on every call of `op` on paths containing `path`.
    pub fn eio(op: Op, path: &str) -> Self {
        Fault {
            op,
            path: path.to_string(),
            skip: 0,
            times: u64::MAX,
            kind: FaultKind::Eio,
        }
    }
}

/// Power shared by the members of one array: after `steps` mutating calls
/// (writes, syncs, size changes, creations, renames, removals) every call
/// of every member fails, as if the machine had stopped.
#[derive(Debug)]
pub struct Power {
    steps_left: AtomicI64,
}

impl Power {
    /// Power that never fails.
    pub fn unlimited() -> Arc<Self> {
        Arc::new(Power {
            steps_left: AtomicI64::new(i64::MAX),
        })
    }

    /// Power that fails after `steps` mutating calls.
    pub fn cut_after(steps: u64) -> Arc<Self> {
        Arc::new(Power {
            steps_left: AtomicI64::new(steps.min(i64::MAX as u64) as i64),
        })
    }

    /// Whether the power is off.
    pub fn is_off(&self) -> bool {
        self.steps_left.load(Ordering::SeqCst) <= 0
    }

    /// Consume one step; false when the power is (now) off.
    fn step(&self) -> bool {
        self.steps_left.fetch_sub(1, Ordering::SeqCst) > 0
    }

    /// Mutating calls made so far, for a power that started at `unlimited`.
    pub fn steps_used(&self) -> u64 {
        (i64::MAX - self.steps_left.load(Ordering::SeqCst)).max(0) as u64
    }
}

#[derive(Debug, Clone)]
enum Pending {
    Write {
        off: u64,
        data: Vec<u8>,
    },
    SetLen(u64),
    /// A hole punched: bytes read as zeros, the length stays.
    Punch {
        off: u64,
        len: u64,
    },
}

#[derive(Default)]
struct State {
    faults: Vec<(Fault, u64)>,
    /// Durable contents of every file mutated since the wrapper was made
    /// (`None`: durably absent).
    durable: HashMap<String, Option<Vec<u8>>>,
    /// Unsynced mutations per file, in order.
    pending: HashMap<String, Vec<Pending>>,
}

struct Shared {
    inner: Arc<dyn Member>,
    state: Mutex<State>,
    vanished: AtomicBool,
    /// Whether `sync_data` reaches the inner member (off: durability is
    /// only modelled, which keeps crash tests fast).
    real_sync: AtomicBool,
    /// Whether `open_direct` hands out an ordinary handle, as on a
    /// filesystem that refuses `O_DIRECT`.
    refuse_direct: AtomicBool,
    power: Arc<Power>,
}

/// A member wrapper that injects faults and tracks durability.
#[derive(Clone)]
pub struct FaultyMember {
    sh: Arc<Shared>,
}

fn eio(what: &str) -> io::Error {
    io::Error::other(format!("injected I/O error: {what}"))
}

fn apply(content: &mut Vec<u8>, p: &Pending) {
    match p {
        Pending::Write { off, data } => {
            let off = *off as usize;
            if content.len() < off + data.len() {
                content.resize(off + data.len(), 0);
            }
            content[off..off + data.len()].copy_from_slice(data);
        }
        Pending::SetLen(len) => content.resize(*len as usize, 0),
        Pending::Punch { off, len } => {
            let end = off.saturating_add(*len).min(content.len() as u64) as usize;
            let start = (*off as usize).min(end);
            content[start..end].fill(0);
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Check vanish, power and faults for a call; returns the fault kind to apply.
    fn check(&self, op: Op, path: &str, mutating: bool) -> io::Result<Option<FaultKind>> {
        if self.vanished.load(Ordering::SeqCst) {
            return Err(eio("member vanished"));
        }
        if self.power.is_off() || (mutating && !self.power.step()) {
            return Err(eio("power is off"));
        }
        let mut g = self.lock();
        for (f, seen) in g.faults.iter_mut() {
            if f.op == op && path.contains(f.path.as_str()) {
                *seen += 1;
                if *seen > f.skip && *seen - f.skip <= f.times {
                    return Ok(Some(f.kind));
                }
            }
        }
        Ok(None)
    }

    /// Remember the durable state of `path` before its first mutation.
    fn baseline(&self, g: &mut State, path: &str) {
        if g.durable.contains_key(path) {
            return;
        }
        let cur = self.inner.read_all(path).ok();
        g.durable.insert(path.to_string(), cur);
    }

    /// Take the durable baseline of `path` before it is first changed.
    fn pre(&self, path: &str) {
        let mut g = self.lock();
        self.baseline(&mut g, path);
    }

    fn record(&self, path: &str, p: Pending) {
        let mut g = self.lock();
        self.baseline(&mut g, path);
        g.pending.entry(path.to_string()).or_default().push(p);
    }

    fn synced(&self, path: &str) {
        self.synced_first(path, usize::MAX);
    }

    /// The first `n` pending mutations of `path` become durable.
    fn synced_first(&self, path: &str, n: usize) {
        let mut g = self.lock();
        self.baseline(&mut g, path);
        let mut ops = g.pending.remove(path).unwrap_or_default();
        if n < ops.len() {
            let later = ops.split_off(n);
            g.pending.insert(path.to_string(), later);
        }
        let d = g
            .durable
            .entry(path.to_string())
            .or_default()
            .get_or_insert_with(Vec::new);
        for p in &ops {
            apply(d, p);
        }
    }
}

impl FaultyMember {
    /// Wrap `inner` with unlimited power.
    pub fn new(inner: Arc<dyn Member>) -> Self {
        Self::with_power(inner, Power::unlimited())
    }

    /// Wrap `inner`, sharing `power` with other members.
    pub fn with_power(inner: Arc<dyn Member>, power: Arc<Power>) -> Self {
        FaultyMember {
            sh: Arc::new(Shared {
                inner,
                state: Mutex::new(State::default()),
                vanished: AtomicBool::new(false),
                real_sync: AtomicBool::new(true),
                refuse_direct: AtomicBool::new(false),
                power,
            }),
        }
    }

    /// Add a fault.
    pub fn inject(&self, f: Fault) {
        self.sh.lock().faults.push((f, 0));
    }

    /// Remove every fault.
    pub fn clear_faults(&self) {
        self.sh.lock().faults.clear();
    }

    /// Let `sync_data` only update the durability model, without flushing
    /// the inner member (crash tests: the image is built from the model).
    pub fn model_sync_only(&self) {
        self.sh.real_sync.store(false, Ordering::SeqCst);
    }

    /// Behave like a filesystem that refuses `O_DIRECT`: `open_direct`
    /// returns an ordinary (page-cache) handle of the inner member.
    pub fn refuse_direct(&self) {
        self.sh.refuse_direct.store(true, Ordering::SeqCst);
    }

    /// Make every call fail from now on.
    pub fn vanish(&self) {
        self.sh.vanished.store(true, Ordering::SeqCst);
    }

    /// Undo [`FaultyMember::vanish`].
    pub fn reappear(&self) {
        self.sh.vanished.store(false, Ordering::SeqCst);
    }

    /// Write into the empty directory `dest` what survives a crash now:
    /// every durable byte, plus, with `seed`, a pseudo-random subset of the
    /// unsynced writes (each applied whole, torn to a prefix, or dropped).
    pub fn crash_image(&self, dest: &Path, seed: Option<u64>) -> io::Result<()> {
        let g = self.sh.lock();
        let mut rng = seed.map(|s| s.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut next = move || {
            rng.as_mut().map(|x| {
                *x ^= *x << 13;
                *x ^= *x >> 7;
                *x ^= *x << 17;
                *x
            })
        };
        let mut files = Vec::new();
        list_files(self.sh.inner.as_ref(), ".raidfs", &mut files)?;
        for p in g.durable.keys() {
            if !files.contains(p) {
                files.push(p.clone());
            }
        }
        for path in files {
            let content = match g.durable.get(&path) {
                None => Some(self.sh.inner.read_all(&path)?),
                Some(d) => {
                    let mut d = d.clone();
                    for p in g.pending.get(&path).into_iter().flatten() {
                        let Some(r) = next() else { break };
                        let c = d.get_or_insert_with(Vec::new);
                        match (r % 3, p) {
                            (0, _) => {}
                            (1, p) => apply(c, p),
                            (_, Pending::Write { off, data }) => {
                                let keep = (r >> 8) as usize % (data.len() + 1);
                                apply(
                                    c,
                                    &Pending::Write {
                                        off: *off,
                                        data: data[..keep].to_vec(),
                                    },
                                );
                            }
                            (_, p) => apply(c, p),
                        }
                    }
                    d
                }
            };
            if let Some(c) = content {
                let target = dest.join(&path);
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::write(target, c)?;
            }
        }
        Ok(())
    }
}

fn list_files(m: &dyn Member, dir: &str, out: &mut Vec<String>) -> io::Result<()> {
    for name in m.list(dir)? {
        let p = format!("{dir}/{name}");
        // Directories fail read_all; files are read.
        match m.read_all(&p) {
            Ok(_) => out.push(p),
            Err(_) => list_files(m, &p, out)?,
        }
    }
    Ok(())
}

struct FaultyFile {
    sh: Arc<Shared>,
    path: String,
    inner: Arc<dyn MemberFile>,
}

impl MemberFile for FaultyFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let f = self.sh.check(Op::Read, &self.path, false)?;
        if f == Some(FaultKind::Eio) {
            return Err(eio(&self.path));
        }
        let n = self.inner.read_at(offset, buf)?;
        if f == Some(FaultKind::FlipBit) && n > 0 {
            buf[n / 2] ^= 0x10;
        }
        Ok(n)
    }

    /// One request, as `preadv` is: a fault counts once for all buffers,
    /// and a flipped bit lands in the middle of the bytes read.
    fn read_vectored_at(&self, offset: u64, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        let f = self.sh.check(Op::Read, &self.path, false)?;
        if f == Some(FaultKind::Eio) {
            return Err(eio(&self.path));
        }
        let n = self.inner.read_vectored_at(offset, bufs)?;
        if f == Some(FaultKind::FlipBit) && n > 0 {
            let mut at = n / 2;
            for buf in bufs.iter_mut() {
                if at < buf.len() {
                    buf[at] ^= 0x10;
                    break;
                }
                at -= buf.len();
            }
        }
        Ok(n)
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let fault = self.sh.check(Op::Write, &self.path, true)?;
        self.sh.pre(&self.path);
        match fault {
            Some(FaultKind::Eio) => Err(eio(&self.path)),
            Some(FaultKind::NoSpace)
                if offset + data.len() as u64 > self.inner.len().unwrap_or(0) =>
            {
                Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    format!("injected: no space for {}", self.path),
                ))
            }
            Some(FaultKind::TooBig { limit }) if offset + data.len() as u64 > limit => {
                Err(io::Error::new(
                    io::ErrorKind::FileTooLarge,
                    format!("injected: file too large: {}", self.path),
                ))
            }
            Some(FaultKind::Torn { keep }) => {
                let keep = keep.min(data.len());
                self.inner.write_at(offset, &data[..keep])?;
                self.sh.record(
                    &self.path,
                    Pending::Write {
                        off: offset,
                        data: data[..keep].to_vec(),
                    },
                );
                Err(eio(&format!("torn write of {}", self.path)))
            }
            _ => {
                self.inner.write_at(offset, data)?;
                self.sh.record(
                    &self.path,
                    Pending::Write {
                        off: offset,
                        data: data.to_vec(),
                    },
                );
                Ok(())
            }
        }
    }

    fn sync_data(&self) -> io::Result<()> {
        if self.sh.check(Op::Sync, &self.path, true)?.is_some() {
            return Err(eio(&self.path));
        }
        if self.sh.real_sync.load(Ordering::SeqCst) {
            self.inner.sync_data()?;
        }
        self.sh.synced(&self.path);
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        if self.sh.vanished.load(Ordering::SeqCst) || self.sh.power.is_off() {
            return Err(eio("member vanished"));
        }
        self.inner.len()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        if self.sh.check(Op::SetLen, &self.path, true)?.is_some() {
            return Err(eio(&self.path));
        }
        self.sh.pre(&self.path);
        self.inner.set_len(len)?;
        self.sh.record(&self.path, Pending::SetLen(len));
        Ok(())
    }

    fn is_direct(&self) -> bool {
        self.inner.is_direct()
    }

    /// Asked of the inner member, as reads are; a vanished member or a
    /// power cut answers EIO. Not an injection point: counting it would
    /// shift the calls tests choose faults by.
    fn next_data(&self, offset: u64) -> io::Result<Option<u64>> {
        if self.sh.vanished.load(Ordering::SeqCst) || self.sh.power.is_off() {
            return Err(eio(&self.path));
        }
        self.inner.next_data(offset)
    }

    /// Space only: the contents, and so the crash image, do not change.
    fn allocate(&self, offset: u64, len: u64) -> io::Result<()> {
        if self.sh.vanished.load(Ordering::SeqCst) || self.sh.power.is_off() {
            return Err(eio(&self.path));
        }
        self.inner.allocate(offset, len)
    }

    /// Punched through to the inner member; durable, like a write, after
    /// `sync_data`.
    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        match self.sh.check(Op::Punch, &self.path, true)? {
            None => {}
            Some(FaultKind::Unsupported) => return Err(io::ErrorKind::Unsupported.into()),
            Some(FaultKind::NoSpace) => {
                return Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    format!("injected: no space to punch {}", self.path),
                ));
            }
            Some(_) => return Err(eio(&self.path)),
        }
        self.sh.pre(&self.path);
        self.inner.punch_hole(offset, len)?;
        self.sh
            .record(&self.path, Pending::Punch { off: offset, len });
        Ok(())
    }
}

impl Member for FaultyMember {
    fn describe(&self) -> String {
        format!("faulty({})", self.sh.inner.describe())
    }

    fn open(&self, path: &str) -> io::Result<Arc<dyn MemberFile>> {
        if self.sh.check(Op::Open, path, false)?.is_some() {
            return Err(eio(path));
        }
        let inner = self.sh.inner.open(path)?;
        Ok(Arc::new(FaultyFile {
            sh: self.sh.clone(),
            path: path.to_string(),
            inner,
        }))
    }

    /// Faults, durability tracking and crash images apply to direct
    /// handles exactly as to ordinary ones (matched as [`Op::Open`],
    /// [`Op::Write`], ...): only the inner handle differs.
    fn open_direct(&self, path: &str) -> io::Result<Arc<dyn MemberFile>> {
        if self.sh.check(Op::Open, path, false)?.is_some() {
            return Err(eio(path));
        }
        let inner = if self.sh.refuse_direct.load(Ordering::SeqCst) {
            self.sh.inner.open(path)?
        } else {
            self.sh.inner.open_direct(path)?
        };
        Ok(Arc::new(FaultyFile {
            sh: self.sh.clone(),
            path: path.to_string(),
            inner,
        }))
    }

    /// `syncfs`: every write made before the call becomes durable (writes
    /// recorded while it runs stay pending). A `Sync` fault on any file
    /// with pending writes fails it and makes nothing durable, as the
    /// kernel reports any file's write-back error; such a fault counts one
    /// call per file.
    fn sync_all(&self) -> io::Result<()> {
        if self.sh.real_sync.load(Ordering::SeqCst) {
            self.sh.inner.sync_all()?;
        }
        let before: Vec<(String, usize)> = self
            .sh
            .lock()
            .pending
            .iter()
            .map(|(p, ops)| (p.clone(), ops.len()))
            .collect();
        // One mutating step for the call, as for one `sync_data`.
        if self.sh.check(Op::Sync, ".", true)?.is_some() {
            return Err(eio("syncfs"));
        }
        for (p, _) in &before {
            if self.sh.check(Op::Sync, p, false)?.is_some() {
                return Err(eio(p));
            }
        }
        for (p, n) in &before {
            self.sh.synced_first(p, *n);
        }
        Ok(())
    }

    fn create(&self, path: &str) -> io::Result<Arc<dyn MemberFile>> {
        let existed = self.sh.inner.exists(path).unwrap_or(false);
        if self.sh.check(Op::Create, path, !existed)?.is_some() {
            return Err(eio(path));
        }
        if !existed {
            let mut g = self.sh.lock();
            g.durable
                .entry(path.to_string())
                .or_insert_with(|| Some(Vec::new()));
        }
        let inner = self.sh.inner.create(path)?;
        Ok(Arc::new(FaultyFile {
            sh: self.sh.clone(),
            path: path.to_string(),
            inner,
        }))
    }

    fn exists(&self, path: &str) -> io::Result<bool> {
        self.sh.check(Op::Open, path, false)?;
        self.sh.inner.exists(path)
    }

    fn remove(&self, path: &str) -> io::Result<()> {
        if self.sh.check(Op::Remove, path, true)?.is_some() {
            return Err(eio(path));
        }
        self.sh.inner.remove(path)?;
        let mut g = self.sh.lock();
        g.durable.insert(path.to_string(), None);
        g.pending.remove(path);
        Ok(())
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        if self.sh.check(Op::Rename, to, true)?.is_some() {
            return Err(eio(to));
        }
        {
            let mut g = self.sh.lock();
            self.sh.baseline(&mut g, from);
            self.sh.baseline(&mut g, to);
        }
        self.sh.inner.rename(from, to)?;
        let mut g = self.sh.lock();
        let d = g.durable.insert(from.to_string(), None).flatten();
        g.durable.insert(to.to_string(), d);
        let p = g.pending.remove(from);
        match p {
            Some(p) => g.pending.insert(to.to_string(), p),
            None => g.pending.remove(to),
        };
        Ok(())
    }

    fn list(&self, path: &str) -> io::Result<Vec<String>> {
        self.sh.check(Op::ReadAll, path, false)?;
        self.sh.inner.list(path)
    }

    fn write_atomic(&self, path: &str, data: &[u8]) -> io::Result<()> {
        if self.sh.check(Op::WriteAtomic, path, true)?.is_some() {
            return Err(eio(path));
        }
        self.sh.inner.write_atomic(path, data)?;
        let mut g = self.sh.lock();
        g.durable.insert(path.to_string(), Some(data.to_vec()));
        g.pending.remove(path);
        Ok(())
    }

    fn read_all(&self, path: &str) -> io::Result<Vec<u8>> {
        match self.sh.check(Op::ReadAll, path, false)? {
            Some(
                FaultKind::Eio
                | FaultKind::Torn { .. }
                | FaultKind::NoSpace
                | FaultKind::TooBig { .. }
                | FaultKind::Unsupported,
            ) => Err(eio(path)),
            Some(FaultKind::FlipBit) => {
                let mut v = self.sh.inner.read_all(path)?;
                if let Some(b) = v.get_mut(0) {
                    *b ^= 0x10;
                }
                Ok(v)
            }
            None => self.sh.inner.read_all(path),
        }
    }

    fn space(&self) -> io::Result<(u64, u64)> {
        self.sh.check(Op::ReadAll, "", false)?;
        self.sh.inner.space()
    }

    fn mount_id(&self) -> io::Result<Option<u64>> {
        self.sh.inner.mount_id()
    }

    fn restore_reserve(&self) -> io::Result<bool> {
        self.sh.inner.restore_reserve()
    }

    fn short_of_space(&self) -> bool {
        self.sh.inner.short_of_space()
    }

    fn release_reserve(&self) -> bool {
        self.sh.inner.release_reserve()
    }

    fn lock_exclusive(&self, wait: std::time::Duration) -> io::Result<bool> {
        self.sh.inner.lock_exclusive(wait)
    }

    fn unlock(&self) {
        self.sh.inner.unlock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::member::DirMember;

    #[test]
    fn crash_image_keeps_only_synced_bytes() {
        let d = tempfile::tempdir().unwrap();
        let img = tempfile::tempdir().unwrap();
        let m = FaultyMember::new(Arc::new(DirMember::open(d.path()).unwrap()));
        let f = m.create(".raidfs/x").unwrap();
        f.write_at(0, b"durable").unwrap();
        f.sync_data().unwrap();
        f.write_at(0, b"VOLATILE").unwrap();
        m.crash_image(img.path(), None).unwrap();
        assert_eq!(
            std::fs::read(img.path().join(".raidfs/x")).unwrap(),
            b"durable"
        );
        assert_eq!(m.read_all(".raidfs/x").unwrap(), b"VOLATILE");
    }

    #[test]
    fn sync_all_makes_every_file_durable_unless_one_has_a_sync_fault() {
        let d = tempfile::tempdir().unwrap();
        let img = tempfile::tempdir().unwrap();
        let m = FaultyMember::new(Arc::new(DirMember::open(d.path()).unwrap()));
        m.model_sync_only();
        m.create(".raidfs/a").unwrap().write_at(0, b"a1").unwrap();
        m.create(".raidfs/b").unwrap().write_at(0, b"b1").unwrap();
        m.sync_all().unwrap();
        m.create(".raidfs/b").unwrap().write_at(0, b"b2").unwrap();
        m.inject(Fault::eio(Op::Sync, "b"));
        assert!(m.sync_all().is_err(), "b's write-back error not reported");
        m.crash_image(img.path(), None).unwrap();
        assert_eq!(std::fs::read(img.path().join(".raidfs/a")).unwrap(), b"a1");
        assert_eq!(std::fs::read(img.path().join(".raidfs/b")).unwrap(), b"b1");
    }

    #[test]
    fn faults_hit_after_skip_for_times() {
        let d = tempfile::tempdir().unwrap();
        let m = FaultyMember::new(Arc::new(DirMember::open(d.path()).unwrap()));
        m.inject(Fault {
            op: Op::Write,
            path: "x".into(),
            skip: 1,
            times: 1,
            kind: FaultKind::Eio,
        });
        let f = m.create(".raidfs/x").unwrap();
        assert!(f.write_at(0, b"a").is_ok());
        assert!(f.write_at(0, b"b").is_err());
        assert!(f.write_at(0, b"c").is_ok());
        m.vanish();
        assert!(f.read_at(0, &mut [0u8; 1]).is_err());
    }
}
