//! `raidfs status`: the array as its superblocks describe it, like
//! `mdadm --detail` (read-only: nothing is written).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use raid_array::Status;
use raid_array::assemble::read_superblock;
use raid_array::format::superblock::{SlotState, Superblock, uuid_string};
use serde::Serialize;

/// Arguments of `raidfs status`.
#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// Member directories, or one array name / UUID to search for.
    #[arg(required = true)]
    pub spec: Vec<String>,
    /// Print JSON for scripts.
    #[arg(long)]
    pub json: bool,
}

/// One member in the JSON output.
#[derive(Serialize, Debug)]
pub struct MemberJson {
    pub index: usize,
    pub uuid: String,
    pub path: Option<String>,
    pub state: String,
}

/// The JSON shape of `raidfs status --json` (stable for scripts).
#[derive(Serialize, Debug)]
pub struct StatusJson {
    pub name: String,
    pub uuid: String,
    pub level: String,
    pub chunk_size: u32,
    pub events: u64,
    pub clean: bool,
    pub degraded: bool,
    pub failed: bool,
    pub failures_tolerated: usize,
    pub members: Vec<MemberJson>,
}

impl From<&Status> for StatusJson {
    fn from(s: &Status) -> Self {
        StatusJson {
            name: s.name.clone(),
            uuid: s.uuid.clone(),
            level: s.level.clone(),
            chunk_size: s.chunk_size,
            events: s.events,
            clean: s.clean,
            degraded: s.degraded,
            failed: s.failed,
            failures_tolerated: s.failures_tolerated,
            members: s
                .members
                .iter()
                .map(|m| MemberJson {
                    index: m.index,
                    uuid: m.uuid.clone(),
                    path: m.path.clone(),
                    state: format!("{:?}", m.state).to_lowercase(),
                })
                .collect(),
        }
    }
}

fn slot_state(s: SlotState) -> String {
    match s {
        SlotState::Active => "active".into(),
        SlotState::Failed => "failed".into(),
        SlotState::Spare => "spare".into(),
        SlotState::Rebuilding { done_bytes } => format!("rebuilding ({done_bytes} bytes done)"),
    }
}

/// Status from the freshest superblock among the members found.
pub fn offline(members: &[PathBuf]) -> Result<StatusJson> {
    let mut found: Vec<(PathBuf, Superblock)> = Vec::new();
    for m in members {
        match read_superblock(m) {
            Ok(sb) => found.push((m.clone(), sb)),
            Err(e) => tracing::warn!(member = %m.display(), error = %e, "not readable as a member"),
        }
    }
    let Some((_, fresh)) = found
        .iter()
        .max_by_key(|(_, sb)| (sb.events, sb.journal_seq))
    else {
        bail!("none of the given directories holds a raidfs superblock");
    };
    if found
        .iter()
        .any(|(_, sb)| sb.array_uuid != fresh.array_uuid)
    {
        bail!("the given directories belong to different arrays");
    }
    let geometry = fresh.geometry()?;
    let mut failed = Vec::new();
    let members_json: Vec<MemberJson> = fresh
        .members
        .iter()
        .enumerate()
        .map(|(i, slot)| {
            let path = found
                .iter()
                .find(|(_, sb)| sb.member_uuid == slot.uuid)
                .map(|(p, _)| p.display().to_string());
            let mut state = slot_state(slot.state);
            if path.is_none() && slot.state != SlotState::Failed {
                state = "missing".into();
            }
            if state == "failed" || state == "missing" {
                failed.push(i);
            }
            MemberJson {
                index: i,
                uuid: uuid_string(&slot.uuid),
                path,
                state,
            }
        })
        .collect();
    Ok(StatusJson {
        name: fresh.name.clone(),
        uuid: uuid_string(&fresh.array_uuid),
        level: fresh.level()?.to_string(),
        chunk_size: fresh.chunk_size,
        events: fresh.events,
        clean: found.iter().all(|(_, sb)| sb.clean),
        degraded: !failed.is_empty() && geometry.survives(&failed),
        failed: !geometry.survives(&failed),
        failures_tolerated: geometry.failures_tolerated(),
        members: members_json,
    })
}

pub fn run(args: &StatusArgs) -> Result<()> {
    let members: Vec<PathBuf> = if args.spec.len() == 1 && !args.spec[0].contains('/') {
        let spec = crate::spec::parse(&args.spec[0])?;
        crate::spec::resolve(&spec, &[]).context("finding the members")?
    } else {
        args.spec.iter().map(PathBuf::from).collect()
    };
    let st = offline(&members)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&st)?);
        return Ok(());
    }
    let state = if st.failed {
        "FAILED"
    } else if st.degraded {
        "degraded"
    } else if st.clean {
        "clean"
    } else {
        "active (dirty)"
    };
    println!("{} ({})", st.name, st.uuid);
    println!(
        "  level: {}  chunk: {} KiB  members: {}  tolerates: {} failure(s)",
        st.level,
        st.chunk_size / 1024,
        st.members.len(),
        st.failures_tolerated
    );
    println!("  state: {state}  events: {}", st.events);
    for m in &st.members {
        println!(
            "  [{}] {:<12} {}",
            m.index,
            m.state,
            m.path.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}
