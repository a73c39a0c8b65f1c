//! The real backend: a directory on an ordinary mounted filesystem, accessed
//! through a capability handle ([`cap_std::fs::Dir`]) opened once, so every
//! path resolves inside the directory that was checked at open time.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cap_std::ambient_authority;
use cap_std::fs::{Dir, OpenOptions};
use std::os::unix::fs::FileExt;

use super::{Member, MemberFile, check_relative};

/// A member stored in a directory.
#[derive(Debug)]
pub struct DirMember {
    root: Dir,
    path: PathBuf,
}

impl DirMember {
    /// Open an existing directory as a member root. The directory is held
    /// open: if its filesystem is later unmounted, operations fail instead of
    /// landing on whatever is mounted below.
    pub fn open(path: &Path) -> io::Result<Self> {
        let root = Dir::open_ambient_dir(path, ambient_authority()).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot open member directory {}: {e}", path.display()),
            )
        })?;
        Ok(DirMember {
            root,
            path: path.to_path_buf(),
        })
    }

    /// The directory this member was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

struct DirFile(std::fs::File);

impl MemberFile for DirFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match self.0.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.0.write_all_at(data, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
}

fn parent(path: &str) -> Option<&str> {
    path.rsplit_once('/').map(|(p, _)| p)
}

impl Member for DirMember {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn open(&self, path: &str) -> io::Result<Arc<dyn MemberFile>> {
        check_relative(path)?;
        let f = self
            .root
            .open_with(path, OpenOptions::new().read(true).write(true))?;
        Ok(Arc::new(DirFile(f.into_std())))
    }

    fn create(&self, path: &str) -> io::Result<Arc<dyn MemberFile>> {
        check_relative(path)?;
        if let Some(p) = parent(path) {
            self.root.create_dir_all(p)?;
        }
        let f = self
            .root
            .open_with(path, OpenOptions::new().read(true).write(true).create(true))?;
        Ok(Arc::new(DirFile(f.into_std())))
    }

    fn exists(&self, path: &str) -> io::Result<bool> {
        check_relative(path)?;
        self.root.try_exists(path)
    }

    fn remove(&self, path: &str) -> io::Result<()> {
        check_relative(path)?;
        match self.root.remove_file(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        check_relative(from)?;
        check_relative(to)?;
        self.root.rename(from, &self.root, to)?;
        self.sync_parent(to)
    }

    fn list(&self, path: &str) -> io::Result<Vec<String>> {
        check_relative(path)?;
        let rd = match self.root.read_dir(path) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut names = Vec::new();
        for entry in rd {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    fn write_atomic(&self, path: &str, data: &[u8]) -> io::Result<()> {
        check_relative(path)?;
        let tmp = format!("{path}.tmp");
        {
            let f = self.create(&tmp)?;
            f.set_len(0)?;
            f.write_at(0, data)?;
            f.sync_data()?;
        }
        self.rename(&tmp, path)
    }

    fn read_all(&self, path: &str) -> io::Result<Vec<u8>> {
        check_relative(path)?;
        self.root.read(path)
    }

    fn space(&self) -> io::Result<(u64, u64)> {
        let f = self.root.open(".")?.into_std();
        let st = rustix::fs::fstatvfs(&f).map_err(io::Error::from)?;
        Ok((st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize))
    }

    /// The device number of the root: shared by every directory of one
    /// filesystem (bind mounts included).
    fn filesystem_id(&self) -> io::Result<Option<u64>> {
        let f = self.root.open(".")?.into_std();
        let st = rustix::fs::fstat(&f).map_err(io::Error::from)?;
        Ok(Some(st.st_dev))
    }
}

impl DirMember {
    fn sync_parent(&self, path: &str) -> io::Result<()> {
        let dir = match parent(path) {
            Some(p) => self.root.open_dir(p)?,
            None => self.root.try_clone()?,
        };
        dir.open(".")?.sync_all()
    }
}
