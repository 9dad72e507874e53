//! HTTP downtime as the origin story's worker sees it (tests/src/story.rs):
//! real nginx on three fronts, the kubelet's stand-in at Kubernetes'
//! default readiness probe, a request every 50 ms. Per trial: from the
//! first failed request to the first one answered after the last failure
//! of the trial (a request fails when unanswered within 1 s).

use std::{fmt::Write as _, time::Duration};

use anyhow::{Context as _, Result, bail};
use speaker_tests::{
    capture::Capture,
    prober::{self, Prober},
    story::{self, Options, Story},
    wait_for,
    worker::{self, Request},
};

use crate::quantile;

/// Trials per fault (`SPEAKER_BENCH_TRIALS` for a quick look).
fn trials_per_fault() -> usize {
    std::env::var("SPEAKER_BENCH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    NginxKilled,
    NginxKilledKubeletOnly,
    AgentCrash,
    NodeDeath,
    OwnerCutOff,
    ControlPlaneDown,
}

impl Fault {
    fn label(self) -> &'static str {
        match self {
            Fault::NginxKilled => "nginx killed on the leader (the local probe, default)",
            Fault::NginxKilledKubeletOnly => {
                "nginx killed on the leader, the local probe off (the kubelet decides)"
            }
            Fault::AgentCrash => "agent crash (SIGKILL; nginx and the node stay)",
            Fault::NodeDeath => "node death (agent and nginx killed, link down)",
            Fault::OwnerCutOff => "the leader cut off from the API for 5 s",
            Fault::ControlPlaneDown => "the whole control plane down for 10 s",
        }
    }

    /// What the anchors document for the same fault (not measured here).
    fn anchors(self) -> &'static str {
        match self {
            Fault::NginxKilled | Fault::NginxKilledKubeletOnly => {
                "MetalLB L2: announces a `Local` Service only from nodes with ready endpoints, so it waits for the kubelet (20-30 s at the default probe), then fails over; Cilium, kube-vip, keepalived: no check of the node's own endpoints documented (the kubelet's readiness at best)"
            }
            Fault::AgentCrash => {
                "MetalLB L2: the node leaves memberlist, another announces (seconds, up to 10 s and more); Cilium and kube-vip: the lease lapses (10-20 s and 15-17 s at defaults)"
            }
            Fault::NodeDeath => {
                "MetalLB L2: seconds, up to 10 s and more; Cilium L2: 10-20 s; kube-vip: 15-17 s plus up to 3 s to its first gratuitous ARP; keepalived: about 3.5 s"
            }
            Fault::OwnerCutOff => {
                "Cilium and kube-vip: the lease lapses, another node is elected (10-20 s); MetalLB L2: memberlist decides, the API is not involved"
            }
            Fault::ControlPlaneDown => {
                "Cilium and kube-vip: every VIP stops once its lease lapses; MetalLB L2: keeps answering (split brain documented when nodes disagree)"
            }
        }
    }
}

pub fn run(md: &mut String) -> Result<()> {
    let n = trials_per_fault();
    writeln!(md, "## HTTP downtime on the origin story\n")?;
    writeln!(
        md,
        "`cargo xtask demo`'s testbed (tests/src/story.rs): three fronts each running Debian's nginx, `speaker agent` at default settings on each, `speaker controller`, the kubelet's stand-in probing nginx at Kubernetes' default readiness probe (every 10 s, unready after 3 failures), and the worker sending `GET http://app.example.com/` every 50 ms on a new connection (a request unanswered within 1 s fails). {n} trials per fault, each on whichever front leads, the fault undone after each. *Downtime*: from the first failed request to the first request answered after the trial's last failure (0 when none failed), so it is at the worker's 50 ms resolution. *Failed*: failed requests in all trials. In ms.\n"
    )?;
    writeln!(
        md,
        "| fault | downtime p50 | p99 | max | failed | trials with a failure | the anchors (documented, not measured) |"
    )?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|---|")?;
    let mut p99 = Vec::new();
    for fault in [
        Fault::NginxKilled,
        Fault::NginxKilledKubeletOnly,
        Fault::AgentCrash,
        Fault::NodeDeath,
        Fault::OwnerCutOff,
        Fault::ControlPlaneDown,
    ] {
        eprintln!("bench: http, {} x{n}", fault.label());
        let (downtime, failed, hit) = trials(fault, n)?;
        writeln!(
            md,
            "| {} | {:.0} | {:.0} | {:.0} | {failed} | {hit} | {} |",
            fault.label(),
            quantile(&downtime, 0.5),
            quantile(&downtime, 0.99),
            quantile(&downtime, 1.0),
            fault.anchors()
        )?;
        p99.push(quantile(&downtime, 0.99));
    }
    let lease = speaker::election::Timings::default()
        .lease_duration
        .as_millis() as f64;
    let (nginx, node) = (p99[0], p99[3]);
    writeln!(
        md,
        "\nTargets: nginx killed on the leader p99 < 1000 ms with the local probe (the kubelet alone: up to 30 s): {nginx:.0} ms, {}; node death p99 < the lease duration + 100 ms ({:.0} ms): {node:.0} ms, {}.\n",
        if nginx < 1000.0 { "met" } else { "not met" },
        lease + 100.0,
        if node < lease + 100.0 {
            "met"
        } else {
            "not met"
        },
    )?;
    restarts(md)
}

/// A restart of the agent, the node staying.
#[derive(Clone, Copy, Debug)]
enum Restart {
    InPlace,
    InPlaceHandover,
    Rolling,
    RollingHandover,
}

impl Restart {
    fn label(self) -> &'static str {
        match self {
            Restart::InPlace => {
                "the leader's agent restarted in place (`--on-sigterm keep`, the default in Kubernetes)"
            }
            Restart::InPlaceHandover => {
                "the leader's agent restarted, handing over (`--on-sigterm handover`)"
            }
            Restart::Rolling => "rolling restart of the three fronts, in place",
            Restart::RollingHandover => "rolling restart of the three fronts, handing over",
        }
    }

    fn keeps(self) -> bool {
        matches!(self, Restart::InPlace | Restart::Rolling)
    }

    fn trials(self, n: usize) -> usize {
        match self {
            Restart::InPlace | Restart::InPlaceHandover => n,
            Restart::Rolling | Restart::RollingHandover => n.div_ceil(2),
        }
    }
}

fn restarts(md: &mut String) -> Result<()> {
    writeln!(md, "### Restarts and upgrades\n")?;
    writeln!(
        md,
        "The same testbed. Each restart: SIGTERM, the process waited for, a new one started at once; a rolling restart does the three fronts one after another, 2 s apart (the DaemonSet moves on once a pod is ready). *Failed*: the worker's failed requests in all trials; *downtime*: as above, per trial. *ARP dark*: the longest time without an answer to a prober asking for the VIP every 10 ms, less 10 ms, per trial. *Moved*: trials in which another node answered. *Connections kept*: trials in which a keep-alive HTTP connection opened before the restart got an answer after each restart. Times in ms.\n"
    )?;
    writeln!(
        md,
        "| restart | trials | failed | downtime max | ARP dark p50 | ARP dark max | moved | connections kept |"
    )?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|")?;
    let n = trials_per_fault();
    for kind in [
        Restart::InPlace,
        Restart::InPlaceHandover,
        Restart::Rolling,
        Restart::RollingHandover,
    ] {
        let trials = kind.trials(n);
        eprintln!("bench: http, {} x{trials}", kind.label());
        let mut story = Story::start(Options {
            keep_on_sigterm: kind.keeps(),
            ..Options::default()
        })?;
        past_restart_window();
        let (mut failed, mut downtime, mut dark, mut moved) = (0, Vec::new(), Vec::new(), 0);
        let mut kept = 0;
        for trial in 0..trials {
            answered_steadily(&story).with_context(|| format!("trial {trial}: before"))?;
            let leader = story.owner().context("nobody leads")?;
            let mac = story.scenario.lan.fronts[story.index(&leader)].mac;
            let cap = Capture::start(&story.scenario.lan.lan, "pc", "arp")?;
            let probe = Prober::start(&story.scenario.lan, story::VIP)?;
            let mut conn = keep_alive(&story)?;
            std::thread::sleep(Duration::from_millis(200));
            let from = now_ns();
            // The connection must answer after each restart: a handover
            // resets it, even if the VIP comes back to its node later.
            let mut conn_ok = true;
            match kind {
                Restart::InPlace | Restart::InPlaceHandover => {
                    story.restart_agent_in_place(story.index(&leader))?;
                    std::thread::sleep(Duration::from_millis(500));
                    conn_ok &= get(&mut conn).is_ok();
                }
                Restart::Rolling | Restart::RollingHandover => {
                    for i in 0..3 {
                        story.restart_agent_in_place(i)?;
                        std::thread::sleep(Duration::from_secs(2));
                        conn_ok &= get(&mut conn).is_ok();
                    }
                }
            }
            answered_steadily(&story)
                .with_context(|| format!("trial {trial}: {}", kind.label()))?;
            drop(probe);
            if conn_ok {
                kept += 1;
            }
            let replies = prober::replies(cap, story::VIP, 0)?;
            if replies.iter().any(|(_, m)| *m != mac) {
                moved += 1;
            }
            dark.push(prober::dark_ms(&replies).context("no replies")?);
            let since = from.saturating_sub(worker::TIMEOUT.as_nanos() as u64);
            let runs = worker::outages(&story.worker.since(since));
            failed += runs.iter().map(|o| o.failed).sum::<usize>();
            downtime.push(match (runs.first(), runs.last()) {
                (Some(a), Some(b)) => {
                    (b.from + b.lasted.as_nanos() as u64).saturating_sub(a.from) as f64 / 1e6
                }
                _ => 0.0,
            });
            if !kind.keeps() {
                past_restart_window();
            }
        }
        downtime.sort_by(f64::total_cmp);
        dark.sort_by(f64::total_cmp);
        writeln!(
            md,
            "| {} | {trials} | {failed} | {:.0} | {:.0} | {:.0} | {moved} | {kept} |",
            kind.label(),
            quantile(&downtime, 1.0),
            quantile(&dark, 0.5),
            quantile(&dark, 1.0),
        )?;
    }
    writeln!(
        md,
        "\nA handover moves the VIP, and with it every client's TCP connections (the new node has no state for them); a restart in place keeps both (`a_restart_in_place_moves_nothing` checks a keep-alive connection across it).\n"
    )?;
    Ok(())
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// (sorted downtime ms per trial, failed requests, trials with a failure).
fn trials(fault: Fault, n: usize) -> Result<(Vec<f64>, usize, usize)> {
    let mut story = Story::start(Options {
        endpoint_probe: !matches!(fault, Fault::NginxKilledKubeletOnly),
        ..Options::default()
    })?;
    past_restart_window();
    let (mut downtime, mut failed, mut hit) = (Vec::new(), 0, 0);
    for trial in 0..n {
        let leader = story.owner().context("nobody leads")?;
        let i = story.index(&leader);
        answered_steadily(&story).with_context(|| format!("trial {trial}: before the fault"))?;
        // Requests still in flight when the fault comes may fail too.
        let from = now_ns().saturating_sub(worker::TIMEOUT.as_nanos() as u64);
        let t0 = now_ns();
        inflict(fault, &mut story, i, &leader, t0)?;
        answered_steadily(&story).with_context(|| format!("trial {trial}: {}", fault.label()))?;
        let requests: Vec<Request> = story.worker.since(from);
        let runs = worker::outages(&requests);
        failed += runs.iter().map(|o| o.failed).sum::<usize>();
        let ms = match (runs.first(), runs.last()) {
            (Some(first), Some(last)) => {
                hit += 1;
                (last.from + last.lasted.as_nanos() as u64).saturating_sub(first.from) as f64 / 1e6
            }
            _ => 0.0,
        };
        downtime.push(ms);
        undo(fault, &mut story, i)?;
    }
    downtime.sort_by(f64::total_cmp);
    Ok((downtime, failed, hit))
}

fn inflict(fault: Fault, story: &mut Story, i: usize, leader: &str, t0: u64) -> Result<()> {
    let elsewhere = |story: &Story, within: Duration| {
        wait_for(within, || {
            story
                .worker
                .since(t0)
                .iter()
                .any(|r| r.answer.as_ref().is_ok_and(|n| n != leader))
        })
        .with_context(|| format!("nobody but {leader} answered"))
    };
    match fault {
        Fault::NginxKilled => {
            story.kill_nginx(i);
            elsewhere(story, Duration::from_secs(10))?;
        }
        Fault::NginxKilledKubeletOnly => {
            // At a random point of the kubelet's probe period: trials end
            // on events in phase with its probes, so they would all meet
            // it at one phase (and so would a delay drawn from the clock).
            use std::hash::{BuildHasher as _, Hasher as _};
            let period = speaker_tests::kubelet::ReadinessProbe::default().period;
            let random = std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish();
            std::thread::sleep(period.mul_f64((random % 1000) as f64 / 1000.0));
            story.kill_nginx(i);
            elsewhere(story, Duration::from_secs(45))?;
        }
        Fault::AgentCrash => {
            story.kill_agent(i)?;
            elsewhere(story, Duration::from_secs(10))?;
        }
        Fault::NodeDeath => {
            story.kill_node(i)?;
            elsewhere(story, Duration::from_secs(10))?;
        }
        Fault::OwnerCutOff => {
            story.api_reachable(i, false)?;
            std::thread::sleep(Duration::from_secs(5));
            story.api_reachable(i, true)?;
        }
        Fault::ControlPlaneDown => {
            story.control_plane(false)?;
            std::thread::sleep(Duration::from_secs(10));
            story.control_plane(true)?;
        }
    }
    Ok(())
}

fn undo(fault: Fault, story: &mut Story, i: usize) -> Result<()> {
    match fault {
        Fault::NginxKilled | Fault::NginxKilledKubeletOnly => story.restart_nginx(i)?,
        Fault::AgentCrash => {
            story.restart_agent(i)?;
            past_restart_window();
        }
        Fault::NodeDeath => {
            story.revive_node(i)?;
            past_restart_window();
        }
        Fault::OwnerCutOff | Fault::ControlPlaneDown => {}
    }
    // Let the restored node renew and sync before the next fault.
    std::thread::sleep(Duration::from_millis(1500));
    Ok(())
}

/// Waits until every request of the last second was answered (at most
/// 60 s), with the requests of that second finished.
fn answered_steadily(story: &Story) -> Result<()> {
    let settled = wait_for(Duration::from_secs(60), || {
        let now = now_ns();
        let lag = worker::TIMEOUT.as_nanos() as u64;
        let window: Vec<Request> = story
            .worker
            .since(now.saturating_sub(lag + 1_000_000_000))
            .into_iter()
            .filter(|r| r.sent < now.saturating_sub(lag))
            .collect();
        window.len() >= 15 && window.iter().all(|r| r.answer.is_ok())
    });
    if settled.is_none() {
        bail!("the worker's requests are not all answered");
    }
    Ok(())
}

/// A restarted agent takes over from nobody for the hold promise after it
/// starts (see failover.rs); trials measure agents past that.
fn past_restart_window() {
    std::thread::sleep(
        speaker::election::Timings::default().hold_promise + Duration::from_millis(500),
    );
}

/// A keep-alive HTTP connection from the worker's namespace to the VIP,
/// answered once.
fn keep_alive(story: &Story) -> Result<std::net::TcpStream> {
    let mut conn = story
        .scenario
        .lan
        .client
        .enter(|| std::net::TcpStream::connect((story::VIP, 80)))??;
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    get(&mut conn)?;
    Ok(conn)
}

/// One GET on `conn`, answered 200.
fn get(conn: &mut std::net::TcpStream) -> Result<()> {
    use std::io::{Read as _, Write as _};
    conn.write_all(b"GET / HTTP/1.1\r\nHost: app.example.com\r\n\r\n")?;
    let mut buf = [0u8; 512];
    let n = conn.read(&mut buf)?;
    if !buf[..n].starts_with(b"HTTP/1.1 200") {
        bail!("no answer");
    }
    Ok(())
}
