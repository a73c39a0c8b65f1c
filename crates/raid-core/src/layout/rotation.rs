//! Placement of chunks within one group of `w` members: which slot
//! (`0..w`, the member's position in its group) holds data chunk `i` or
//! redundancy row `r` in stripe `s`. A group has `k` data and `m = w − k`
//! redundancy slots.
//!
//! Three placements cover every level:
//!
//! - [`Placement::Fixed`]: data `i` in slot `i`, redundancy `r` in slot
//!   `k + r`, the same in every stripe (RAID-0, RAID-1, RAID-4, RAID-10 and
//!   RAID-01 mirrors, erasure `k+0`).
//! - [`Placement::Raid5`]: md's four RAID-5 algorithms (see
//!   [`Raid5Layout`]).
//! - [`Placement::Rotating`]: md's RAID-6 left-symmetric, generalised to `m`
//!   parity rows: `pd = w − 1 − (s mod w)`, row `r` in slot `(pd + r) mod w`,
//!   data `i` in slot `(pd + m + i) mod w`. For `m = 2` this is md's
//!   `ALGORITHM_LEFT_SYMMETRIC` for RAID-6 (Q follows P, data follows Q); for
//!   `m = 1` it is RAID-5 left-symmetric.

use super::level::Raid5Layout;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Placement {
    Fixed,
    Raid5(Raid5Layout),
    Rotating,
}

/// What a slot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Slot {
    Data(usize),
    Redundancy(usize),
}

/// `s mod w` without overflow; `w ≥ 1` is guaranteed by the geometry.
fn phase(stripe: u64, w: usize) -> usize {
    // w ≤ MAX_MEMBERS, so both conversions are lossless.
    (stripe % w as u64) as usize
}

/// Slot of md's parity chunk (`pd_idx`) for a RAID-5 layout.
fn raid5_parity(layout: Raid5Layout, stripe: u64, w: usize) -> usize {
    match layout {
        Raid5Layout::LeftSymmetric | Raid5Layout::LeftAsymmetric => w - 1 - phase(stripe, w),
        Raid5Layout::RightSymmetric | Raid5Layout::RightAsymmetric => phase(stripe, w),
    }
}

fn symmetric(layout: Raid5Layout) -> bool {
    matches!(
        layout,
        Raid5Layout::LeftSymmetric | Raid5Layout::RightSymmetric
    )
}

/// Slot of the first parity row in the rotating placement.
fn rotating_start(stripe: u64, w: usize) -> usize {
    w - 1 - phase(stripe, w)
}

impl Placement {
    /// Slot of data chunk `i` (`i < k`).
    pub(super) fn data_slot(self, stripe: u64, w: usize, k: usize, i: usize) -> usize {
        match self {
            Placement::Fixed => i,
            Placement::Raid5(layout) => {
                let pd = raid5_parity(layout, stripe, w);
                if symmetric(layout) {
                    (pd + 1 + i) % w
                } else if i >= pd {
                    i + 1
                } else {
                    i
                }
            }
            Placement::Rotating => (rotating_start(stripe, w) + (w - k) + i) % w,
        }
    }

    /// Slot of redundancy row `r` (`r < w − k`).
    pub(super) fn redundancy_slot(self, stripe: u64, w: usize, k: usize, r: usize) -> usize {
        match self {
            Placement::Fixed => k + r,
            Placement::Raid5(layout) => raid5_parity(layout, stripe, w),
            Placement::Rotating => (rotating_start(stripe, w) + r) % w,
        }
    }

    /// What slot `t` (`t < w`) holds: the inverse of the two functions above.
    pub(super) fn slot_role(self, stripe: u64, w: usize, k: usize, t: usize) -> Slot {
        match self {
            Placement::Fixed if t < k => Slot::Data(t),
            Placement::Fixed => Slot::Redundancy(t - k),
            Placement::Raid5(layout) => {
                let pd = raid5_parity(layout, stripe, w);
                if t == pd {
                    Slot::Redundancy(0)
                } else if symmetric(layout) {
                    Slot::Data((t + w - pd - 1) % w)
                } else if t > pd {
                    Slot::Data(t - 1)
                } else {
                    Slot::Data(t)
                }
            }
            Placement::Rotating => {
                let m = w - k;
                let r = (t + w - rotating_start(stripe, w)) % w;
                if r < m {
                    Slot::Redundancy(r)
                } else {
                    Slot::Data(r - m)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_placements() -> Vec<Placement> {
        let mut p = vec![Placement::Fixed, Placement::Rotating];
        p.extend(Raid5Layout::ALL.map(Placement::Raid5));
        p
    }

    #[test]
    fn slot_role_inverts_data_and_redundancy_slots() {
        for placement in all_placements() {
            for w in 2..=9 {
                let ks: Vec<usize> = match placement {
                    Placement::Raid5(_) => vec![w - 1],
                    _ => (1..=w).collect(),
                };
                for k in ks {
                    for s in 0..(3 * w as u64) {
                        for i in 0..k {
                            let t = placement.data_slot(s, w, k, i);
                            assert_eq!(placement.slot_role(s, w, k, t), Slot::Data(i));
                        }
                        for r in 0..w - k {
                            let t = placement.redundancy_slot(s, w, k, r);
                            assert_eq!(placement.slot_role(s, w, k, t), Slot::Redundancy(r));
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn rotating_with_one_row_is_raid5_left_symmetric() {
        let ls = Placement::Raid5(Raid5Layout::LeftSymmetric);
        for w in 2..=9 {
            for s in 0..(2 * w as u64) {
                for t in 0..w {
                    assert_eq!(
                        Placement::Rotating.slot_role(s, w, w - 1, t),
                        ls.slot_role(s, w, w - 1, t)
                    );
                }
            }
        }
    }
}
