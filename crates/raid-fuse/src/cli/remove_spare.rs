//! `raidfs remove-spare`: take a hot spare out of the array (its directory
//! is left empty of raidfs data).

use std::path::PathBuf;

use anyhow::Result;

use super::target;
use crate::control::protocol::Request;

/// Arguments of `raidfs remove-spare`.
#[derive(clap::Args, Debug)]
pub struct RemoveSpareArgs {
    /// The array: name, UUID, mount point, or member directories.
    pub target: String,
    /// The spare's directory.
    pub dir: PathBuf,
}

pub fn run(args: &RemoveSpareArgs) -> Result<()> {
    let dir = target::absolute(&args.dir)?;
    let msg = target::member_op(
        &args.target,
        None,
        |_| Ok(Request::RemoveSpare { path: dir.clone() }),
        |a, _, _| {
            a.remove_spare(&dir)?;
            Ok(format!("spare {} removed", dir.display()))
        },
    )?;
    println!("{msg}");
    Ok(())
}
