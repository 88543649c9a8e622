//! The leader's view of its followers: how far each has fetched, who is in
//! sync, and the high watermark that follows from it. Pure bookkeeping; the
//! log applies an ISR change only after its record's compare-and-set.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::record::Reassignment;

/// A follower as the leader last saw it.
#[derive(Clone, Copy, Debug)]
struct Progress {
    /// The follower holds every offset below this (its last fetch offset).
    end: u64,
    /// Last time its fetch offset reached the leader's log end.
    caught_up_at: Instant,
}

#[derive(Debug)]
pub struct IsrState {
    me: String,
    replicas: Vec<String>,
    isr: Vec<String>,
    min_insync: usize,
    followers: HashMap<String, Progress>,
    high_watermark: u64,
    /// Offset where the leader's epoch began: a follower must reach it
    /// before it may rejoin the ISR (it has then truncated any old tail).
    epoch_start: u64,
    /// The move of replicas under way, as the record holds it.
    reassignment: Option<Reassignment>,
}

impl IsrState {
    /// The state of a leader that starts at `now` with `high_watermark`:
    /// every follower gets a full lag period to show up.
    pub fn new(
        me: String,
        (replicas, isr): (Vec<String>, Vec<String>),
        min_insync: usize,
        (high_watermark, epoch_start): (u64, u64),
        now: Instant,
    ) -> Self {
        let followers = replicas
            .iter()
            .filter(|r| **r != me)
            .map(|r| {
                (
                    r.clone(),
                    Progress {
                        end: 0,
                        caught_up_at: now,
                    },
                )
            })
            .collect();
        IsrState {
            me,
            replicas,
            isr,
            min_insync: min_insync.max(1),
            followers,
            high_watermark,
            epoch_start,
            reassignment: None,
        }
    }

    pub fn replicas(&self) -> &[String] {
        &self.replicas
    }

    /// Every follower with where it last fetched from.
    pub fn follower_ends(&self) -> Vec<(String, u64)> {
        self.followers
            .iter()
            .map(|(r, p)| (r.clone(), p.end))
            .collect()
    }

    /// Applies the replicas and reassignment the record holds now. A new
    /// replica gets a full lag period to show up; one that is no longer a
    /// replica leaves the ISR at once, since it can never lead again.
    pub fn set_replicas(
        &mut self,
        replicas: Vec<String>,
        reassignment: Option<Reassignment>,
        now: Instant,
    ) {
        for r in replicas.iter().filter(|r| **r != self.me) {
            self.followers.entry(r.clone()).or_insert(Progress {
                end: 0,
                caught_up_at: now,
            });
        }
        self.followers.retain(|r, _| replicas.contains(r));
        self.isr.retain(|r| replicas.contains(r));
        self.replicas = replicas;
        self.reassignment = reassignment;
    }

    /// Whether the reassignment under way can be finished by this leader:
    /// every new replica is in sync and this one stays.
    pub fn reassignment_done(&self) -> bool {
        self.reassignment
            .as_ref()
            .is_some_and(|r| r.caught_up(&self.isr) && r.target.contains(&self.me))
    }

    pub fn isr(&self) -> &[String] {
        &self.isr
    }

    pub fn min_insync(&self) -> usize {
        self.min_insync
    }

    pub fn is_replica(&self, id: &str) -> bool {
        self.replicas.iter().any(|r| r == id)
    }

    /// Whether sends are accepted: enough replicas in sync.
    pub fn writable(&self) -> bool {
        self.isr.len() >= self.min_insync
    }

    /// A fetch from `follower` at `fetch_offset` while the leader's log
    /// ends at `leader_end`.
    pub fn record_fetch(
        &mut self,
        follower: &str,
        fetch_offset: u64,
        leader_end: u64,
        now: Instant,
    ) {
        if let Some(p) = self.followers.get_mut(follower) {
            p.end = fetch_offset;
            if fetch_offset >= leader_end {
                p.caught_up_at = now;
            }
        }
    }

    /// Moves the high watermark to the lowest log end in the ISR (the
    /// leader's own is `leader_end`, what it has made durable), never back,
    /// and only while the ISR is at least `min.insync.replicas`: an entry
    /// below it is on every in-sync replica. Returns the new value.
    pub fn advance(&mut self, leader_end: u64) -> u64 {
        if !self.writable() {
            return self.high_watermark;
        }
        let lowest = self
            .isr
            .iter()
            .map(|r| match r == &self.me {
                true => leader_end,
                false => self.followers.get(r).map_or(0, |p| p.end),
            })
            .min()
            .unwrap_or(leader_end);
        self.high_watermark = self.high_watermark.max(lowest);
        self.high_watermark
    }

    /// In-sync followers that have not caught up with the leader's log end
    /// for longer than `lag_max` (Kafka's `replica.lag.time.max.ms`).
    pub fn lagging(&self, now: Instant, lag_max: Duration) -> Vec<String> {
        self.isr
            .iter()
            .filter(|r| **r != self.me)
            .filter(|r| {
                self.followers
                    .get(*r)
                    .is_some_and(|p| now.saturating_duration_since(p.caught_up_at) > lag_max)
            })
            .cloned()
            .collect()
    }

    /// Whether `follower`, out of the ISR, has caught up enough to rejoin:
    /// at the high watermark and inside this leader's epoch.
    pub fn may_rejoin(&self, follower: &str) -> bool {
        if self.isr.iter().any(|r| r == follower) {
            return false;
        }
        self.followers
            .get(follower)
            .is_some_and(|p| p.end >= self.high_watermark && p.end >= self.epoch_start)
    }

    /// Applies an ISR written to the record.
    pub fn set_isr(&mut self, isr: Vec<String>) {
        self.isr = isr;
    }

    /// Applies a reassignment finished in the record: `target` are the
    /// replicas now, and only they stay in the ISR.
    pub fn finish_reassignment(&mut self, target: Vec<String>, now: Instant) {
        self.set_replicas(target, None, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn state(isr: &[&str], min: usize, now: Instant) -> IsrState {
        IsrState::new(
            "a".into(),
            (ids(&["a", "b", "c"]), ids(isr)),
            min,
            (0, 0),
            now,
        )
    }

    #[test]
    fn high_watermark_is_the_lowest_end_in_the_isr() {
        let now = Instant::now();
        let mut s = state(&["a", "b", "c"], 2, now);
        assert_eq!(s.advance(10), 0, "followers have not fetched yet");
        s.record_fetch("b", 7, 10, now);
        s.record_fetch("c", 4, 10, now);
        assert_eq!(s.advance(10), 4);
        s.record_fetch("b", 9, 10, now);
        s.record_fetch("c", 9, 10, now);
        assert_eq!(s.advance(8), 8, "the leader's durable end bounds it too");
        // A follower outside the ISR does not hold it back.
        s.set_isr(ids(&["a", "b"]));
        s.record_fetch("c", 0, 10, now);
        s.record_fetch("b", 10, 10, now);
        assert_eq!(s.advance(10), 10);
        assert_eq!(s.advance(3), 10, "never back");
    }

    #[test]
    fn high_watermark_never_moves_back_and_stalls_below_min_insync() {
        let now = Instant::now();
        let mut s = state(&["a", "b"], 2, now);
        s.record_fetch("b", 5, 5, now);
        assert_eq!(s.advance(5), 5);
        s.record_fetch("b", 3, 5, now);
        assert_eq!(s.advance(5), 5);
        s.set_isr(ids(&["a"]));
        assert!(!s.writable());
        assert_eq!(
            s.advance(9),
            5,
            "alone below min.insync: nothing is committed"
        );
    }

    #[test]
    fn followers_that_stop_catching_up_lag_and_rejoin_when_caught_up() {
        let start = Instant::now();
        let lag = Duration::from_secs(10);
        let mut s = state(&["a", "b", "c"], 2, start);
        let later = start + Duration::from_secs(11);
        s.record_fetch("b", 20, 20, later);
        s.record_fetch("c", 12, 20, later);
        assert_eq!(s.lagging(later, lag), ids(&["c"]));
        s.set_isr(ids(&["a", "b"]));
        s.advance(20);
        assert!(!s.may_rejoin("c"), "c is behind the high watermark");
        s.record_fetch("c", 20, 20, later);
        assert!(s.may_rejoin("c"));
        assert!(!s.may_rejoin("b"), "already in sync");
        assert!(!s.may_rejoin("x"), "not a replica");
    }

    fn moving(target: &[&str], adding: &[&str], removing: &[&str]) -> Reassignment {
        Reassignment {
            target: ids(target),
            adding: ids(adding),
            removing: ids(removing),
            throttle_bytes_per_sec: None,
            started_ms: 0,
        }
    }

    #[test]
    fn a_new_replica_catches_up_outside_the_isr_then_finishes_the_move() {
        let now = Instant::now();
        let mut s = state(&["a", "b", "c"], 2, now);
        s.record_fetch("b", 10, 10, now);
        s.record_fetch("c", 10, 10, now);
        assert_eq!(s.advance(10), 10);
        s.set_replicas(
            ids(&["a", "b", "c", "d"]),
            Some(moving(&["a", "b", "d"], &["d"], &["c"])),
            now,
        );
        assert!(!s.reassignment_done(), "d has copied nothing yet");
        assert_eq!(
            s.advance(12),
            10,
            "a copying replica does not hold the high watermark"
        );
        s.record_fetch("b", 12, 12, now);
        s.record_fetch("c", 12, 12, now);
        assert_eq!(s.advance(12), 12);
        s.record_fetch("d", 12, 12, now);
        assert!(s.may_rejoin("d"));
        s.set_isr(ids(&["a", "b", "c", "d"]));
        assert!(s.reassignment_done());
        s.finish_reassignment(ids(&["a", "b", "d"]), now);
        assert_eq!(s.isr(), ids(&["a", "b", "d"]).as_slice());
        assert!(!s.is_replica("c"));
        assert!(!s.reassignment_done());
    }

    #[test]
    fn a_leader_that_goes_does_not_finish_the_move_itself() {
        let now = Instant::now();
        let mut s = state(&["a", "b", "c"], 2, now);
        s.set_replicas(
            ids(&["a", "b", "c", "d"]),
            Some(moving(&["d", "b", "c"], &["d"], &["a"])),
            now,
        );
        s.set_isr(ids(&["a", "b", "c", "d"]));
        assert!(!s.reassignment_done(), "a leaves: the new leader finishes");
    }

    #[test]
    fn a_replica_dropped_from_the_record_leaves_the_isr() {
        let now = Instant::now();
        let mut s = state(&["a", "b", "c"], 2, now);
        s.set_replicas(ids(&["a", "b"]), None, now);
        assert_eq!(s.isr(), ids(&["a", "b"]).as_slice());
        assert!(s.follower_ends().iter().all(|(r, _)| r != "c"));
    }

    #[test]
    fn a_follower_rejoins_only_inside_the_leaders_epoch() {
        let now = Instant::now();
        let mut s = IsrState::new("a".into(), (ids(&["a", "b"]), ids(&["a"])), 1, (0, 50), now);
        s.record_fetch("b", 40, 60, now);
        s.advance(30);
        assert!(!s.may_rejoin("b"), "b has not reached the epoch start");
        s.record_fetch("b", 50, 60, now);
        assert!(s.may_rejoin("b"));
    }
}
