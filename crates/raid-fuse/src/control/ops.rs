//! Member operations the daemon carries out for a client: replace, spares,
//! fail, remove. Each is one engine call; the engine validates and its
//! error text goes back to the admin unchanged.

use anyhow::{Result, bail};
use raid_array::ops::RebuildOptions;
use raid_array::{Array, ReplaceKind};

use super::protocol::Request;

/// Carry out a member operation; the message says what was done.
pub fn apply(array: &Array, req: &Request) -> Result<String> {
    Ok(match req {
        Request::Replace {
            slot,
            path,
            throttle_bytes_per_sec,
            full,
        } => {
            let opts = RebuildOptions {
                throttle_bytes_per_sec: *throttle_bytes_per_sec,
                resume: true,
                full: *full,
            };
            let kind = array.start_replace(*slot, path, opts)?;
            let path = path.display();
            match kind {
                ReplaceKind::Rebuild => {
                    format!("rebuilding member {slot} onto {path} in the background")
                }
                ReplaceKind::Resume => {
                    format!("resuming the rebuild of member {slot} onto {path} in the background")
                }
                ReplaceKind::ReAdd => format!(
                    "re-adding member {slot} from {path}: its data is kept and the files \
                     changed since it left are rebuilt in the background"
                ),
            }
        }
        Request::AddSpare { path } => {
            array.add_spare(path)?;
            format!("{} added as a hot spare", path.display())
        }
        Request::RemoveSpare { path } => {
            array.remove_spare(path)?;
            format!("spare {} removed", path.display())
        }
        Request::Fail { slot } => {
            array.fail(*slot)?;
            format!("member {slot} marked failed")
        }
        Request::Remove { slot } => {
            if array.remove(*slot)? {
                format!("member {slot} removed")
            } else {
                format!("member {slot} was already detached")
            }
        }
        Request::Status | Request::Scrub { .. } | Request::ScrubCancel => {
            bail!("not a member operation: {req:?}")
        }
    })
}
