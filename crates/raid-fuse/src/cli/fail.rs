//! `raidfs fail`: mark an active member failed, for a drill (like
//! `mdadm --fail`). The array goes on degraded; a hot spare, if any, takes
//! over and is rebuilt.

use anyhow::Result;

use super::target;
use crate::control::protocol::Request;

/// Arguments of `raidfs fail`.
#[derive(clap::Args, Debug)]
pub struct FailArgs {
    /// The array: name, UUID, mount point, or member directories.
    pub target: String,
    /// The member: its slot number or its directory.
    pub member: String,
}

pub fn run(args: &FailArgs) -> Result<()> {
    let msg = target::member_op(
        &args.target,
        Some(&args.member),
        |slot| Ok(Request::Fail { slot }),
        |a, slot, _| {
            a.fail(slot)?;
            Ok(format!("member {slot} marked failed"))
        },
    )?;
    println!("{msg}");
    Ok(())
}
