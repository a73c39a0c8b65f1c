//! Which member failures an array survives.
//!
//! Every level here keeps each group on a fixed set of members in every
//! stripe (rotation only moves roles *within* a group), so survival is
//! decided per group: a group loses data exactly when more of its members
//! failed than it tolerates — none for a stripe, `copies − 1` for a mirror,
//! `m` for a parity group.
//!
//! RAID-01 is judged per chunk: see [`Geometry::survives`].

use super::geometry::Geometry;

impl Geometry {
    /// The number of arbitrary member failures always survived: the
    /// smallest tolerance of any group (0 for RAID-0, `n − 1` for n-way
    /// RAID-1, `copies − 1` for RAID-10, 1 for RAID-01, `m` for parity).
    pub fn failures_tolerated(&self) -> usize {
        self.group_tolerance()
    }

    /// With the members in `failed` gone, how many more arbitrary member
    /// failures are always survived (`None`: the array has already lost
    /// data). What a degraded array's status means by "tolerates N more":
    /// the weakest group decides, as further failures may all land there.
    /// Duplicates count once; indices not below
    /// [`members`](Self::members) are ignored.
    pub fn more_failures_tolerated(&self, failed: &[usize]) -> Option<usize> {
        let gone = self.gone(failed);
        let tolerance = self.group_tolerance();
        (0..self.group_count())
            .map(|g| {
                let lost = self.group_members(g).filter(|&m| gone[m]).count();
                tolerance.checked_sub(lost)
            })
            .try_fold(usize::MAX, |least, left| left.map(|l| least.min(l)))
    }

    fn gone(&self, failed: &[usize]) -> Vec<bool> {
        let mut gone = vec![false; self.members()];
        for &f in failed {
            if let Some(slot) = gone.get_mut(f) {
                *slot = true;
            }
        }
        gone
    }

    /// Whether every data chunk of every stripe can still be read or
    /// reconstructed with the members in `failed` gone. Duplicates count
    /// once; indices not below [`members`](Self::members) name no member and
    /// are ignored.
    ///
    /// RAID-01 is judged per chunk, not as classic RAID 0+1. In a classic
    /// RAID 0+1 the first failure takes its whole striped half offline, so
    /// the array then dies with any failure in the other half. raidfs reads
    /// chunks individually: data chunk `i` can be read from member `i` or
    /// from its copy on member `i + n/2`, whatever else has failed. The array
    /// therefore survives every set that leaves each pair `(i, i + n/2)` one
    /// live member (the sets RAID-10 survives, with the pairs arranged
    /// differently). Reporting the classic, weaker answer would make raidfs
    /// refuse to serve data it can read.
    pub fn survives(&self, failed: &[usize]) -> bool {
        let gone = self.gone(failed);
        let tolerance = self.group_tolerance();
        (0..self.group_count())
            .all(|g| self.group_members(g).filter(|&m| gone[m]).count() <= tolerance)
    }
}
