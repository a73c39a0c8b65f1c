//! `raidfs remove`: detach a failed or missing member (like
//! `mdadm --remove`); its slot stays degraded until a `raidfs replace`.

use anyhow::Result;

use super::target;
use crate::control::protocol::Request;

/// Arguments of `raidfs remove`.
#[derive(clap::Args, Debug)]
pub struct RemoveArgs {
    /// The array: name, UUID, mount point, or member directories.
    pub target: String,
    /// The member: its slot number or its directory.
    pub member: String,
}

pub fn run(args: &RemoveArgs) -> Result<()> {
    let msg = target::member_op(
        &args.target,
        Some(&args.member),
        |slot| Ok(Request::Remove { slot }),
        |a, slot, before| {
            let missing = before
                .members
                .get(slot)
                .is_some_and(|m| m.state == "missing");
            Ok(if a.remove(slot)? {
                format!("member {slot} removed")
            } else if missing {
                // Assembled without it: the array has just recorded it
                // failed, which is what `mdadm --remove` of a device that is
                // gone amounts to.
                format!(
                    "member {slot} was not found: recorded failed and removed; the slot \
                     stays degraded until `raidfs replace`"
                )
            } else {
                format!("member {slot} was already detached")
            })
        },
    )?;
    println!("{msg}");
    Ok(())
}
