//! Deterministic simulation of the election: several nodes, each with its
//! own drifting clock and its own data-plane map, against a simulated,
//! linearizable API server and a LAN between the nodes (the hold
//! protocol's messages), with seeded faults: crashes and restarts, pauses
//! (SIGSTOP), cut-offs from the API (one node, or the whole control plane),
//! cut-offs from the LAN (both ways, or sending only), lost and duplicated
//! LAN messages, slow answers, requests that time out at the client yet
//! still apply at the server, watch streams that lag or stall for seconds
//! while writes go through, and eligibility flips.
//!
//! Safety, checked after every event: no two nodes hold an unexpired map
//! entry for one VIP at the same instant. Liveness, checked after the
//! faults stop: within lease duration plus a bound, every VIP is answered
//! by exactly one eligible node. And through a full API outage with the
//! LAN intact, every VIP stays answered by the same node without a gap.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BinaryHeap},
    net::{IpAddr, Ipv4Addr},
};

use super::{
    Action, Candidates, Election, Event, Mono, OwnLease, Record, RenewOutcome, Timings,
    WriteOutcome, candidates,
};
use std::time::Duration;

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000 * MS;
/// Client-side timeout of every API request.
const TIMEOUT: u64 = SEC;
/// A request delay that means the request is lost.
const LOST: u64 = u64::MAX;
/// Maximum clock-rate difference from real time (1000 ppm: far worse than
/// any real oscillator).
const DRIFT: f64 = 0.001;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
}

#[derive(Clone, Debug)]
enum Req {
    Renew {
        req: u64,
        sent_at: Mono,
        base: Option<String>,
        witnesses: Vec<String>,
        restart_hold: Option<Duration>,
    },
    Read {
        req: u64,
        node: String,
    },
    ReadRecord {
        vip: IpAddr,
    },
    Write {
        req: u64,
        vip: IpAddr,
        expect: Option<String>,
        holder: Option<String>,
        term: u64,
    },
}

#[derive(Clone, Debug)]
enum Ev {
    Wake {
        node: usize,
        epoch: u64,
    },
    /// The process stopped for a restart ends (the data plane stays).
    StopKeep {
        node: usize,
        epoch: u64,
    },
    Deliver {
        node: usize,
        epoch: u64,
        event: Event,
        answers: Option<u64>,
    },
    Arrive {
        node: usize,
        epoch: u64,
        req: Req,
        id: u64,
    },
    Restart {
        node: usize,
    },
    /// A LAN message to `node`: a request (`only_epoch` `None`, for any
    /// incarnation), whose answers go back to incarnation `reply_epoch`
    /// of `from` only; or such an answer.
    Lan {
        node: usize,
        event: Event,
        from: usize,
        reply_epoch: u64,
        only_epoch: Option<u64>,
    },
}

struct Node {
    name: String,
    election: Option<Election>,
    rate: f64,
    offset: u64,
    epoch: u64,
    /// The data plane: VIP -> expiry on this node's clock.
    map: BTreeMap<IpAddr, Mono>,
    paused_until: u64,
    cut_until: u64,
    lag: u64,
    slow: u64,
    watch_tail: u64,
    /// Requests awaiting an answer or a timeout, by id.
    open: BTreeMap<u64, ()>,
    eligible: BTreeMap<IpAddr, bool>,
    /// Wake-up already queued at this real time.
    wake_at: u64,
    /// Extra delay of this node's next renewal only ([`LOST`]: never arrives).
    delay_next_renew: Option<u64>,
    /// Cut off from the LAN both ways until then.
    lan_cut_until: u64,
    /// Its LAN messages lost (it still receives) until then.
    lan_mute_until: u64,
    /// The version of its node lease its client last saw: a renewal that
    /// names none is written at this one (as the agent's lease client does).
    client_rv: Option<String>,
    /// Its last process stopped for a restart: the next one adopts the map.
    left_for_restart: bool,
}

impl Node {
    fn local(&self, real: u64) -> Mono {
        self.offset + (real as f64 * self.rate) as u64
    }
    fn real(&self, local: Mono) -> u64 {
        (local.saturating_sub(self.offset) as f64 / self.rate).ceil() as u64
    }
}

#[derive(Default)]
struct Api {
    rv: u64,
    /// Node leases: version, renewal sequence, witnesses and restart hold.
    leases: BTreeMap<String, (String, u64, Vec<String>, Option<Duration>)>,
    records: BTreeMap<IpAddr, Record>,
    /// The records after each write, by real time: what a restore goes
    /// back to.
    history: Vec<(u64, BTreeMap<IpAddr, Record>)>,
    /// Record writes that reached the server.
    writes: u64,
}

struct World {
    rng: Rng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: BTreeMap<u64, Ev>,
    nodes: Vec<Node>,
    api: Api,
    vips: Vec<IpAddr>,
    t: Timings,
    faults_until: u64,
    /// Share of LAN messages lost, in per mille.
    lan_loss: u64,
    /// While a node handles a LAN request: the incarnation of its sender
    /// that answers go to.
    replying_to: Option<(usize, u64)>,
    /// Faults include restarts in place (stop keeping the VIPs, successor
    /// after a while, perhaps too early or never).
    restarts: bool,
}

impl World {
    fn new(seed: u64, n: usize, vips: usize, t: Timings) -> Self {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let vips: Vec<IpAddr> = (0..vips)
            .map(|i| IpAddr::V4(Ipv4Addr::new(198, 18, 0, 10 + i as u8)))
            .collect();
        let nodes = (0..n)
            .map(|i| Node {
                name: format!("front-{i}"),
                election: None,
                rate: 1.0 + (rng.below(2001) as f64 - 1000.0) / 1000.0 * DRIFT,
                offset: rng.below(1000) * SEC,
                epoch: 0,
                map: BTreeMap::new(),
                paused_until: 0,
                cut_until: 0,
                lag: rng.range(1, 30) * MS,
                slow: 0,
                watch_tail: 0,
                open: BTreeMap::new(),
                eligible: vips.iter().map(|v| (*v, true)).collect(),
                wake_at: u64::MAX,
                delay_next_renew: None,
                lan_cut_until: 0,
                lan_mute_until: 0,
                client_rv: None,
                left_for_restart: false,
            })
            .collect();
        let mut w = Self {
            rng,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            nodes,
            api: Api::default(),
            vips,
            t,
            faults_until: 0,
            lan_loss: 0,
            replying_to: None,
            restarts: false,
        };
        for i in 0..n {
            let at = w.rng.below(500) * MS;
            w.at(at, Ev::Restart { node: i });
        }
        w
    }

    fn at(&mut self, time: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((time, self.seq)));
        self.events.insert(self.seq, ev);
    }

    fn candidates(&self, vip: IpAddr) -> Candidates {
        let names: Vec<&str> = self
            .nodes
            .iter()
            .filter(|n| n.eligible[&vip])
            .map(|n| n.name.as_str())
            .collect();
        candidates(&names)
    }

    /// A change the API made, on every node's watch, in order, late by the
    /// node's current lag (and after any cut-off).
    fn broadcast(&mut self, event: Event) {
        for i in 0..self.nodes.len() {
            let n = &self.nodes[i];
            let at = (self.now + n.lag).max(n.watch_tail).max(n.cut_until);
            let epoch = n.epoch;
            self.nodes[i].watch_tail = at;
            self.at(
                at,
                Ev::Deliver {
                    node: i,
                    epoch,
                    event: event.clone(),
                    answers: None,
                },
            );
        }
    }

    fn restart(&mut self, i: usize) {
        let name = self.nodes[i].name.clone();
        let deadline = self.t.renew_deadline.as_nanos() as Mono;
        let local = self.nodes[i].local(self.now);
        let n = &mut self.nodes[i];
        // One agent per host: a successor started while its predecessor
        // runs (or is frozen) is refused by the pin folder's lock. While
        // that predecessor is stopping, the pod's restart comes back later
        // (the kubelet restarts a container that exited); a predecessor
        // that is not stopping stays, and nothing restarts.
        if let Some(e) = &n.election {
            if e.keeps() {
                let again = self.now + self.rng.range(200, 3000) * MS;
                self.at(again, Ev::Restart { node: i });
            }
            return;
        }
        n.epoch += 1;
        let mut adopted = Vec::new();
        if std::mem::take(&mut n.left_for_restart) {
            // Before its first renewal, which followers time a lease
            // duration from: no entry may outlive its deadline.
            n.map.retain(|_, e| *e > local);
            for e in n.map.values_mut() {
                *e = (*e).min(local + deadline);
            }
            adopted = n.map.iter().map(|(v, e)| (*v, *e)).collect();
        } else {
            n.map.clear();
        }
        n.open.clear();
        n.election = Some(Election::new(name.clone(), self.t).awaiting_plan());
        // The agent takes its node lease before the election starts.
        n.client_rv = self.api.leases.get(&name).map(|l| l.0.clone());
        n.wake_at = u64::MAX;
        // A fresh list of everything, then the watch.
        let epoch = n.epoch;
        let at = (self.now + n.lag).max(n.cut_until);
        n.watch_tail = at;
        let mut initial: Vec<Event> = vec![Event::Adopted { vips: adopted }];
        initial.extend(
            self.api
                .leases
                .iter()
                .map(|(node, (rv, _, witnesses, hold))| Event::NodeLease {
                    node: node.clone(),
                    rv: Some(rv.clone()),
                    witnesses: witnesses.clone(),
                    restart_hold: *hold,
                }),
        );
        initial.extend(self.api.records.iter().map(|(vip, r)| Event::Record {
            vip: *vip,
            record: Some(r.clone()),
        }));
        initial.push(Event::RecordsSynced);
        for vip in self.vips.clone() {
            let eligible = self.nodes[i].eligible[&vip];
            let candidates = self.candidates(vip);
            initial.push(Event::Eligibility {
                vip,
                eligible,
                candidates,
            });
        }
        initial.push(Event::Planned);
        for event in initial {
            self.at(
                at,
                Ev::Deliver {
                    node: i,
                    epoch,
                    event,
                    answers: None,
                },
            );
        }
        self.at(self.now, Ev::Wake { node: i, epoch });
    }

    /// An event delivered to node `node`, unless it answers a request
    /// already answered (or timed out).
    fn received(&mut self, node: usize, event: Event, answers: Option<u64>) -> Option<Event> {
        if let Some(id) = answers
            && self.nodes[node].open.remove(&id).is_none()
        {
            return None;
        }
        if let Event::RenewDone { outcome, .. } = &event {
            match outcome {
                RenewOutcome::Renewed { rv } => self.nodes[node].client_rv = Some(rv.clone()),
                RenewOutcome::Conflict { current: Some(c) } => {
                    self.nodes[node].client_rv = Some(c.rv.clone());
                }
                _ => {}
            }
        }
        Some(event)
    }

    fn run_node(&mut self, i: usize, event: Event) {
        self.run_node_all(i, vec![event]);
    }

    fn run_node_all(&mut self, i: usize, events: Vec<Event>) {
        let n = &mut self.nodes[i];
        let local = n.local(self.now);
        let Some(e) = n.election.as_mut() else { return };
        let actions = e.handle_all(local, events);
        let next = e.next_wakeup(local);
        let wake = n.real(next).max(self.now + MS / 10);
        for a in actions {
            self.act(i, local, a);
        }
        let n = &mut self.nodes[i];
        if wake < n.wake_at {
            n.wake_at = wake;
            let epoch = n.epoch;
            self.at(wake, Ev::Wake { node: i, epoch });
        }
    }

    fn act(&mut self, i: usize, local: Mono, a: Action) {
        let req = match a {
            Action::Install { vip, expires, .. } | Action::Refresh { vip, expires } => {
                self.nodes[i].map.insert(vip, expires);
                return;
            }
            Action::Remove { vip, .. } => {
                self.nodes[i].map.remove(&vip);
                return;
            }
            Action::HoldEnded { .. } => return,
            Action::AskHold { round, peers } => {
                let from = self.nodes[i].name.clone();
                for p in peers {
                    let event = Event::HoldAsked {
                        from: from.clone(),
                        round,
                    };
                    self.lan_request(i, &p, event);
                }
                return;
            }
            Action::AskFence {
                req,
                owner,
                rv,
                peers,
            } => {
                let from = self.nodes[i].name.clone();
                for p in peers {
                    let event = Event::FenceAsked {
                        from: from.clone(),
                        req,
                        owner: owner.clone(),
                        rv: rv.clone(),
                    };
                    self.lan_request(i, &p, event);
                }
                return;
            }
            Action::AnswerHold { round, granted, .. } => {
                let from = self.nodes[i].name.clone();
                let event = Event::HoldAnswer {
                    from,
                    round,
                    granted,
                };
                self.lan_answer(i, event);
                return;
            }
            Action::AnswerFence { req, remaining, .. } => {
                self.lan_answer(i, Event::FenceAnswer { req, remaining });
                return;
            }
            Action::RenewNodeLease {
                req,
                base,
                witnesses,
                restart_hold,
            } => Req::Renew {
                req,
                sent_at: local,
                base: base.or_else(|| self.nodes[i].client_rv.clone()),
                witnesses,
                restart_hold,
            },
            Action::ReadNodeLease { req, node } => Req::Read { req, node },
            Action::ReadRecord { vip } => Req::ReadRecord { vip },
            Action::WriteRecord {
                req,
                vip,
                expect,
                holder,
                term,
            } => Req::Write {
                req,
                vip,
                expect,
                holder,
                term,
            },
        };
        self.seq += 1;
        let id = self.seq;
        let n = &mut self.nodes[i];
        n.open.insert(id, ());
        let epoch = n.epoch;
        let timeout = Self::failure(&req);
        self.at(
            self.now + TIMEOUT,
            Ev::Deliver {
                node: i,
                epoch,
                event: timeout,
                answers: Some(id),
            },
        );
        let extra = match req {
            Req::Renew { .. } => self.nodes[i].delay_next_renew.take().unwrap_or(0),
            _ => 0,
        };
        if self.now >= self.nodes[i].cut_until && extra != LOST {
            let delay = self.rng.range(1, 20) * MS + self.nodes[i].slow + extra;
            self.at(
                self.now + delay,
                Ev::Arrive {
                    node: i,
                    epoch,
                    req,
                    id,
                },
            );
        }
    }

    fn failure(req: &Req) -> Event {
        match req {
            Req::Renew { req, sent_at, .. } => Event::RenewDone {
                req: *req,
                sent_at: *sent_at,
                outcome: RenewOutcome::Failed,
            },
            Req::Read { req, .. } => Event::NodeLeaseRead {
                req: *req,
                rv: None,
                witnesses: Vec::new(),
                restart_hold: None,
                ok: false,
            },
            Req::ReadRecord { vip } => Event::RecordRead {
                vip: *vip,
                record: None,
                ok: false,
            },
            Req::Write { req, .. } => Event::WriteDone {
                req: *req,
                outcome: WriteOutcome::Failed,
            },
        }
    }

    /// The API server applies a request (it may do so even when the client
    /// has given up), and answers if the client can still be reached.
    fn serve(&mut self, i: usize, epoch: u64, req: Req, id: u64) {
        let name = self.nodes[i].name.clone();
        let answer = match req {
            Req::Renew {
                req,
                sent_at,
                base,
                witnesses,
                restart_hold,
            } => {
                let current = self.api.leases.get(&name).cloned();
                // Written only at the version named (none: create).
                let outcome = if base == current.as_ref().map(|c| c.0.clone()) {
                    self.api.rv += 1;
                    let rv = self.api.rv.to_string();
                    let lease = (rv.clone(), req, witnesses.clone(), restart_hold);
                    self.api.leases.insert(name.clone(), lease);
                    self.broadcast(Event::NodeLease {
                        node: name,
                        rv: Some(rv.clone()),
                        witnesses,
                        restart_hold,
                    });
                    RenewOutcome::Renewed { rv }
                } else {
                    RenewOutcome::Conflict {
                        current: current.map(|(rv, seq, witnesses, _)| OwnLease {
                            rv,
                            seq,
                            witnesses,
                        }),
                    }
                };
                Event::RenewDone {
                    req,
                    sent_at,
                    outcome,
                }
            }
            Req::Read { req, node } => {
                let lease = self.api.leases.get(&node).cloned();
                Event::NodeLeaseRead {
                    req,
                    rv: lease.as_ref().map(|l| l.0.clone()),
                    restart_hold: lease.as_ref().and_then(|l| l.3),
                    witnesses: lease.map(|l| l.2).unwrap_or_default(),
                    ok: true,
                }
            }
            Req::ReadRecord { vip } => Event::RecordRead {
                vip,
                record: self.api.records.get(&vip).cloned(),
                ok: true,
            },
            Req::Write {
                req,
                vip,
                expect,
                holder,
                term,
            } => {
                let current = self.api.records.get(&vip);
                let allowed = match (&expect, current) {
                    (None, None) => true,
                    (Some(rv), Some(r)) => *rv == r.rv,
                    _ => false,
                };
                self.api.writes += 1;
                let outcome = if allowed {
                    self.api.rv += 1;
                    let released_by = holder.is_none().then(|| name.clone());
                    let record = Record {
                        holder,
                        term,
                        rv: self.api.rv.to_string(),
                        released_by,
                    };
                    self.api.records.insert(vip, record.clone());
                    let snapshot = (self.now, self.api.records.clone());
                    self.api.history.push(snapshot);
                    self.broadcast(Event::Record {
                        vip,
                        record: Some(record.clone()),
                    });
                    WriteOutcome::Written(record)
                } else {
                    WriteOutcome::Conflict
                };
                Event::WriteDone { req, outcome }
            }
        };
        let delay = self.rng.range(1, 20) * MS + self.nodes[i].slow;
        if self.now + delay >= self.nodes[i].cut_until {
            self.at(
                self.now + delay,
                Ev::Deliver {
                    node: i,
                    epoch,
                    event: answer,
                    answers: Some(id),
                },
            );
        }
    }

    /// Whether a LAN message from `i` to `j` gets through now.
    fn lan_passes(&mut self, i: usize, j: usize) -> bool {
        let (a, b) = (&self.nodes[i], &self.nodes[j]);
        let cut = self.now < a.lan_cut_until || self.now < b.lan_cut_until;
        !cut && self.now >= a.lan_mute_until && self.rng.below(1000) >= self.lan_loss
    }

    /// Sends a LAN message from `i` to node `to`: delayed, perhaps lost,
    /// sometimes duplicated.
    fn lan_send(&mut self, i: usize, j: usize, event: Event, reply_epoch: u64, only: Option<u64>) {
        let copies = if self.rng.below(50) == 0 { 2 } else { 1 };
        for _ in 0..copies {
            if !self.lan_passes(i, j) {
                continue;
            }
            let at = self.now + self.rng.range(100, 3000) * 1000;
            let ev = Ev::Lan {
                node: j,
                event: event.clone(),
                from: i,
                reply_epoch,
                only_epoch: only,
            };
            self.at(at, ev);
        }
    }

    fn lan_request(&mut self, i: usize, to: &str, event: Event) {
        if let Some(j) = self.nodes.iter().position(|n| n.name == to) {
            let epoch = self.nodes[i].epoch;
            self.lan_send(i, j, event, epoch, None);
        }
    }

    /// An answer to the request being handled: to its sender's incarnation.
    fn lan_answer(&mut self, i: usize, event: Event) {
        if let Some((to, epoch)) = self.replying_to {
            self.lan_send(i, to, event, 0, Some(epoch));
        }
    }

    fn inject_fault(&mut self) {
        let i = self.rng.below(self.nodes.len() as u64) as usize;
        let d = self.rng.range(200, 5000) * MS;
        match self.rng.below(if self.restarts { 12 } else { 11 }) {
            0 => {
                // Crash: the process dies; its program stays attached
                // (pinned links) and answers until the entries expire.
                let n = &mut self.nodes[i];
                n.election = None;
                n.epoch += 1;
                n.wake_at = u64::MAX;
                self.at(self.now + d, Ev::Restart { node: i });
            }
            11 => {
                // Stopped for a restart: the last renewal, then the process
                // ends (within the agent's stop grace); its successor comes
                // after anything from at once (refused while the
                // predecessor runs) to never within the faults.
                let epoch = self.nodes[i].epoch;
                self.at(
                    self.now,
                    Ev::Deliver {
                        node: i,
                        epoch,
                        event: Event::Restarting,
                        answers: None,
                    },
                );
                let stop = self.rng.range(20, 3000) * MS;
                self.at(self.now + stop, Ev::StopKeep { node: i, epoch });
                let hold = self.t.restart_hold.as_nanos() as u64;
                let successor = self.rng.range(0, 2 * hold / MS) * MS;
                self.at(self.now + successor, Ev::Restart { node: i });
            }
            1 => self.nodes[i].paused_until = self.now + d,
            2 => self.nodes[i].cut_until = self.now + d,
            3 => self.nodes[i].lag = self.rng.range(1, 3000) * MS,
            4 => self.nodes[i].slow = self.rng.range(0, 1500) * MS,
            5 => {
                // The whole control plane: nobody reaches the API (over
                // by the time faults stop, as the others are).
                let d = self.rng.range(200, 10_000) * MS;
                self.api_outage((self.now + d).min(self.faults_until));
            }
            6 => self.nodes[i].lan_cut_until = self.now + d,
            7 => self.nodes[i].lan_mute_until = self.now + d,
            8 => self.lan_loss = self.rng.range(0, 500),
            _ => {
                let vip = self.vips[self.rng.below(self.vips.len() as u64) as usize];
                let flip = !self.nodes[i].eligible[&vip];
                self.nodes[i].eligible.insert(vip, flip);
                self.tell_eligibility(vip);
            }
        }
    }

    fn tell_eligibility(&mut self, vip: IpAddr) {
        let candidates = self.candidates(vip);
        for j in 0..self.nodes.len() {
            let (eligible, epoch) = (self.nodes[j].eligible[&vip], self.nodes[j].epoch);
            let event = Event::Eligibility {
                vip,
                eligible,
                candidates: candidates.clone(),
            };
            self.at(
                self.now,
                Ev::Deliver {
                    node: j,
                    epoch,
                    event,
                    answers: None,
                },
            );
        }
    }

    /// Every node cut off from the API until `until`.
    fn api_outage(&mut self, until: u64) {
        for n in &mut self.nodes {
            n.cut_until = n.cut_until.max(until);
        }
    }

    fn heal(&mut self) {
        self.lan_loss = 0;
        for i in 0..self.nodes.len() {
            let n = &mut self.nodes[i];
            n.paused_until = n.paused_until.min(self.now);
            n.cut_until = n.cut_until.min(self.now);
            n.lag = 5 * MS;
            n.slow = 0;
            n.lan_cut_until = n.lan_cut_until.min(self.now);
            n.lan_mute_until = n.lan_mute_until.min(self.now);
            for e in n.eligible.values_mut() {
                *e = true;
            }
        }
        for vip in self.vips.clone() {
            self.tell_eligibility(vip);
        }
    }

    /// Safety: at this instant, at most one node answers for each VIP.
    fn check_safety(&self, seed: u64) {
        for vip in &self.vips {
            let answering: Vec<&str> = self
                .nodes
                .iter()
                .filter(|n| n.map.get(vip).is_some_and(|&exp| exp > n.local(self.now)))
                .map(|n| n.name.as_str())
                .collect();
            assert!(
                answering.len() <= 1,
                "seed {seed}: at {} ms, {vip} answered by {answering:?}",
                self.now / MS
            );
        }
    }

    fn step(&mut self) -> bool {
        let Some(Reverse((time, seq))) = self.queue.pop() else {
            return false;
        };
        let Some(ev) = self.events.remove(&seq) else {
            return true;
        };
        self.now = time;
        match ev {
            Ev::Restart { node } => self.restart(node),
            Ev::StopKeep { node, epoch } => {
                let n = &mut self.nodes[node];
                if n.epoch == epoch {
                    n.election = None;
                    n.epoch += 1;
                    n.wake_at = u64::MAX;
                    n.left_for_restart = true;
                }
            }
            Ev::Wake { node, epoch } | Ev::Deliver { node, epoch, .. }
                if self.nodes[node].epoch != epoch => {}
            Ev::Lan {
                node,
                only_epoch: Some(epoch),
                ..
            } if self.nodes[node].epoch != epoch => {}
            ev @ Ev::Lan { node, .. } if self.nodes[node].paused_until > self.now => {
                let at = self.nodes[node].paused_until;
                self.at(at, ev);
            }
            Ev::Lan {
                node,
                event,
                from,
                reply_epoch,
                ..
            } => {
                self.replying_to = Some((from, reply_epoch));
                self.run_node(node, event);
                self.replying_to = None;
            }
            Ev::Arrive {
                node,
                epoch,
                req,
                id,
            } => self.serve(node, epoch, req, id),
            ev @ (Ev::Wake { node, .. } | Ev::Deliver { node, .. })
                if self.nodes[node].paused_until > self.now =>
            {
                let at = self.nodes[node].paused_until;
                self.at(at, ev);
            }
            Ev::Wake { node, .. } => {
                self.nodes[node].wake_at = u64::MAX;
                self.run_node(node, Event::Tick);
            }
            Ev::Deliver {
                node,
                epoch,
                event,
                answers,
            } => {
                // What the agent does: events queued together for a node
                // (here: due at the same instant, next in the queue) are
                // decided on together.
                let mut batch: Vec<Event> =
                    self.received(node, event, answers).into_iter().collect();
                while let Some(Reverse((time, seq))) = self.queue.peek().copied()
                    && time == self.now
                    && matches!(self.events.get(&seq),
                        Some(Ev::Deliver { node: n, epoch: e, .. }) if *n == node && *e == epoch)
                {
                    self.queue.pop();
                    if let Some(Ev::Deliver { event, answers, .. }) = self.events.remove(&seq) {
                        batch.extend(self.received(node, event, answers));
                    }
                }
                if !batch.is_empty() {
                    self.run_node_all(node, batch);
                }
            }
        }
        true
    }

    /// Runs `faulty` seconds of random faults, heals, then runs `settle`.
    fn run(&mut self, seed: u64, faulty: u64, settle: u64) {
        self.faults_until = faulty;
        let mut next_fault = self.rng.range(500, 3000) * MS;
        while let Some(Reverse((time, _))) = self.queue.peek().copied() {
            if time > faulty + settle {
                break;
            }
            if next_fault <= time && next_fault < faulty {
                self.now = next_fault;
                self.inject_fault();
                next_fault += self.rng.range(200, 3000) * MS;
                continue;
            }
            if time >= faulty && self.faults_until != 0 {
                self.now = faulty;
                self.faults_until = 0;
                self.heal();
                for i in 0..self.nodes.len() {
                    if self.nodes[i].election.is_none() {
                        self.at(self.now, Ev::Restart { node: i });
                    }
                }
                continue;
            }
            self.step();
            self.check_safety(seed);
        }
    }

    /// Liveness: every VIP answered by exactly one node, which owns it.
    fn check_liveness(&self, seed: u64) {
        self.check_one_answer(seed, "after healing");
    }

    fn check_one_answer(&self, seed: u64, when: &str) {
        for vip in &self.vips {
            let owners: Vec<&str> = self
                .nodes
                .iter()
                .filter(|n| n.map.get(vip).is_some_and(|&exp| exp > n.local(self.now)))
                .map(|n| n.name.as_str())
                .collect();
            assert_eq!(
                owners.len(),
                1,
                "seed {seed}: {vip} answered by {owners:?} {when} (at {} ms)",
                self.now / MS
            );
        }
    }
}

fn runs() -> u64 {
    std::env::var("SPEAKER_SIM_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000)
}

#[test]
fn never_two_answering_and_always_one_after_healing() {
    let t = Timings::default();
    // Healing needs at most: a lease duration to see a dead owner, the rank
    // stagger, and a few request round trips and timeouts.
    let settle = 2 * t.lease_duration.as_nanos() as u64 + 3 * TIMEOUT;
    let first = std::env::var("SPEAKER_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    for seed in first..first + runs() {
        let mut w = World::new(seed, 3, 3, t);
        w.run(seed, 40 * SEC, settle);
        w.check_liveness(seed);
    }
}

/// Seeds that found holes, each failing before its fix: 161, a renewal
/// naming fewer witnesses than the promises holding the entries; 8050, a
/// claim answered after the claimant's own lease had lapsed; 10887, a
/// witness that restarted, forgot its fence and promised again.
#[test]
fn seeds_that_found_holes_stay_closed() {
    let t = Timings::default();
    let settle = 2 * t.lease_duration.as_nanos() as u64 + 3 * TIMEOUT;
    for seed in [161, 8050, 10887] {
        let mut w = World::new(seed, 3, 3, t);
        w.run(seed, 40 * SEC, settle);
        w.check_liveness(seed);
    }
}

#[test]
fn fault_free_start_spreads_vips_over_nodes() {
    let t = Timings::default();
    for seed in 1..=50 {
        let mut w = World::new(seed, 3, 3, t);
        w.lag_all(5 * MS);
        w.run(seed, 0, 5 * SEC);
        w.check_liveness(seed);
        let mut owners: Vec<usize> = w
            .vips
            .iter()
            .map(|vip| {
                w.nodes
                    .iter()
                    .position(|n| n.map.contains_key(vip))
                    .unwrap_or(99)
            })
            .collect();
        owners.sort_unstable();
        owners.dedup();
        assert_eq!(owners.len(), 3, "seed {seed}: three VIPs on {owners:?}");
    }
}

impl World {
    /// The store restored to its state at `at` (real time), with fresh
    /// resourceVersions as a restore with a bumped revision gives: every
    /// watch shows the records going back, or disappearing.
    fn roll_back(&mut self, at: u64) {
        let old = self
            .api
            .history
            .iter()
            .rev()
            .find(|(t, _)| *t <= at)
            .map(|(_, r)| r.clone())
            .unwrap_or_default();
        for vip in self.vips.clone() {
            let restored = old.get(&vip).cloned().map(|mut r| {
                self.api.rv += 1;
                r.rv = self.api.rv.to_string();
                r
            });
            match &restored {
                Some(r) => self.api.records.insert(vip, r.clone()),
                None => self.api.records.remove(&vip),
            };
            self.broadcast(Event::Record {
                vip,
                record: restored,
            });
        }
    }

    fn lag_all(&mut self, lag: u64) {
        for n in &mut self.nodes {
            n.lag = lag;
        }
    }

    /// Runs until `end` (real time), checking after every event that every
    /// VIP is answered by exactly one node: no gap, never two.
    fn run_without_gap(&mut self, seed: u64, end: u64, during: &str) {
        while let Some(Reverse((time, _))) = self.queue.peek().copied() {
            if time > end {
                break;
            }
            self.step();
            self.check_one_answer(seed, during);
        }
    }

    fn owner(&self, vip: &IpAddr) -> Option<usize> {
        let now = self.now;
        self.nodes
            .iter()
            .position(|n| n.map.get(vip).is_some_and(|&exp| exp > n.local(now)))
    }
}

#[test]
fn one_slow_or_lost_renewal_costs_nothing() {
    let t = Timings::default();
    for (extra, what) in [(1200 * MS, "delayed 1.2 s"), (LOST, "lost")] {
        for seed in 1..=50 {
            let mut w = World::new(seed, 3, 3, t);
            w.lag_all(5 * MS);
            w.run(seed, 0, 5 * SEC);
            w.check_liveness(seed);
            let before: Vec<Option<usize>> = w.vips.iter().map(|v| w.owner(v)).collect();
            for n in &mut w.nodes {
                n.delay_next_renew = Some(extra);
            }
            w.run_without_gap(seed, 10 * SEC, "during a slow or lost renewal");
            let after: Vec<Option<usize>> = w.vips.iter().map(|v| w.owner(v)).collect();
            assert_eq!(before, after, "seed {seed}: a renewal {what} moved VIPs");
        }
    }
}

#[test]
fn timings_are_validated() {
    assert_eq!(Timings::default().validate(), Ok(()));
    let t = |lease, interval, deadline| Timings {
        lease_duration: std::time::Duration::from_millis(lease),
        renew_interval: std::time::Duration::from_millis(interval),
        renew_deadline: std::time::Duration::from_millis(deadline),
        stagger: std::time::Duration::from_millis(100),
        request_timeout: std::time::Duration::from_secs(1),
        ..Timings::default()
    };
    assert!(
        t(1500, 500, 1500).validate().is_err(),
        "lease must exceed deadline"
    );
    assert!(t(1600, 500, 1500).validate().is_err(), "by a margin");
    assert!(t(1650, 500, 1500).validate().is_ok());
    assert!(
        t(3000, 1000, 1500).validate().is_err(),
        "deadline must allow a retry"
    );
    assert!(t(3000, 0, 1500).validate().is_err());
    assert_eq!(
        t(2200, 500, 1000).validate(),
        Err(super::TimingError::DeadlineBelowTimeout {
            deadline: std::time::Duration::from_millis(1000),
            timeout: std::time::Duration::from_secs(1),
        }),
        "a renewal answered at its timeout must still extend the entries"
    );
}

#[test]
fn a_record_rolled_back_never_makes_two_answer_and_is_recovered() {
    let t = Timings::default();
    for seed in 1..=200 {
        let mut w = World::new(seed, 3, 3, t);
        w.run(seed, 0, 3 * SEC);
        // Hand every VIP over once, so the history holds other owners.
        let owners: Vec<Option<usize>> = w.vips.iter().map(|v| w.owner(v)).collect();
        for (vip, owner) in w.vips.clone().into_iter().zip(owners) {
            if let Some(i) = owner {
                w.nodes[i].eligible.insert(vip, false);
                w.tell_eligibility(vip);
            }
        }
        w.run(seed, 0, 5 * SEC);
        w.heal();
        w.run(seed, 0, 6 * SEC);
        let before = w.api.writes;
        // Back to the first owners' records, watched late by some nodes.
        for n in &mut w.nodes {
            n.lag = [5, 300, 1500][(seed % 3) as usize] * MS;
        }
        w.roll_back(3 * SEC);
        // And the present owner of the first VIP dies, for good.
        if let Some(i) = w.owner(&w.vips[0]) {
            let n = &mut w.nodes[i];
            n.election = None;
            n.map.clear();
            n.epoch += 1;
        }
        w.run(seed, 0, 16 * SEC);
        let alive: Vec<usize> = (0..3).filter(|&i| w.nodes[i].election.is_some()).collect();
        for vip in &w.vips {
            let o = w.owner(vip);
            assert!(
                o.is_some_and(|i| alive.contains(&i)),
                "seed {seed}: {vip} unanswered"
            );
        }
        let writes = w.api.writes - before;
        assert!(
            writes <= 12,
            "seed {seed}: {writes} record writes to recover"
        );
    }
}

#[test]
fn a_full_api_outage_keeps_every_vip_answered_by_the_same_node() {
    let t = Timings::default();
    for (loss, what) in [(0, "intact"), (100, "losing 10%")] {
        for seed in 1..=100 {
            let mut w = World::new(seed, 3, 3, t);
            w.lag_all(5 * MS);
            w.run(seed, 0, 5 * SEC);
            w.check_liveness(seed);
            let before: Vec<Option<usize>> = w.vips.iter().map(|v| w.owner(v)).collect();
            w.lan_loss = loss;
            w.api_outage(w.now + 30 * SEC);
            let during = format!("through an API outage, the LAN {what}");
            w.run_without_gap(seed, 45 * SEC, &during);
            let after: Vec<Option<usize>> = w.vips.iter().map(|v| w.owner(v)).collect();
            assert_eq!(before, after, "seed {seed}: an API outage moved VIPs");
        }
    }
}

/// Restarts in place among the faults: an agent stops keeping its VIPs
/// (the final renewal says so) and its successor comes after anything from
/// at once (refused: the predecessor still runs) to twice the restart hold
/// (too late: its VIPs lapsed and were taken over), or not before healing.
#[test]
fn never_two_answering_with_restarts_in_place() {
    let first = std::env::var("SPEAKER_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    for seed in first..first + runs() / 2 {
        run_with_restarts(seed);
    }
}

/// Seeds of [`never_two_answering_with_restarts_in_place`] that found
/// holes, each failing before its fix: 20128, a successor refused while
/// its predecessor was stopping never came back (the kubelet restarts it);
/// 3902, two nodes answered when followers woke at the very moment a
/// holder stopped counting as live.
#[test]
fn restart_seeds_that_found_holes_stay_closed() {
    run_with_restarts(20128);
    run_with_restarts(3902);
}

/// 40 s of faults, restarts in place among them (a 3 s restart hold), then
/// healing: never two answering, then one answering each VIP.
fn run_with_restarts(seed: u64) {
    let t = Timings {
        restart_hold: Duration::from_secs(3),
        ..Timings::default()
    };
    // Healing also waits for a stop in progress (up to 3 s) and for the
    // others to wait out its restart hold.
    let hold = t.restart_hold.as_nanos() as u64;
    let settle = 3 * SEC + hold + hold / 10 + 2 * t.lease_duration.as_nanos() as u64 + 3 * TIMEOUT;
    let mut w = World::new(seed, 3, 3, t);
    w.restarts = true;
    w.run(seed, 40 * SEC, settle);
    w.check_liveness(seed);
}

/// Every owner restarted in place, one after another, its successor half
/// a second after the stop: no VIP is ever unanswered or moves, and no
/// record is written.
#[test]
fn a_restart_in_place_moves_nothing_and_writes_no_record() {
    let t = Timings::default();
    for seed in 1..=100 {
        let mut w = World::new(seed, 3, 3, t);
        w.lag_all(5 * MS);
        w.run(seed, 0, 5 * SEC);
        w.check_liveness(seed);
        let before: Vec<Option<usize>> = w.vips.iter().map(|v| w.owner(v)).collect();
        let writes = w.api.writes;
        for i in 0..w.nodes.len() {
            let epoch = w.nodes[i].epoch;
            let at = w.now;
            w.at(
                at,
                Ev::Deliver {
                    node: i,
                    epoch,
                    event: Event::Restarting,
                    answers: None,
                },
            );
            w.at(at + 100 * MS, Ev::StopKeep { node: i, epoch });
            w.at(at + 600 * MS, Ev::Restart { node: i });
            let end = w.now + 3 * SEC;
            w.run_without_gap(seed, end, "through a restart in place");
        }
        let after: Vec<Option<usize>> = w.vips.iter().map(|v| w.owner(v)).collect();
        assert_eq!(before, after, "seed {seed}: a restart moved VIPs");
        assert_eq!(w.api.writes, writes, "seed {seed}: records written");
    }
}
