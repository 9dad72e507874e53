//! `speaker agent`: the Kubernetes mode. Watches the cluster, computes which
//! VIPs this node may announce (eligibility, see `local`), runs the election
//! with its peers, and has the [`Answerer`] carry out what the election
//! decides.
//!
//! One task owns the election and the answerer; API requests run as tasks
//! whose results come back as election events (`requests`), each bounded by
//! a timeout, so an unreachable API server only makes requests fail.

mod local;
mod peers;
mod probe;
mod requests;
mod stop;

use std::{
    collections::{BTreeMap, HashSet},
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};
use tracing::{info, warn};

use crate::{
    answer::Answerer,
    config::AgentConfig,
    dataplane::{Dataplane, DataplaneError, PinLock, error_chain, now_ns},
    election::{Action, Election, Event, Mono},
    eligibility::cluster::{Change, Cluster, Delta},
    k8s::{
        self,
        events::{Events, Reported},
        l2status::{self, L2Statuses},
        leases::{LeaseError, Leases},
        preflight, watch,
    },
    metrics::{self, Metrics},
    netdev::fmt_mac,
};
use local::Local;
use peers::Peers;
use probe::{Health, Outcome};
use requests::Requests;

/// How long a stopping agent waits for its releases to be written.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// Local probe results waiting for the loop, at most.
const PROBE_RESULTS: usize = 1024;
/// Election events (Lease watch events, requests' results, peers'
/// messages) waiting for the loop, at most: a full queue holds the watch
/// back and drops peers' datagrams (which are asked again).
const EVENTS: usize = 4096;
/// Election events taken in at once, decided on together.
const EVENT_BATCH: usize = 256;
/// Cluster changes taken in at once before the plan is updated: a burst
/// costs one update, and the loop still gets to its timers.
const CHANGE_BATCH: usize = 256;
/// How often the map is compared with what the election says we own.
const REPAIR_INTERVAL: Duration = Duration::from_secs(1);
/// How often interface carriers are checked.
const CARRIER_INTERVAL: Duration = Duration::from_millis(100);

pub async fn run(cfg: AgentConfig) -> Result<()> {
    cfg.timings.validate().context("unsafe election timings")?;
    let client = k8s::client().await?;
    // Before the signal handlers: until the data plane is set up, a
    // SIGTERM has nothing to hand over and may end the process at once.
    let (pools_ns, leases_ns) = (cfg.config_namespace.as_str(), cfg.namespace.as_str());
    let needs = [
        (preflight::SERVICES, ""),
        (preflight::ENDPOINT_SLICES, ""),
        (preflight::NODES, ""),
        (preflight::LEASES, leases_ns),
        (preflight::IP_ADDRESS_POOLS, pools_ns),
        (preflight::L2_ADVERTISEMENTS, pools_ns),
    ];
    preflight::check(&client, &needs).await?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let (mut agent, mut rx) = start(&cfg, client.clone()).await?;
    let (changes_tx, mut changes) = mpsc::channel(watch::CHANGES);
    watch::cluster(&client, &cfg.config_namespace, &cfg.settings, changes_tx);
    let mut cluster = Cluster::new(cfg.settings.clone());
    let mut planned = false;
    let mut repair = tokio::time::interval(REPAIR_INTERVAL);
    let mut carrier = tokio::time::interval(CARRIER_INTERVAL);
    let mut stop_by: Option<Instant> = None;
    let mut superseded = agent.requests.superseded();
    // The local endpoint probe: results come back on `probed`.
    let probing = !cfg.probe.period.is_zero();
    let (probe_tx, mut probed) = mpsc::channel(PROBE_RESULTS);
    agent.probe_tx = Some(probe_tx);
    let mut probe_tick = tokio::time::interval(cfg.probe.period.max(Duration::from_millis(10)));
    probe_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    info!(node = %cfg.node, namespace = %cfg.namespace,
        config_namespace = %cfg.config_namespace, "agent started");

    loop {
        let now = now_ns();
        let wake = mono_to_instant(agent.election.next_wakeup(now), now)
            .min(agent.answer.next_announcement().unwrap_or(far()));
        let woke = tokio::select! {
            Some(ev) = rx.recv() => Wake::Event(ev),
            Some(change) = changes.recv() => Wake::Cluster(change),
            _ = carrier.tick() => Wake::Carrier,
            _ = repair.tick() => Wake::Repair,
            _ = probe_tick.tick(), if probing => Wake::ProbeRound,
            Some((target, outcome)) = probed.recv() => Wake::Probed(target, outcome),
            Ok(()) = superseded.changed() => Wake::Superseded,
            _ = sigterm.recv(), if stop_by.is_none() => Wake::Sigterm,
            _ = sigint.recv(), if stop_by.is_none() => Wake::Sigint,
            _ = tokio::time::sleep_until(wake.into()) => Wake::Event(Event::Tick),
        };
        let started = Instant::now();
        let kind = woke.kind();
        let mut events = Vec::new();
        match woke {
            Wake::Event(ev) => {
                // Whatever else has come meanwhile is decided on together.
                events.push(ev);
                while events.len() < EVENT_BATCH {
                    match rx.try_recv() {
                        Ok(ev) => events.push(ev),
                        Err(_) => break,
                    }
                }
            }
            Wake::Cluster(change) => {
                cluster.apply(change);
                for _ in 1..CHANGE_BATCH {
                    match changes.try_recv() {
                        Ok(change) => cluster.apply(change),
                        Err(_) => break,
                    }
                }
                let delta = cluster.update();
                if delta.nodes {
                    agent.locate_peers(cluster.nodes());
                }
                // The first plan is told even when empty: until then the
                // election releases nothing (`awaiting_plan`).
                if cluster.ready() && (!planned || !delta.is_empty()) {
                    planned = true;
                    events.extend(agent.replan(delta));
                }
            }
            Wake::Carrier => {
                let change = agent.local.poll_links();
                if change.moved {
                    agent.relink();
                }
                if change.carrier || change.moved {
                    events.extend(agent.eligibility());
                }
            }
            Wake::Repair => agent.repair(),
            Wake::ProbeRound => agent.probe_round(cfg.probe.period),
            Wake::Probed(target, outcome) => events.extend(agent.probed(target, outcome)),
            Wake::Superseded => {
                // Another agent acts as this node now: stop answering at
                // once, and write nothing more.
                let why = superseded.borrow().clone().unwrap_or_default();
                agent.answer.shutdown();
                agent
                    .events
                    .node_warning(&cfg.node, "DuplicateAgent", why.clone())
                    .await;
                anyhow::bail!("{why}");
            }
            Wake::Sigterm => {
                let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
                let node = cluster.node(&cfg.node);
                stop_by = Some(Instant::now() + STOP_GRACE);
                let keep = stop::keeps(cfg.on_sigterm, in_cluster, node);
                if keep && !agent.answer.keepable() {
                    warn!(
                        "the XDP links cannot be pinned here: handing VIPs over instead of keeping them"
                    );
                }
                if keep && agent.answer.keepable() {
                    info!("SIGTERM: stopping for a restart, VIPs kept answered");
                    events.push(Event::Restarting);
                } else {
                    info!("SIGTERM: handing VIPs over");
                    events.push(Event::Shutdown);
                }
            }
            Wake::Sigint => {
                info!("SIGINT: handing VIPs over");
                stop_by = Some(Instant::now() + STOP_GRACE);
                events.push(Event::Shutdown);
            }
        }
        agent.handle(events);
        agent.answer.send_due(Instant::now());
        let took = started.elapsed();
        metrics::update(&agent.metrics, |m| m.work_seconds.observe(kind, took));
        if let Some(by) = stop_by
            && (agent.election.stopped() || Instant::now() >= by)
        {
            break;
        }
    }
    if agent.election.keeps() {
        let until: Vec<String> = agent
            .election
            .owned()
            .map(|(vip, expires)| {
                let left = expires.saturating_sub(now_ns()) / 1_000_000;
                format!("{vip} for {left} ms")
            })
            .collect();
        agent.answer.keep(&agent.instance)?;
        info!(answered = ?until, "stopped for a restart: XDP attached, pins kept, VIPs answered until the successor adopts them");
        return Ok(());
    }
    agent.answer.shutdown();
    agent.requests.release_node_lease().await;
    info!("stopped: VIPs handed over, XDP detached, pins removed, node lease released");
    Ok(())
}

/// Loads and attaches the data plane, starts the watches, and puts the
/// agent together.
async fn start(cfg: &AgentConfig, client: kube::Client) -> Result<(Agent, mpsc::Receiver<Event>)> {
    let instance = k8s::instance_id();
    let leases = Leases::new(
        client.clone(),
        &cfg.namespace,
        &cfg.node,
        &instance,
        cfg.timings.lease_duration,
    );
    let events = Events::new(client.clone(), "speaker", &cfg.node);
    // One agent per host: a second one is refused before it touches
    // anything; a successor started while its predecessor ends waits for
    // it, a little.
    let since = Instant::now();
    let lock = loop {
        match PinLock::take(&cfg.bpffs) {
            Err(DataplaneError::Busy { .. }) if since.elapsed() < STOP_GRACE => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e @ DataplaneError::Busy { .. }) => {
                events
                    .node_warning(&cfg.node, "DuplicateAgent", e.to_string())
                    .await;
                return Err(e.into());
            }
            other => break other?,
        }
    };
    // A predecessor that stopped for a restart left its entries answering
    // up to its restart hold; from the moment we renew, followers wait
    // only a lease duration, so no entry may outlive our own deadline:
    // shortened when adopted, removed (the program detached) otherwise.
    let ended = lock.predecessor_instance();
    let predecessor = match lock.predecessor() {
        Ok(p) => Some(p),
        Err(why) => {
            if let Some(why) = why {
                warn!(reason = %why, "the data plane left for a restart cannot be adopted; reloading");
            }
            None
        }
    };
    if predecessor.is_some() {
        let now = now_ns();
        let shortened = lock.clamp(now, now + cfg.timings.renew_deadline.as_nanos() as u64)?;
        info!(shortened, "a predecessor left its data plane for us");
    } else {
        lock.clear()?;
    }
    // Before touching the data plane: a second agent under this node's
    // name must not replace the first one's program or maps.
    acquire_node_lease(&leases, &events, cfg, ended.as_deref()).await?;
    let metrics = Arc::new(Mutex::new(Metrics {
        node: cfg.node.clone(),
        ..Metrics::default()
    }));
    metrics::serve(cfg.metrics_addr, metrics.clone()).await?;

    let (dp, found) = Dataplane::open(lock, predecessor.is_some())?;
    let (mut answer, adopted) = Answerer::adopt(dp, cfg.xdp_mode, cfg.burst, found.entries);
    for link in &cfg.default_links {
        answer.attach(&link.iface)?;
    }
    let (tx, rx) = mpsc::channel::<Event>(EVENTS);
    watch::leases(&client, &cfg.namespace, tx.clone());
    let peers = match cfg.peer_addr {
        Some(addr) => {
            let key = peers::key(&client, &cfg.namespace, cfg.peer_key_file.as_deref()).await?;
            Some(
                Peers::start(
                    addr,
                    &key,
                    &cfg.node,
                    &instance,
                    tx.clone(),
                    metrics.clone(),
                )
                .await?,
            )
        }
        None => None,
    };
    let mut agent = Agent {
        election: Election::new(&cfg.node, cfg.timings).awaiting_plan(),
        instance,
        answer,
        local: Local::new(&cfg.node, cfg.default_links.clone()),
        requests: Requests::new(leases, tx, metrics.clone(), cfg.timings.request_timeout),
        events,
        l2status: L2Statuses::start(client.clone(), &cfg.namespace, &cfg.node),
        l2status_stale: true,
        reported: Reported::default(),
        metrics,
        pending: Vec::new(),
        peers,
        health: Health::new(cfg.probe.failures, cfg.probe.successes),
        probes_in_flight: HashSet::new(),
        probe_tx: None,
    };
    if !adopted.is_empty() {
        metrics::update(&agent.metrics, |m| m.adopted = adopted.len() as u64);
        agent.handle(vec![Event::Adopted { vips: adopted }]);
    }
    Ok((agent, rx))
}

/// Takes this node's lease for this process, retrying while the API cannot
/// be reached; refuses to run, with an Event on the Node, when another
/// live agent renews it.
async fn acquire_node_lease(
    leases: &Leases,
    events: &Events,
    cfg: &AgentConfig,
    predecessor: Option<&str>,
) -> Result<()> {
    loop {
        match leases
            .acquire(cfg.timings.lease_duration, predecessor)
            .await
        {
            Ok(()) => return Ok(()),
            Err(e @ LeaseError::Duplicate { .. }) => {
                events
                    .node_warning(&cfg.node, "DuplicateAgent", e.to_string())
                    .await;
                return Err(e.into());
            }
            Err(LeaseError::Api(e)) => {
                warn!(error = %e, "cannot take this node's lease; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// What woke the agent's loop.
#[allow(clippy::large_enum_variant)] // one at a time, on the stack
enum Wake {
    /// A Lease event, a request's result, or the election's timer.
    Event(Event),
    /// A watched object changed.
    Cluster(Change),
    Carrier,
    Repair,
    ProbeRound,
    Probed(SocketAddr, Outcome),
    Superseded,
    Sigterm,
    Sigint,
}

impl Wake {
    /// The label of `speaker_event_seconds`.
    fn kind(&self) -> &'static str {
        match self {
            Wake::Event(Event::Tick) => "timer",
            Wake::Event(_) => "lease",
            Wake::Cluster(_) => "cluster",
            Wake::Carrier => "carrier",
            Wake::Repair => "repair",
            Wake::ProbeRound | Wake::Probed(..) => "probe",
            Wake::Superseded | Wake::Sigterm | Wake::Sigint => "signal",
        }
    }
}

fn far() -> Instant {
    Instant::now() + Duration::from_secs(3600)
}

fn mono_to_instant(at: Mono, now: Mono) -> Instant {
    Instant::now() + Duration::from_nanos(at.saturating_sub(now).min(3600 * 1_000_000_000))
}

struct Agent {
    election: Election,
    /// This process's identity in the node lease.
    instance: String,
    answer: Answerer,
    local: Local,
    requests: Requests,
    events: Events,
    /// Who announces what, as MetalLB's ServiceL2Status objects; stale
    /// after an ownership or plan change, rebuilt at the next repair.
    l2status: L2Statuses,
    l2status_stale: bool,
    reported: Reported,
    metrics: Arc<Mutex<Metrics>>,
    /// Events produced while acting, handled before the loop waits again.
    pending: Vec<Event>,
    /// The other agents, for holding through API outages.
    peers: Option<Peers>,
    /// The local endpoint probe: what it found, what is in flight, where
    /// results go.
    health: Health,
    probes_in_flight: HashSet<SocketAddr>,
    probe_tx: Option<mpsc::Sender<(SocketAddr, Outcome)>>,
}

impl Agent {
    /// Feeds events to the election and carries out what it decides,
    /// then the events that acting produced.
    fn handle(&mut self, events: Vec<Event>) {
        self.pending.extend(events);
        while !self.pending.is_empty() {
            let events = std::mem::take(&mut self.pending);
            let actions = self.election.handle_all(now_ns(), events);
            // Refreshes come from renewals, before any install or removal
            // the same events lead to: one write for all of them first.
            let (refreshes, rest): (Vec<Action>, Vec<Action>) = actions
                .into_iter()
                .partition(|a| matches!(a, Action::Refresh { .. }));
            let refreshes: Vec<(IpAddr, Mono)> = refreshes
                .into_iter()
                .filter_map(|a| match a {
                    Action::Refresh { vip, expires } => Some((vip, expires)),
                    _ => None,
                })
                .collect();
            if let Err(e) = self.answer.refresh_all(&refreshes) {
                warn!(error = %format!("{e:#}"), "cannot refresh");
            }
            for action in rest {
                self.act(action);
            }
        }
    }

    fn act(&mut self, action: Action) {
        match action {
            Action::RenewNodeLease {
                req,
                base,
                witnesses,
                restart_hold,
            } => self.requests.renew(req, base, witnesses, restart_hold),
            Action::AskHold { round, peers } => {
                if let Some(p) = &self.peers {
                    p.ask_hold(round, &peers);
                }
            }
            Action::AnswerHold { to, round, granted } => {
                if let Some(p) = &self.peers {
                    p.answer_hold(&to, round, granted);
                }
            }
            Action::AskFence {
                req,
                owner,
                rv,
                peers,
            } => {
                if let Some(p) = &self.peers {
                    p.ask_fence(req, &owner, rv, &peers);
                }
            }
            Action::AnswerFence { to, req, remaining } => {
                if let Some(p) = &self.peers {
                    p.answer_fence(&to, req, remaining);
                }
            }
            Action::HoldEnded { since, lapsed } => {
                let held = Duration::from_nanos(now_ns().saturating_sub(since));
                let vips = self.election.owned().count();
                match lapsed {
                    false => info!(held = ?held, vips, "API reachable again; hold over"),
                    true => warn!(held = ?held, "hold lapsed: no longer answering"),
                }
                metrics::update(&self.metrics, |m| m.holds_ended += 1);
                self.events
                    .hold_ended(self.election.node(), vips, held, lapsed);
            }
            Action::ReadNodeLease { req, node } => self.requests.read_node(req, node),
            Action::ReadRecord { vip } => self.requests.read_record(vip),
            Action::WriteRecord {
                req,
                vip,
                expect,
                holder,
                term,
            } => self.requests.write_record(req, vip, expect, holder, term),
            Action::Install {
                vip,
                expires,
                gained,
                since,
            } => {
                let took = Duration::from_nanos(now_ns().saturating_sub(since));
                info!(%vip, reason = gained.label(), took = ?took, "now answering");
                self.answer_on_planned_links(vip, expires);
                self.l2status_stale = true;
                metrics::update(&self.metrics, |m| m.took_over(gained, took));
                let node = self.election.node().to_string();
                self.events
                    .node_assigned(self.local.services(vip), vip, &node);
            }
            Action::Refresh { vip, expires } => {
                if let Err(e) = self.answer.refresh(vip, expires) {
                    warn!(%vip, error = %format!("{e:#}"), "cannot refresh");
                }
            }
            Action::Remove { vip, why } => {
                info!(%vip, reason = why.label(), "no longer answering");
                self.answer.remove(vip);
                self.l2status_stale = true;
                metrics::update(&self.metrics, |m| *m.stopped.entry(why).or_default() += 1);
            }
        }
    }

    /// Where each peer is reached: its Node's InternalIP (else its first
    /// address).
    fn locate_peers<'a>(
        &mut self,
        nodes: impl Iterator<Item = &'a k8s_openapi::api::core::v1::Node>,
    ) {
        let Some(peers) = &mut self.peers else { return };
        let addrs = nodes
            .filter_map(|n| {
                let name = n.metadata.name.clone()?;
                let addrs = n.status.as_ref()?.addresses.as_ref()?;
                let pick = addrs
                    .iter()
                    .find(|a| a.type_ == "InternalIP")
                    .or_else(|| addrs.first())?;
                Some((name, pick.address.parse().ok()?))
            })
            .collect();
        peers.set_addresses(addrs);
    }

    /// Answers for `vip` on the links the plan gives this node.
    fn answer_on_planned_links(&mut self, vip: IpAddr, expires: Mono) {
        let links = self.local.links(vip);
        if let Err(e) = self.answer.install(vip, &links, expires) {
            // Holding a VIP this node cannot fully answer for would keep it
            // dark where another node could serve it.
            warn!(%vip, error = %format!("{e:#}"),
                "cannot answer as planned; handing the VIP to another node");
            self.local
                .failed(vip, Instant::now() + local::FAILED_BACKOFF);
            let more = self.eligibility();
            self.pending.extend(more);
        }
    }

    /// Moves owned VIPs whose links changed (an L2Advertisement edit, an
    /// interface re-created or given a new MAC) onto their links as they
    /// are now, announcing them there.
    fn relink(&mut self) {
        let owned: Vec<IpAddr> = self.election.owned().map(|(vip, _)| vip).collect();
        self.relink_some(owned);
    }

    /// The same, for `vips` only (those a plan change touched).
    fn relink_some(&mut self, vips: impl IntoIterator<Item = IpAddr>) {
        for vip in vips {
            let Some(expires) = self.election.expires(&vip) else {
                continue;
            };
            let want = self.local.links(vip);
            if !self
                .answer
                .links(vip)
                .is_some_and(|have| local::same_links(have, &want))
            {
                info!(%vip, "links changed; answering on the new ones");
                self.answer_on_planned_links(vip, expires);
            }
        }
    }

    /// A plan change: its problems reported, owned VIPs moved to changed
    /// links, eligibility updated, all for the VIPs it touched only.
    fn replan(&mut self, delta: Delta) -> Vec<Event> {
        if let Some(issues) = delta.issues {
            self.events.problems(&issues, &mut self.reported);
            self.local.set_issues(issues);
        }
        let touched: Vec<IpAddr> = delta.vips.iter().map(|(vip, _)| *vip).collect();
        if self.local.update_plan(delta.vips) {
            self.health.set_targets(self.local.probe_targets());
            self.local.set_unhealthy(self.health.down());
        }
        if !touched.is_empty() {
            self.l2status_stale = true;
        }
        self.relink_some(touched.iter().copied());
        let mut events = self.local.eligibility_of(touched);
        events.push(Event::Planned);
        events
    }

    /// Another host claims a VIP we answer for (the data plane saw its
    /// frames): say so on the Services, count it, and defend the VIP.
    fn defend_claimed(&mut self) {
        let seen = match self.answer.new_conflicts() {
            Ok(seen) => seen,
            Err(e) => {
                warn!(error = %error_chain(&e), "cannot read the conflicts");
                return;
            }
        };
        let node = self.election.node().to_string();
        for c in seen {
            metrics::update(&self.metrics, |m| {
                *m.conflicts.entry(c.vip).or_default() += c.frames;
            });
            // The Event goes with the defence, so both are rate-limited.
            if !self.answer.defend(c.vip, Instant::now()) {
                continue;
            }
            self.events.address_conflict(
                self.local.services(c.vip),
                c.vip,
                &c.link.to_string(),
                &fmt_mac(&c.other_mac),
                &node,
            );
        }
    }

    /// What MetalLB's ServiceL2Status objects must say for this node: the
    /// Services of the VIPs it answers, and which other nodes hold another
    /// of their VIPs.
    fn announced_services(&self) -> l2status::Announced {
        let mut out: l2status::Announced = BTreeMap::new();
        for (vip, _) in self.answer.answered() {
            let interfaces = self.local.interfaces(vip);
            for s in self.local.services(vip) {
                out.entry(s.clone()).or_default().interfaces = interfaces.clone();
            }
        }
        let me = self.election.node();
        for (vip, services) in self.local.planned() {
            let Some(holder) = self.election.holder(&vip).filter(|h| *h != me) else {
                continue;
            };
            for s in services {
                if let Some(e) = out.get_mut(s) {
                    e.others.insert(holder.to_string());
                }
            }
        }
        out
    }

    /// Probes the endpoints of the VIPs we answer for (and of those set
    /// aside), each at most once at a time, each given a period or
    /// [`probe::MIN_TIMEOUT`], whichever is longer.
    fn probe_round(&mut self, period: Duration) {
        let Some(tx) = &self.probe_tx else { return };
        let owned = self.election.owned().map(|(vip, _)| vip);
        for target in self.health.due(owned) {
            if !self.probes_in_flight.insert(target) {
                continue;
            }
            let tx = tx.clone();
            tokio::spawn(async move {
                let outcome = probe::probe(target, period.max(probe::MIN_TIMEOUT)).await;
                let _ = tx.send((target, outcome)).await;
            });
        }
    }

    /// A probe's result: VIPs whose endpoints here stopped (or resumed)
    /// serving are handed over (or may be announced again).
    fn probed(&mut self, target: SocketAddr, outcome: Outcome) -> Vec<Event> {
        self.probes_in_flight.remove(&target);
        let changed = self.health.result(target, outcome);
        if changed.is_empty() {
            return Vec::new();
        }
        for (vip, down) in &changed {
            if *down {
                warn!(%vip, "this node's endpoints fail the local probe; handing the VIP over");
                metrics::update(&self.metrics, |m| m.probe_handovers += 1);
            } else {
                info!(%vip, "this node's endpoints pass the local probe again");
            }
        }
        self.local.set_unhealthy(self.health.down());
        self.eligibility()
    }

    fn eligibility(&mut self) -> Vec<Event> {
        let owned: Vec<_> = self.election.owned().map(|(vip, _)| vip).collect();
        self.local.eligibility(owned)
    }

    /// Makes the map hold exactly what the election says we answer for,
    /// counting any difference, and exports the data plane's counters.
    fn repair(&mut self) {
        if self.local.failures_expired(Instant::now()) {
            let events = self.eligibility();
            self.handle(events);
        }
        let (drift, consistent) = match self.answer.repair(self.election.owned()) {
            Ok(0) => (0, true),
            Ok(n) => {
                warn!(
                    entries = n,
                    "the VIP map differed from the election's view; repaired"
                );
                (n as u64, false)
            }
            Err(e) => {
                warn!(error = %error_chain(&e), "cannot repair the VIP map");
                (0, false)
            }
        };
        self.defend_claimed();
        let counters = self.answer.counters().ok();
        let figures = self.answer.figures().unwrap_or_default();
        let owned = self.answer.answered().count() as u64;
        let announced: Vec<(String, IpAddr)> = self
            .answer
            .answered()
            .flat_map(|(vip, _)| {
                let services = self.local.services(vip).iter();
                services.map(move |s| (format!("{}/{}", s.namespace, s.name), vip))
            })
            .collect();
        // Rebuilt only after a change: it reads the whole plan.
        if std::mem::take(&mut self.l2status_stale) {
            self.l2status.set(self.announced_services());
        }
        let consistent = consistent && !self.local.any_failed();
        metrics::update(&self.metrics, |m| {
            m.announced = announced;
            m.vips = figures;
            m.repairs += drift;
            m.consistent = consistent;
            m.xdp = counters;
            m.vips_owned = owned;
        });
        let holding = self.election.holding();
        metrics::update(&self.metrics, |m| m.holding = holding);
    }
}
