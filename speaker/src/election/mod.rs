//! Who answers for each VIP, decided with Kubernetes Leases in two levels:
//!
//! - every agent renews one Lease for its node, often (the only steady-state
//!   API write, whatever the number of VIPs);
//! - every VIP has one Lease, its ownership record, written only when
//!   ownership changes (claim, release), always with a resourceVersion
//!   precondition, so exactly one contender wins; `leaseTransitions` is the
//!   ownership term.
//!
//! The owner's data-plane entries expire at "send time of its last
//! successful node-lease renewal + renew deadline", on its own boot-time
//! clock. A follower takes a VIP over only after seeing the owner's node
//! lease unchanged for a whole lease duration on *its* clock, and after a
//! fresh read shows it still unchanged; lease duration > renew deadline
//! (plus a margin for clock-rate drift) makes the owner's entries expire
//! first. An owner whose entries lapsed must win a new term before it
//! answers again, racing on the same record as any follower.
//!
//! This module is the decision logic only: no I/O and no clock of its own.
//! The agent feeds it observations ([`Event`]) with the time, and carries
//! out the [`Action`]s it returns; the simulation in `sim.rs` does the same
//! with a simulated API server, clocks and faults.

mod hold;
#[cfg(test)]
mod sim;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    sync::Arc,
    time::Duration,
};

use thiserror::Error;

/// The nodes that may announce a VIP, as the plan gives them (keys; the
/// election does not read the interfaces). Shared between VIPs and with
/// the plan, so telling a thousand VIPs about a thousand nodes copies
/// nothing.
pub type Candidates = crate::eligibility::Nodes;

/// Candidates by name, for tests and the simulation.
#[cfg(test)]
pub(crate) fn candidates<S: AsRef<str>>(names: &[S]) -> Candidates {
    Arc::new(
        names
            .iter()
            .map(|n| (n.as_ref().to_string(), BTreeSet::new()))
            .collect(),
    )
}

/// A node's CLOCK_BOOTTIME in nanoseconds: the clock data-plane expiries
/// are written in.
pub type Mono = u64;

/// The longest restart hold taken from a lease or the command line.
pub const MAX_RESTART_HOLD: Duration = Duration::from_secs(3600);

fn ns(d: Duration) -> Mono {
    d.as_nanos() as Mono
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timings {
    /// How long a follower must see a node lease unchanged before it may
    /// take that node's VIPs.
    pub lease_duration: Duration,
    /// How often the node lease is renewed.
    pub renew_interval: Duration,
    /// How long after sending its last successful renewal a node keeps
    /// answering.
    pub renew_deadline: Duration,
    /// Extra wait per rank before contending, so the preferred node goes
    /// first and VIPs spread.
    pub stagger: Duration,
    /// How long an API request may take before the agent counts it failed
    /// (it may still apply at the server).
    pub request_timeout: Duration,
    /// How long a peer's promise not to take over binds it (see `hold`).
    pub hold_promise: Duration,
    /// How long after its last successful renewal an owner may keep
    /// answering on its peers' promises; zero: never
    /// (`--api-outage=release`).
    pub max_hold: Duration,
    /// How long an agent stopping for a restart keeps its VIPs answered
    /// past its last renewal, for its successor on the node to adopt them;
    /// other nodes wait 10% more before taking over (`--restart-hold`).
    pub restart_hold: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(2),
            renew_interval: Duration::from_millis(500),
            renew_deadline: Duration::from_millis(1500),
            stagger: Duration::from_millis(100),
            request_timeout: Duration::from_secs(1),
            hold_promise: Duration::from_secs(4),
            max_hold: Duration::from_secs(300),
            restart_hold: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TimingError {
    #[error(
        "lease duration ({lease:?}) must exceed renew deadline ({deadline:?}) by at least 10% ({margin:?}): a follower could otherwise take a VIP while its owner still answers"
    )]
    LeaseTooShort {
        lease: Duration,
        deadline: Duration,
        margin: Duration,
    },
    #[error(
        "renew deadline ({deadline:?}) must be at least twice the renew interval ({interval:?}), so one failed renewal does not stop a healthy node from answering"
    )]
    DeadlineTooShort {
        deadline: Duration,
        interval: Duration,
    },
    #[error(
        "renew deadline ({deadline:?}) must exceed the request timeout ({timeout:?}), or a renewal answered late extends nothing"
    )]
    DeadlineBelowTimeout {
        deadline: Duration,
        timeout: Duration,
    },
    #[error("renew interval must be above zero")]
    ZeroInterval,
    #[error("restart hold ({hold:?}) must be at most {max:?}")]
    RestartHoldTooLong { hold: Duration, max: Duration },
    #[error(
        "hold promise ({promise:?}) must be at least the renew deadline ({deadline:?}): shorter promises would not outlast the rounds asking for them"
    )]
    PromiseTooShort {
        promise: Duration,
        deadline: Duration,
    },
}

impl Timings {
    /// Refuses timings that cannot be safe. Safety needs lease duration >
    /// renew deadline, with a margin for clock-rate drift between nodes and
    /// scheduling; the renew interval and the request timeout matter only
    /// for liveness: renewals go out every interval whether or not the last
    /// one answered, and each success extends the entries to its own send
    /// time + deadline, so one slow or lost renewal costs nothing as long as
    /// the next one answers in time.
    pub fn validate(&self) -> Result<(), TimingError> {
        if self.renew_interval.is_zero() {
            return Err(TimingError::ZeroInterval);
        }
        let margin = self.renew_deadline / 10;
        if self.lease_duration < self.renew_deadline + margin {
            return Err(TimingError::LeaseTooShort {
                lease: self.lease_duration,
                deadline: self.renew_deadline,
                margin,
            });
        }
        if self.renew_deadline < self.renew_interval * 2 {
            return Err(TimingError::DeadlineTooShort {
                deadline: self.renew_deadline,
                interval: self.renew_interval,
            });
        }
        if self.renew_deadline <= self.request_timeout {
            return Err(TimingError::DeadlineBelowTimeout {
                deadline: self.renew_deadline,
                timeout: self.request_timeout,
            });
        }
        if self.restart_hold > MAX_RESTART_HOLD {
            return Err(TimingError::RestartHoldTooLong {
                hold: self.restart_hold,
                max: MAX_RESTART_HOLD,
            });
        }
        if !self.max_hold.is_zero() && self.hold_promise < self.renew_deadline {
            return Err(TimingError::PromiseTooShort {
                promise: self.hold_promise,
                deadline: self.renew_deadline,
            });
        }
        Ok(())
    }
}

/// A VIP's ownership record as read from the API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The owning node; `None` once released.
    pub holder: Option<String>,
    /// Ownership term, bumped by every claim.
    pub term: u64,
    /// resourceVersion, the precondition of the next write.
    pub rv: String,
    /// Who released it, while nobody holds it: a node that hands a VIP over
    /// is not asked to take it back.
    pub released_by: Option<String>,
}

impl Record {
    /// Order of records of one VIP: claims bump the term; a release keeps
    /// the term and comes after the claim it ends.
    fn age(&self) -> (u64, bool) {
        (self.term, self.holder.is_none())
    }
}

/// How a node-lease renewal ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RenewOutcome {
    /// Written: the lease is at `rv` now.
    Renewed { rv: String },
    /// Our version was stale (409); `current` is the lease as read afresh.
    Conflict { current: Option<OwnLease> },
    /// Unknown: timeout, network, server error. It may have been applied.
    Failed,
}

/// A version of our node lease: the renewal that wrote it (its `req`,
/// written into the lease, so versions are ordered without comparing
/// resourceVersions) and the witnesses it names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnLease {
    pub rv: String,
    pub seq: u64,
    pub witnesses: Vec<String>,
}

/// How a record write ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    Written(Record),
    /// The precondition failed (409): someone else wrote first.
    Conflict,
    /// Unknown: timeout, network, server error. It may have been applied.
    Failed,
}

/// What the agent observed, or the result of an action it carried out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Time passed (the agent calls this at `next_wakeup`).
    Tick,
    /// Our node-lease renewal `req`, sent at `sent_at`, finished.
    RenewDone {
        req: u64,
        sent_at: Mono,
        outcome: RenewOutcome,
    },
    /// Another node's lease as watched (`rv` `None`: it does not exist),
    /// with the witnesses it names.
    NodeLease {
        node: String,
        rv: Option<String>,
        witnesses: Vec<String>,
        /// Its agent stopped for a restart with this version and answers
        /// this long past sending it.
        restart_hold: Option<Duration>,
    },
    /// A VIP's record as watched; `None`: it does not exist.
    Record { vip: IpAddr, record: Option<Record> },
    /// The first complete list of records has been seen: a VIP without one
    /// is truly free.
    RecordsSynced,
    /// A fresh read of a VIP's record (see [`Action::ReadRecord`]); `None`:
    /// it does not exist. Ignored when `ok` is false.
    RecordRead {
        vip: IpAddr,
        record: Option<Record>,
        ok: bool,
    },
    /// A fresh read of a node lease (see [`Action::ReadNodeLease`]).
    NodeLeaseRead {
        req: u64,
        rv: Option<String>,
        witnesses: Vec<String>,
        restart_hold: Option<Duration>,
        ok: bool,
    },
    /// Peer `from`, an owner cut off from the API, asks us to promise not
    /// to take over from it (round `round` of its asking).
    HoldAsked { from: String, round: u64 },
    /// Witness `from` answered our round `round`.
    HoldAnswer {
        from: String,
        round: u64,
        granted: bool,
    },
    /// Peer `from`, about to take over from `owner` (its lease at `rv`),
    /// asks us to fence it (request `req`).
    FenceAsked {
        from: String,
        req: u64,
        owner: String,
        rv: Option<String>,
    },
    /// A witness fenced the owner of our fence request `req`; its last
    /// promise runs `remaining` more on its clock.
    FenceAnswer { req: u64, remaining: Mono },
    /// A record write finished (see [`Action::WriteRecord`]).
    WriteDone { req: u64, outcome: WriteOutcome },
    /// Whether this node may announce `vip`, and which nodes may (for
    /// ranking). A VIP no longer in the plan comes as not eligible.
    Eligibility {
        vip: IpAddr,
        eligible: bool,
        candidates: Candidates,
    },
    /// Stop: hand every VIP over.
    Shutdown,
    /// Stop for a restart: release nothing, renew once more saying so, and
    /// leave the entries answering until that renewal's send time +
    /// restart hold, for the successor to adopt.
    Restarting,
    /// At start, before anything else: the entries a predecessor on this
    /// node left answering, with their expiry. Each is kept, without a new
    /// term, if its record still names this node once the records are
    /// known and our lease is live; removed otherwise.
    Adopted { vips: Vec<(IpAddr, Mono)> },
    /// The agent's first plan is in: until then, a VIP not (yet) eligible
    /// is neither released nor handed over (see [`Election::awaiting_plan`]).
    Planned,
}

/// What the agent must do. Every request action is answered by an event
/// with the same `req` (the agent turns timeouts into failures).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Renew our node lease at version `base` (`None`: the version the
    /// agent last wrote), naming `witnesses` and `req` (its sequence);
    /// answer with [`Event::RenewDone`] carrying `req` and the send time.
    /// A 409 is not retried: the answer says the renewal did not apply.
    RenewNodeLease {
        req: u64,
        base: Option<String>,
        witnesses: Vec<String>,
        /// The last renewal before a restart: other nodes wait for this
        /// long (+10%) after seeing it.
        restart_hold: Option<Duration>,
    },
    /// Read a node lease afresh (not from a watch cache).
    ReadNodeLease { req: u64, node: String },
    /// Read a VIP's record afresh, after a write lost to one we had not
    /// seen; answer with [`Event::RecordRead`].
    ReadRecord { vip: IpAddr },
    /// Write a VIP's record: create it when `expect` is `None`, else replace
    /// it only if its resourceVersion is still `expect`.
    WriteRecord {
        req: u64,
        vip: IpAddr,
        expect: Option<String>,
        holder: Option<String>,
        term: u64,
    },
    /// Start answering for `vip`, the entry expiring at `expires`; announce.
    /// `gained` says how; the VIP needed a new owner since `since`.
    Install {
        vip: IpAddr,
        expires: Mono,
        gained: Gained,
        since: Mono,
    },
    /// Push an answered VIP's expiry to `expires`.
    Refresh { vip: IpAddr, expires: Mono },
    /// Stop answering for `vip`, for `why`.
    Remove { vip: IpAddr, why: Lost },
    /// Ask each of `peers` for a promise (see [`Event::HoldAsked`]).
    AskHold { round: u64, peers: Vec<String> },
    /// Answer `to`'s round `round`.
    AnswerHold {
        to: String,
        round: u64,
        granted: bool,
    },
    /// Ask `peers` (witnesses of `owner`) to fence it; the first answer
    /// counts (see [`Event::FenceAnswer`]).
    AskFence {
        req: u64,
        owner: String,
        rv: Option<String>,
        peers: Vec<String>,
    },
    /// Answer `to`'s fence request.
    AnswerFence {
        to: String,
        req: u64,
        remaining: Mono,
    },
    /// Entries kept alive on promises since `since` are no longer: the API
    /// answers again (`lapsed` false), or they lapsed.
    HoldEnded { since: Mono, lapsed: bool },
}

/// Where one VIP stands for this node.
/// How this node came to answer for a VIP (a log field and a metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Gained {
    /// Never held before (a new Service, or a fresh cluster).
    New,
    /// Released by its holder (a graceful handover).
    Handover,
    /// Taken over from a holder whose lease went stale (a crash, a node
    /// cut off).
    Takeover,
    /// Ours on record but not answered (a restart, or our own lapse).
    Reclaim,
}

/// Why this node stopped answering for a VIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Lost {
    /// No longer eligible here, or shutting down: handed over.
    Handover,
    /// Our lease could not be renewed (nor held) in time.
    Lapsed,
    /// The record shows another holder or a newer term.
    Superseded,
}

impl Gained {
    pub fn label(self) -> &'static str {
        match self {
            Gained::New => "new",
            Gained::Handover => "handover",
            Gained::Takeover => "takeover",
            Gained::Reclaim => "reclaim",
        }
    }
}

impl Lost {
    pub fn label(self) -> &'static str {
        match self {
            Lost::Handover => "handover",
            Lost::Lapsed => "lapsed",
            Lost::Superseded => "superseded",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VipState {
    /// Not answering; contending when allowed.
    Following,
    /// About to take over from `holder`: reading its node lease afresh,
    /// which must still be at `rv`. The takeover may only replace the
    /// record as it was then (`record_rv`): a re-claim by the holder
    /// meanwhile must make it fail.
    Verifying {
        req: u64,
        holder: String,
        rv: Option<String>,
        record_rv: Option<String>,
    },
    /// Claim (term `term`) in flight, sent at `sent`; how it came about
    /// and since when the VIP needed an owner.
    Claiming {
        req: u64,
        term: u64,
        sent: Mono,
        gained: Gained,
        since: Mono,
    },
    /// Answering, with the entry expiring at `expires`.
    Owning { term: u64, expires: Mono },
    /// Answering on an entry a predecessor on this node left, expiring at
    /// `expires`, until the record says whether it is still ours.
    Adopted { expires: Mono },
    /// Entry removed, release write in flight.
    Releasing { req: u64 },
}

#[derive(Debug)]
struct Vip {
    /// The record as the server last showed it.
    record: Option<Record>,
    /// The newest record ever seen (by term): ownership to respect when the
    /// store went back to an older record (a restore, a Lease re-created).
    newest: Option<Record>,
    /// The resourceVersion of our own write, until the watch shows it:
    /// older watch events meanwhile predate it.
    unseen_write: Option<String>,
    eligible: bool,
    candidates: Candidates,
    state: VipState,
    /// When the VIP was first seen free (released or without a record).
    free_since: Option<Mono>,
    /// No write before this (after a failed one).
    retry_at: Mono,
}

impl Vip {
    fn new() -> Self {
        Self {
            record: None,
            newest: None,
            unseen_write: None,
            eligible: false,
            candidates: Candidates::default(),
            state: VipState::Following,
            free_since: None,
            retry_at: 0,
        }
    }

    /// Takes `record` as the server's current one, keeping the newest seen.
    fn observe(&mut self, record: Option<Record>) {
        if let Some(r) = &record
            && self.newest.as_ref().is_none_or(|n| r.age() > n.age())
        {
            self.newest = Some(r.clone());
        }
        self.record = record;
    }

    /// A record from the watch. While our own write is unseen there, an
    /// older one predates it and is skipped; anything else is the server's
    /// state now, even at a lower term (a restore).
    fn watched(&mut self, record: Option<Record>) {
        if let Some(ours) = &self.unseen_write {
            let is_ours = record.as_ref().is_some_and(|r| &r.rv == ours);
            let older = match (&record, &self.record) {
                (Some(new), Some(cur)) => new.age() < cur.age(),
                (None, Some(_)) => true,
                _ => false,
            };
            if !is_ours && older {
                return;
            }
        }
        self.unseen_write = None;
        self.observe(record);
    }

    /// The ownership to act on: the current record, unless the store went
    /// back to an older one; then the newest seen, whose holder may still
    /// be answering and must be taken over from as any holder is.
    fn owner(&self) -> Option<&Record> {
        match (&self.record, &self.newest) {
            (Some(r), Some(n)) if n.age() > r.age() => Some(n),
            (None, Some(n)) => Some(n),
            (r, _) => r.as_ref(),
        }
    }

    fn holder(&self) -> Option<&str> {
        self.owner()?.holder.as_deref()
    }

    /// The term a claim writes: above every term seen.
    fn next_term(&self) -> u64 {
        self.owner().map_or(0, |r| r.term) + 1
    }

    /// The precondition of the next write: the record as it is now.
    fn expect(&self) -> Option<String> {
        self.record.as_ref().map(|r| r.rv.clone())
    }
}

/// What we saw of another node's lease: its version, since when, and the
/// witnesses it names.
#[derive(Debug)]
struct Seen {
    rv: Option<String>,
    since: Mono,
    witnesses: Vec<String>,
    /// Its agent stopped for a restart with this version (see
    /// [`Event::Restarting`]).
    restart_hold: Option<Duration>,
}

impl Seen {
    fn first(now: Mono) -> Self {
        Self {
            rv: None,
            since: now,
            witnesses: Vec::new(),
            restart_hold: None,
        }
    }
}

/// A renewal sent: the witnesses it writes.
#[derive(Debug)]
struct Renewal {
    sent_at: Mono,
    witnesses: Vec<String>,
    /// Failed without knowing whether it applied.
    answered: bool,
}

#[derive(Debug)]
pub struct Election {
    me: String,
    t: Timings,
    next_renew_at: Mono,
    /// Send time of our latest successful renewal.
    renewed_sent_at: Option<Mono>,
    /// Send time of our first successful renewal.
    started_at: Option<Mono>,
    peers: HashMap<String, Seen>,
    vips: BTreeMap<IpAddr, Vip>,
    records_synced: bool,
    shutting_down: bool,
    /// Stopping for a restart: the final renewal's request, and whether it
    /// has been answered.
    restarting: Option<(u64, bool)>,
    /// Whether the agent's plan has been seen (see [`Event::Planned`]).
    planned: bool,
    next_req: u64,
    /// Our node lease at the newest version we know of.
    own: Option<OwnLease>,
    /// Renewals in flight, and failed ones that may still apply.
    renewals: BTreeMap<u64, Renewal>,
    /// Send time and success of the latest renewal answered.
    last_answer: Option<(Mono, bool)>,
    /// When the latest successful renewal was answered.
    last_ok_at: Option<Mono>,
    /// Since when our lease has been live without a lapse (send time of
    /// the renewal that started the run).
    live_since: Option<Mono>,
    holds: hold::Holds,
    /// Since when entries have been kept alive on promises.
    held_since: Option<Mono>,
    /// The latest hold: until when, on whose promises.
    hold_bound: Option<(Mono, BTreeSet<String>)>,
    /// Some VIP needs a new owner and we rank for it: every event then
    /// looks at every VIP, since loads and liveness decide the order.
    contended: bool,
    /// The candidates last made known as peers.
    last_candidates: Candidates,
    /// The earliest step due for any VIP, as of the last look at it (may
    /// be early, never late: an early wake-up only looks again).
    vips_wake: Mono,
}

/// Which VIPs an event may change the next step of.
enum Scope {
    All,
    Vips(BTreeSet<IpAddr>),
    Nothing,
}

impl Scope {
    /// What two events together may change.
    fn and(self, other: Scope) -> Scope {
        match (self, other) {
            (Scope::All, _) | (_, Scope::All) => Scope::All,
            (Scope::Nothing, s) | (s, Scope::Nothing) => s,
            (Scope::Vips(mut a), Scope::Vips(b)) => {
                a.extend(b);
                Scope::Vips(a)
            }
        }
    }
}

impl Election {
    pub fn new(me: impl Into<String>, t: Timings) -> Self {
        Self {
            me: me.into(),
            t,
            next_renew_at: 0,
            renewed_sent_at: None,
            started_at: None,
            peers: HashMap::new(),
            vips: BTreeMap::new(),
            records_synced: false,
            shutting_down: false,
            restarting: None,
            planned: true,
            next_req: 0,
            own: None,
            renewals: BTreeMap::new(),
            last_answer: None,
            last_ok_at: None,
            live_since: None,
            holds: hold::Holds::new(ns(t.hold_promise)),
            held_since: None,
            hold_bound: None,
            contended: false,
            last_candidates: Candidates::default(),
            vips_wake: Mono::MAX,
        }
    }

    /// An election that neither releases nor hands over a VIP for not
    /// being eligible until [`Event::Planned`]: an agent's watches may show
    /// it its records before its first plan, and a restarted agent must not
    /// give up its VIPs for that.
    pub fn awaiting_plan(mut self) -> Self {
        self.planned = false;
        self
    }

    pub fn node(&self) -> &str {
        &self.me
    }

    /// When our entry for `vip` expires, if we answer for it.
    pub fn expires(&self, vip: &IpAddr) -> Option<Mono> {
        match self.vips.get(vip)?.state {
            VipState::Owning { expires, .. } | VipState::Adopted { expires } => Some(expires),
            _ => None,
        }
    }

    /// The VIPs this node answers for, with their entries' expiry.
    pub fn owned(&self) -> impl Iterator<Item = (IpAddr, Mono)> + '_ {
        self.vips.iter().filter_map(|(vip, v)| match v.state {
            VipState::Owning { expires, .. } | VipState::Adopted { expires } => {
                Some((*vip, expires))
            }
            _ => None,
        })
    }

    /// Who holds `vip` on record, as far as we know.
    pub fn holder(&self, vip: &IpAddr) -> Option<&str> {
        self.vips.get(vip)?.holder()
    }

    pub fn state(&self, vip: &IpAddr) -> Option<&VipState> {
        self.vips.get(vip).map(|v| &v.state)
    }

    /// After [`Event::Shutdown`]: true once nothing is owned or in flight.
    /// After [`Event::Restarting`]: once the final renewal is answered.
    pub fn stopped(&self) -> bool {
        if let Some((_, answered)) = self.restarting {
            return answered;
        }
        self.shutting_down
            && self
                .vips
                .values()
                .all(|v| v.state == VipState::Following && !self.holds_record(v))
    }

    /// Whether the VIPs stay answered after the stop (a restart).
    pub fn keeps(&self) -> bool {
        self.restarting.is_some()
    }

    /// Stopping and handing over (not for a restart).
    fn handing_over(&self) -> bool {
        self.shutting_down && self.restarting.is_none()
    }

    /// Not eligible as far as the plan says (nothing before the first plan).
    fn unwanted(&self, v: &Vip) -> bool {
        !v.eligible && self.planned
    }

    /// How long after seeing a peer's lease version unchanged we may take
    /// over from it: the lease duration, or 10% more than the restart hold
    /// its agent announced with that version.
    fn takeover_wait(&self, seen: &Seen) -> Mono {
        let restart = seen
            .restart_hold
            .map_or(0, |r| ns(r.min(MAX_RESTART_HOLD)) * 11 / 10);
        ns(self.t.lease_duration).max(restart)
    }

    fn holds_record(&self, v: &Vip) -> bool {
        v.record
            .as_ref()
            .is_some_and(|r| r.holder.as_deref() == Some(&self.me))
    }

    /// Until when our node lease lets us answer, if it does now.
    fn own_live_until(&self, now: Mono) -> Option<Mono> {
        self.renewed_sent_at
            .map(|s| s + ns(self.t.renew_deadline))
            .filter(|&e| e > now)
    }

    /// Whether `node` counts as alive for ranking: until its lease has
    /// been seen unchanged (or absent) for a whole lease duration. Ranking
    /// only orders contenders; safety never rests on it.
    fn peer_live(&self, node: &str, now: Mono) -> bool {
        if node == self.me {
            return self.own_live_until(now).is_some();
        }
        self.peers
            .get(node)
            .is_none_or(|s| now < s.since + self.takeover_wait(s))
    }

    fn req(&mut self) -> u64 {
        self.next_req += 1;
        self.next_req
    }

    /// Applies an observation at `now`; returns what to do.
    pub fn handle(&mut self, now: Mono, event: Event) -> Vec<Action> {
        self.handle_all(now, [event])
    }

    /// Applies observations that came together at `now`, then decides
    /// once: a burst (the first plan, a thousand claims answered, a
    /// re-listed watch) costs one look at the VIPs, not one per event.
    pub fn handle_all(
        &mut self,
        now: Mono,
        events: impl IntoIterator<Item = Event>,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        self.holds.started(now);
        let mut scope = Scope::Nothing;
        for event in events {
            scope = scope.and(self.scope(now, &event));
            self.apply(now, event, &mut out);
        }
        // Renewals go out on time, never held back by one still in flight:
        // a slow answer must not delay the next renewal (see validate).
        if now >= self.next_renew_at && !self.shutting_down {
            self.next_renew_at = now + ns(self.t.renew_interval);
            self.renew(now, None, &mut out);
            scope = Scope::All;
        }
        self.reconcile(now, scope, &mut out);
        self.ask_holds(now, &mut out);
        if let Some(since) = self.held_since
            && self.owned().all(|(_, expires)| expires <= now)
        {
            self.held_since = None;
            out.push(Action::HoldEnded {
                since,
                lapsed: true,
            });
        }
        out
    }

    /// Takes one observation in; what it calls for directly (an answer to
    /// a peer, a renewal) goes to `out`.
    fn apply(&mut self, now: Mono, event: Event, out: &mut Vec<Action>) {
        match event {
            Event::Tick => {}
            Event::RenewDone {
                req,
                sent_at,
                outcome,
            } => self.renewed(now, req, sent_at, outcome, out),
            Event::NodeLease {
                node,
                rv,
                witnesses,
                restart_hold,
            } => {
                if node != self.me && rv.is_none() && !self.referenced(&node) {
                    // A node gone that nothing here names: forgotten (and
                    // made known again if it comes back as a candidate).
                    self.peers.remove(&node);
                    self.last_candidates = Candidates::default();
                } else if node != self.me {
                    self.holds.lease_seen(&node, &rv);
                    let seen = self.peers.entry(node).or_insert(Seen::first(now));
                    if seen.rv != rv {
                        seen.rv = rv;
                        seen.since = now;
                    }
                    seen.witnesses = witnesses;
                    seen.restart_hold = restart_hold;
                }
            }
            Event::HoldAsked { from, round } => {
                let cut_off = !self.api_reachable(now);
                let may = !self.t.max_hold.is_zero() && cut_off;
                let granted = from != self.me && self.holds.asked(now, &from, may);
                if !cut_off && !self.shutting_down && self.renewals.values().all(|r| r.answered) {
                    // Our last renewal went through, but the asker's did
                    // not: find out now rather than at our next renewal,
                    // so a control-plane outage is held from its start.
                    self.next_renew_at = now + ns(self.t.renew_interval);
                    self.renew(now, None, out);
                }
                out.push(Action::AnswerHold {
                    to: from,
                    round,
                    granted,
                });
            }
            Event::HoldAnswer {
                from,
                round,
                granted,
            } => {
                if granted {
                    self.holds.granted(round, &from);
                    if let Some(need) = self.hold_set()
                        && let Some(until) = self.holds.held_until(&need)
                    {
                        self.held(now, until, need, out);
                    }
                }
            }
            Event::FenceAsked {
                from,
                req,
                owner,
                rv,
            } => {
                let remaining = self.holds.fence(now, &owner, rv);
                out.push(Action::AnswerFence {
                    to: from,
                    req,
                    remaining,
                });
            }
            Event::FenceAnswer { req, remaining } => {
                self.holds.fence_answered(now, req, remaining);
            }
            Event::Record { vip, record } => {
                let v = self.vips.entry(vip).or_insert_with(Vip::new);
                v.watched(record);
                self.know_holder(now, vip);
                self.forget_if_idle(vip);
            }
            Event::RecordRead { vip, record, ok } => {
                if ok && let Some(v) = self.vips.get_mut(&vip) {
                    v.unseen_write = None;
                    v.observe(record);
                    self.know_holder(now, vip);
                }
            }
            Event::RecordsSynced => {
                // A complete list is the server's state: nothing predates it.
                self.records_synced = true;
                self.vips.values_mut().for_each(|v| v.unseen_write = None);
            }
            Event::NodeLeaseRead {
                req,
                rv,
                witnesses,
                restart_hold,
                ok,
            } => self.verified(now, req, (rv, witnesses, restart_hold), ok, out),
            Event::WriteDone { req, outcome } => self.written(now, req, outcome, out),
            Event::Eligibility {
                vip,
                eligible,
                candidates,
            } => {
                let v = self.vips.entry(vip).or_insert_with(Vip::new);
                v.eligible = eligible;
                if !Arc::ptr_eq(&v.candidates, &candidates) {
                    v.candidates = candidates.clone();
                    // Timed from now if we never saw their leases (see
                    // `peer_live`): known once, when they become
                    // candidates, not looked for at every event (nor for
                    // every VIP: most share one set).
                    if !Arc::ptr_eq(&self.last_candidates, &candidates) {
                        for node in candidates.keys().filter(|n| **n != self.me) {
                            if !self.peers.contains_key(node) {
                                self.peers.insert(node.clone(), Seen::first(now));
                            }
                        }
                        self.last_candidates = candidates;
                    }
                }
                self.forget_if_idle(vip);
            }
            Event::Shutdown => self.shutting_down = true,
            Event::Restarting => {
                if !self.shutting_down {
                    self.shutting_down = true;
                    let req = self.renew(now, Some(self.t.restart_hold), out);
                    self.restarting = Some((req, false));
                }
            }
            Event::Adopted { vips } => {
                for (vip, expires) in vips {
                    let v = self.vips.entry(vip).or_insert_with(Vip::new);
                    if v.state == VipState::Following && expires > now {
                        v.state = VipState::Adopted { expires };
                    }
                }
            }
            Event::Planned => self.planned = true,
        }
    }

    fn renew(&mut self, now: Mono, restart_hold: Option<Duration>, out: &mut Vec<Action>) -> u64 {
        let req = self.req();
        let base = self.own.as_ref().map(|o| o.rv.clone());
        let witnesses = self.witnesses(now);
        self.renewals.insert(
            req,
            Renewal {
                sent_at: now,
                witnesses: witnesses.clone(),
                answered: false,
            },
        );
        out.push(Action::RenewNodeLease {
            req,
            base,
            witnesses,
            restart_hold,
        });
        req
    }

    /// The peers our next renewal names as witnesses: those whose lease we
    /// saw live when we last reached the API (during an outage the watch
    /// shows no renewals; none when we never hold).
    fn witnesses(&self, now: Mono) -> Vec<String> {
        if self.t.max_hold.is_zero() {
            return Vec::new();
        }
        // Entries held past what this renewal will guarantee must stay
        // fenced by whoever a follower reads in it: the witnesses whose
        // promises hold them, no fewer, no others.
        if let Some((until, held_by)) = &self.hold_bound
            && *until > now + ns(self.t.renew_deadline)
        {
            return held_by.iter().cloned().collect();
        }
        let contact = self.last_ok_at.unwrap_or(now).min(now);
        let mut w: Vec<String> = self
            .peers
            .iter()
            .filter(|(_, s)| s.rv.is_some() && contact < s.since + ns(self.t.lease_duration))
            .map(|(n, _)| n.clone())
            .collect();
        w.sort();
        w
    }

    /// A renewal came back: on success the entries still live are extended
    /// to its send time + deadline; either way we learn which version of
    /// our lease (and so which witnesses) a follower may read.
    fn renewed(
        &mut self,
        now: Mono,
        req: u64,
        sent_at: Mono,
        outcome: RenewOutcome,
        out: &mut Vec<Action>,
    ) {
        let sent = self.renewals.remove(&req);
        let ok = matches!(outcome, RenewOutcome::Renewed { .. });
        let last = match &mut self.restarting {
            Some((r, answered)) if *r == req => {
                *answered = true;
                true
            }
            _ => false,
        };
        if self.last_answer.is_none_or(|(s, _)| sent_at >= s) {
            self.last_answer = Some((sent_at, ok));
        }
        match outcome {
            RenewOutcome::Renewed { rv } => {
                if let Some(r) = sent
                    && self.own.as_ref().is_none_or(|o| req > o.seq)
                {
                    self.own = Some(OwnLease {
                        rv,
                        seq: req,
                        witnesses: r.witnesses,
                    });
                }
            }
            RenewOutcome::Conflict { current } => {
                // A read showing an older renewal than one we know was
                // written is stale (served before it applied); the same
                // renewal at another version was edited by someone else,
                // and is what a follower reads now.
                if let Some(c) = current
                    && self.own.as_ref().is_none_or(|o| c.seq >= o.seq)
                {
                    self.own = Some(c);
                }
            }
            RenewOutcome::Failed => {
                // It may still apply: keep its witnesses, once per set
                // (the latest renewal naming them: it outlives the others).
                if let Some(mut r) = sent {
                    r.answered = true;
                    self.renewals
                        .retain(|_, o| !(o.answered && o.witnesses == r.witnesses));
                    self.renewals.insert(req, r);
                }
            }
        }
        // A renewal sent before the newest version we know was written can
        // no longer apply: its precondition predates that version.
        let seq = self.own.as_ref().map_or(0, |o| o.seq);
        self.renewals.retain(|&r, o| !o.answered || r > seq);
        if !ok {
            return;
        }
        self.started_at.get_or_insert(sent_at);
        self.last_ok_at = Some(now);
        // A success sent after the lease had lapsed starts a new run; an
        // older one answered late fills no gap (a follower saw it stale).
        let lapsed = self
            .renewed_sent_at
            .is_none_or(|s| sent_at > s + ns(self.t.renew_deadline));
        if lapsed {
            self.live_since = Some(sent_at);
        }
        self.renewed_sent_at = Some(self.renewed_sent_at.map_or(sent_at, |s| s.max(sent_at)));
        if let Some(since) = self.held_since.take() {
            out.push(Action::HoldEnded {
                since,
                lapsed: false,
            });
        }
        // Only entries still live are extended: one that lapsed may have
        // been taken over meanwhile, and must be won again (see reconcile).
        // The last renewal before a restart told the others to wait the
        // restart hold + 10% from when they see it, which is after it was
        // sent: the entries may answer until then.
        let keep = if last {
            self.t.restart_hold
        } else {
            self.t.renew_deadline
        };
        self.extend(now, sent_at + ns(keep), out);
    }

    /// Pushes every live entry's expiry to `until`, never back.
    fn extend(&mut self, now: Mono, until: Mono, out: &mut Vec<Action>) {
        for (vip, v) in &mut self.vips {
            // An adopted entry is ours as much as an owned one: live, it
            // cannot have been taken over (followers wait on our lease).
            if let VipState::Owning { expires, .. } | VipState::Adopted { expires } = &mut v.state
                && *expires > now
                && until > *expires
            {
                *expires = until;
                out.push(Action::Refresh {
                    vip: *vip,
                    expires: until,
                });
            }
        }
    }

    /// Whether our renewals go through: the latest answered succeeded and
    /// none is overdue. A witness promises only while this is false; an
    /// owner asks for promises only then.
    fn api_reachable(&self, now: Mono) -> bool {
        let overdue = ns(self.t.renew_interval) / 4;
        matches!(self.last_answer, Some((_, true)))
            && !self
                .renewals
                .values()
                .any(|r| !r.answered && now >= r.sent_at + overdue)
    }

    /// Every witness a follower may read in our lease: those of the newest
    /// version we know, and of every later renewal that may still apply.
    /// `None` when one of them names none: then we never hold.
    fn hold_set(&self) -> Option<BTreeSet<String>> {
        let own = self.own.as_ref()?;
        let pending = self
            .renewals
            .range(own.seq + 1..)
            .map(|(_, r)| &r.witnesses);
        let mut set = BTreeSet::new();
        for w in std::iter::once(&own.witnesses).chain(pending) {
            if w.is_empty() {
                return None;
            }
            set.extend(w.iter().cloned());
        }
        Some(set)
    }

    /// Whether we should be asking for promises now: holding is on, we
    /// answer for something, and our renewals do not go through.
    fn hold_wanted(&self, now: Mono) -> bool {
        !self.t.max_hold.is_zero()
            && !self.shutting_down
            && self.owned().any(|(_, expires)| expires > now)
            && !self.api_reachable(now)
    }

    /// Owner: a round of asking every witness, a few times per renew
    /// interval while the API does not answer.
    fn ask_holds(&mut self, now: Mono, out: &mut Vec<Action>) {
        if !self.hold_wanted(now) || !self.holds.ask_due(now, self.hold_interval()) {
            return;
        }
        let Some(need) = self.hold_set() else { return };
        let round = self.holds.ask(now);
        out.push(Action::AskHold {
            round,
            peers: need.into_iter().collect(),
        });
    }

    fn hold_interval(&self) -> Mono {
        ns(self.t.renew_interval) / 4
    }

    /// Every witness promised: live entries may be kept to `until`, never
    /// past our last successful renewal + max hold.
    fn held(&mut self, now: Mono, until: Mono, by: BTreeSet<String>, out: &mut Vec<Action>) {
        let Some(last) = self.renewed_sent_at else {
            return;
        };
        let until = until.min(last + ns(self.t.max_hold));
        if self.owned().any(|(_, e)| e > now && until > e) {
            self.held_since.get_or_insert(now);
            self.hold_bound = Some((until, by));
        }
        self.extend(now, until, out);
    }

    /// Whether entries are being kept alive on promises now.
    pub fn holding(&self) -> bool {
        self.held_since.is_some()
    }

    /// A fresh read of a holder's lease came back: every VIP waiting on it
    /// (see the shared read in `reconcile_vip`) goes ahead or starts over.
    fn verified(
        &mut self,
        now: Mono,
        req: u64,
        (rv, witnesses, restart_hold): (Option<String>, Vec<String>, Option<Duration>),
        ok: bool,
        out: &mut Vec<Action>,
    ) {
        let waiting: Vec<(IpAddr, String, Option<String>, Option<String>)> = self
            .vips
            .iter()
            .filter_map(|(vip, v)| match &v.state {
                VipState::Verifying {
                    req: r,
                    holder,
                    rv,
                    record_rv,
                } if *r == req => Some((*vip, holder.clone(), rv.clone(), record_rv.clone())),
                _ => None,
            })
            .collect();
        let Some((_, holder, expected, _)) = waiting.first().cloned() else {
            return;
        };
        if ok && rv != expected {
            // The holder renewed after all: its lease is alive; start over.
            self.holds.lease_seen(&holder, &rv);
            self.peers.insert(
                holder.clone(),
                Seen {
                    rv: rv.clone(),
                    since: now,
                    witnesses,
                    restart_hold,
                },
            );
        }
        // The watch may have shown a renewal since the read was served.
        let unchanged = self.peers.get(&holder).is_none_or(|s| s.rv == expected);
        // The holder's last renewal we saw: when the VIP began to need us.
        let stale_since = self.peers.get(&holder).map_or(now, |s| s.since);
        let (me, stopping) = (self.me.clone(), self.shutting_down);
        for (vip, _, _, record_rv) in waiting {
            let write = self.req();
            let Some(v) = self.vips.get_mut(&vip) else {
                continue;
            };
            v.state = VipState::Following;
            // Only the record as it was when the wait began may be replaced.
            if ok
                && rv == expected
                && unchanged
                && v.eligible
                && !stopping
                && v.expect() == record_rv
            {
                let term = v.next_term();
                out.push(Action::WriteRecord {
                    req: write,
                    vip,
                    expect: record_rv,
                    holder: Some(me.clone()),
                    term,
                });
                v.state = VipState::Claiming {
                    req: write,
                    term,
                    sent: now,
                    gained: Gained::Takeover,
                    since: stale_since,
                };
            }
        }
    }

    fn written(&mut self, now: Mono, req: u64, outcome: WriteOutcome, out: &mut Vec<Action>) {
        let live_until = self.own_live_until(now);
        let me = self.me.clone();
        let stopping = self.shutting_down;
        let Some((vip, v)) = self.vips.iter_mut().find(|(_, v)| match v.state {
            VipState::Claiming { req: r, .. } | VipState::Releasing { req: r } => r == req,
            _ => false,
        }) else {
            return;
        };
        let claimed = match v.state {
            VipState::Claiming { term, sent, .. } => Some((term, sent)),
            _ => None,
        };
        let (gained, since) = match v.state {
            VipState::Claiming { gained, since, .. } => (gained, since),
            _ => (Gained::Reclaim, now),
        };
        // A claim counts only if our lease stayed live since it was sent:
        // during a lapse a follower may have taken the VIP over, and a
        // late answer must not make us answer beside it.
        let live_since = self.live_since;
        let claimed_live = claimed.filter(|&(_, sent)| live_since.is_some_and(|l| l <= sent));
        let claimed = claimed.map(|(term, _)| term);
        v.state = VipState::Following;
        match outcome {
            WriteOutcome::Written(record) => {
                let won = claimed.is_some_and(|t| {
                    record.term == t && record.holder.as_deref() == Some(me.as_str())
                });
                if v.record.as_ref().is_none_or(|r| record.age() >= r.age()) {
                    // Unless the watch has shown it already.
                    if v.expect().as_ref() != Some(&record.rv) {
                        v.unseen_write = Some(record.rv.clone());
                    }
                    v.observe(Some(record));
                }
                // A late answer is harmless: a newer record than our claim
                // (seen on the watch meanwhile) means we lost it already.
                let current = v.record.as_ref().is_some_and(|r| {
                    claimed == Some(r.term) && r.holder.as_deref() == Some(me.as_str())
                });
                if won
                    && current
                    && v.eligible
                    && !stopping
                    && claimed_live.is_some()
                    && let Some(expires) = live_until
                    && let Some(term) = claimed
                {
                    v.state = VipState::Owning { term, expires };
                    // Free again only once released: timed from then.
                    v.free_since = None;
                    out.push(Action::Install {
                        vip: *vip,
                        expires,
                        gained,
                        since,
                    });
                }
            }
            WriteOutcome::Conflict | WriteOutcome::Failed => {
                if outcome == WriteOutcome::Conflict {
                    // Someone wrote a record we have not seen (or the store
                    // went back): read it rather than retry blind.
                    out.push(Action::ReadRecord { vip: *vip });
                }
                v.retry_at = now + ns(self.t.stagger).max(50_000_000);
            }
        }
    }

    /// A holder we never saw a lease for is timed from when we first saw
    /// it hold, so its deadline does not move with every event.
    fn know_holder(&mut self, now: Mono, vip: IpAddr) {
        let Some(holder) = self.vips.get(&vip).and_then(|v| v.holder()) else {
            return;
        };
        if holder != self.me && !self.peers.contains_key(holder) {
            let holder = holder.to_string();
            self.peers.insert(holder, Seen::first(now));
        }
    }

    /// Drops a VIP nobody holds, nobody may announce and we have nothing
    /// in flight for: a deleted Service's VIP leaves no state behind once
    /// its record is gone too.
    fn forget_if_idle(&mut self, vip: IpAddr) {
        let idle = self.vips.get(&vip).is_some_and(|v| {
            v.state == VipState::Following
                && v.record.is_none()
                && v.unseen_write.is_none()
                && !v.eligible
                && v.candidates.is_empty()
        });
        if idle {
            self.vips.remove(&vip);
        }
    }

    /// Whether a VIP names `node` as its holder or a candidate.
    fn referenced(&self, node: &str) -> bool {
        self.vips
            .values()
            .any(|v| v.holder() == Some(node) || v.candidates.contains_key(node))
    }

    /// Which VIPs `event` (not yet applied) may change the next step of.
    /// The frequent events touch one VIP, or none: a record or a plan
    /// change of a VIP served by a live holder, a live peer renewing. The
    /// rest, and any event while VIPs are contended, look at all.
    fn scope(&self, now: Mono, event: &Event) -> Scope {
        if self.contended {
            return Scope::All;
        }
        match event {
            Event::Record { vip, .. }
            | Event::RecordRead { vip, .. }
            | Event::Eligibility { vip, .. } => Scope::Vips(BTreeSet::from([*vip])),
            // Renewing keeps it live: the VIPs it holds stay served.
            Event::NodeLease {
                node,
                rv: Some(_),
                restart_hold,
                ..
            } if *node != self.me
                && self.peer_live(node, now)
                && self
                    .peers
                    .get(node)
                    .is_some_and(|s| s.restart_hold == *restart_hold) =>
            {
                Scope::Nothing
            }
            _ => Scope::All,
        }
    }

    /// Served by a live holder: nobody contends, so its next step does not
    /// depend on the ranking (see `ranks`).
    fn served(&self, vip: &IpAddr, now: Mono) -> bool {
        self.vips
            .get(vip)
            .and_then(|v| v.holder())
            .is_some_and(|h| self.peer_live(h, now))
    }

    /// Per-VIP decisions, for the VIPs `scope` names. Called after every
    /// event.
    fn reconcile(&mut self, now: Mono, scope: Scope, out: &mut Vec<Action>) {
        match scope {
            Scope::Nothing => {}
            Scope::Vips(vips) if vips.iter().all(|vip| self.served(vip, now)) => {
                for vip in vips {
                    self.reconcile_vip(now, vip, None, out);
                    if let Some(at) = self.vips.get(&vip).and_then(|v| self.due(v, now, None)) {
                        self.vips_wake = self.vips_wake.min(at);
                    }
                }
            }
            _ => {
                let ranks = self.ranks(now);
                let vips: Vec<IpAddr> = self.vips.keys().copied().collect();
                for vip in vips {
                    let rank = ranks.get(&vip).copied();
                    self.reconcile_vip(now, vip, rank, out);
                }
                let ranks = self.ranks(now);
                self.contended = !ranks.is_empty();
                self.vips_wake = self
                    .vips
                    .iter()
                    .filter_map(|(vip, v)| self.due(v, now, ranks.get(vip).copied()))
                    .min()
                    .unwrap_or(Mono::MAX);
            }
        }
    }

    /// When `v` next needs looking at, if later than `now`: its entry's
    /// expiry or its next step. A holder that stops counting as live is
    /// noticed at the next look at all VIPs (our renewals make one every
    /// renew interval), as before: waking at that very moment let a
    /// follower take over while a restarted holder's successor was about
    /// to answer again (simulation seed 3902 with restarts).
    fn due(&self, v: &Vip, now: Mono, rank: Option<usize>) -> Option<Mono> {
        let at = match &v.state {
            VipState::Owning { expires, .. } | VipState::Adopted { expires } => Some(*expires),
            VipState::Following => self.next_step(v, now, rank).map(|(at, _)| at),
            _ => None,
        };
        at.filter(|&at| at > now)
    }

    /// For a VIP in [`VipState::Following`]: its next step and when it is
    /// due. Both `reconcile` (acting when due) and `next_wakeup` use it.
    fn next_step(&self, v: &Vip, now: Mono, rank: Option<usize>) -> Option<(Mono, Step)> {
        let mine = v
            .record
            .as_ref()
            .is_some_and(|r| r.holder.as_deref() == Some(self.me.as_str()));
        if mine && (self.unwanted(v) || self.handing_over()) {
            return Some((v.retry_at, Step::Release));
        }
        if !v.eligible || self.shutting_down || !self.records_synced {
            return None;
        }
        // Contend only while our own lease lets us answer.
        self.own_live_until(now)?;
        let due = |at: Mono| at.max(v.retry_at);
        let holder = v.holder();
        if holder == Some(self.me.as_str()) {
            // Ours on record but not answered (restart, or lapse): a new
            // term first, whatever the ranking.
            return Some((due(now), Step::Claim));
        }
        let rank = rank? as Mono * ns(self.t.stagger);
        match holder {
            None => {
                // A free VIP goes to the first-ranked live candidate. The
                // others wait their turn, and, for a lease duration after
                // they start, for peers that start later: so a fresh
                // cluster spreads its VIPs instead of the first node
                // taking all.
                let mut at = v.free_since.unwrap_or(now) + rank;
                // (Only for a VIP never owned: a released one goes to the
                // first-ranked node that is there now, at once.)
                if rank > 0 && v.owner().is_none() {
                    at = at.max(self.started_at.unwrap_or(now) + ns(self.t.lease_duration));
                }
                Some((due(at), Step::Claim))
            }
            Some(h) => {
                let wait = self
                    .peers
                    .get(h)
                    .map_or((now, ns(self.t.lease_duration)), |s| {
                        (s.since, self.takeover_wait(s))
                    });
                let at = due(wait.0 + wait.1 + rank);
                Some((at.max(self.fence_wait(h)), Step::Verify(h.to_string())))
            }
        }
    }

    fn reconcile_vip(
        &mut self,
        now: Mono,
        vip: IpAddr,
        rank: Option<usize>,
        out: &mut Vec<Action>,
    ) {
        let Some(v) = self.vips.get(&vip) else { return };
        let me = self.me.clone();
        let mine = v
            .record
            .as_ref()
            .is_some_and(|r| r.holder.as_deref() == Some(me.as_str()));
        match v.state.clone() {
            VipState::Owning { term, expires } => {
                let current = mine && v.record.as_ref().is_some_and(|r| r.term == term);
                let handover = self.unwanted(v) || self.handing_over();
                if current && !handover && now < expires {
                    return;
                }
                // Lost to a newer term, the record held by anyone else at
                // any term (a restore), handing over, or lapsed (won back
                // only through a new term): stop answering first.
                let why = match (current, handover) {
                    (false, _) => Lost::Superseded,
                    (true, true) => Lost::Handover,
                    (true, false) => Lost::Lapsed,
                };
                out.push(Action::Remove { vip, why });
                if let Some(v) = self.vips.get_mut(&vip) {
                    v.state = VipState::Following;
                }
                if current && handover {
                    let req = self.req();
                    if let Some(v) = self.vips.get_mut(&vip) {
                        Self::release(v, vip, req, out);
                    }
                } else {
                    // Now following: its next step (a claim back, for one)
                    // may be due at once, and no event may come to prompt it.
                    self.reconcile_vip(now, vip, rank, out);
                }
            }
            VipState::Following => {
                let free = v.holder().is_none();
                let step = self.next_step(v, now, rank);
                let req = self.req();
                let Some(v) = self.vips.get_mut(&vip) else {
                    return;
                };
                if free {
                    v.free_since.get_or_insert(now);
                } else {
                    v.free_since = None;
                }
                let Some((at, step)) = step else { return };
                if at > now {
                    return;
                }
                match step {
                    Step::Release => Self::release(v, vip, req, out),
                    Step::Claim => {
                        let (gained, since) = match v.owner() {
                            Some(r) if r.holder.as_deref() == Some(me.as_str()) => {
                                (Gained::Reclaim, now)
                            }
                            Some(_) => (Gained::Handover, v.free_since.unwrap_or(now)),
                            None => (Gained::New, v.free_since.unwrap_or(now)),
                        };
                        let (expect, term) = (v.expect(), v.next_term());
                        out.push(Action::WriteRecord {
                            req,
                            vip,
                            expect,
                            holder: Some(me),
                            term,
                        });
                        v.state = VipState::Claiming {
                            req,
                            term,
                            sent: now,
                            gained,
                            since,
                        };
                    }
                    Step::Verify(holder) => {
                        if self.fenced(now, &holder, out) {
                            self.verify(now, vip, holder, req, out);
                        }
                    }
                }
            }
            VipState::Adopted { expires } => {
                if expires <= now {
                    // Lapsed before it could be confirmed: won back, if at
                    // all, through a new term like any lapsed entry.
                    out.push(Action::Remove {
                        vip,
                        why: Lost::Lapsed,
                    });
                    if let Some(v) = self.vips.get_mut(&vip) {
                        v.state = VipState::Following;
                    }
                    return self.reconcile_vip(now, vip, rank, out);
                }
                let Some(live_until) = self.own_live_until(now) else {
                    return;
                };
                if !self.records_synced || v.unseen_write.is_some() {
                    return;
                }
                let term = v.record.as_ref().filter(|_| mine).map(|r| r.term);
                let Some(v) = self.vips.get_mut(&vip) else {
                    return;
                };
                match term {
                    // Still ours, at the term the predecessor won: go on
                    // answering as if this process had won it.
                    Some(term) => {
                        v.state = VipState::Owning { term, expires };
                        if live_until > expires {
                            self.extend(now, live_until, out);
                        }
                        self.reconcile_vip(now, vip, rank, out);
                    }
                    None => {
                        out.push(Action::Remove {
                            vip,
                            why: Lost::Superseded,
                        });
                        v.state = VipState::Following;
                        self.reconcile_vip(now, vip, rank, out);
                    }
                }
            }
            VipState::Verifying { .. } | VipState::Claiming { .. } | VipState::Releasing { .. } => {
            }
        }
    }

    /// Until when the fence on `owner` keeps us from taking over from it
    /// (0: no fence to wait for, or none taken yet).
    fn fence_wait(&self, owner: &str) -> Mono {
        let Some(seen) = self.peers.get(owner) else {
            return 0;
        };
        match self.holds.fence_of(owner) {
            Some(f) if f.rv == seen.rv => match f.state {
                hold::FenceState::Until { at } => at,
                hold::FenceState::Asking { sent_at, .. } => {
                    (sent_at + ns(self.t.request_timeout)).min(self.unfenced_after(seen))
                }
            },
            _ => 0,
        }
    }

    /// When a taker may go ahead without any witness's fence: the owner
    /// holds at most max hold past its last renewal, which we saw.
    fn unfenced_after(&self, seen: &Seen) -> Mono {
        seen.since + self.takeover_wait(seen) + ns(self.t.max_hold)
    }

    /// Whether `owner` is fenced so we may take over from it now: its lease
    /// names no witness (it never holds), or a witness (we, if we are one)
    /// fenced it and its last promise has run out. Starts the fence
    /// otherwise.
    fn fenced(&mut self, now: Mono, owner: &str, out: &mut Vec<Action>) -> bool {
        let Some(seen) = self.peers.get(owner) else {
            return true;
        };
        if seen.witnesses.is_empty() {
            return true;
        }
        let (rv, witnesses) = (seen.rv.clone(), seen.witnesses.clone());
        let fallback = self.unfenced_after(seen);
        match self.holds.fence_of(owner).filter(|f| f.rv == rv) {
            Some(hold::Fence {
                state: hold::FenceState::Until { at },
                ..
            }) => return now >= *at,
            Some(hold::Fence {
                state: hold::FenceState::Asking { sent_at, .. },
                ..
            }) => {
                if now >= fallback {
                    return true;
                }
                if now < sent_at + ns(self.t.request_timeout) {
                    return false;
                }
            }
            None => {}
        }
        if witnesses.contains(&self.me) {
            // Our own promise is the fence: we give no more, and wait out
            // the last one.
            let at = now + self.holds.fence(now, owner, rv.clone());
            let state = hold::FenceState::Until { at };
            self.holds.set_fence(owner, hold::Fence { rv, state });
            return now >= at;
        }
        let req = self.req();
        let state = hold::FenceState::Asking { req, sent_at: now };
        self.holds.set_fence(
            owner,
            hold::Fence {
                rv: rv.clone(),
                state,
            },
        );
        out.push(Action::AskFence {
            req,
            owner: owner.to_string(),
            rv,
            peers: witnesses,
        });
        false
    }

    /// Starts the fresh read of `holder`'s lease before taking `vip` over.
    fn verify(&mut self, now: Mono, vip: IpAddr, holder: String, req: u64, out: &mut Vec<Action>) {
        let rv = self.peers.get(&holder).and_then(|s| s.rv.clone());
        // One read serves every VIP waiting on this holder's
        // lease at this version: a dead node with a thousand
        // VIPs costs one GET, not a thousand.
        let shared = self.vips.values().find_map(|o| match &o.state {
            VipState::Verifying {
                req,
                holder: h,
                rv: r,
                ..
            } if *h == holder && *r == rv => Some(*req),
            _ => None,
        });
        if let Some(v) = self.vips.get_mut(&vip) {
            v.state = VipState::Verifying {
                req: shared.unwrap_or(req),
                holder: holder.clone(),
                rv,
                record_rv: v.expect(),
            };
        }
        // Timed from now if we never saw this node's lease.
        self.peers.entry(holder.clone()).or_insert(Seen::first(now));
        if shared.is_none() {
            out.push(Action::ReadNodeLease { req, node: holder });
        }
    }

    fn release(v: &mut Vip, vip: IpAddr, req: u64, out: &mut Vec<Action>) {
        if let Some(r) = &v.record {
            out.push(Action::WriteRecord {
                req,
                vip,
                expect: Some(r.rv.clone()),
                holder: None,
                term: r.term,
            });
            v.state = VipState::Releasing { req };
        }
    }

    /// This node's rank among the live candidates of each VIP that may need
    /// a new owner (0: contends at once). Every node computes the same
    /// order from the same view: VIPs in address order, each to the
    /// least-loaded live candidate, ties broken by rendezvous hash, so
    /// first assignments spread and every node agrees who goes first.
    fn ranks(&self, now: Mono) -> HashMap<IpAddr, usize> {
        let mut load: HashMap<&str, usize> = HashMap::new();
        for v in self.vips.values() {
            if let Some(h) = v.holder()
                && self.peer_live(h, now)
            {
                *load.entry(h).or_default() += 1;
            }
        }
        // Every candidate is a known peer (or us): with a thousand
        // candidates of which few run, going through the live ones is
        // cheaper.
        let live: Vec<&str> = self
            .peers
            .keys()
            .map(String::as_str)
            .chain([self.me.as_str()])
            .filter(|n| self.peer_live(n, now))
            .collect();
        let mut ranks = HashMap::new();
        for (vip, v) in &self.vips {
            let holder = v.holder();
            if holder.is_some_and(|h| self.peer_live(h, now)) {
                // Served (its load counted above): nobody contends, ownership
                // is sticky. Our own record without an answer is re-claimed
                // without a rank.
                continue;
            }
            let names: Box<dyn Iterator<Item = &str>> = if live.len() < v.candidates.len() {
                Box::new(
                    live.iter()
                        .copied()
                        .filter(|n| v.candidates.contains_key(*n)),
                )
            } else {
                Box::new(v.candidates.keys().map(String::as_str))
            };
            let mut order: Vec<&str> = names
                .filter(|n| Some(*n) != holder || *n == self.me)
                .filter(|n| v.owner().and_then(|r| r.released_by.as_deref()) != Some(*n))
                .filter(|n| self.peer_live(n, now))
                .collect();
            order.sort_by_cached_key(|n| {
                (
                    load.get(n).copied().unwrap_or(0),
                    std::cmp::Reverse(score(n, vip)),
                    *n,
                )
            });
            order.dedup();
            if let Some(first) = order.first() {
                *load.entry(first).or_default() += 1;
            }
            if let Some(pos) = order.iter().position(|n| *n == self.me) {
                ranks.insert(*vip, pos);
            } else if v.eligible {
                // Eligible but not yet seen as a candidate by the plan: last.
                ranks.insert(*vip, order.len());
            }
        }
        ranks
    }

    /// When to call [`Event::Tick`] next, at the latest (always after
    /// `now`, or `Mono::MAX`).
    pub fn next_wakeup(&self, now: Mono) -> Mono {
        let mut wake = match self.shutting_down {
            true => Mono::MAX,
            false => self.next_renew_at,
        };
        // The VIPs' own steps, as of the last look at them.
        wake = wake.min(self.vips_wake);
        // Our own lease lapsing changes what we may do.
        if let Some(until) = self.own_live_until(now) {
            wake = wake.min(until);
        }
        // So does a renewal becoming overdue, and a round of asking.
        let overdue = ns(self.t.renew_interval) / 4;
        let ask = self.hold_wanted(now).then(|| self.holds.next_ask_at());
        let unanswered = self.renewals.values().filter(|r| !r.answered);
        for at in unanswered.map(|r| r.sent_at + overdue).chain(ask) {
            if at > now {
                wake = wake.min(at);
            }
        }
        wake.max(now + 1)
    }
}

/// What a following VIP does next.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    Claim,
    Release,
    Verify(String),
}

/// Rendezvous (highest random weight) score of a node for a VIP: FNV-1a,
/// stable across processes and versions.
fn score(node: &str, vip: &IpAddr) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let bytes = match vip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    for b in node.bytes().chain([0]).chain(bytes) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(holder: &str, term: u64, rv: &str) -> Option<Record> {
        Some(Record {
            holder: Some(holder.to_string()),
            term,
            rv: rv.to_string(),
            released_by: None,
        })
    }

    /// A node owning `vip` whose claim showed on the watch before the
    /// write's answer came back (both orders happen).
    fn owner_seen_on_watch_first(vip: IpAddr) -> Election {
        let mut e = Election::new("a", Timings::default());
        e.handle(
            0,
            Event::Eligibility {
                vip,
                eligible: true,
                candidates: candidates(&["a"]),
            },
        );
        e.handle(
            1,
            Event::RenewDone {
                req: 1,
                sent_at: 0,
                outcome: RenewOutcome::Renewed { rv: "r1".into() },
            },
        );
        let claim = e.handle(2, Event::RecordsSynced);
        let Some(Action::WriteRecord { req, term: 1, .. }) = claim.last().cloned() else {
            panic!("no claim: {claim:?}");
        };
        e.handle(
            3,
            Event::Record {
                vip,
                record: record("a", 1, "5"),
            },
        );
        let won = e.handle(
            4,
            Event::WriteDone {
                req,
                outcome: WriteOutcome::Written(record("a", 1, "5").expect("record")),
            },
        );
        assert!(
            won.contains(&Action::Install {
                vip,
                expires: 1_500_000_000,
                gained: Gained::New,
                since: 0,
            }),
            "{won:?}"
        );
        e
    }

    #[test]
    fn an_owner_steps_down_when_its_record_goes_back_to_another_holder() {
        let vip: IpAddr = "198.18.0.10".parse().expect("vip");
        let mut e = owner_seen_on_watch_first(vip);
        // A restore: the record as it was, another holder at a lower term.
        let out = e.handle(
            5,
            Event::Record {
                vip,
                record: record("b", 0, "9"),
            },
        );
        assert_eq!(
            out.first(),
            Some(&Action::Remove {
                vip,
                why: Lost::Superseded
            }),
            "{out:?}"
        );
        // Won back at once, above every term seen, over the restored record.
        assert!(
            out.iter().any(
                |a| matches!(a, Action::WriteRecord { expect: Some(rv), term: 2, .. } if rv == "9")
            ),
            "{out:?}"
        );
    }

    /// Node "b", eligible for `vip` beside "a", at time 0.
    fn candidate_b(vip: IpAddr) -> Election {
        let mut e = Election::new("b", Timings::default());
        e.handle(
            0,
            Event::Eligibility {
                vip,
                eligible: true,
                candidates: candidates(&["a", "b"]),
            },
        );
        e
    }

    /// At `at`, `e` sees node "a"'s lease at version "1" (stopped for a
    /// restart with `restart_hold`, if any), holding `vip` at term 1, and
    /// the records listed.
    fn holder_a_seen(e: &mut Election, vip: IpAddr, at: Mono, restart_hold: Option<Duration>) {
        e.handle(
            at,
            Event::NodeLease {
                node: "a".into(),
                rv: Some("1".into()),
                witnesses: Vec::new(),
                restart_hold,
            },
        );
        e.handle(
            at,
            Event::Record {
                vip,
                record: record("a", 1, "7"),
            },
        );
        e.handle(at, Event::RecordsSynced);
    }

    /// Drives `e` on ticks every 100 ms until `until`, every request
    /// answered at once: our renewals succeed, a read finds the lease at
    /// `peer_rv`, writes go through. What it did, in order.
    fn drive(e: &mut Election, from: Mono, until: Mono, peer_rv: &str) -> Vec<Action> {
        let mut done = Vec::new();
        for now in (from..=until).step_by(100_000_000) {
            let mut queue = vec![Event::Tick];
            while let Some(ev) = queue.pop() {
                for a in e.handle(now, ev) {
                    match &a {
                        Action::RenewNodeLease { req, .. } => queue.push(Event::RenewDone {
                            req: *req,
                            sent_at: now,
                            outcome: RenewOutcome::Renewed {
                                rv: format!("r{req}"),
                            },
                        }),
                        Action::ReadNodeLease { req, .. } => queue.push(Event::NodeLeaseRead {
                            req: *req,
                            rv: Some(peer_rv.into()),
                            witnesses: Vec::new(),
                            restart_hold: None,
                            ok: true,
                        }),
                        Action::WriteRecord {
                            req, holder, term, ..
                        } => queue.push(Event::WriteDone {
                            req: *req,
                            outcome: WriteOutcome::Written(Record {
                                holder: holder.clone(),
                                term: *term,
                                rv: format!("w{req}"),
                                released_by: None,
                            }),
                        }),
                        _ => {}
                    }
                    done.push(a);
                }
            }
        }
        done
    }

    #[test]
    fn a_takeover_says_so_and_since_when_the_holder_last_renewed() {
        let vip: IpAddr = "198.18.0.10".parse().expect("vip");
        let mut e = candidate_b(vip);
        drive(&mut e, 0, 100_000_000, "1");
        // The holder's last renewal we see, at 0.2 s.
        holder_a_seen(&mut e, vip, 200_000_000, None);
        let done = drive(&mut e, 300_000_000, 3_000_000_000, "1");
        let installs: Vec<_> = done
            .iter()
            .filter(|a| matches!(a, Action::Install { .. }))
            .collect();
        assert!(
            matches!(
                installs.as_slice(),
                [Action::Install {
                    gained: Gained::Takeover,
                    since: 200_000_000,
                    ..
                }]
            ),
            "{done:?}"
        );
    }

    #[test]
    fn a_follower_does_not_take_a_restored_record_naming_it_for_its_own() {
        let vip: IpAddr = "198.18.0.10".parse().expect("vip");
        let mut e = candidate_b(vip);
        e.handle(
            1,
            Event::RenewDone {
                req: 1,
                sent_at: 0,
                outcome: RenewOutcome::Renewed { rv: "r1".into() },
            },
        );
        e.handle(
            2,
            Event::NodeLease {
                node: "a".into(),
                rv: Some("1".into()),
                witnesses: Vec::new(),
                restart_hold: None,
            },
        );
        e.handle(
            3,
            Event::Record {
                vip,
                record: record("a", 3, "7"),
            },
        );
        e.handle(4, Event::RecordsSynced);
        let out = e.handle(
            5,
            Event::Record {
                vip,
                record: record("b", 2, "9"),
            },
        );
        assert!(
            !out.iter()
                .any(|a| matches!(a, Action::WriteRecord { .. } | Action::Install { .. })),
            "claimed a restored record: {out:?}"
        );
        assert_eq!(e.state(&vip), Some(&VipState::Following));
    }

    const S: Mono = 1_000_000_000;

    fn renewed(e: &mut Election, now: Mono, req: u64, sent_at: Mono) -> Vec<Action> {
        e.handle(
            now,
            Event::RenewDone {
                req,
                sent_at,
                outcome: RenewOutcome::Renewed {
                    rv: format!("r{req}"),
                },
            },
        )
    }

    /// A successor that found `vip` answered until 1 s by its predecessor,
    /// its lease renewed at 0.1 s, the record as given, the plan in.
    fn successor(vip: IpAddr, on_record: Option<Record>) -> (Election, Vec<Action>) {
        let mut e = Election::new("a", Timings::default()).awaiting_plan();
        let mut done = e.handle(
            0,
            Event::Adopted {
                vips: vec![(vip, S)],
            },
        );
        done.extend(e.handle(
            50_000_000,
            Event::Record {
                vip,
                record: on_record,
            },
        ));
        done.extend(e.handle(50_000_000, Event::RecordsSynced));
        done.extend(renewed(&mut e, 100_000_000, 1, 100_000_000));
        done.extend(e.handle(
            150_000_000,
            Event::Eligibility {
                vip,
                eligible: true,
                candidates: candidates(&["a"]),
            },
        ));
        done.extend(e.handle(150_000_000, Event::Planned));
        (e, done)
    }

    #[test]
    fn an_adopted_vip_still_on_record_is_kept_at_its_term_without_a_write() {
        let vip: IpAddr = "198.18.0.10".parse().expect("vip");
        let (e, done) = successor(vip, record("a", 7, "5"));
        assert!(
            !done.iter().any(|a| matches!(
                a,
                Action::WriteRecord { .. } | Action::Install { .. } | Action::Remove { .. }
            )),
            "{done:?}"
        );
        // Extended by our own renewal (sent at 0.1 s), as any owned entry.
        assert!(
            done.contains(&Action::Refresh {
                vip,
                expires: 1_600_000_000
            }),
            "{done:?}"
        );
        assert_eq!(
            e.state(&vip),
            Some(&VipState::Owning {
                term: 7,
                expires: 1_600_000_000
            })
        );
    }

    #[test]
    fn an_adopted_vip_another_node_holds_now_is_removed() {
        let vip: IpAddr = "198.18.0.10".parse().expect("vip");
        let (_, done) = successor(vip, record("b", 8, "6"));
        assert!(
            done.contains(&Action::Remove {
                vip,
                why: Lost::Superseded
            }),
            "{done:?}"
        );
        assert!(!done.iter().any(|a| matches!(a, Action::Install { .. })));
    }

    #[test]
    fn an_adopted_vip_that_lapsed_is_won_back_through_a_new_term() {
        let vip: IpAddr = "198.18.0.10".parse().expect("vip");
        let (mut e, _) = successor(vip, record("a", 7, "5"));
        // Its entry is Owning now; our renewals stop: it lapses at 1.6 s.
        let done = e.handle(1_700_000_000, Event::Tick);
        assert!(
            done.contains(&Action::Remove {
                vip,
                why: Lost::Lapsed
            }),
            "{done:?}"
        );
    }

    #[test]
    fn nothing_is_released_for_want_of_a_plan() {
        let vip: IpAddr = "198.18.0.10".parse().expect("vip");
        let mut e = Election::new("a", Timings::default()).awaiting_plan();
        let mut done = e.handle(
            0,
            Event::Record {
                vip,
                record: record("a", 3, "5"),
            },
        );
        done.extend(e.handle(1, Event::RecordsSynced));
        done.extend(renewed(&mut e, 2, 1, 0));
        assert!(
            !done
                .iter()
                .any(|a| matches!(a, Action::WriteRecord { holder: None, .. })),
            "released before the plan: {done:?}"
        );
        // The plan says no: now it goes.
        let done = e.handle(3, Event::Planned);
        assert!(
            done.iter()
                .any(|a| matches!(a, Action::WriteRecord { holder: None, .. })),
            "{done:?}"
        );
    }

    #[test]
    fn a_restart_renews_once_saying_so_and_keeps_answering_for_the_hold() {
        let vip: IpAddr = "198.18.0.10".parse().expect("vip");
        let mut e = owner_seen_on_watch_first(vip);
        let out = e.handle(S, Event::Restarting);
        let Some(Action::RenewNodeLease {
            req,
            restart_hold: Some(hold),
            ..
        }) = out.first().cloned()
        else {
            panic!("no final renewal: {out:?}");
        };
        assert_eq!(hold, Timings::default().restart_hold);
        assert!(!e.stopped());
        let out = renewed(&mut e, S + 10_000_000, req, S);
        assert!(
            out.contains(&Action::Refresh {
                vip,
                expires: S + 10 * S
            }),
            "{out:?}"
        );
        assert!(
            !out.iter()
                .any(|a| matches!(a, Action::WriteRecord { .. } | Action::Remove { .. })),
            "{out:?}"
        );
        assert!(e.stopped() && e.keeps());
        // No renewal after the last one.
        let later = e.handle(3 * S, Event::Tick);
        assert!(
            !later
                .iter()
                .any(|a| matches!(a, Action::RenewNodeLease { .. })),
            "{later:?}"
        );
    }

    #[test]
    fn a_follower_waits_out_a_restart_hold_before_taking_over() {
        let vip: IpAddr = "198.18.0.10".parse().expect("vip");
        let mut e = candidate_b(vip);
        drive(&mut e, 0, 100_000_000, "1");
        // The holder stopped for a restart: 3 s of hold, so 3.3 s of wait.
        holder_a_seen(&mut e, vip, 200_000_000, Some(Duration::from_secs(3)));
        let early = drive(&mut e, 300_000_000, 3_400_000_000, "1");
        assert!(
            !early
                .iter()
                .any(|a| matches!(a, Action::ReadNodeLease { .. } | Action::WriteRecord { .. })),
            "{early:?}"
        );
        let late = drive(&mut e, 3_500_000_000, 5 * S, "1");
        assert!(
            late.iter().any(|a| matches!(
                a,
                Action::Install {
                    gained: Gained::Takeover,
                    ..
                }
            )),
            "{late:?}"
        );
    }

    #[test]
    fn an_adopted_entry_is_extended_by_our_renewals_before_the_records_are_known() {
        let vip: IpAddr = "198.18.0.10".parse().expect("vip");
        let mut e = Election::new("a", Timings::default()).awaiting_plan();
        e.handle(
            0,
            Event::Adopted {
                vips: vec![(vip, S)],
            },
        );
        let out = renewed(&mut e, 100_000_000, 1, 100_000_000);
        assert!(
            out.contains(&Action::Refresh {
                vip,
                expires: 1_600_000_000
            }),
            "{out:?}"
        );
        assert_eq!(
            e.state(&vip),
            Some(&VipState::Adopted {
                expires: 1_600_000_000
            })
        );
    }

    #[test]
    fn an_absurd_restart_hold_neither_overflows_nor_shortens_the_wait() {
        let vip: IpAddr = "198.18.0.10".parse().expect("vip");
        let mut e = candidate_b(vip);
        holder_a_seen(&mut e, vip, 1, Some(Duration::from_secs(u64::MAX / 1000)));
        let done = drive(&mut e, 100_000_000, 10 * S, "1");
        assert!(
            !done.iter().any(|a| matches!(a, Action::WriteRecord { .. })),
            "{done:?}"
        );
    }
}
