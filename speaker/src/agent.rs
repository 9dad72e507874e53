//! `speaker agent`: the Kubernetes mode. Watches the cluster, computes which
//! VIPs this node may announce (eligibility), runs the election with its
//! peers (election), and keeps the data plane and the announcements in step
//! with what the election decides.
//!
//! One task owns the election, the data plane and the announcer; API
//! requests run as tasks whose results come back as events, each bounded by
//! a timeout, so an unreachable API server only makes requests fail.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use k8s_openapi::api::{coordination::v1::Lease, core::v1::ObjectReference};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use speaker_common::{
    maps::{VipEntry, VipKey},
    wire::ipv6::solicited_node,
};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
    time::timeout,
};
use tracing::{debug, info, info_span, warn};

use crate::{
    announce::{Announcer, BurstSettings, PacketSocket},
    dataplane::{AttachMode, Dataplane, error_chain, monotonic_now_ns},
    election::{Action, Election, Event, Mono, Timings, WriteOutcome},
    eligibility::{self, Plan, Settings},
    k8s::{
        leases::{Leases, REQUEST_TIMEOUT},
        watch::{self, ClusterStores},
    },
    metrics::{self, Metrics},
    netdev::{Link, Membership},
};

pub struct AgentConfig {
    pub node: String,
    pub namespace: String,
    /// Where VIPs are announced when an L2Advertisement names no interfaces.
    pub default_links: Vec<String>,
    pub settings: Settings,
    pub timings: Timings,
    pub burst: BurstSettings,
    pub bpffs: std::path::PathBuf,
    pub xdp_mode: AttachMode,
    pub metrics_addr: SocketAddr,
}

/// How long a stopping agent waits for its releases to be written.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// How often the map is compared with what the election says we own.
const REPAIR_INTERVAL: Duration = Duration::from_secs(1);
/// How often interface carriers are checked.
const CARRIER_INTERVAL: Duration = Duration::from_millis(100);
/// Record writes in flight at most: a mass takeover must not crowd out the
/// node-lease renewals every answer depends on.
const MAX_RECORD_WRITES: usize = 16;

/// Inputs of the agent's loop besides timers and signals.
enum Input {
    Election(Event),
    Renewed {
        sent_at: Mono,
        lease: Option<Box<Lease>>,
    },
}

/// What this node does for a VIP it owns.
struct Owned {
    links: Vec<Link>,
    _groups: Vec<Membership>,
}

pub async fn run(cfg: AgentConfig) -> Result<()> {
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    cfg.timings.validate().context("unsafe election timings")?;
    let client = kube::Client::try_default().await.context(
        "cannot configure a Kubernetes client (KUBECONFIG, or in-cluster service account)",
    )?;
    let metrics = Arc::new(Mutex::new(Metrics::default()));
    metrics::serve(cfg.metrics_addr, metrics.clone()).await?;

    let mut dp = Dataplane::load(&cfg.bpffs)?;
    let mut agent = Agent {
        default_links: cfg
            .default_links
            .iter()
            .map(|s| Link::lookup(s))
            .collect::<Result<_, _>>()?,
        links_by_name: HashMap::new(),
        attached: HashMap::new(),
        owned: BTreeMap::new(),
        announcer: Announcer::new(cfg.burst),
        plan: Plan {
            vips: BTreeMap::new(),
            issues: Vec::new(),
        },
        reported: BTreeSet::new(),
        carriers: BTreeMap::new(),
        told: BTreeMap::new(),
        writes: Arc::new(tokio::sync::Semaphore::new(MAX_RECORD_WRITES)),
        metrics: metrics.clone(),
        node: cfg.node.clone(),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "speaker".into(),
                instance: Some(cfg.node.clone()),
            },
        ),
    };
    for link in agent.default_links.clone() {
        agent.attach(&mut dp, &link.iface, cfg.xdp_mode)?;
    }
    let stores = ClusterStores::start(&client);
    let mut changed = stores.changed.clone();
    let (tx, mut rx) = mpsc::unbounded_channel::<Input>();
    let (lease_tx, mut lease_rx) = mpsc::unbounded_channel::<Event>();
    watch::leases(&client, &cfg.namespace, lease_tx);
    let leases = Leases::new(
        client,
        &cfg.namespace,
        &cfg.node,
        cfg.timings.lease_duration,
    );
    let mut election = Election::new(&cfg.node, cfg.timings);
    let mut own_lease: Option<Lease> = None;
    let mut repair = tokio::time::interval(REPAIR_INTERVAL);
    let mut carrier = tokio::time::interval(CARRIER_INTERVAL);
    let mut stop_by: Option<Instant> = None;
    info!(node = %cfg.node, namespace = %cfg.namespace, "agent started");

    loop {
        let now = monotonic_now_ns();
        let wake = mono_to_instant(election.next_wakeup(now), now)
            .min(agent.announcer.next_deadline().unwrap_or(far()));
        let mut events = Vec::new();
        tokio::select! {
            Some(ev) = lease_rx.recv() => events.push(ev),
            Some(input) = rx.recv() => match input {
                Input::Election(ev) => events.push(ev),
                Input::Renewed { sent_at, lease } => {
                    let ok = lease.is_some();
                    own_lease = lease.map(|l| *l);
                    agent.count(|m| if ok { m.renewals_ok += 1 } else { m.renewals_failed += 1 });
                    events.push(Event::RenewDone { sent_at, ok });
                }
            },
            Ok(()) = changed.changed() => {
                if stores.ready() {
                    agent.plan = eligibility::plan(&stores.snapshot(), &cfg.settings);
                    agent.report_issues();
                    events.extend(agent.eligibility());
                }
            }
            _ = carrier.tick() => {
                if agent.carriers_changed() {
                    events.extend(agent.eligibility());
                }
            }
            _ = repair.tick() => {
                agent.repair(&mut dp, &election);
                agent.export_counters(&dp);
            }
            _ = sigterm.recv(), if stop_by.is_none() => {
                info!("SIGTERM: handing VIPs over");
                stop_by = Some(Instant::now() + STOP_GRACE);
                events.push(Event::Shutdown);
            }
            _ = sigint.recv(), if stop_by.is_none() => {
                info!("SIGINT: handing VIPs over");
                stop_by = Some(Instant::now() + STOP_GRACE);
                events.push(Event::Shutdown);
            }
            _ = tokio::time::sleep_until(wake.into()) => events.push(Event::Tick),
        }
        for ev in events {
            let actions = election.handle(monotonic_now_ns(), ev);
            for action in actions {
                agent
                    .act(
                        &mut dp,
                        &election,
                        action,
                        &leases,
                        &own_lease,
                        &tx,
                        cfg.xdp_mode,
                    )
                    .await;
            }
        }
        for (vip, link) in agent.announcer.due(Instant::now()) {
            announce(&agent.attached, vip, &link);
        }
        if let Some(by) = stop_by
            && (election.stopped() || Instant::now() >= by)
        {
            break;
        }
    }
    for vip in agent.owned.keys().copied().collect::<Vec<_>>() {
        agent.remove(&mut dp, vip);
    }
    dp.detach_all();
    dp.unpin();
    info!("stopped: VIPs handed over, XDP detached, pins removed");
    Ok(())
}

fn far() -> Instant {
    Instant::now() + Duration::from_secs(3600)
}

fn mono_to_instant(at: Mono, now: Mono) -> Instant {
    Instant::now() + Duration::from_nanos(at.saturating_sub(now).min(3600 * 1_000_000_000))
}

fn announce(attached: &HashMap<u32, PacketSocket>, vip: IpAddr, link: &Link) {
    if let Some(socket) = attached.get(&link.iface.ifindex)
        && let Err(e) = crate::announce::send(socket, link, vip)
    {
        warn!(%vip, %link, error = %e, "cannot send announcement");
    }
}

struct Agent {
    default_links: Vec<Link>,
    links_by_name: HashMap<String, Option<Link>>,
    /// Interfaces with the program attached, and a socket to announce on.
    attached: HashMap<u32, PacketSocket>,
    owned: BTreeMap<IpAddr, Owned>,
    announcer: Announcer<(IpAddr, Link)>,
    plan: Plan,
    reported: BTreeSet<String>,
    carriers: BTreeMap<u32, bool>,
    /// The eligibility last given to the election, per VIP.
    told: BTreeMap<IpAddr, (bool, Vec<String>)>,
    writes: Arc<tokio::sync::Semaphore>,
    metrics: Arc<Mutex<Metrics>>,
    node: String,
    recorder: Recorder,
}

impl Agent {
    fn count(&self, f: impl FnOnce(&mut Metrics)) {
        if let Ok(mut m) = self.metrics.lock() {
            f(&mut m);
        }
    }

    fn attach(
        &mut self,
        dp: &mut Dataplane,
        iface: &crate::netdev::Interface,
        mode: AttachMode,
    ) -> Result<()> {
        if self.attached.contains_key(&iface.ifindex) {
            return Ok(());
        }
        dp.attach(iface, mode)?;
        let socket = PacketSocket::open(iface.ifindex)
            .with_context(|| format!("cannot open a packet socket on {}", iface.name))?;
        self.attached.insert(iface.ifindex, socket);
        Ok(())
    }

    /// The links this node announces `vip` on: the plan's interfaces, or
    /// the default ones.
    fn links(&mut self, vip: IpAddr) -> Vec<Link> {
        let names: Vec<String> = self
            .plan
            .vips
            .get(&vip)
            .and_then(|p| p.nodes.get(&self.node))
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        if names.is_empty() {
            return self.default_links.clone();
        }
        names
            .iter()
            .filter_map(|n| {
                self.links_by_name
                    .entry(n.clone())
                    .or_insert_with(|| match Link::lookup(n) {
                        Ok(l) => Some(l),
                        Err(e) => {
                            warn!(interface = %n, error = %e, "L2Advertisement names an interface this node cannot use");
                            None
                        }
                    })
                    .clone()
            })
            .collect()
    }

    /// Eligibility of every VIP in the plan (or owned) for this node.
    /// Only what changed since last time: each event makes the election
    /// look at every VIP, which adds up with a thousand of them.
    fn eligibility(&mut self) -> Vec<Event> {
        let mut vips: BTreeSet<IpAddr> = self.plan.vips.keys().copied().collect();
        vips.extend(self.owned.keys().copied());
        vips.extend(self.told.keys().copied());
        let mut out = Vec::new();
        for vip in vips {
            let candidates: Vec<String> = self
                .plan
                .vips
                .get(&vip)
                .map(|p| p.nodes.keys().cloned().collect())
                .unwrap_or_default();
            let planned = candidates.contains(&self.node);
            // An interface without carrier cannot answer: hand over at once.
            let links = if planned { self.links(vip) } else { Vec::new() };
            let up = links
                .iter()
                .any(|l| *self.carriers.get(&l.iface.ifindex).unwrap_or(&true));
            let now = (planned && up, candidates);
            if self.told.get(&vip) == Some(&now) {
                continue;
            }
            self.told.insert(vip, now.clone());
            out.push(Event::Eligibility {
                vip,
                eligible: now.0,
                candidates: now.1,
            });
        }
        out
    }

    fn carriers_changed(&mut self) -> bool {
        let mut changed = false;
        let links: Vec<Link> = self
            .default_links
            .iter()
            .chain(self.links_by_name.values().flatten())
            .cloned()
            .collect();
        for link in links {
            let up = link.iface.is_running().unwrap_or(false);
            if self.carriers.insert(link.iface.ifindex, up) != Some(up) {
                info!(interface = %link.iface.name, up, "carrier");
                changed = true;
            }
        }
        changed
    }

    /// Logs each configuration problem once, and posts it as a Warning
    /// Event on the object at fault, where `kubectl describe` shows it.
    fn report_issues(&mut self) {
        let fresh: Vec<eligibility::Issue> = self
            .plan
            .issues
            .iter()
            .filter(|i| self.reported.insert(i.to_string()))
            .cloned()
            .collect();
        for issue in fresh {
            warn!(issue = %issue, "configuration problem");
            let o = &issue.object;
            let (api_version, ns) = match o.kind {
                "IPAddressPool" | "L2Advertisement" => {
                    ("metallb.io/v1beta1", Some(o.namespace.clone()))
                }
                "Node" => ("v1", None),
                _ => ("v1", Some(o.namespace.clone())),
            };
            let reference = ObjectReference {
                api_version: Some(api_version.into()),
                kind: Some(o.kind.into()),
                namespace: ns.filter(|n| !n.is_empty()),
                name: Some(o.name.clone()),
                ..Default::default()
            };
            let note = issue.message.clone();
            self.publish(
                EventType::Warning,
                "ConfigurationProblem",
                "Plan",
                note,
                &reference,
            );
        }
    }

    /// Posts an Event from a task of its own: the loop never waits on the
    /// API for it (a thousand takeovers would otherwise stall renewals).
    fn publish(
        &self,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
        reference: &ObjectReference,
    ) {
        let ev = KubeEvent {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        let (recorder, reference) = (self.recorder.clone(), reference.clone());
        tokio::spawn(async move {
            match timeout(REQUEST_TIMEOUT, recorder.publish(&ev, &reference)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => debug!(error = %e, "cannot post event"),
                Err(_) => debug!("posting an event timed out"),
            }
        });
    }

    #[allow(clippy::too_many_arguments)]
    async fn act(
        &mut self,
        dp: &mut Dataplane,
        election: &Election,
        action: Action,
        leases: &Leases,
        own_lease: &Option<Lease>,
        tx: &mpsc::UnboundedSender<Input>,
        mode: AttachMode,
    ) {
        match action {
            Action::RenewNodeLease => {
                let (sent_at, l, current, tx) = (
                    monotonic_now_ns(),
                    leases.clone(),
                    own_lease.clone(),
                    tx.clone(),
                );
                tokio::spawn(async move {
                    let lease = match timeout(REQUEST_TIMEOUT, l.renew(current)).await {
                        Ok(Ok(lease)) => Some(Box::new(lease)),
                        Ok(Err(e)) => {
                            debug!(error = %e, "lease renewal failed");
                            None
                        }
                        Err(_) => None,
                    };
                    let _ = tx.send(Input::Renewed { sent_at, lease });
                });
            }
            Action::ReadNodeLease { req, node } => {
                let (l, tx) = (leases.clone(), tx.clone());
                tokio::spawn(async move {
                    let (rv, ok) = match timeout(REQUEST_TIMEOUT, l.read_node(&node)).await {
                        Ok(Ok(rv)) => (rv, true),
                        _ => (None, false),
                    };
                    let _ = tx.send(Input::Election(Event::NodeLeaseRead { req, rv, ok }));
                });
            }
            Action::WriteRecord {
                req,
                vip,
                expect,
                holder,
                term,
            } => {
                let (l, tx, metrics) = (leases.clone(), tx.clone(), self.metrics.clone());
                let writes = self.writes.clone();
                tokio::spawn(async move {
                    let _permit = writes.acquire().await;
                    let outcome =
                        timeout(REQUEST_TIMEOUT, l.write_record(vip, expect, holder, term))
                            .await
                            .unwrap_or(WriteOutcome::Failed);
                    if let Ok(mut m) = metrics.lock() {
                        match outcome {
                            WriteOutcome::Written(_) => m.record_writes_ok += 1,
                            WriteOutcome::Conflict => m.record_conflicts += 1,
                            WriteOutcome::Failed => m.record_writes_failed += 1,
                        }
                    }
                    let _ = tx.send(Input::Election(Event::WriteDone { req, outcome }));
                });
            }
            Action::Install { vip, expires } => {
                let _span = info_span!("vip", %vip).entered();
                let links = self.links(vip);
                let mut groups = Vec::new();
                for link in &links {
                    if let Err(e) = self.attach(dp, &link.iface, mode) {
                        warn!(%link, error = %error_chain(e.as_ref()), "cannot attach");
                        continue;
                    }
                    if let Err(e) = dp.set_vip(
                        &link.key(vip),
                        &VipEntry {
                            mac: link.iface.mac,
                            _pad: [0; 2],
                            expires_ns: expires,
                        },
                    ) {
                        warn!(%link, error = %error_chain(&e), "cannot install VIP");
                    }
                    if let IpAddr::V6(v6) = vip {
                        match Membership::join(
                            link.iface.ifindex,
                            solicited_node(&v6.octets()).into(),
                        ) {
                            Ok(m) => groups.push(m),
                            Err(e) => {
                                warn!(%link, error = %e, "cannot join the solicited-node group")
                            }
                        }
                    }
                    self.announcer.start((vip, link.clone()), Instant::now());
                }
                info!(links = ?links.iter().map(ToString::to_string).collect::<Vec<_>>(), "announcing");
                self.owned.insert(
                    vip,
                    Owned {
                        links,
                        _groups: groups,
                    },
                );
                self.count(|m| m.takeovers += 1);
                self.post_event(vip, election.node());
            }
            Action::Refresh { vip, expires } => {
                if let Some(o) = self.owned.get(&vip) {
                    for link in &o.links {
                        let entry = VipEntry {
                            mac: link.iface.mac,
                            _pad: [0; 2],
                            expires_ns: expires,
                        };
                        if let Err(e) = dp.set_vip(&link.key(vip), &entry) {
                            warn!(%vip, %link, error = %error_chain(&e), "cannot refresh VIP");
                        }
                    }
                }
            }
            Action::Remove { vip } => {
                info!(%vip, "no longer announcing");
                self.remove(dp, vip);
            }
        }
    }

    fn remove(&mut self, dp: &mut Dataplane, vip: IpAddr) {
        let Some(o) = self.owned.remove(&vip) else {
            return;
        };
        for link in &o.links {
            if let Err(e) = dp.remove_vip(&link.key(vip)) {
                warn!(%vip, %link, error = %error_chain(&e), "cannot remove VIP");
            }
            self.announcer.stop(&(vip, link.clone()));
        }
    }

    /// A Kubernetes Event on each Service of the VIP naming this node, as
    /// MetalLB does.
    fn post_event(&self, vip: IpAddr, node: &str) {
        let Some(p) = self.plan.vips.get(&vip) else {
            return;
        };
        for svc in &p.services {
            let reference = ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Service".into()),
                namespace: Some(svc.namespace.clone()),
                name: Some(svc.name.clone()),
                ..Default::default()
            };
            let note = format!("announcing {vip} from node {node}");
            self.publish(
                EventType::Normal,
                "nodeAssigned",
                "Announce",
                note,
                &reference,
            );
        }
    }

    /// Makes the map hold exactly what the election says we answer for
    /// (with the expiry it set), repairing and counting any difference.
    fn repair(&mut self, dp: &mut Dataplane, election: &Election) {
        let mut want: BTreeMap<VipKey, VipEntry> = BTreeMap::new();
        for (vip, expires) in election.owned() {
            for link in self
                .owned
                .get(&vip)
                .map(|o| o.links.as_slice())
                .unwrap_or_default()
            {
                want.insert(
                    link.key(vip),
                    VipEntry {
                        mac: link.iface.mac,
                        _pad: [0; 2],
                        expires_ns: expires,
                    },
                );
            }
        }
        let have: BTreeMap<VipKey, VipEntry> = match dp.vips() {
            Ok(h) => h.into_iter().collect(),
            Err(e) => {
                warn!(error = %error_chain(&e), "cannot read the VIP map");
                return;
            }
        };
        let mut drift = 0;
        for k in have.keys().filter(|k| !want.contains_key(k)) {
            drift += 1;
            let _ = dp.remove_vip(k);
        }
        for (k, e) in want.iter().filter(|(k, e)| have.get(k) != Some(e)) {
            drift += 1;
            let _ = dp.set_vip(k, e);
        }
        if drift > 0 {
            warn!(
                entries = drift,
                "the VIP map differed from the election's view; repaired"
            );
        }
        self.count(|m| {
            m.repairs += drift;
            m.consistent = drift == 0;
        });
    }

    fn export_counters(&self, dp: &Dataplane) {
        let counters = dp.counters().ok();
        let owned = self.owned.len() as u64;
        self.count(|m| {
            m.xdp = counters;
            m.vips_owned = owned;
        });
    }
}
