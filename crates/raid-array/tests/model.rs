//! Reference-model property test of the engine: random sequences of
//! namespace and data operations run against both an `Array` and a plain
//! `BTreeMap` model; results (including errors) and the whole tree must
//! agree after every step, across crashes (drop without close) and clean
//! reassembly. Operations pick existing entries by index, so shrinking
//! keeps sequences meaningful. Shrunk failures are kept below as plain
//! regression tests.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::PathBuf;

use proptest::prelude::*;
use raid_array::{Array, ArrayError, AssembleOptions, CreateOptions, FileKind, ROOT_INO, SetAttr};
use raid_core::Level;

const NAMES: [&str; 4] = ["a", "b", "c", "d"];

#[derive(Clone, Debug)]
enum Op {
    CreateFile {
        dir: usize,
        name: usize,
    },
    Mkdir {
        dir: usize,
        name: usize,
    },
    Write {
        file: usize,
        offset: u16,
        len: u16,
        byte: u8,
    },
    Truncate {
        file: usize,
        size: u16,
    },
    Rename {
        src: usize,
        dir: usize,
        name: usize,
    },
    Unlink {
        file: usize,
    },
    Link {
        file: usize,
        dir: usize,
        name: usize,
    },
    Rmdir {
        dir: usize,
    },
    Checkpoint,
    Crash,
    Reopen,
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let i = || 0usize..64;
    let n = || 0usize..NAMES.len();
    prop_oneof![
        4 => (i(), n()).prop_map(|(dir, name)| Op::CreateFile { dir, name }),
        2 => (i(), n()).prop_map(|(dir, name)| Op::Mkdir { dir, name }),
        4 => (i(), 0u16..12_000, 1u16..9_000, any::<u8>()).prop_map(|(file, offset, len, byte)| Op::Write { file, offset, len, byte }),
        2 => (i(), 0u16..14_000).prop_map(|(file, size)| Op::Truncate { file, size }),
        3 => (i(), i(), n()).prop_map(|(src, dir, name)| Op::Rename { src, dir, name }),
        2 => i().prop_map(|file| Op::Unlink { file }),
        2 => (i(), i(), n()).prop_map(|(file, dir, name)| Op::Link { file, dir, name }),
        1 => i().prop_map(|dir| Op::Rmdir { dir }),
        1 => Just(Op::Checkpoint),
        1 => Just(Op::Crash),
        1 => Just(Op::Reopen),
    ]
}

type Path = Vec<String>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Entry {
    Dir,
    File(u32),
}

#[derive(Default, Debug)]
struct Model {
    entries: BTreeMap<Path, Entry>,
    files: BTreeMap<u32, Vec<u8>>,
    next: u32,
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Ok,
    Exists,
    NotEmpty,
    NotDir,
    IsDir,
    Invalid,
    Skip,
}

fn outcome(r: raid_array::Result<()>) -> Outcome {
    match r {
        Ok(()) => Outcome::Ok,
        Err(ArrayError::Exists) => Outcome::Exists,
        Err(ArrayError::NotEmpty) => Outcome::NotEmpty,
        Err(ArrayError::NotDir) => Outcome::NotDir,
        Err(ArrayError::IsDir) => Outcome::IsDir,
        Err(ArrayError::Invalid(_)) => Outcome::Invalid,
        Err(e) => panic!("unexpected error {e:?}"),
    }
}

impl Model {
    fn dirs(&self) -> Vec<Path> {
        let mut v = vec![Vec::new()];
        v.extend(
            self.entries
                .iter()
                .filter(|(_, e)| **e == Entry::Dir)
                .map(|(p, _)| p.clone()),
        );
        v
    }
    fn file_paths(&self) -> Vec<Path> {
        self.entries
            .iter()
            .filter(|(_, e)| matches!(e, Entry::File(_)))
            .map(|(p, _)| p.clone())
            .collect()
    }
    fn links(&self, id: u32) -> usize {
        self.entries
            .values()
            .filter(|e| **e == Entry::File(id))
            .count()
    }
    fn child(dir: &Path, name: usize) -> Path {
        let mut p = dir.clone();
        p.push(NAMES[name].to_string());
        p
    }
    fn has_children(&self, dir: &Path) -> bool {
        self.entries
            .keys()
            .any(|p| p.len() == dir.len() + 1 && p.starts_with(dir))
    }
    fn drop_entry(&mut self, p: &Path) {
        if let Some(Entry::File(id)) = self.entries.remove(p)
            && self.links(id) == 0
        {
            self.files.remove(&id);
        }
    }
}

struct Sut {
    _tmp: tempfile::TempDir,
    dirs: Vec<PathBuf>,
    array: Option<Array>,
}

impl Sut {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dirs: Vec<PathBuf> = (0..3).map(|i| tmp.path().join(format!("m{i}"))).collect();
        for d in &dirs {
            std::fs::create_dir(d).unwrap();
        }
        let mut o = CreateOptions::new("model", Level::Raid5(Default::default()), dirs.clone());
        o.allow_same_fs = true;
        o.chunk_size = 4096;
        let array = Array::create(&o).unwrap();
        Sut {
            _tmp: tmp,
            dirs,
            array: Some(array),
        }
    }
    fn a(&self) -> &Array {
        self.array.as_ref().unwrap()
    }
    fn assemble(&mut self) {
        let mut o = AssembleOptions::new(self.dirs.clone());
        o.checkpoint_bytes = 8 * 1024;
        self.array = Some(Array::assemble(&o).unwrap());
    }
    fn ino(&self, p: &Path) -> u64 {
        let mut ino = ROOT_INO;
        for c in p {
            ino = self.a().lookup(ino, OsStr::new(c)).unwrap().ino;
        }
        ino
    }
    fn parent_name<'p>(&self, p: &'p Path) -> (u64, &'p OsStr) {
        let (last, dir) = p.split_last().unwrap();
        (self.ino(&dir.to_vec()), OsStr::new(last))
    }
}

fn pick<T: Clone>(v: &[T], i: usize) -> Option<T> {
    if v.is_empty() {
        None
    } else {
        Some(v[i % v.len()].clone())
    }
}

fn step(m: &mut Model, s: &mut Sut, op: &Op) {
    let got;
    let want;
    match op {
        Op::CreateFile { dir, name } | Op::Mkdir { dir, name } => {
            let dir = pick(&m.dirs(), *dir).unwrap();
            let p = Model::child(&dir, *name);
            let is_dir = matches!(op, Op::Mkdir { .. });
            want = if m.entries.contains_key(&p) {
                Outcome::Exists
            } else {
                Outcome::Ok
            };
            let (parent, nm) = s.parent_name(&p);
            got = outcome(if is_dir {
                s.a().mkdir(parent, nm, 0o755, 0, 0).map(|_| ())
            } else {
                s.a()
                    .create_file(parent, nm, 0o644, 0, 0)
                    .and_then(|at| s.a().release(at.ino))
            });
            if want == Outcome::Ok {
                if is_dir {
                    m.entries.insert(p, Entry::Dir);
                } else {
                    m.next += 1;
                    m.entries.insert(p, Entry::File(m.next));
                    m.files.insert(m.next, Vec::new());
                }
            }
        }
        Op::Write {
            file,
            offset,
            len,
            byte,
        } => {
            let Some(p) = pick(&m.file_paths(), *file) else {
                return;
            };
            let Entry::File(id) = m.entries[&p] else {
                unreachable!()
            };
            let (off, len) = (*offset as usize, *len as usize);
            let d = m.files.get_mut(&id).unwrap();
            if d.len() < off + len {
                d.resize(off + len, 0);
            }
            d[off..off + len].fill(*byte);
            want = Outcome::Ok;
            let ino = s.ino(&p);
            let data = vec![*byte; len];
            got = outcome(
                s.a()
                    .write(ino, off as u64, &data)
                    .map(|_| ())
                    .and_then(|()| s.a().fsync(ino, false)),
            );
        }
        Op::Truncate { file, size } => {
            let Some(p) = pick(&m.file_paths(), *file) else {
                return;
            };
            let Entry::File(id) = m.entries[&p] else {
                unreachable!()
            };
            m.files.get_mut(&id).unwrap().resize(*size as usize, 0);
            want = Outcome::Ok;
            let ino = s.ino(&p);
            got = outcome(
                s.a()
                    .setattr(
                        ino,
                        &SetAttr {
                            size: Some(u64::from(*size)),
                            ..Default::default()
                        },
                    )
                    .map(|_| ()),
            );
        }
        Op::Unlink { file } => {
            let Some(p) = pick(&m.file_paths(), *file) else {
                return;
            };
            m.drop_entry(&p);
            want = Outcome::Ok;
            let (parent, nm) = s.parent_name(&p);
            got = outcome(s.a().unlink(parent, nm));
        }
        Op::Rmdir { dir } => {
            let dirs: Vec<Path> = m.dirs().into_iter().filter(|d| !d.is_empty()).collect();
            let Some(p) = pick(&dirs, *dir) else { return };
            want = if m.has_children(&p) {
                Outcome::NotEmpty
            } else {
                Outcome::Ok
            };
            if want == Outcome::Ok {
                m.entries.remove(&p);
            }
            let (parent, nm) = s.parent_name(&p);
            got = outcome(s.a().rmdir(parent, nm));
        }
        Op::Link { file, dir, name } => {
            let Some(src) = pick(&m.file_paths(), *file) else {
                return;
            };
            let dir = pick(&m.dirs(), *dir).unwrap();
            let p = Model::child(&dir, *name);
            want = if m.entries.contains_key(&p) {
                Outcome::Exists
            } else {
                Outcome::Ok
            };
            if want == Outcome::Ok {
                let e = m.entries[&src];
                m.entries.insert(p.clone(), e);
            }
            let ino = s.ino(&src);
            let (parent, nm) = s.parent_name(&p);
            got = outcome(s.a().link(ino, parent, nm).map(|_| ()));
        }
        Op::Rename { src, dir, name } => {
            let all: Vec<Path> = m.entries.keys().cloned().collect();
            let Some(src) = pick(&all, *src) else { return };
            let dir = pick(&m.dirs(), *dir).unwrap();
            let dst = Model::child(&dir, *name);
            let src_e = m.entries[&src];
            want = if src_e == Entry::Dir && dir.starts_with(&src) {
                Outcome::Invalid
            } else if src == dst {
                Outcome::Ok
            } else {
                match (src_e, m.entries.get(&dst).copied()) {
                    (Entry::File(a), Some(Entry::File(b))) if a == b => Outcome::Skip,
                    (Entry::Dir, Some(Entry::Dir)) if m.has_children(&dst) => Outcome::NotEmpty,
                    (Entry::Dir, Some(Entry::File(_))) => Outcome::NotDir,
                    (Entry::File(_), Some(Entry::Dir)) => Outcome::IsDir,
                    _ => Outcome::Ok,
                }
            };
            if want == Outcome::Ok && src != dst {
                if m.entries.contains_key(&dst) {
                    m.drop_entry(&dst);
                }
                let moved: Vec<(Path, Entry)> = m
                    .entries
                    .range(src.clone()..)
                    .take_while(|(p, _)| p.starts_with(&src))
                    .map(|(p, e)| (p.clone(), *e))
                    .collect();
                for (p, _) in &moved {
                    m.entries.remove(p);
                }
                for (p, e) in moved {
                    let mut np = dst.clone();
                    np.extend_from_slice(&p[src.len()..]);
                    m.entries.insert(np, e);
                }
            }
            let (sp, sn) = s.parent_name(&src);
            let (dp, dn) = s.parent_name(&dst);
            let r = outcome(s.a().rename(sp, sn, dp, dn, 0));
            // Renaming one hard link onto another of the same file is a
            // successful no-op (POSIX).
            got = if want == Outcome::Skip && r == Outcome::Ok {
                Outcome::Skip
            } else {
                r
            };
        }
        Op::Checkpoint => {
            s.a().checkpoint().unwrap();
            return;
        }
        Op::Crash => {
            drop(s.array.take());
            s.assemble();
            return;
        }
        Op::Reopen => {
            s.array.take().unwrap().close().unwrap();
            s.assemble();
            return;
        }
    }
    assert_eq!(got, want, "op {op:?}");
}

/// The whole tree of the array, with file contents and link counts.
fn snapshot(a: &Array) -> BTreeMap<Path, (FileKind, Vec<u8>, u32)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(ROOT_INO, Vec::new())];
    while let Some((ino, path)) = stack.pop() {
        for e in a.readdir(ino, 0, usize::MAX).unwrap() {
            if e.name == b"." || e.name == b".." {
                continue;
            }
            let mut p: Path = path.clone();
            p.push(String::from_utf8(e.name).unwrap());
            let attr = a.getattr(e.ino).unwrap();
            assert_eq!(attr.kind, e.kind);
            if e.kind == FileKind::Dir {
                stack.push((e.ino, p.clone()));
                out.insert(p, (FileKind::Dir, Vec::new(), 0));
            } else {
                let data = a.read(e.ino, 0, 1 << 20).unwrap();
                assert_eq!(data.len() as u64, attr.size);
                out.insert(p, (FileKind::File, data, attr.nlink));
            }
        }
    }
    out
}

fn expected(m: &Model) -> BTreeMap<Path, (FileKind, Vec<u8>, u32)> {
    m.entries
        .iter()
        .map(|(p, e)| {
            let v = match e {
                Entry::Dir => (FileKind::Dir, Vec::new(), 0),
                Entry::File(id) => (FileKind::File, m.files[id].clone(), m.links(*id) as u32),
            };
            (p.clone(), v)
        })
        .collect()
}

fn run(ops: &[Op]) {
    let mut m = Model::default();
    let mut s = Sut::new();
    for op in ops {
        step(&mut m, &mut s, op);
        assert_eq!(snapshot(s.a()), expected(&m), "after {op:?}");
    }
    // Whatever happened, a crash now loses nothing that was acknowledged.
    drop(s.array.take());
    s.assemble();
    assert_eq!(snapshot(s.a()), expected(&m), "after the final crash");
    s.array.take().unwrap().close().unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, max_shrink_iters: 200, ..ProptestConfig::default() })]
    #[test]
    fn array_matches_model(ops in proptest::collection::vec(op_strategy(), 1..40)) {
        run(&ops);
    }
}

#[test]
fn regression_rename_directory_onto_itself_and_into_child() {
    run(&[
        Op::Mkdir { dir: 0, name: 0 },
        Op::Mkdir { dir: 1, name: 1 },
        Op::Rename {
            src: 0,
            dir: 1,
            name: 0,
        },
        Op::Rename {
            src: 0,
            dir: 2,
            name: 2,
        },
        Op::Crash,
    ]);
}

#[test]
fn regression_grow_shrink_grow_across_crash() {
    run(&[
        Op::CreateFile { dir: 0, name: 0 },
        Op::Write {
            file: 0,
            offset: 3000,
            len: 6000,
            byte: 7,
        },
        Op::Truncate { file: 0, size: 100 },
        Op::Crash,
        Op::Truncate {
            file: 0,
            size: 13_000,
        },
        Op::Link {
            file: 0,
            dir: 0,
            name: 1,
        },
        Op::Unlink { file: 0 },
        Op::Reopen,
    ]);
}
