//! Load on the API server: writes per second at steady state for 1, 100
//! and 1000 VIPs on three nodes (the target: the same for all three, since
//! only node leases are renewed), and how long 1000 VIPs take to move after
//! their owner is killed.

use std::{
    fmt::Write as _,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use speaker_tests::{apiserver::SERVICE_L2_STATUSES, scenario::Scenario, wait_for};

const WINDOW: Duration = Duration::from_secs(10);

pub fn run(md: &mut String) -> Result<()> {
    writeln!(md, "## Load on the API server\n")?;
    writeln!(
        md,
        "Three front nodes against the API stand-in, which counts requests. Steady state: after every VIP has an owner and every Service its ServiceL2Status, writes over {} s.\n",
        WINDOW.as_secs()
    )?;
    writeln!(
        md,
        "| VIPs | time to assign all | and to write their ServiceL2Status | writes/s | of which Lease writes/s | requests/s | agent peak MiB (largest of 3) |"
    )?;
    writeln!(md, "|---:|---:|---:|---:|---:|---:|---:|")?;
    let mut move_line = String::new();
    for n in [1usize, 100, 1000] {
        eprintln!("bench: API load with {n} VIPs");
        let vips: Vec<String> = (0..n)
            .map(|i| format!("198.19.{}.{}", i / 250, 1 + i % 250))
            .collect();
        let refs: Vec<&str> = vips.iter().map(String::as_str).collect();
        let mut s = Scenario::api_only(3, &refs)?;
        let started = Instant::now();
        s.start_all()?;
        let owned = |s: &Scenario| s.holdings().values().sum::<usize>();
        if wait_for(Duration::from_secs(120), || owned(&s) == n).is_none() {
            bail!("{n} VIPs: only {} got an owner", owned(&s));
        }
        let assigned = started.elapsed();
        // Each owner then writes a ServiceL2Status per Service (create and
        // status): the steady state starts once they are all there.
        let ns = s.lan.cluster.namespace().to_string();
        let statuses = |s: &Scenario| {
            s.lan
                .cluster
                .list_in(&SERVICE_L2_STATUSES, &ns)
                .map_or(0, |l| l.len())
        };
        if wait_for(Duration::from_secs(300), || statuses(&s) == n).is_none() {
            bail!("{n} VIPs: only {} ServiceL2Status objects", statuses(&s));
        }
        let written = started.elapsed();
        std::thread::sleep(Duration::from_secs(3));
        let server = s.lan.cluster.require_stand_in();
        server.reset_stats();
        std::thread::sleep(WINDOW);
        let st = server.stats();
        let per_s = |v: u64| v as f64 / WINDOW.as_secs_f64();
        let peak = s.agents_peak_mib().into_iter().fold(0.0, f64::max);
        writeln!(
            md,
            "| {n} | {:.1} s | {:.1} s | {:.1} | {:.1} | {:.1} | {peak:.1} |",
            assigned.as_secs_f64(),
            written.as_secs_f64(),
            per_s(st.total.writes),
            per_s(st.resource("leases.coordination.k8s.io").writes),
            per_s(st.total.requests)
        )?;
        if n == 1000 {
            let holdings = s.holdings();
            let (victim, count) = holdings
                .iter()
                .max_by_key(|(_, c)| **c)
                .map(|(v, c)| (v.clone(), *c))
                .context("no owner")?;
            let agent = s.take(&victim)?;
            let server = s.lan.cluster.require_stand_in();
            server.reset_stats();
            let t0 = Instant::now();
            agent.signal(libc::SIGKILL);
            let moved = wait_for(Duration::from_secs(60), || {
                let h = s.holdings();
                !h.contains_key(&victim) && h.values().sum::<usize>() == n
            });
            let Some(took) = moved else {
                bail!("the {count} VIPs of {victim} did not all move within 60 s")
            };
            let _ = took;
            let st = server.stats();
            move_line = format!(
                "Killing the owner of {count} of the 1000 VIPs (SIGKILL): all {count} had a new owner in the API after {:.2} s, with {} writes and {} requests in that time.\n",
                t0.elapsed().as_secs_f64(),
                st.total.writes,
                st.total.requests
            );
        }
    }
    writeln!(md, "\n{move_line}")?;
    Ok(())
}
