//! What the admin commands share: naming an array (live through its
//! daemon, or offline by its members), naming a member by slot or path,
//! reading throttles, and exit codes.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use raid_array::{Array, AssembleOptions};

use super::status::{self, Source, StatusJson};
use crate::control::client;
use crate::control::protocol::{Request, Response};

/// An error that asks for a particular exit code (scrub: 1 = mismatches
/// found, 2 = could not check).
#[derive(Debug)]
pub struct Exit {
    pub code: u8,
    pub message: String,
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Exit {}

/// The exit code for an error from a command: the one it asked for, else 1.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    e.downcast_ref::<Exit>().map(|x| x.code).unwrap_or(1)
}

/// Parse a rate in MB/s (decimal megabytes, as `dd` and `rsync` count)
/// into bytes per second.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let v: f64 = s
        .trim()
        .trim_end_matches("MB/s")
        .trim_end_matches("M")
        .parse()
        .map_err(|_| format!("{s:?} is not a rate in MB/s (e.g. 20 or 0.5)"))?;
    if !(v.is_finite() && v > 0.0) {
        return Err(format!("{s}: the rate must be a positive number of MB/s"));
    }
    Ok((v * 1e6).max(1.0) as u64)
}

/// The slot MEMBER names: a slot number, or the directory of a member.
pub fn slot(st: &StatusJson, member: &str) -> Result<usize> {
    let n = st.members.len();
    if let Ok(k) = member.parse::<usize>() {
        if k >= n {
            bail!(
                "no member slot {k}: array {:?} has slots 0..{}",
                st.name,
                n - 1
            );
        }
        return Ok(k);
    }
    let want = Path::new(member).canonicalize().with_context(|| {
        format!("{member:?} is neither a slot number nor an existing member directory")
    })?;
    st.members
        .iter()
        .find(|m| {
            m.path
                .as_deref()
                .and_then(|p| Path::new(p).canonicalize().ok())
                .is_some_and(|p| p == want)
        })
        .map(|m| m.index)
        .with_context(|| {
            format!(
                "{} is not a member of array {:?} (members: {})",
                want.display(),
                st.name,
                st.members
                    .iter()
                    .map(|m| format!("{}={}", m.index, m.path.as_deref().unwrap_or("missing")))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

/// An absolute path for the daemon (whose working directory is not ours).
/// Refuse a new member or spare `dir` on the filesystem of another member
/// of `st` (`slot`, the one being replaced, excepted: its disk may be
/// reused), as `raidfs create` refuses two members on one filesystem: one
/// disk failure would take both. `allow` (`--allow-same-fs`) lets it be,
/// and so does an array whose members already share a filesystem.
pub fn check_own_filesystem(
    st: &StatusJson,
    slot: Option<usize>,
    dir: &Path,
    allow: bool,
) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(dir)
        .with_context(|| format!("{}", dir.display()))?
        .dev();
    // On the array's own mount, every write to the member would go back
    // through the daemon writing it: it would wait on itself forever.
    if let Some(mnt) = &st.mountpoint
        && std::fs::metadata(mnt).is_ok_and(|m| m.dev() == dev)
    {
        bail!(
            "{} is inside the array's own mount point {mnt}: a member must be on a disk \
             of its own, not on the array",
            dir.display()
        );
    }
    if allow {
        return Ok(());
    }
    let others: Vec<(usize, &String, u64)> = st
        .members
        .iter()
        .filter(|m| Some(m.index) != slot && m.state != "failed" && m.state != "missing")
        .filter_map(|m| {
            let p = m.path.as_ref()?;
            Some((m.index, p, std::fs::metadata(p).ok()?.dev()))
        })
        .collect();
    // Members that already share a filesystem: the array was created so
    // on purpose (`raidfs create --allow-same-fs`).
    let mut devs = std::collections::HashSet::new();
    if others.iter().any(|(_, _, d)| !devs.insert(*d)) {
        return Ok(());
    }
    for (index, p, d) in others {
        if d == dev {
            bail!(
                "{} is on the same filesystem as member {} ({p}): one disk failure would take \
                 both; put it on a disk of its own, or pass --allow-same-fs",
                dir.display(),
                index
            );
        }
    }
    Ok(())
}

pub fn absolute(p: &Path) -> Result<PathBuf> {
    p.canonicalize()
        .with_context(|| format!("{}: no such directory", p.display()))
}

/// Assemble an array that is not mounted, for an offline command.
pub fn assemble_offline(members: &[PathBuf]) -> Result<Array> {
    let opts = AssembleOptions::new(members.to_vec());
    Array::assemble(&opts).context("cannot assemble the array")
}

/// What ran in an offline array's background worker: the slot, and how
/// it ended.
pub struct BackgroundRebuild {
    pub slot: usize,
    pub result: raid_array::Result<raid_array::ops::RebuildReport>,
}

/// An array assembled here may have work in its background worker: an
/// interrupted rebuild resumes at assembly, and a hot spare takes over a
/// failed slot (found at assembly, or failed by this command). Closing the
/// array would stop it half done and leave the slot "rebuilding" with
/// nothing running, so the command sees it to its end first, with a
/// progress bar. `None` if nothing ran.
pub fn finish_background_rebuild(array: &Array) -> Option<BackgroundRebuild> {
    const POLL: std::time::Duration = std::time::Duration::from_millis(200);
    let before: Vec<_> = array
        .status()
        .members
        .iter()
        .map(|m| m.last_rebuild)
        .collect();
    let mut seen = None;
    let result = std::thread::scope(|s| {
        let waiter = s.spawn(|| array.wait_rebuild());
        let mut bar: Option<super::progress::WorkBar> = None;
        while !waiter.is_finished() {
            if let Some(r) = array.status().rebuild {
                let b = bar.get_or_insert_with(|| {
                    let b = super::progress::WorkBar::new("rebuild");
                    b.println(format!(
                        "member {}: finishing the rebuild that was started before \
                         (interrupted earlier, or a hot spare taking over)",
                        r.slot
                    ));
                    b
                });
                seen = Some(r.slot);
                b.update(r.done_bytes, r.total_bytes);
            }
            std::thread::sleep(POLL);
        }
        if let Some(b) = &bar {
            b.finish();
        }
        waiter.join().unwrap_or_else(|_| {
            Some(Err(raid_array::ArrayError::ArrayFailed(
                "the rebuild worker panicked".into(),
            )))
        })
    })?;
    // One too quick for the bar to see: the slot whose outcome is new.
    let slot = seen.or_else(|| {
        let now = array.status();
        now.members
            .iter()
            .position(|m| before.get(m.index).is_some_and(|b| *b != m.last_rebuild))
    })?;
    Some(BackgroundRebuild { slot, result })
}

/// One line on what [`finish_background_rebuild`] saw to its end.
pub fn describe_background(b: &BackgroundRebuild) -> String {
    match &b.result {
        Ok(rep) if rep.complete => format!(
            "member {} rebuilt: {} bytes written, {} unrecoverable blocks",
            b.slot, rep.bytes, rep.unrecoverable
        ),
        Ok(_) => format!(
            "member {}: the rebuild stopped early; it resumes at the next assembly",
            b.slot
        ),
        Err(e) => format!("member {}: the rebuild failed: {e}", b.slot),
    }
}

/// Whether `a` and `b` are the same directory (symlinks and `..`
/// resolved); paths that cannot be resolved compare as written.
pub fn same_dir(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// Close an array assembled by [`assemble_offline`].
pub fn close(array: Array) -> Result<()> {
    array.close().context("closing the array")
}

/// Resolve one TARGET word.
pub fn resolve(target: &str) -> Result<Source> {
    status::resolve(&[target.to_string()])
}

/// Send a member operation to a live daemon; its message on success.
pub fn call(rec: &crate::control::record::Record, req: &Request) -> Result<String> {
    match client::call(rec, req)? {
        Response::Done { message } => Ok(message),
        other => bail!("unexpected answer from the daemon: {other:?}"),
    }
}

/// A member operation on TARGET: through the daemon when mounted, else on
/// the assembled members. `req` gets the slot (resolved against the
/// status) and must return the request; `offline` does it on an array,
/// given the status read before assembling (which records a member not
/// found as failed).
pub fn member_op(
    target: &str,
    member: Option<&str>,
    req: impl FnOnce(usize) -> Result<Request>,
    offline: impl FnOnce(&Array, usize, &StatusJson) -> Result<String>,
) -> Result<String> {
    match resolve(target)? {
        Source::Live(rec) => {
            let k = match member {
                Some(m) => slot(&status::live(&rec)?, m)?,
                None => 0,
            };
            call(&rec, &req(k)?)
        }
        Source::Offline(members) => {
            let (members, st) = status::all_members(&members, member)?;
            let k = match member {
                Some(m) => slot(&st, m)?,
                None => 0,
            };
            let array = assemble_offline(&members)?;
            let r = offline(&array, k, &st);
            let bg = finish_background_rebuild(&array);
            close(array)?;
            let msg = r?;
            Ok(match bg {
                Some(b) => format!("{msg}\n{}", describe_background(&b)),
                None => msg,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rates() {
        assert_eq!(super::parse_rate("20"), Ok(20_000_000));
        assert_eq!(super::parse_rate("0.5"), Ok(500_000));
        assert!(super::parse_rate("0").is_err());
        assert!(super::parse_rate("fast").is_err());
    }
}
