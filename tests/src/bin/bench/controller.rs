//! `speaker controller` against the API stand-in: how long 1,000 new
//! Services take to get their addresses, how many API writes each costs,
//! and the controller's memory with 10,000 Services and 1,000 pools beside
//! its memory with none (the baseline, measured in the same run).

use std::{
    fmt::Write as _,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::json;
use speaker_tests::{
    agent::Agent,
    apiserver::{IP_ADDRESS_POOLS, LEASES, SERVICES},
    cluster::Cluster,
    netns::Netns,
    wait_for,
};

pub fn run(md: &mut String) -> Result<()> {
    writeln!(md, "## The controller: allocation and memory\n")?;
    writeln!(
        md,
        "`speaker controller` in a network namespace against the API stand-in (HTTP, watches), which counts requests. Services are created straight in the stand-in's store; a Service counts as allocated when its status shows an address.\n"
    )?;
    allocation(md)?;
    memory(md)?;
    Ok(())
}

struct Bed {
    controller: Option<Agent>,
    cluster: Cluster,
    /// Where the stand-in's listener and the controller live.
    ns: Netns,
}

fn bed() -> Result<Bed> {
    let ns = Netns::new("bctl")?;
    let cluster = Cluster::from_env_in(&[&ns])?;
    Ok(Bed {
        controller: None,
        cluster,
        ns,
    })
}

impl Bed {
    fn start(&mut self) -> Result<()> {
        let kubeconfig = self.cluster.kubeconfig(0).as_os_str().to_owned();
        let name = self.cluster.namespace().to_string();
        #[rustfmt::skip]
        let args = ["--namespace", &name, "--config-namespace", &name, "--metrics-addr", "127.0.0.1:7473"];
        let c =
            Agent::start_controller(&self.ns, &args, &[("KUBECONFIG", kubeconfig.as_os_str())])?;
        let active = wait_for(Duration::from_secs(30), || {
            c.log().contains("state rebuilt")
                && self
                    .cluster
                    .get(&LEASES, "speaker-controller")
                    .ok()
                    .flatten()
                    .is_some()
        });
        if active.is_none() {
            bail!("the controller did not become active:\n{}", c.log());
        }
        self.controller = Some(c);
        Ok(())
    }

    fn service(&self, name: &str) -> Result<()> {
        self.cluster.create(
            &SERVICES,
            json!({
                "metadata": {"name": name},
                "spec": {"type": "LoadBalancer", "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                         "ports": [{"port": 80, "protocol": "TCP"}]}
            }),
        )?;
        Ok(())
    }

    fn allocated(&self) -> Result<usize> {
        Ok(self
            .cluster
            .list(&SERVICES)?
            .iter()
            .filter(|s| s["status"]["loadBalancer"]["ingress"][0]["ip"].is_string())
            .count())
    }

    /// The controller's resident memory now and at its peak, in MiB.
    fn memory(&self) -> Result<(f64, f64)> {
        self.controller.as_ref().context("no controller")?.memory()
    }
}

fn pools(b: &Bed, count: usize, each: usize) -> Result<()> {
    for p in 0..count {
        // Ranges of `each` addresses laid out across 198.18.0.0/15.
        let first = p * each;
        let addr = |i: usize| format!("198.{}.{}.{}", 18 + i / 65536, (i / 256) % 256, i % 256);
        b.cluster.create(
            &IP_ADDRESS_POOLS,
            json!({"metadata": {"name": format!("pool-{p:04}")},
                   "spec": {"addresses": [format!("{}-{}", addr(first), addr(first + each - 1))]}}),
        )?;
    }
    Ok(())
}

fn allocation(md: &mut String) -> Result<()> {
    const N: usize = 1000;
    eprintln!("bench: allocating {N} Services");
    let mut b = bed()?;
    pools(&b, 1, 2048)?;
    b.start()?;
    let server = b.cluster.require_stand_in();
    server.reset_stats();
    let t0 = Instant::now();
    for i in 0..N {
        b.service(&format!("svc-{i:04}"))?;
    }
    let created = t0.elapsed();
    let done = wait_for(Duration::from_secs(120), || {
        b.allocated().is_ok_and(|n| n == N)
    });
    let Some(_) = done else {
        bail!("only {} of {N} Services got an address", b.allocated()?);
    };
    let took = t0.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let st = server.stats();
    let status = st.resource("services").writes;
    let events = st.resource("events.events.k8s.io").writes + st.resource("events").writes;
    let leases = st.resource("leases.coordination.k8s.io").writes;
    writeln!(md, "| {N} new Services | |\n|---|---:|")?;
    writeln!(
        md,
        "| time until every one shows an address | {:.2} s |",
        took.as_secs_f64()
    )?;
    writeln!(
        md,
        "| of which creating them (the bench, in-process) | {:.2} s |",
        created.as_secs_f64()
    )?;
    writeln!(
        md,
        "| per Service | {:.2} ms |",
        took.as_secs_f64() * 1000.0 / N as f64
    )?;
    writeln!(
        md,
        "| status writes per allocation | {:.2} |",
        status as f64 / N as f64
    )?;
    writeln!(
        md,
        "| Event writes per allocation (`IPAllocated`) | {:.2} |",
        events as f64 / N as f64
    )?;
    writeln!(md, "| Lease renewals meanwhile | {leases} |")?;
    writeln!(md)?;
    Ok(())
}

fn memory(md: &mut String) -> Result<()> {
    const SERVICES_N: usize = 10_000;
    const POOLS_N: usize = 1000;
    eprintln!("bench: controller memory, empty and with {SERVICES_N} Services in {POOLS_N} pools");
    let mut empty = bed()?;
    empty.start()?;
    std::thread::sleep(Duration::from_secs(2));
    let (base, _) = empty.memory()?;
    drop(empty);

    let mut full = bed()?;
    pools(&full, POOLS_N, 16)?;
    for i in 0..SERVICES_N {
        full.service(&format!("svc-{i:05}"))?;
    }
    let t0 = Instant::now();
    full.start()?;
    let done = wait_for(Duration::from_secs(600), || {
        full.allocated().is_ok_and(|n| n == SERVICES_N)
    });
    if done.is_none() {
        bail!(
            "only {} of {SERVICES_N} Services got an address",
            full.allocated()?
        );
    }
    let took = t0.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let (rss, peak) = full.memory()?;
    // A restart: the state rebuilt from 10,000 statuses, nothing written.
    if let Some(c) = full.controller.take() {
        c.signal(libc::SIGTERM);
        drop(c);
    }
    full.cluster.require_stand_in().reset_stats();
    let t1 = Instant::now();
    full.start()?;
    let rebuilt = t1.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let writes = full
        .cluster
        .require_stand_in()
        .stats()
        .resource("services")
        .writes;
    writeln!(
        md,
        "| controller | resident MiB | peak MiB | ratio to empty |\n|---|---:|---:|---:|"
    )?;
    writeln!(
        md,
        "| empty (baseline): no Service, no pool | {base:.1} | | 1.00 |"
    )?;
    writeln!(
        md,
        "| {SERVICES_N} Services in {POOLS_N} pools | {rss:.1} | {peak:.1} | {:.2} |",
        rss / base
    )?;
    writeln!(
        md,
        "\nStarting with {SERVICES_N} Services and {POOLS_N} pools and none allocated: all allocated {:.1} s after start. Restarted (SIGTERM, new process): active with its state rebuilt from the statuses {:.1} s after start, with {writes} Service writes.\n",
        took.as_secs_f64(),
        rebuilt.as_secs_f64()
    )?;
    Ok(())
}
