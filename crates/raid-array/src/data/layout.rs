//! The data path's view of the stripe geometry: for a file and a stripe,
//! which member holds each chunk and how each group is protected.
//!
//! The map of stripe `s` of inode `ino` is `geometry.stripe(s + ino)`: the
//! rotation starts at a different member for every file, so parity of many
//! small files is spread over all members instead of piling up on the
//! member that holds parity of stripe 0. The member offset stays
//! `s × chunk_size`; only the roles rotate.
//!
//! Maps are periodic in the stripe number (RAID-5/6 rotate with a period of
//! the member count), so one period is computed at start-up and looked up
//! afterwards: no allocation per stripe.

use std::sync::Arc;

use raid_core::layout::{Scheme, StripeMap};
use raid_core::{Codec, Geometry};

use crate::error::{ArrayError, Result};
use crate::health::Health;

/// How a group protects its data chunks.
#[derive(Debug, Clone)]
pub(crate) enum Protect {
    /// One data chunk, no redundancy (a RAID-0 chunk).
    None,
    /// One data chunk; every other position holds a copy.
    Mirror,
    /// `k` data chunks then `m` parity chunks.
    Parity(Codec),
}

/// One redundancy group of a stripe, as the data path uses it.
#[derive(Debug, Clone)]
pub(crate) struct Group {
    pub protect: Protect,
    /// Member of each position: data chunks first, then redundancy.
    pub members: Vec<usize>,
    /// Number of data positions.
    pub data: usize,
    /// Index of the first data chunk within the stripe.
    pub first: usize,
}

impl Group {
    /// Positions of the group (data + redundancy).
    pub fn width(&self) -> usize {
        self.members.len()
    }

    /// How many positions may be lost while every data chunk stays recoverable.
    pub fn tolerance(&self) -> usize {
        match self.protect {
            Protect::None => 0,
            Protect::Mirror => self.width() - 1,
            Protect::Parity(ref c) => c.parity_chunks(),
        }
    }
}

/// Every group of one stripe, in data order.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub groups: Vec<Group>,
}

fn convert(map: &StripeMap, codecs: &mut Vec<((usize, usize), Codec)>) -> Result<Plan> {
    let mut groups = Vec::new();
    for g in &map.groups {
        match g.scheme {
            // Plain striping has no coupling between chunks: each chunk is its own group.
            Scheme::Stripe => {
                for (i, &m) in g.data.iter().enumerate() {
                    groups.push(Group {
                        protect: Protect::None,
                        members: vec![m],
                        data: 1,
                        first: g.first_data_index + i,
                    });
                }
            }
            Scheme::Mirror => {
                let members: Vec<usize> = g.members().collect();
                groups.push(Group {
                    protect: Protect::Mirror,
                    members,
                    data: g.data.len(),
                    first: g.first_data_index,
                });
            }
            Scheme::Parity { k, m } => {
                let codec = match codecs.iter().find(|(km, _)| *km == (k, m)) {
                    Some((_, c)) => c.clone(),
                    None => {
                        let c = Codec::new(k, m)?;
                        codecs.push(((k, m), c.clone()));
                        c
                    }
                };
                let members: Vec<usize> = g.members().collect();
                groups.push(Group {
                    protect: Protect::Parity(codec),
                    members,
                    data: k,
                    first: g.first_data_index,
                });
            }
        }
    }
    Ok(Plan { groups })
}

/// Stripe maps of one array, with per-inode rotation.
#[derive(Debug)]
pub(crate) struct Layout {
    pub geometry: Geometry,
    pub chunk: u64,
    pub stripe_data: u64,
    pub members: usize,
    cycle: Vec<Arc<Plan>>,
    codecs: Vec<((usize, usize), Codec)>,
}

/// Longest rotation period looked for; longer (none exist today) fall back
/// to computing each map.
const MAX_PERIOD: u64 = 512;

impl Layout {
    pub fn new(geometry: Geometry, members: usize) -> Result<Self> {
        if geometry.members() != members {
            return Err(ArrayError::Invalid(format!(
                "geometry has {} members but {} member slots were given",
                geometry.members(),
                members
            )));
        }
        let maps: Vec<StripeMap> = (0..2 * MAX_PERIOD).map(|s| geometry.stripe(s)).collect();
        let period = (1..=MAX_PERIOD)
            .find(|&p| (0..MAX_PERIOD).all(|s| maps[s as usize] == maps[(s + p) as usize]));
        let mut codecs = Vec::new();
        let mut cycle = Vec::new();
        if let Some(p) = period {
            for map in &maps[..p as usize] {
                cycle.push(Arc::new(convert(map, &mut codecs)?));
            }
        }
        // Make sure the codec of every shape is built once, even without a cycle.
        convert(&maps[0], &mut codecs)?;
        Ok(Layout {
            chunk: u64::from(geometry.chunk_size()),
            stripe_data: geometry.stripe_data_bytes(),
            members,
            geometry,
            cycle,
            codecs,
        })
    }

    /// The map of stripe `s` of inode `ino`.
    pub fn plan(&self, ino: u64, s: u64) -> Result<Arc<Plan>> {
        if self.cycle.is_empty() {
            let mut codecs = self.codecs.clone();
            return Ok(Arc::new(convert(
                &self.geometry.stripe(s.wrapping_add(ino)),
                &mut codecs,
            )?));
        }
        let p = self.cycle.len() as u64;
        Ok(self.cycle[((s % p + ino % p) % p) as usize].clone())
    }

    /// Stripes needed to hold `size` bytes of a file.
    pub fn stripes_for(&self, size: u64) -> u64 {
        size.div_ceil(self.stripe_data)
    }

    /// Bytes of a file of `size` bytes that stripes `from..to` hold: what
    /// a rebuild or scrub counts as done when it passes over them.
    pub fn data_bytes(&self, from: u64, to: u64, size: u64) -> u64 {
        (to.saturating_sub(from).saturating_mul(self.stripe_data))
            .min(size.saturating_sub(from.saturating_mul(self.stripe_data)))
    }

    /// Whether every group of every stripe still has enough members that
    /// `ok` accepts (writable or readable) to recover its data.
    pub fn survives(
        &self,
        health: &Health,
        ok: impl Fn(crate::health::MemberState) -> bool,
    ) -> bool {
        self.groups_survive(health, ok, |_| true)
    }

    /// Whether the chunks of member `slot` can still be rebuilt from the
    /// members that are readable now: every group holding it has enough of
    /// them (the slot itself counts as lost). A rebuild checks it as it
    /// goes, and stops when another member's failure takes it away.
    pub fn can_rebuild(&self, health: &Health, slot: usize) -> bool {
        self.groups_survive(health, |st| st.readable(), |g| g.members.contains(&slot))
    }

    /// [`Layout::survives`] over the groups `which` selects.
    fn groups_survive(
        &self,
        health: &Health,
        ok: impl Fn(crate::health::MemberState) -> bool,
        which: impl Fn(&Group) -> bool,
    ) -> bool {
        let states = health.states();
        let period = if self.cycle.is_empty() {
            self.members as u64
        } else {
            self.cycle.len() as u64
        };
        (0..period).all(|s| {
            self.plan(0, s).is_ok_and(|plan| {
                plan.groups.iter().filter(|g| which(g)).all(|g| {
                    let lost = g
                        .members
                        .iter()
                        .filter(|&&m| !states.get(m).is_some_and(|&st| ok(st)))
                        .count();
                    lost <= g.tolerance()
                })
            })
        })
    }
}
