//! Scale: real `speaker agent` processes in a large cluster, against the
//! API stand-in: 1,000 Ready Nodes (all eligible), 1,000 LoadBalancer VIPs,
//! and 10,000 EndpointSlices of other Services changing at 100 per second.
//! Per agent: the loop's time per event, CPU, memory, node-lease renewal
//! latency and lapses over a steady window, then the time for every VIP to
//! have a live owner again after the owner of about a third is killed.
//!
//! The landed version (commit [`BASELINE`]) runs first, then the
//! workspace's own binary, on the same world and the same churn, so the
//! table shows the two side by side. The baseline is built once from a git
//! worktree of that commit, with its own `cargo xtask build` (which embeds
//! the XDP object built from the same commit), into target/baseline/.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};
use speaker_tests::{
    agent::{Agent, speaker_bin},
    apiserver::{
        ApiServer, ENDPOINT_SLICES, IP_ADDRESS_POOLS, L2_ADVERTISEMENTS, LEASES, NAMESPACES, NODES,
        SERVICE_L2_STATUSES, SERVICES,
    },
    netns::Netns,
    scenario::{Scenario, node},
};

/// The landed code, plus the `speaker_event_seconds` histogram both
/// versions export.
const BASELINE: &str = "c72c4537888a1d6e4bf68fc9484accbc0b124562";
/// Agent processes: three, the most this benchmark's 2-CPU machine carries
/// next to the stand-in and the churn.
const AGENTS: usize = 3;
const NODES_TOTAL: usize = 1000;
const VIPS: usize = 1000;
const CHURN_SLICES: usize = 10_000;
/// The churned Services live in this many namespaces of their own.
const CHURN_NAMESPACES: usize = 10;
const CHURN_PER_S: u32 = 100;
/// The churn runs this long before the window opens.
const WARMUP: Duration = Duration::from_secs(10);
const WINDOW: Duration = Duration::from_secs(60);
/// An agent attaches its XDP program after its start-up checks, which
/// list each resource (all 11,000 Services: the stand-in ignores
/// `limit`), while the agents started before it read the whole world.
const START_WITHIN: Duration = Duration::from_secs(60);
const OWN_ALL_WITHIN: Duration = Duration::from_secs(180);
const STATUSES_WITHIN: Duration = Duration::from_secs(120);
const CONVERGE_WITHIN: Duration = Duration::from_secs(120);
/// Longer than the 2 s of `Scenario::metrics`: an agent's page waits for
/// its loop.
const SCRAPE_WITHIN: Duration = Duration::from_secs(10);

/// The targets of the issue.
const EVENT_P99_TARGET: f64 = 0.001;
const RENEWAL_P99_TARGET: f64 = 0.1;
const RSS_TARGET_MIB: f64 = 150.0;

pub fn run(md: &mut String) -> Result<()> {
    let _signals = Signals::catch();
    let baseline = baseline_bin()?;
    let short = &BASELINE[..7];
    let mut runs = Vec::new();
    for (label, bin) in [
        (format!("baseline {short}"), baseline),
        ("this tree".to_string(), speaker_bin()),
    ] {
        eprintln!("bench: scale, {label}: {}", bin.display());
        runs.push(measure(label, &bin)?);
    }
    write(md, &runs)
}

/// What one version showed.
struct Run {
    label: String,
    agents: Vec<Figures>,
    /// From starting the first agent until every VIP had an owner, and the
    /// VIPs owned when that wait ended.
    all_owned: Option<Duration>,
    owned: usize,
    /// ... and until every Service had its ServiceL2Status (if it did).
    statuses: Option<Duration>,
    /// Over the window: churn writes achieved per second, the bench
    /// process's CPU (the stand-in and the churn), the machine's busy
    /// share, API requests per second.
    churn_per_s: f64,
    stand_in_cpu: f64,
    machine_busy: f64,
    api_per_s: f64,
    /// The VIPs owned at the window's end; the owner of most is killed
    /// only when that is all of them.
    owned_at_end: usize,
    /// When the wait for every VIP's owner ended.
    settled: Instant,
    /// The agent killed, when.
    victim: Option<(usize, Instant)>,
    victim_vips: usize,
    /// After the kill: every VIP's record held by a live agent; and the
    /// survivors' `speaker_vips_owned` adding up to all of them.
    converged: Option<Duration>,
    answered: Option<Duration>,
}

/// One agent's figures; times in seconds, `None` where the agent's page
/// could not be read.
struct Figures {
    node: String,
    vips: usize,
    cluster_per_s: Option<f64>,
    cluster: [Option<f64>; 2],
    lease: [Option<f64>; 2],
    cpu: Option<f64>,
    rss: f64,
    peak: f64,
    renewal_p99: Option<f64>,
    /// The longest time the node lease went unrenewed in the store, up to
    /// the end of the wait for every VIP's owner, and after it.
    gap_start: Option<Duration>,
    gap_after: Option<Duration>,
    /// Lapses in the window and over the whole run.
    lapses_window: Option<f64>,
    lapses: Option<f64>,
    renewal_failures: Option<f64>,
    killed: bool,
    took_over: usize,
}

fn measure(label: String, bin: &Path) -> Result<Run> {
    let s = Scenario::api_only(AGENTS, &[])?;
    let built = Instant::now();
    populate(&s)?;
    eprintln!(
        "bench: scale: world created in {:.1} s",
        built.elapsed().as_secs_f64()
    );
    // Here rather than in `s.agents`, so that the threads below may borrow
    // `s` while agents are killed; dropped before `s`, as there.
    let mut agents: Vec<Option<Agent>> = Vec::new();
    let stop = AtomicBool::new(false);
    let churned = AtomicU64::new(0);
    let renewals = Renewals::default();
    std::thread::scope(|scope| {
        // However this ends, the threads stop (and the scope joins them).
        let _stop = StopOnDrop(&stop);
        scope.spawn(|| renewals.watch(&s, &stop));
        let mut run = start(&s, &mut agents, bin)?;
        scope.spawn(|| churn(s.lan.cluster.require_stand_in(), &stop, &churned));
        steady(&s, &mut agents, &churned, &mut run)?;
        if run.owned_at_end == VIPS {
            kill_owner(&s, &mut agents, &mut run)?;
        }
        renewals.gaps(&mut run);
        Ok(Run { label, ..run })
    })
}

/// Starts the agents and waits for every VIP to have an owner, and every
/// Service its ServiceL2Status (steady state starts once they are there).
fn start(s: &Scenario, agents: &mut Vec<Option<Agent>>, bin: &Path) -> Result<Run> {
    let started = Instant::now();
    for i in 0..AGENTS {
        let mut agent = spawn(s, i, bin)?;
        agent.wait_ready_within(&s.lan.fronts[i].ns, "eth0", START_WITHIN)?;
        agents.push(Some(agent));
    }
    let owned = || s.holdings().values().sum::<usize>();
    let all_owned = poll(OWN_ALL_WITHIN, Duration::from_millis(100), || {
        Ok(owned() == VIPS)
    })?
    .map(|_| started.elapsed());
    let settled = Instant::now();
    let owned = owned();
    eprintln!("bench: scale: {owned} of {VIPS} VIPs owned after {all_owned:?}");
    let server = s.lan.cluster.require_stand_in();
    let ns = s.lan.cluster.namespace();
    let statuses = match all_owned {
        Some(_) => poll(STATUSES_WITHIN, Duration::from_millis(200), || {
            Ok(server.list(&SERVICE_L2_STATUSES, Some(ns))?.len() == VIPS)
        })?
        .map(|_| started.elapsed()),
        None => None,
    };
    Ok(Run {
        label: String::new(),
        agents: Vec::new(),
        all_owned,
        owned,
        statuses,
        churn_per_s: 0.0,
        stand_in_cpu: 0.0,
        machine_busy: 0.0,
        api_per_s: 0.0,
        owned_at_end: 0,
        settled,
        victim: None,
        victim_vips: 0,
        converged: None,
        answered: None,
    })
}

/// The window: the agents' figures over it, the churn's and the API's.
fn steady(
    s: &Scenario,
    agents: &mut [Option<Agent>],
    churned: &AtomicU64,
    run: &mut Run,
) -> Result<()> {
    let server = s.lan.cluster.require_stand_in();
    pause(WARMUP)?;
    alive(agents)?;
    server.reset_stats();
    let churned_before = churned.load(Ordering::Relaxed);
    let first = Sample::take(s, agents)?;
    pause(WINDOW)?;
    let churned_after = churned.load(Ordering::Relaxed);
    let last = Sample::take(s, agents)?;
    alive(agents)?;
    let secs = last.at.duration_since(first.at).as_secs_f64();
    let holdings = s.holdings();
    for (i, f) in s.lan.fronts.iter().enumerate() {
        let end = last.agents[i].as_ref().context("an agent is gone")?;
        let vips = holdings.get(&f.name).copied().unwrap_or(0);
        run.agents
            .push(figures(&f.name, vips, first.agents[i].as_ref(), end));
    }
    run.churn_per_s = (churned_after - churned_before) as f64 / secs;
    run.stand_in_cpu = cpu_percent(first.own, last.own, secs);
    run.machine_busy = busy_percent(first.machine, last.machine);
    run.api_per_s = server.stats().total.requests as f64 / secs;
    run.owned_at_end = holdings.values().sum();
    Ok(())
}

/// Kills the owner of the most VIPs (about a third), the churn going on,
/// and times until they all have a live owner again; then reads the
/// survivors' counters and peaks over the whole run, kill included.
fn kill_owner(s: &Scenario, agents: &mut [Option<Agent>], run: &mut Run) -> Result<()> {
    let victim = run
        .agents
        .iter()
        .enumerate()
        .max_by_key(|(_, a)| a.vips)
        .map(|(i, _)| i)
        .context("no agent")?;
    run.victim_vips = run.agents[victim].vips;
    let dead = agents[victim].take().context("the agent is gone")?;
    let killed = Instant::now();
    dead.signal(libc::SIGKILL);
    run.victim = Some((victim, killed));
    run.agents[victim].killed = true;
    let live: Vec<usize> = (0..AGENTS).filter(|i| *i != victim).collect();
    let held_by_live = || {
        let h = s.holdings();
        live.iter()
            .filter_map(|i| h.get(&s.lan.fronts[*i].name))
            .sum::<usize>()
    };
    let converged = poll(CONVERGE_WITHIN, Duration::from_millis(50), || {
        Ok(held_by_live() == VIPS)
    })?;
    run.converged = converged.map(|_| killed.elapsed());
    // The data plane's side: the survivors answer for them all.
    if run.converged.is_some() {
        let answering = || {
            live.iter()
                .map(|i| scrape(&s.lan.fronts[*i].ns).sum("speaker_vips_owned", &[]))
                .sum::<f64>()
        };
        run.answered = poll(CONVERGE_WITHIN, Duration::from_millis(100), || {
            Ok(answering() >= VIPS as f64)
        })?
        .map(|_| killed.elapsed());
    }
    eprintln!(
        "bench: scale: the {} VIPs of {} owned again after {:?}, answered after {:?}",
        run.victim_vips, s.lan.fronts[victim].name, run.converged, run.answered
    );
    drop(dead);
    let holdings = s.holdings();
    let end = Sample::take(s, agents)?;
    for (a, e) in run.agents.iter_mut().zip(&end.agents) {
        let Some(e) = e else { continue };
        let now = holdings.get(&a.node).copied().unwrap_or(0);
        a.took_over = now.saturating_sub(a.vips);
        a.lapses = counter(
            &e.page,
            "speaker_answering_stopped_total",
            &[("reason", "lapsed")],
        );
        a.renewal_failures = counter(&e.page, "speaker_lease_renewal_failures_total", &[]);
        a.peak = a.peak.max(e.memory.1);
    }
    Ok(())
}

/// When each agent's node lease changed in the store, seen every 50 ms
/// from before the agents start to the end: the longest gap is the
/// longest a node went unrenewed as the other nodes see it (over the
/// lease duration, 2 s: a lapse), whatever the agent's own counters say.
#[derive(Default)]
struct Renewals(std::sync::Mutex<Vec<Vec<Instant>>>);

impl Renewals {
    fn watch(&self, s: &Scenario, stop: &AtomicBool) {
        let server = s.lan.cluster.require_stand_in();
        let ns = s.lan.cluster.namespace();
        let names: Vec<String> = s
            .lan
            .fronts
            .iter()
            .map(|f| speaker::k8s::leases::node_lease_name(&f.name))
            .collect();
        let mut seen = vec![String::new(); names.len()];
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            for (i, name) in names.iter().enumerate() {
                let Ok(lease) = server.get(&LEASES, Some(ns), name) else {
                    continue;
                };
                let rv = lease["metadata"]["resourceVersion"].as_str().unwrap_or("");
                if rv != seen[i] {
                    seen[i] = rv.to_string();
                    let mut times = self.0.lock().unwrap_or_else(|e| e.into_inner());
                    times.resize(names.len(), Vec::new());
                    times[i].push(now);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Each agent's longest gap from its first renewal to the end (for the
    /// killed agent, to its kill), split where the wait for every VIP's
    /// owner ended: start-up (reading the world, electing) and after.
    fn gaps(&self, run: &mut Run) {
        let end = Instant::now();
        let times = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let split = run.settled;
        for (i, a) in run.agents.iter_mut().enumerate() {
            let until = match run.victim {
                Some((v, at)) if v == i => at,
                _ => end,
            };
            let Some(t) = times.get(i).filter(|t| !t.is_empty()) else {
                continue;
            };
            let (mut start, mut after) = (Duration::ZERO, Duration::ZERO);
            for (from, to) in t.iter().zip(t.iter().skip(1).chain([&until])) {
                start = start.max((*to).min(split).saturating_duration_since(*from));
                after = after.max(to.saturating_duration_since((*from).max(split)));
            }
            a.gap_start = Some(start);
            a.gap_after = Some(after);
        }
    }
}

struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Agent `i` of `s`, started from `bin`, as `Scenario::spawn_as` starts
/// one, logging at the level it has in a cluster.
fn spawn(s: &Scenario, i: usize, bin: &Path) -> Result<Agent> {
    let f = &s.lan.fronts[i];
    let kubeconfig = s.lan.cluster.kubeconfig(i).as_os_str();
    let ns = s.lan.cluster.namespace();
    #[rustfmt::skip]
    let args = ["agent", "--node-name", &f.name, "--namespace", ns, "--config-namespace", ns, "-i", "eth0", "--metrics-addr", "127.0.0.1:7474", "--on-sigterm", "handover"];
    let env = [("KUBECONFIG", kubeconfig), ("RUST_LOG", "info".as_ref())];
    let bpffs = PathBuf::from(format!("/sys/fs/bpf/{}", f.ns.name()));
    Agent::start_bin(bin, &f.ns, &args, &env, bpffs)
}

/// Fails, with its log, when an agent has exited.
fn alive(agents: &mut [Option<Agent>]) -> Result<()> {
    for (i, a) in agents.iter_mut().enumerate() {
        if let Some(a) = a
            && !a.running()
        {
            bail!("the agent of front-{i} exited:\n{}", tail(&a.log()));
        }
    }
    Ok(())
}

/// The last 40 lines of a log.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

// --- The world ---

fn vip(i: usize) -> String {
    format!("198.19.{}.{}", i / 250, 1 + i % 250)
}

/// The agentless Nodes' names; the agents' are `front-N`.
fn node_name(k: usize) -> String {
    format!("node-{k}")
}

/// Creates, straight in the stand-in's store, everything but the agents'
/// own Nodes (which `Scenario` made at their real addresses): the other
/// Nodes, the pool and an advertisement for every node, the VIPs'
/// Services with ready endpoints and their address in the status (no
/// controller needed), and the churned Services and EndpointSlices.
fn populate(s: &Scenario) -> Result<()> {
    let server = s.lan.cluster.require_stand_in();
    let ns = s.lan.cluster.namespace();
    for k in 0..NODES_TOTAL - AGENTS {
        let ip = format!("198.18.{}.{}", 4 + k / 250, 1 + k % 250);
        server.create(&NODES, None, node(&node_name(k), &ip))?;
    }
    // Scenario made a pool and an advertisement for the front nodes: this
    // world has one pool for all VIPs and no node selector.
    s.lan.cluster.replace(
        &IP_ADDRESS_POOLS,
        json!({"metadata": {"name": "front"}, "spec": {"addresses": ["198.19.0.0/22"]}}),
    )?;
    s.lan.cluster.replace(
        &L2_ADVERTISEMENTS,
        json!({"metadata": {"name": "front"}, "spec": {"ipAddressPools": ["front"]}}),
    )?;
    for i in 0..VIPS {
        let name = format!("lb-{i}");
        server.create(
            &SERVICES,
            Some(ns),
            json!({
                "metadata": {"name": name},
                "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Cluster", "ports": [{"port": 80}],
                         "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack"},
                "status": {"loadBalancer": {"ingress": [{"ip": vip(i)}]}}
            }),
        )?;
        let ep = |n: usize| format!("10.{}.{}.{}", 200 + n, i / 256, i % 256);
        server.create(
            &ENDPOINT_SLICES,
            Some(ns),
            slice(
                &name,
                [
                    (ep(0), node_name(2 * i % 997), true),
                    (ep(1), node_name((2 * i + 1) % 997), true),
                ],
            ),
        )?;
    }
    for n in 0..CHURN_NAMESPACES {
        server.create(
            &NAMESPACES,
            None,
            json!({"metadata": {"name": churn_namespace(n)}}),
        )?;
    }
    for j in 0..CHURN_SLICES {
        let ns = churn_namespace(j % CHURN_NAMESPACES);
        server.create(
            &SERVICES,
            Some(&ns),
            json!({"metadata": {"name": format!("app-{j}")},
                   "spec": {"type": "ClusterIP", "ports": [{"port": 80}]}}),
        )?;
        server.create(&ENDPOINT_SLICES, Some(&ns), churn_slice(j, true))?;
    }
    Ok(())
}

fn churn_namespace(n: usize) -> String {
    format!("apps-{n}")
}

/// An EndpointSlice of Service `service` with endpoints (address, node, ready).
fn slice(service: &str, endpoints: [(String, String, bool); 2]) -> Value {
    let endpoints: Vec<Value> = endpoints
        .into_iter()
        .map(|(addr, node, ready)| {
            json!({"addresses": [addr], "conditions": {"ready": ready}, "nodeName": node})
        })
        .collect();
    json!({
        "metadata": {"name": format!("{service}-1"), "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints
    })
}

/// The slice of churned Service `j`, its first endpoint `ready`.
fn churn_slice(j: usize, ready: bool) -> Value {
    let ep = |n: usize| format!("10.{}.{}.{}", 100 + j / 256, j % 256, n + 1);
    slice(
        &format!("app-{j}"),
        [
            (ep(0), node_name(j % 997), ready),
            (ep(1), node_name((j + 1) % 997), true),
        ],
    )
}

/// Flips the ready condition of one churned slice's first endpoint every
/// 1/[`CHURN_PER_S`] s, round-robin, straight in the store (the agents see
/// it through their watches as any write), until `stop`; counts the
/// writes in `done`.
fn churn(server: &ApiServer, stop: &AtomicBool, done: &AtomicU64) {
    let every = Duration::from_secs(1) / CHURN_PER_S;
    let mut ready = vec![true; CHURN_SLICES];
    let mut next = Instant::now();
    let mut j = 0;
    while !stop.load(Ordering::Relaxed) {
        ready[j] = !ready[j];
        let ns = churn_namespace(j % CHURN_NAMESPACES);
        if server
            .replace(&ENDPOINT_SLICES, Some(&ns), churn_slice(j, ready[j]))
            .is_ok()
        {
            done.fetch_add(1, Ordering::Relaxed);
        }
        j = (j + 1) % CHURN_SLICES;
        // A fixed schedule: a late write is made up for at once.
        next += every;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
}

// --- Measuring ---

/// What the window's ends read from each agent and the machine.
struct Sample {
    at: Instant,
    /// Per agent, `None` once it is gone.
    agents: Vec<Option<AgentSample>>,
    /// This process's ticks: the stand-in and the churn.
    own: u64,
    /// The machine's (busy, total) ticks.
    machine: (u64, u64),
}

struct AgentSample {
    /// When the page was read (a busy agent answers late).
    at: Instant,
    page: Page,
    /// utime + stime, in clock ticks.
    ticks: u64,
    /// (VmRSS, VmHWM) in MiB.
    memory: (f64, f64),
}

impl Sample {
    fn take(s: &Scenario, agents: &[Option<Agent>]) -> Result<Self> {
        let mut out = Self {
            at: Instant::now(),
            agents: Vec::new(),
            own: process_ticks(std::process::id())?,
            machine: machine_ticks()?,
        };
        for (f, a) in s.lan.fronts.iter().zip(agents) {
            let Some(a) = a else {
                out.agents.push(None);
                continue;
            };
            let page = scrape(&f.ns);
            out.agents.push(Some(AgentSample {
                at: Instant::now(),
                page,
                ticks: process_ticks(a.pid())?,
                memory: a.memory()?,
            }));
        }
        Ok(out)
    }
}

/// The agent's metrics in namespace `ns`; empty when it does not answer
/// within [`SCRAPE_WITHIN`]: its loop and its metrics listener share one
/// thread, so a long event delays the page.
fn scrape(ns: &Netns) -> Page {
    use std::io::{Read as _, Write as _};
    let reply = ns.enter(|| {
        let mut conn = std::net::TcpStream::connect("127.0.0.1:7474").ok()?;
        conn.set_read_timeout(Some(SCRAPE_WITHIN)).ok()?;
        conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut reply = String::new();
        conn.read_to_string(&mut reply).ok()?;
        Some(reply)
    });
    Page::parse(&reply.ok().flatten().unwrap_or_default())
}

fn figures(node: &str, vips: usize, first: Option<&AgentSample>, last: &AgentSample) -> Figures {
    let b = &last.page;
    let mut out = Figures {
        node: node.to_string(),
        vips,
        cluster_per_s: None,
        cluster: [None; 2],
        lease: [None; 2],
        cpu: None,
        rss: last.memory.0,
        peak: last.memory.1,
        renewal_p99: None,
        gap_start: None,
        gap_after: None,
        lapses_window: None,
        lapses: counter(
            b,
            "speaker_answering_stopped_total",
            &[("reason", "lapsed")],
        ),
        renewal_failures: counter(b, "speaker_lease_renewal_failures_total", &[]),
        killed: false,
        took_over: 0,
    };
    let Some(first) = first else { return out };
    let secs = last.at.duration_since(first.at).as_secs_f64();
    out.cpu = Some(cpu_percent(first.ticks, last.ticks, secs));
    let a = &first.page;
    if !a.has("speaker_vips_owned") || !b.has("speaker_vips_owned") {
        return out;
    }
    let event = |label: &str| {
        let want = [("event", label)];
        let buckets = delta(
            &a.buckets("speaker_event_seconds", &want),
            &b.buckets("speaker_event_seconds", &want),
        );
        [
            histogram_quantile(&buckets, 0.5),
            histogram_quantile(&buckets, 0.99),
        ]
    };
    let count = |p: &Page| p.sum("speaker_event_seconds_count", &[("event", "cluster")]);
    let renewals = delta(
        &a.buckets("speaker_lease_renewal_seconds", &[]),
        &b.buckets("speaker_lease_renewal_seconds", &[]),
    );
    out.cluster_per_s = Some((count(b) - count(a)) / secs);
    out.cluster = event("cluster");
    out.lease = event("lease");
    out.renewal_p99 = histogram_quantile(&renewals, 0.99);
    let lapsed = |p: &Page| p.sum("speaker_answering_stopped_total", &[("reason", "lapsed")]);
    out.lapses_window = Some(lapsed(b) - lapsed(a));
    out
}

/// A counter's value on a page, `None` when the page is empty (the agent
/// did not answer); a counter with no such row yet is 0.
fn counter(page: &Page, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    page.has("speaker_vips_owned").then(|| page.sum(name, want))
}

/// utime + stime of process `pid`, in clock ticks (/proc/PID/stat).
fn process_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces): state is
    // field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Result<u64> {
        fields
            .get(n - 3)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("/proc/{pid}/stat: no field {n}"))
    };
    Ok(field(14)? + field(15)?)
}

/// The machine's (busy, total) clock ticks over all CPUs (/proc/stat).
fn machine_ticks() -> Result<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").context("cannot read /proc/stat")?;
    let cpu = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .context("/proc/stat: no cpu line")?;
    let v: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    // idle and iowait
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Ok((total - idle, total))
}

/// CPU time between two tick counts over `secs`, as % of one CPU.
fn cpu_percent(from: u64, to: u64, secs: f64) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    to.saturating_sub(from) as f64 / hz / secs * 100.0
}

fn busy_percent(from: (u64, u64), to: (u64, u64)) -> f64 {
    let total = to.1.saturating_sub(from.1).max(1) as f64;
    to.0.saturating_sub(from.0) as f64 / total * 100.0
}

/// A series' labels, as (name, value).
type Labels = Vec<(String, String)>;

/// One scrape of a `/metrics` page: (name, labels, value) per series.
#[derive(Default)]
struct Page(Vec<(String, Labels, f64)>);

impl Page {
    /// Reads the OpenMetrics text in an HTTP reply (headers and comments
    /// are skipped: they do not parse as series).
    fn parse(reply: &str) -> Self {
        let series = reply.lines().filter_map(|line| {
            if line.starts_with('#') {
                return None;
            }
            let (name, labels, rest) = match line.find('{') {
                Some(open) => {
                    let close = line.rfind('}')?;
                    (
                        &line[..open],
                        labels(&line[open + 1..close]),
                        &line[close + 1..],
                    )
                }
                None => {
                    let (name, rest) = line.split_once(' ')?;
                    (name, Vec::new(), rest)
                }
            };
            let value = rest.split_whitespace().next()?.parse().ok()?;
            Some((name.to_string(), labels, value))
        });
        Self(series.collect())
    }

    fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(n, ..)| n == name)
    }

    /// The sum over the series `name` whose labels include `want`.
    fn sum(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        // Not `sum()`: an empty f64 sum is -0.0.
        self.matching(name, want).fold(0.0, |n, (_, v)| n + v)
    }

    /// Histogram `name`'s cumulative buckets (upper bound, count) for the
    /// labels `want`, by upper bound.
    fn buckets(&self, name: &str, want: &[(&str, &str)]) -> Vec<(f64, f64)> {
        let mut out: Vec<(f64, f64)> = self
            .matching(&format!("{name}_bucket"), want)
            .filter_map(|(labels, v)| {
                let le = labels.iter().find(|(k, _)| k == "le")?.1.as_str();
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, v))
            })
            .collect();
        out.sort_by(|a, b| a.0.total_cmp(&b.0));
        out
    }

    fn matching<'a>(
        &'a self,
        name: &'a str,
        want: &'a [(&str, &str)],
    ) -> impl Iterator<Item = (&'a [(String, String)], f64)> + 'a {
        self.0
            .iter()
            .filter(move |(n, labels, _)| {
                n == name
                    && want
                        .iter()
                        .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, labels, v)| (labels.as_slice(), *v))
    }
}

/// `k="v",k2="v2"` as pairs (values hold no quotes here).
fn labels(text: &str) -> Labels {
    text.split("\",")
        .filter_map(|kv| {
            let (k, v) = kv.split_once("=\"")?;
            Some((k.trim().to_string(), v.trim_end_matches('"').to_string()))
        })
        .collect()
}

/// The observations between two scrapes of one histogram, per bucket.
fn delta(before: &[(f64, f64)], after: &[(f64, f64)]) -> Vec<(f64, f64)> {
    after
        .iter()
        .map(|(le, n)| {
            let was = before
                .iter()
                .find(|(l, _)| l == le)
                .map_or(0.0, |(_, n)| *n);
            (*le, n - was)
        })
        .collect()
}

/// Quantile `q` of cumulative buckets, interpolated linearly within the
/// bucket it falls in (as Prometheus' `histogram_quantile`; the first
/// bucket starts at 0, and a quantile past the last finite bound reads as
/// that bound). `None` without observations.
fn histogram_quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(lower);
            }
            let share = if count > below {
                (rank - below) / (count - below)
            } else {
                1.0
            };
            return Some(lower + (le - lower) * share);
        }
        (lower, below) = (le, count);
    }
    Some(lower)
}

// --- Waiting, and Ctrl-C ---

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// Ctrl-C or SIGTERM while this part runs ends it at its next wait, through
/// the same drops as its end (namespaces, agents, pins, the worktree);
/// the earlier handlers come back with this guard's drop.
struct Signals(Vec<(libc::c_int, libc::sighandler_t)>);

impl Signals {
    fn catch() -> Self {
        let old = [libc::SIGINT, libc::SIGTERM]
            .into_iter()
            // SAFETY: the handler only stores to an atomic.
            .map(|sig| {
                (sig, unsafe {
                    libc::signal(sig, on_signal as *const () as libc::sighandler_t)
                })
            })
            .collect();
        Self(old)
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        for &(sig, old) in &self.0 {
            // SAFETY: restores the handler signal() returned.
            unsafe { libc::signal(sig, old) };
        }
    }
}

fn interrupted() -> Result<()> {
    if STOP.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleeps `d`, failing early on Ctrl-C.
fn pause(d: Duration) -> Result<()> {
    let until = Instant::now() + d;
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        interrupted()?;
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
    Ok(())
}

/// Checks `cond` every `every` until it holds (the time it took) or
/// `within` passes (`None`); fails on Ctrl-C or when `cond` fails.
fn poll(
    within: Duration,
    every: Duration,
    mut cond: impl FnMut() -> Result<bool>,
) -> Result<Option<Duration>> {
    let start = Instant::now();
    loop {
        interrupted()?;
        if cond()? {
            return Ok(Some(start.elapsed()));
        }
        if start.elapsed() >= within {
            return Ok(None);
        }
        std::thread::sleep(every);
    }
}

// --- The baseline binary ---

/// The baseline's `speaker`, built once into target/baseline/<rev>/ by
/// its own `cargo xtask build` in a worktree of [`BASELINE`] (so its XDP
/// object is built from the same commit and embedded as it was then);
/// its own target folder keeps target/release/speaker untouched.
fn baseline_bin() -> Result<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("tests/ lives one level below the workspace root")?;
    let target = root.join("target/baseline").join(&BASELINE[..7]);
    let bin = target.join("release/speaker");
    if bin.exists() {
        return Ok(bin);
    }
    eprintln!(
        "bench: scale: building the baseline {} into {} (once; several minutes)",
        &BASELINE[..7],
        target.display()
    );
    let tree = Worktree::add(root, BASELINE)?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&tree.dir)
        .args(["xtask", "build"])
        .env("CARGO_TARGET_DIR", &target)
        // The outer build's object folder is the current tree's.
        .env_remove("SPEAKER_EBPF_DIR");
    wait_child(&mut cmd)?;
    drop(tree);
    if !bin.exists() {
        bail!("the baseline build made no {}", bin.display());
    }
    Ok(bin)
}

/// A detached worktree of `rev`, removed on drop (also on failure or
/// Ctrl-C).
struct Worktree {
    root: PathBuf,
    dir: PathBuf,
}

impl Worktree {
    fn add(root: &Path, rev: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "speaker-baseline-{}-{}",
            &rev[..7],
            std::process::id()
        ));
        // Forget worktrees of earlier runs whose folders are gone.
        let _ = git(root).args(["worktree", "prune"]).status();
        let status = git(root)
            .args(["worktree", "add", "--detach"])
            .arg(&dir)
            .arg(rev)
            .status()
            .context("cannot run git")?;
        if !status.success() {
            bail!("git worktree add {} {rev} failed: {status}", dir.display());
        }
        Ok(Self {
            root: root.to_path_buf(),
            dir,
        })
    }
}

impl Drop for Worktree {
    fn drop(&mut self) {
        let _ = git(&self.root)
            .args(["worktree", "remove", "--force"])
            .arg(&self.dir)
            .status();
    }
}

fn git(root: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.arg("-C").arg(root);
    cmd
}

/// Runs `cmd` to success; on Ctrl-C it is killed (if the terminal's
/// signal has not ended it already).
fn wait_child(cmd: &mut Command) -> Result<()> {
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    loop {
        if let Some(status) = child.try_wait()? {
            if !status.success() {
                bail!("{cmd:?} failed: {status}");
            }
            return Ok(());
        }
        if interrupted().is_err() {
            let _ = child.kill();
            let _ = child.wait();
            bail!("interrupted");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

// --- The report ---

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.3}", v * 1000.0))
}

fn num(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}

fn secs(v: Option<Duration>, limit: Duration) -> String {
    v.map_or(format!("not within {} s", limit.as_secs()), |d| {
        format!("{:.2} s", d.as_secs_f64())
    })
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "not met" }
}

fn write(md: &mut String, runs: &[Run]) -> Result<()> {
    let short = &BASELINE[..7];
    writeln!(
        md,
        "## Scale: 1,000 nodes, 1,000 VIPs, 10,000 EndpointSlices changing\n"
    )?;
    writeln!(
        md,
        "Against the API stand-in: {NODES_TOTAL} Ready Nodes (InternalIPs in 198.18/15), one IPAddressPool (198.19.0.0/22) and one L2Advertisement without node selectors, so every node is eligible for every VIP; {VIPS} LoadBalancer Services (externalTrafficPolicy Cluster, each VIP already in its status, so no controller runs) with a ready EndpointSlice each; and {CHURN_SLICES} ClusterIP Services in {CHURN_NAMESPACES} other namespaces whose EndpointSlices the bench changes at {CHURN_PER_S} per second (one endpoint's ready condition flipped, round-robin, written straight into the stand-in's store; the agents see it through their watches). **{AGENTS} agents**: real `speaker agent` processes (as many as this machine carries: with the landed code, three keep its 2 CPUs busy; the stand-in and the churn run in the bench process), {AGENTS} of the Nodes, each in its own network namespace on one bridge (tests/src/lan.rs), at default settings, logging at `info`. The election makes candidates only of nodes that renew a node lease, so the {} agentless Nodes are eligible but never win: what they cost the agents is reading and filtering them, as in a cluster where the agents run on a few front nodes.\n",
        NODES_TOTAL - AGENTS
    )?;
    writeln!(
        md,
        "Each version gets a fresh copy of the same world and the same churn, one after the other: the landed code first (commit `{short}`, built by its own `cargo xtask build` in a worktree, into target/baseline/), then this tree's `target/release/speaker`. The churn starts once every VIP has an owner and every Service its ServiceL2Status (or once the wait for them gives up); after {} s of it, a {} s window. *Cluster* and *lease*: the agent loop's time per wake-up caused by a watched object (`event=\"cluster\"`), or by a Lease event or a request's result (`event=\"lease\"`), from `speaker_event_seconds`: the buckets' increase over the window, interpolated linearly within the bucket (as Prometheus' `histogram_quantile`; the buckets double from 8 µs). *Renewal p99*: `speaker_lease_renewal_seconds` the same way (buckets double from 1 ms). *CPU*: utime + stime from /proc/PID/stat over the window, in % of one CPU. *RSS*: VmRSS at the window's end / VmHWM, the peak over the whole run (for the killed agent, up to its kill). *Longest unrenewed*: the longest time an agent's node lease went unchanged in the stand-in's store (polled every 50 ms), during start-up (from its first write until every VIP has an owner, or the wait for it ends) / after it (to the end; the killed agent's to its kill); over the lease duration (2 s) the other nodes may take its VIPs: a lapse. *Lapses*: `speaker_answering_stopped_total{{reason=\"lapsed\"}}` in the window / over the whole run; *renewal failures*: `speaker_lease_renewal_failures_total` over the whole run. Then, if every VIP has an owner, the owner of the most is killed (SIGKILL, the churn going on): *converged* is the time until every VIP's ownership Lease names a live agent, *answered* until the survivors' `speaker_vips_owned` add up to all {VIPS}. Times in ms unless marked; `-`: the agent's page could not be read within {} s (its loop and its metrics share one thread) or nothing was observed.\n",
        WARMUP.as_secs(),
        WINDOW.as_secs(),
        SCRAPE_WITHIN.as_secs()
    )?;
    writeln!(
        md,
        "| version | agent | VIPs | cluster wake-ups/s | cluster p50 | cluster p99 | lease p50 | lease p99 | CPU % | RSS MiB end / peak | renewal p99 | longest unrenewed, start-up / after | lapses, window / run | renewal failures | after the kill |"
    )?;
    writeln!(
        md,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    )?;
    for run in runs {
        for a in &run.agents {
            let after = match (a.killed, run.victim_vips) {
                (true, n) => format!(
                    "killed; its {n} VIPs converged in {}, answered in {}",
                    secs(run.converged, CONVERGE_WITHIN),
                    secs(run.answered, CONVERGE_WITHIN)
                ),
                (false, 0) => "no kill".into(),
                (false, _) => format!("took over {}", a.took_over),
            };
            let lapses = format!(
                "{} / {}{}",
                num(a.lapses_window, 0),
                num(a.lapses, 0),
                if a.killed { " (to the kill)" } else { "" }
            );
            let gap = |g: Option<Duration>| num(g.map(|d| d.as_secs_f64() * 1000.0), 0);
            let gaps = format!("{} / {}", gap(a.gap_start), gap(a.gap_after));
            writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} / {:.1} | {} | {gaps} | {lapses} | {} | {after} |",
                run.label,
                a.node,
                a.vips,
                num(a.cluster_per_s, 1),
                ms(a.cluster[0]),
                ms(a.cluster[1]),
                ms(a.lease[0]),
                ms(a.lease[1]),
                num(a.cpu, 1),
                a.rss,
                a.peak,
                num(a.renewal_p99.map(|v| v * 1000.0), 1),
                num(a.renewal_failures, 0),
            )?;
        }
    }
    writeln!(md)?;
    for run in runs {
        let owned = match run.all_owned {
            Some(t) => format!(
                "all {VIPS} VIPs owned {:.1} s after the first agent started, ServiceL2Status for all after {}",
                t.as_secs_f64(),
                secs(run.statuses, STATUSES_WITHIN)
            ),
            None => format!(
                "only {} of {VIPS} VIPs owned {} s after the first agent started ({} at the window's end), so no agent was killed",
                run.owned,
                OWN_ALL_WITHIN.as_secs(),
                run.owned_at_end
            ),
        };
        let stuck = match (run.all_owned, run.label.starts_with("baseline")) {
            (Some(_), _) => "",
            // A profile (perf) of the landed agent in this world.
            (None, true) => {
                " Its agents' one thread each, which also renews the node lease and serves the metrics, never caught up: on every event the landed code goes over every VIP's 1,000 candidates in the election (`Election::peer_live` and hashing top a profile of it here), so node leases went unrenewed and pages unread."
            }
            (None, false) => {
                " Its agents' one thread each, which also renews the node lease and serves the metrics, never caught up."
            }
        };
        writeln!(
            md,
            "- {}: {owned}; in the window the churn made {:.1} writes/s, the API served {:.0} requests/s, the bench process (the stand-in and the churn) used {:.0}% of one CPU and the machine was {:.0}% busy.{stuck}",
            run.label, run.churn_per_s, run.api_per_s, run.stand_in_cpu, run.machine_busy
        )?;
    }
    writeln!(md)?;
    let mut targets = Vec::new();
    for run in runs {
        // The worst agent; a figure that could not be read fails the target.
        let worst = |f: &dyn Fn(&Figures) -> Option<f64>| {
            run.agents
                .iter()
                .map(f)
                .try_fold(0.0_f64, |m, v| v.map(|v| m.max(v)))
        };
        let event = worst(&|a| Some(a.cluster[1]?.max(a.lease[1]?)));
        let renewal = worst(&|a| a.renewal_p99);
        // "No lapse at any time": over the whole run.
        let lapses: Option<f64> = run.agents.iter().map(|a| a.lapses).sum();
        let gap = worst(&|a| Some(a.gap_start?.max(a.gap_after?).as_secs_f64()));
        let lease = speaker::election::Timings::default()
            .lease_duration
            .as_secs_f64();
        let rss = run.agents.iter().map(|a| a.peak).fold(0.0, f64::max);
        targets.push(format!(
            "{}: event p99 < 1 ms: {} ms, {}; renewal p99 < 100 ms: {} ms, {}; no lapse: {} VIPs lapsed, longest unrenewed {} ms, {}; RSS < {RSS_TARGET_MIB:.0} MiB: {rss:.1} MiB peak, {}",
            run.label,
            ms(event),
            met(event.is_some_and(|e| e < EVENT_P99_TARGET)),
            num(renewal.map(|v| v * 1000.0), 1),
            met(renewal.is_some_and(|r| r < RENEWAL_P99_TARGET)),
            num(lapses, 0),
            num(gap.map(|v| v * 1000.0), 0),
            met(lapses == Some(0.0) && gap.is_some_and(|g| g < lease)),
            met(rss < RSS_TARGET_MIB),
        ));
    }
    writeln!(md, "**Targets (worst agent).** {}.\n", targets.join(". "))?;
    Ok(())
}
