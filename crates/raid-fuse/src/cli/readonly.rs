//! Assembling an array for the offline support tools (`raidfs extract`,
//! `raidfs debug dump-inode`) so that the members are never written, not
//! even by the engine's own repairs.
//!
//! A read-only assembly already writes no superblock, journal or
//! checkpoint; but a read that meets a bad checksum rewrites the block from
//! redundancy, and a shard whose checksum sidecar is missing gets an empty
//! one created. For a last-resort copy off possibly dying disks (perhaps
//! mounted read-only) neither may happen, so every member is opened through
//! [`ReadOnlyDir`]: files are opened `O_RDONLY`, writes of repaired blocks
//! are dropped (and counted, so the tool can say a scrub would heal them),
//! a missing file asked to be created reads as empty, and anything that
//! would change the directory is refused.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use raid_array::member::{Member, MemberFile};
use raid_array::{Array, AssembleOptions};

/// Counts writes the engine attempted (repairs) that were not done.
#[derive(Debug, Default)]
pub struct Withheld {
    pub writes: AtomicU64,
    pub bytes: AtomicU64,
}

/// A member directory opened for reading only.
pub struct ReadOnlyDir {
    root: PathBuf,
    withheld: Arc<Withheld>,
}

fn refuse(what: &str, path: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::ReadOnlyFilesystem,
        format!("{what} {path}: members are opened read-only"),
    )
}

/// Reject paths that could leave the member directory.
fn check(path: &str) -> io::Result<()> {
    if path.is_empty()
        || path.starts_with('/')
        || path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid member path {path:?}"),
        ));
    }
    Ok(())
}

impl ReadOnlyDir {
    pub fn new(root: &Path, withheld: Arc<Withheld>) -> io::Result<Self> {
        if !std::fs::metadata(root)?.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is not a directory", root.display()),
            ));
        }
        Ok(ReadOnlyDir {
            root: root.to_path_buf(),
            withheld,
        })
    }

    fn full(&self, path: &str) -> io::Result<PathBuf> {
        check(path)?;
        Ok(self.root.join(path))
    }
}

struct RoFile {
    file: Option<File>,
    withheld: Arc<Withheld>,
}

impl MemberFile for RoFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let Some(f) = &self.file else { return Ok(0) };
        let mut done = 0;
        while done < buf.len() {
            match f.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    fn write_at(&self, _offset: u64, data: &[u8]) -> io::Result<()> {
        self.withheld.writes.fetch_add(1, Ordering::Relaxed);
        self.withheld
            .bytes
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        match &self.file {
            Some(f) => Ok(f.metadata()?.len()),
            None => Ok(0),
        }
    }

    fn set_len(&self, _len: u64) -> io::Result<()> {
        self.withheld.writes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

impl Member for ReadOnlyDir {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn open(&self, path: &str) -> io::Result<Arc<dyn MemberFile>> {
        let file = File::open(self.full(path)?)?;
        Ok(Arc::new(RoFile {
            file: Some(file),
            withheld: self.withheld.clone(),
        }))
    }

    fn create(&self, path: &str) -> io::Result<Arc<dyn MemberFile>> {
        match File::open(self.full(path)?) {
            Ok(file) => Ok(Arc::new(RoFile {
                file: Some(file),
                withheld: self.withheld.clone(),
            })),
            // Only ever asked for a missing checksum sidecar: an empty one
            // reads as "no checksums", which the engine handles.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Arc::new(RoFile {
                file: None,
                withheld: self.withheld.clone(),
            })),
            Err(e) => Err(e),
        }
    }

    fn exists(&self, path: &str) -> io::Result<bool> {
        self.full(path)?.try_exists()
    }

    fn remove(&self, path: &str) -> io::Result<()> {
        Err(refuse("remove", path))
    }

    fn rename(&self, from: &str, _to: &str) -> io::Result<()> {
        Err(refuse("rename", from))
    }

    fn list(&self, path: &str) -> io::Result<Vec<String>> {
        let rd = match std::fs::read_dir(self.full(path)?) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut names = Vec::new();
        for e in rd {
            names.push(e?.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    fn write_atomic(&self, path: &str, _data: &[u8]) -> io::Result<()> {
        Err(refuse("write", path))
    }

    fn read_all(&self, path: &str) -> io::Result<Vec<u8>> {
        std::fs::read(self.full(path)?)
    }

    fn space(&self) -> io::Result<(u64, u64)> {
        let st = rustix::fs::statvfs(&self.root).map_err(io::Error::from)?;
        Ok((st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize))
    }

    fn filesystem_id(&self) -> io::Result<Option<u64>> {
        let st = rustix::fs::stat(&self.root).map_err(io::Error::from)?;
        Ok(Some(st.st_dev))
    }
}

/// The member directories named by the SPEC arguments: each a directory, a
/// `:`-separated list, an array name or a UUID.
pub fn members(specs: &[String]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for s in specs {
        let spec = crate::spec::parse(s)?;
        out.extend(crate::spec::resolve(&spec, &[]).with_context(|| format!("finding {s}"))?);
    }
    Ok(out)
}

/// Assemble read-only from `members`, accepting a degraded or dirty array
/// (what is left is what there is to read).
pub fn assemble(members: Vec<PathBuf>, withheld: &Arc<Withheld>) -> Result<Array> {
    let mut opts = AssembleOptions::new(members);
    opts.read_only = true;
    opts.force = true;
    opts.sync_metadata = false;
    let w = withheld.clone();
    let open = move |p: &Path| -> io::Result<Arc<dyn Member>> {
        Ok(Arc::new(ReadOnlyDir::new(p, w.clone())?))
    };
    Array::assemble_with(&opts, &open).context("cannot assemble the array read-only")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_withheld_and_changes_refused() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("f"), b"abc").unwrap();
        let w = Arc::new(Withheld::default());
        let m = ReadOnlyDir::new(d.path(), w.clone()).unwrap();
        let f = m.open("f").unwrap();
        f.write_at(0, b"xyz").unwrap();
        let mut buf = [0u8; 3];
        assert_eq!(f.read_at(0, &mut buf).unwrap(), 3);
        assert_eq!(&buf, b"abc");
        assert_eq!(w.bytes.load(Ordering::Relaxed), 3);
        assert_eq!(m.create("missing").unwrap().len().unwrap(), 0);
        assert!(!d.path().join("missing").exists());
        assert!(m.write_atomic("g", b"x").is_err());
        assert!(m.remove("f").is_err());
        assert!(m.open("../etc/passwd").is_err());
        assert_eq!(std::fs::read(d.path().join("f")).unwrap(), b"abc");
    }
}
