//! Member health: the state of every member, error counters, and events for
//! whoever must persist failures (superblocks) or notify the user.
//!
//! The data path consults [`Health`] on every I/O: it reads only from
//! [`MemberState::Active`] members and writes to active and rebuilding ones.
//! A member that fails a write, vanishes or is declared bad is marked
//! [`MemberState::Failed`] once ([`Health::mark_failed`] is idempotent) and
//! an event goes to every subscriber; the data path then carries on
//! degraded for as long as the level tolerates it.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Mutex, MutexGuard};

use tracing::warn;

/// The state of one member slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    /// In service: read and written.
    Active,
    /// Failed while in service; neither read nor written.
    Failed,
    /// Not present at assembly.
    Missing,
    /// A hot spare: not part of any stripe until a rebuild takes it.
    Spare,
    /// Being rebuilt: written by new writes and by the rebuild, never read.
    /// `done_bytes` is the rebuild's progress in logical file bytes.
    Rebuilding { done_bytes: u64 },
}

impl MemberState {
    /// Whether chunks may be read from a member in this state.
    pub fn readable(self) -> bool {
        matches!(self, MemberState::Active)
    }

    /// Whether writes must go to a member in this state.
    pub fn writable(self) -> bool {
        matches!(self, MemberState::Active | MemberState::Rebuilding { .. })
    }
}

/// Something subscribers must know about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthEvent {
    /// A member was marked failed (first time only).
    Failed { member: usize, reason: String },
    /// A member changed state for another reason (rebuild start/end, spare).
    StateChanged {
        member: usize,
        from: MemberState,
        to: MemberState,
    },
    /// A chunk range on `member` was found bad and rewritten from redundancy.
    Repaired { member: usize, bytes: u64 },
}

/// Error counters of one member since assembly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemberCounters {
    /// Reads that returned an I/O error.
    pub read_errors: u64,
    /// Blocks whose checksum did not match what was read.
    pub checksum_mismatches: u64,
    /// Blocks rewritten with reconstructed data.
    pub repaired_blocks: u64,
    /// Writes that returned an I/O error.
    pub write_errors: u64,
}

struct Inner {
    states: Vec<MemberState>,
    /// Bumped on every failure and every real state transition (not on
    /// rebuild progress): whoever persists states compares it with the
    /// generation it last wrote.
    generation: u64,
    counters: Vec<MemberCounters>,
    subscribers: Vec<Sender<HealthEvent>>,
}

/// Shared health of all members of one array.
pub struct Health {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = self.lock();
        f.debug_struct("Health")
            .field("states", &g.states)
            .field("counters", &g.counters)
            .finish()
    }
}

impl Health {
    /// Health of an array whose members are in `states` (one per slot).
    pub fn new(states: Vec<MemberState>) -> Self {
        let counters = vec![MemberCounters::default(); states.len()];
        Health {
            inner: Mutex::new(Inner {
                states,
                generation: 0,
                counters,
                subscribers: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves plain values behind; keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Number of member slots.
    pub fn len(&self) -> usize {
        self.lock().states.len()
    }

    /// Whether there are no member slots.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// State of member `i` (`Missing` for an out-of-range index).
    pub fn state(&self, i: usize) -> MemberState {
        self.lock()
            .states
            .get(i)
            .copied()
            .unwrap_or(MemberState::Missing)
    }

    /// States of all members.
    pub fn states(&self) -> Vec<MemberState> {
        self.lock().states.clone()
    }

    /// The state generation: it grows with every failure and every state
    /// transition, so a writer of superblocks can tell whether what it last
    /// recorded is behind.
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// The generation and the states it stands for, taken together.
    pub fn snapshot(&self) -> (u64, Vec<MemberState>) {
        let g = self.lock();
        (g.generation, g.states.clone())
    }

    /// Mark member `i` failed. Idempotent: only the first call logs and
    /// sends [`HealthEvent::Failed`]. A spare or missing member stays as it is.
    pub fn mark_failed(&self, i: usize, reason: &str) {
        let mut g = self.lock();
        Self::fail(&mut g, i, reason);
    }

    /// [`Health::mark_failed`], unless `survives` says the array would not
    /// survive the members unavailable then (given with `i` among them):
    /// checked and marked under one lock, so two requests cannot both pass
    /// the check. On refusal, the members that would be unavailable.
    pub fn mark_failed_if_survived(
        &self,
        i: usize,
        reason: &str,
        survives: impl Fn(&[usize]) -> bool,
    ) -> Result<(), Vec<usize>> {
        let mut g = self.lock();
        let mut unavailable: Vec<usize> = (0..g.states.len())
            .filter(|&k| k == i || !g.states[k].readable())
            .collect();
        if !survives(&unavailable) {
            unavailable.sort_unstable();
            return Err(unavailable);
        }
        Self::fail(&mut g, i, reason);
        Ok(())
    }

    fn fail(g: &mut Inner, i: usize, reason: &str) {
        let Some(st) = g.states.get(i).copied() else {
            return;
        };
        if !st.writable() {
            return;
        }
        g.states[i] = MemberState::Failed;
        g.generation += 1;
        warn!(member = i, reason, "member failed");
        Self::send(
            g,
            HealthEvent::Failed {
                member: i,
                reason: reason.to_string(),
            },
        );
    }

    /// Set the state of member `i` (rebuild start and end, spare takeover).
    pub fn set_state(&self, i: usize, to: MemberState) {
        let mut g = self.lock();
        let Some(from) = g.states.get(i).copied() else {
            return;
        };
        if from == to {
            return;
        }
        // Progress updates are frequent; only announce real transitions.
        let progress_only = matches!(
            (from, to),
            (
                MemberState::Rebuilding { .. },
                MemberState::Rebuilding { .. }
            )
        );
        if progress_only {
            g.states[i] = to;
        } else {
            if matches!(from, MemberState::Failed | MemberState::Missing)
                && matches!(to, MemberState::Rebuilding { .. })
            {
                // Another disk (or the same one, re-added) takes the slot:
                // the errors counted were the old disk's, and shown beside
                // the new one they would make it look failing.
                if let Some(c) = g.counters.get_mut(i) {
                    *c = MemberCounters::default();
                }
            }
            Self::transition(&mut g, i, from, to);
        }
    }

    /// Move member `i` from `from` to `to` and announce it.
    fn transition(g: &mut Inner, i: usize, from: MemberState, to: MemberState) {
        g.states[i] = to;
        g.generation += 1;
        Self::send(
            g,
            HealthEvent::StateChanged {
                member: i,
                from,
                to,
            },
        );
    }

    /// Record that the rebuild onto member `i` has reached `done_bytes`, if
    /// it is still rebuilding. A target that failed meanwhile (a write to it
    /// failed) stays failed: it missed that write. Returns whether it was
    /// still rebuilding.
    pub fn advance_rebuild(&self, i: usize, done_bytes: u64) -> bool {
        let mut g = self.lock();
        match g.states.get_mut(i) {
            Some(st @ MemberState::Rebuilding { .. }) => {
                *st = MemberState::Rebuilding { done_bytes };
                true
            }
            _ => false,
        }
    }

    /// Make member `i` active at the end of its rebuild, if it is still
    /// rebuilding (checked and changed under one lock, so a failure that
    /// lands at the end is not overwritten). Returns whether it was.
    pub fn finish_rebuild(&self, i: usize) -> bool {
        let mut g = self.lock();
        let Some(from @ MemberState::Rebuilding { .. }) = g.states.get(i).copied() else {
            return false;
        };
        Self::transition(&mut g, i, from, MemberState::Active);
        true
    }

    /// Receive every future event. Dropped receivers are forgotten.
    pub fn subscribe(&self) -> Receiver<HealthEvent> {
        let (tx, rx) = channel();
        self.lock().subscribers.push(tx);
        rx
    }

    fn send(g: &mut Inner, ev: HealthEvent) {
        g.subscribers.retain(|s| s.send(ev.clone()).is_ok());
    }

    /// Snapshot of every member's counters.
    pub fn counters(&self) -> Vec<MemberCounters> {
        self.lock().counters.clone()
    }

    pub(crate) fn count_read_error(&self, i: usize) {
        if let Some(c) = self.lock().counters.get_mut(i) {
            c.read_errors += 1;
        }
    }

    pub(crate) fn count_mismatch(&self, i: usize, blocks: u64) {
        if let Some(c) = self.lock().counters.get_mut(i) {
            c.checksum_mismatches += blocks;
        }
    }

    pub(crate) fn count_repaired(&self, i: usize, blocks: u64, bytes: u64) {
        let mut g = self.lock();
        if let Some(c) = g.counters.get_mut(i) {
            c.repaired_blocks += blocks;
        }
        Self::send(&mut g, HealthEvent::Repaired { member: i, bytes });
    }

    pub(crate) fn count_write_error(&self, i: usize) {
        if let Some(c) = self.lock().counters.get_mut(i) {
            c.write_errors += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mark_failed_is_idempotent_and_notifies_once() {
        let h = Health::new(vec![MemberState::Active; 3]);
        let rx = h.subscribe();
        h.mark_failed(1, "EIO");
        h.mark_failed(1, "EIO again");
        assert_eq!(h.state(1), MemberState::Failed);
        assert_eq!(
            rx.try_recv().unwrap(),
            HealthEvent::Failed {
                member: 1,
                reason: "EIO".into()
            }
        );
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn of_two_failures_racing_only_one_the_array_survives_is_marked() {
        for _ in 0..200 {
            let h = Health::new(vec![MemberState::Active; 3]);
            let go = std::sync::Barrier::new(2);
            let marked: usize = std::thread::scope(|s| {
                let t: Vec<_> = [0, 1]
                    .map(|i| {
                        let (h, go) = (&h, &go);
                        s.spawn(move || {
                            go.wait();
                            h.mark_failed_if_survived(i, "drill", |u| u.len() <= 1)
                                .is_ok() as usize
                        })
                    })
                    .into_iter()
                    .collect();
                t.into_iter().map(|t| t.join().unwrap()).sum()
            });
            assert_eq!(marked, 1);
            assert_eq!(
                h.states()
                    .iter()
                    .filter(|s| **s == MemberState::Failed)
                    .count(),
                1
            );
        }
        let h = Health::new(vec![MemberState::Active; 3]);
        h.mark_failed(2, "EIO");
        assert_eq!(
            h.mark_failed_if_survived(0, "drill", |u| u.len() <= 1),
            Err(vec![0, 2])
        );
    }

    #[test]
    fn a_slot_taken_by_a_rebuild_starts_with_no_errors() {
        let h = Health::new(vec![MemberState::Active; 3]);
        h.count_write_error(1);
        h.count_read_error(2);
        h.mark_failed(1, "EIO");
        assert_eq!(h.counters()[1].write_errors, 1);
        h.set_state(1, MemberState::Rebuilding { done_bytes: 0 });
        assert_eq!(h.counters()[1], MemberCounters::default());
        // Other slots keep theirs.
        assert_eq!(h.counters()[2].read_errors, 1);
    }

    #[test]
    fn generation_counts_transitions_not_progress() {
        let h = Health::new(vec![MemberState::Active; 2]);
        assert_eq!(h.generation(), 0);
        h.mark_failed(0, "EIO");
        h.mark_failed(0, "EIO");
        assert_eq!(h.generation(), 1);
        h.set_state(0, MemberState::Rebuilding { done_bytes: 0 });
        h.set_state(0, MemberState::Rebuilding { done_bytes: 10 });
        assert_eq!(h.generation(), 2);
        h.set_state(0, MemberState::Active);
        assert_eq!(h.snapshot(), (3, vec![MemberState::Active; 2]));
    }
}
