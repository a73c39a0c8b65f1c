//! The mount itself, made as libfuse makes it for root: `mount(2)` of type
//! `fuse.raidfs` with the array's name as the source, so that `mount`,
//! `findmnt`, `df -T` and `umount -t fuse.raidfs` see a raidfs mount (as
//! `fuse.sshfs` or `fuse.mergerfs`), not an anonymous `fuse` one. fuser
//! mounts as root with type `fuse` and drops the subtype; it is still used
//! where `mount(2)` is not allowed (a user mount through `fusermount3`,
//! which sets the subtype itself).

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use rustix::fs::{Mode, OFlags};
use rustix::mount::{MountFlags, UnmountFlags};

/// The kernel's filesystem type of a raidfs mount.
pub const FSTYPE: &str = "fuse.raidfs";

/// What the mount asks of the kernel.
#[derive(Debug, Clone)]
pub struct KernelMount<'a> {
    /// Shown as the mount's source (the array's name).
    pub source: &'a str,
    pub mountpoint: &'a Path,
    pub read_only: bool,
    /// Other users may use the mount (`allow_other`).
    pub allow_other: bool,
    /// `noexec`.
    pub noexec: bool,
    /// `nosymfollow`.
    pub nosymfollow: bool,
    /// `sync`: writes are synchronous.
    pub synchronous: bool,
}

/// How the attempt went.
pub enum Outcome {
    /// Mounted: the `/dev/fuse` descriptor to serve.
    Mounted(OwnedFd),
    /// `mount(2)` is not allowed here (not root): mount another way.
    NotPermitted,
}

impl KernelMount<'_> {
    /// The `mount(2)` data string for the descriptor `fd`: the options
    /// the kernel's FUSE driver takes (`fs/fuse/inode.c`).
    fn data(&self, fd: i32, root_mode: u32) -> String {
        let mut d = format!(
            "fd={fd},rootmode={root_mode:o},user_id={},group_id={},default_permissions",
            rustix::process::getuid().as_raw(),
            rustix::process::getgid().as_raw()
        );
        if self.allow_other {
            d.push_str(",allow_other");
        }
        d
    }

    /// Open `/dev/fuse` and mount it on the mount point.
    pub fn mount(&self) -> std::io::Result<Outcome> {
        let root_mode = std::fs::metadata(self.mountpoint)?.permissions().mode();
        let fd = rustix::fs::open("/dev/fuse", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| std::io::Error::new(e.kind(), format!("/dev/fuse: {e}")))?;
        let data = CString::new(self.data(fd.as_raw_fd(), root_mode))
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let mut flags = MountFlags::NODEV | MountFlags::NOSUID;
        if self.read_only {
            flags |= MountFlags::RDONLY;
        }
        if self.noexec {
            flags |= MountFlags::NOEXEC;
        }
        if self.nosymfollow {
            flags |= MountFlags::NOSYMFOLLOW;
        }
        if self.synchronous {
            flags |= MountFlags::SYNCHRONOUS;
        }
        match rustix::mount::mount(self.source, self.mountpoint, FSTYPE, flags, data.as_c_str()) {
            Ok(()) => Ok(Outcome::Mounted(fd)),
            Err(rustix::io::Errno::PERM) => Ok(Outcome::NotPermitted),
            Err(e) => Err(std::io::Error::new(
                e.kind(),
                format!("mount(2) on {}: {e}", self.mountpoint.display()),
            )),
        }
    }
}

/// Unmount `mountpoint` (the daemon's answer to SIGTERM, and the undoing of
/// a mount whose session could not start). `lazy` detaches it even while
/// files are open on it.
pub fn unmount(mountpoint: &Path, lazy: bool) -> std::io::Result<()> {
    let flags = if lazy {
        UnmountFlags::DETACH
    } else {
        UnmountFlags::empty()
    };
    rustix::mount::unmount(mountpoint, flags).map_err(std::io::Error::from)
}

/// The `major:minor` of the last mount on `mountpoint` (its FUSE
/// connection while it is ours), from `/proc/self/mountinfo`: `stat` of the
/// mount point would be a request to the daemon itself.
pub fn device(mountpoint: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    crate::readahead::device_of(&info, mountpoint)
}

#[cfg(test)]
mod tests {
    use super::KernelMount;
    use std::path::Path;

    #[test]
    fn data_names_the_descriptor_root_mode_owner_and_sharing() {
        let m = KernelMount {
            source: "home",
            mountpoint: Path::new("/mnt/array"),
            read_only: false,
            allow_other: true,
            noexec: false,
            nosymfollow: false,
            synchronous: false,
        };
        let d = m.data(7, 0o40755);
        assert!(d.starts_with("fd=7,rootmode=40755,user_id="), "{d}");
        assert!(d.ends_with(",default_permissions,allow_other"), "{d}");
        let m = KernelMount {
            allow_other: false,
            ..m
        };
        assert!(!m.data(7, 0o40755).contains("allow_other"));
    }
}
