//! Holding through a control-plane outage: promises between peers.
//!
//! Every takeover is an API write, so while nobody reaches the API nobody
//! can take over. An owner whose renewals fail keeps its live entries only
//! with a *promise* from every witness (the peers its node lease names):
//! "I take over nothing of yours before my clock + H". A peer promises only
//! while it cannot reach the API itself. A taker first *fences* one witness
//! of the owner (itself, when it is one): the witness promises no more and
//! says how long its last promise runs; the taker waits that out. The owner
//! needs every witness, the taker one: the fenced witness's last promise
//! bounds the owner's entries. docs/election.md has the whole argument.
//!
//! This file is the bookkeeping of the three roles (owner asking, witness
//! promising and fencing, taker waiting on a fence); `Election` wires it
//! to its leases and entries.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::Mono;

/// The three roles' state on one node.
#[derive(Debug)]
pub(super) struct Holds {
    /// H: how long one promise binds the peer that gives it.
    promise: Mono,
    /// When this process started: what it promised before is lost, so
    /// until `boot + promise` it counts every owner as promised to.
    boot: Option<Mono>,
    /// Witness side: owner -> end of our last promise to it.
    promised: HashMap<String, Mono>,
    /// Witness side: owners fenced, at the version of their lease the
    /// taker saw; no promise to them until their lease changes.
    fenced: HashMap<String, Option<String>>,
    /// Witness side: each owner's lease as first and last seen by this
    /// process. Fences die with a process, so a restarted witness promises
    /// only to owners whose lease changed since it started: what lifts a
    /// fence it may have taken before.
    leases: HashMap<String, (Option<String>, Option<String>)>,
    /// Owner side: send time of each recent round of asking.
    rounds: BTreeMap<u64, Mono>,
    /// Owner side: per witness, the send time of the latest round it
    /// granted (its promise began after that).
    granted: HashMap<String, Mono>,
    next_round: u64,
    /// Owner side: no new round before this.
    next_ask_at: Mono,
    /// Taker side: the fence per owner, at the version of its lease it was
    /// taken for.
    fences: HashMap<String, Fence>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Fence {
    /// The owner's lease version the fence is for.
    pub rv: Option<String>,
    pub state: FenceState,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum FenceState {
    /// Asked the witnesses (request `req`) at `sent_at`; no answer yet.
    Asking { req: u64, sent_at: Mono },
    /// Fenced: every promise to the owner has ended by `at`.
    Until { at: Mono },
}

impl Holds {
    pub fn new(promise: Mono) -> Self {
        Self {
            promise,
            boot: None,
            promised: HashMap::new(),
            fenced: HashMap::new(),
            leases: HashMap::new(),
            rounds: BTreeMap::new(),
            granted: HashMap::new(),
            next_round: 0,
            next_ask_at: 0,
            fences: HashMap::new(),
        }
    }

    /// A margin for clock-rate drift and scheduling over a span on another
    /// node's clock (as for the lease duration: 10%).
    pub fn margin(&self) -> Mono {
        self.promise / 10
    }

    pub fn started(&mut self, now: Mono) {
        self.boot.get_or_insert(now);
    }

    /// Until when we may have promised `owner` not to take over.
    pub fn promised_until(&self, owner: &str) -> Mono {
        let restart = self.boot.map_or(Mono::MAX, |b| b + self.promise);
        self.promised.get(owner).copied().unwrap_or(0).max(restart)
    }

    /// Witness: `owner` asks for a promise. Given only when `may` (we
    /// cannot reach the API ourselves) and the owner is not fenced.
    pub fn asked(&mut self, now: Mono, owner: &str, may: bool) -> bool {
        let changed = self
            .leases
            .get(owner)
            .is_some_and(|(first, last)| last.is_some() && first != last);
        if !may || !changed || self.fenced.contains_key(owner) {
            return false;
        }
        let until = self.promised.entry(owner.to_string()).or_insert(0);
        *until = (*until).max(now + self.promise);
        true
    }

    /// Witness: fence `owner` (its lease at `rv`), for ourselves or for a
    /// peer; returns how long our last promise to it still runs.
    pub fn fence(&mut self, now: Mono, owner: &str, rv: Option<String>) -> Mono {
        self.fenced.insert(owner.to_string(), rv);
        self.promised_until(owner).saturating_sub(now)
    }

    /// `owner`'s lease is at `rv` now: a fence taken at another version
    /// is over (the owner reached the API since).
    pub fn lease_seen(&mut self, owner: &str, rv: &Option<String>) {
        let seen = self
            .leases
            .entry(owner.to_string())
            .or_insert_with(|| (rv.clone(), rv.clone()));
        seen.1 = rv.clone();
        if self.fenced.get(owner).is_some_and(|f| f != rv) {
            self.fenced.remove(owner);
        }
        if self.fences.get(owner).is_some_and(|f| &f.rv != rv) {
            self.fences.remove(owner);
        }
    }

    /// Owner: whether a new round is due (every `interval` while needed).
    pub fn ask_due(&mut self, now: Mono, interval: Mono) -> bool {
        if now < self.next_ask_at {
            return false;
        }
        self.next_ask_at = now + interval;
        true
    }

    pub fn next_ask_at(&self) -> Mono {
        self.next_ask_at
    }

    /// Owner: a new round of asking; returns its number.
    pub fn ask(&mut self, now: Mono) -> u64 {
        let horizon = now.saturating_sub(self.promise);
        self.rounds.retain(|_, &mut sent_at| sent_at > horizon);
        self.next_round += 1;
        self.rounds.insert(self.next_round, now);
        self.next_round
    }

    /// Owner: `peer` granted round `round`.
    pub fn granted(&mut self, round: u64, peer: &str) {
        if let Some(&sent_at) = self.rounds.get(&round) {
            let at = self.granted.entry(peer.to_string()).or_insert(0);
            *at = (*at).max(sent_at);
        }
    }

    /// Owner: until when the promises of every witness in `need` keep us:
    /// the earliest of their latest granted rounds' send times + H, less
    /// the drift margin (each promise began after its round was sent).
    /// Rounds need not be the same: each witness's promise stands alone.
    pub fn held_until(&self, need: &BTreeSet<String>) -> Option<Mono> {
        let earliest = need.iter().map(|w| self.granted.get(w).copied()).min()??;
        Some(earliest + self.promise - self.margin())
    }

    pub fn fence_of(&self, owner: &str) -> Option<&Fence> {
        self.fences.get(owner)
    }

    pub fn set_fence(&mut self, owner: &str, fence: Fence) {
        self.fences.insert(owner.to_string(), fence);
    }

    /// Taker: a witness answered fence request `req`: its last promise
    /// runs `remaining` more (on its clock). Answers to no fence of ours
    /// (late, duplicated) change nothing.
    pub fn fence_answered(&mut self, now: Mono, req: u64, remaining: Mono) {
        let margin = self.margin();
        let asked =
            |f: &&mut Fence| matches!(f.state, FenceState::Asking { req: r, .. } if r == req);
        if let Some(fence) = self.fences.values_mut().find(asked) {
            // Stretched for the witness's clock running slow against ours.
            let at = now + remaining + remaining / 10 + margin;
            fence.state = FenceState::Until { at };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Mono = 1_000_000_000;

    #[test]
    fn a_witness_promises_only_while_cut_off_and_not_fenced() {
        let mut h = Holds::new(4 * S);
        h.started(0);
        h.lease_seen("a", &Some("5".into()));
        assert!(
            !h.asked(10 * S, "a", true),
            "not seen renewing since we started"
        );
        h.lease_seen("a", &Some("6".into()));
        assert!(!h.asked(10 * S, "a", false), "reaches the API: refuses");
        assert!(h.asked(10 * S, "a", true));
        assert_eq!(h.promised_until("a"), 14 * S);
        assert_eq!(h.fence(11 * S, "a", Some("7".into())), 3 * S);
        assert!(!h.asked(12 * S, "a", true), "fenced: refuses");
        h.lease_seen("a", &Some("7".into()));
        assert!(!h.asked(12 * S, "a", true), "same version: still fenced");
        h.lease_seen("a", &Some("8".into()));
        assert!(h.asked(12 * S, "a", true), "the owner renewed since");
    }

    #[test]
    fn a_restarted_witness_counts_every_owner_as_promised_to() {
        let mut h = Holds::new(4 * S);
        h.started(100 * S);
        assert_eq!(h.promised_until("never-asked"), 104 * S);
        assert_eq!(h.fence(101 * S, "never-asked", None), 3 * S);
    }

    #[test]
    fn a_hold_needs_every_witness_and_lasts_from_the_earliest_promise() {
        let mut h = Holds::new(4 * S);
        let need: BTreeSet<String> = ["b".to_string(), "c".to_string()].into();
        let first = h.ask(10 * S);
        h.granted(first, "b");
        h.granted(first, "x");
        assert_eq!(h.held_until(&need), None, "c has not promised");
        let second = h.ask(11 * S);
        h.granted(second, "c");
        assert_eq!(h.held_until(&need), Some(10 * S + 4 * S - 4 * S / 10));
        h.granted(second, "b");
        assert_eq!(h.held_until(&need), Some(11 * S + 4 * S - 4 * S / 10));
        h.granted(99, "b");
        assert_eq!(
            h.held_until(&need),
            Some(11 * S + 4 * S - 4 * S / 10),
            "unknown round"
        );
    }
}
