//! `raidfs add-spare`: make an empty directory a hot spare, which takes
//! over by itself when a member fails (like `mdadm --add` on a full array).

use std::path::PathBuf;

use anyhow::Result;

use super::target;
use crate::control::protocol::Request;

/// Arguments of `raidfs add-spare`.
#[derive(clap::Args, Debug)]
pub struct AddSpareArgs {
    /// The array: name, UUID, mount point, or member directories.
    pub target: String,
    /// The empty directory to add as a spare.
    pub dir: PathBuf,
    /// Allow the spare on the filesystem of a member (it would then share
    /// that disk with the member whose slot it takes over).
    #[arg(long)]
    pub allow_same_fs: bool,
}

pub fn run(args: &AddSpareArgs) -> Result<()> {
    let dir = target::absolute(&args.dir)?;
    let st = super::status::get(std::slice::from_ref(&args.target))?;
    target::check_own_filesystem(&st, None, &dir, args.allow_same_fs)?;
    let msg = target::member_op(
        &args.target,
        None,
        |_| Ok(Request::AddSpare { path: dir.clone() }),
        |a, _, _| {
            a.add_spare(&dir)?;
            Ok(format!("{} added as a hot spare", dir.display()))
        },
    )?;
    println!("{msg}");
    Ok(())
}
