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
        |a, slot| {
            Ok(if a.remove(slot)? {
                format!("member {slot} removed")
            } else {
                format!("member {slot} was already detached")
            })
        },
    )?;
    println!("{msg}");
    Ok(())
}
