//! `cargo xtask bench`: measures the XDP program per frame through
//! BPF_PROG_TEST_RUN against baselines measured in the same run, and writes
//! BENCHMARKS.md.
//!
//! Each run is a single BPF_PROG_TEST_RUN with repeat = 1: with repeat > 1
//! the kernel runs the program again on the same buffer, and an answered
//! request would have become a reply after the first pass. The duration the
//! kernel reports for one run includes its timer's own cost, so an empty
//! XDP_PASS program is measured too and shown beside the others.

use std::{fmt::Write as _, path::PathBuf};

use anyhow::{Context as _, Result, bail};
use aya::programs::Xdp;
use speaker::dataplane::{Dataplane, SPEAKER_XDP};
use speaker_common::maps::{VipEntry, VipKey};
use speaker_tests::{frames::Arp, programs};

const ROUNDS: usize = 40;
const BATCH: u32 = 100_000;
const BATCHES: usize = 31;
const PER_ROUND: usize = 500;
/// BPF_PROG_TEST_RUN's default ingress interface: loopback.
const IFINDEX: u32 = 1;
const OUR_MAC: [u8; 6] = [0x02, 0, 0x5e, 0, 0, 1];
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0x5e, 0, 0, 2];
const VIP: [u8; 4] = [198, 18, 0, 10];

struct Case {
    label: &'static str,
    expect_action: u32,
    samples: Vec<u64>,
}

fn ipv4_tcp_frame() -> Vec<u8> {
    let mut f = Vec::new();
    f.extend(OUR_MAC);
    f.extend(CLIENT_MAC);
    f.extend([0x08, 0x00]);
    f.extend([
        0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 198, 18, 0, 2, 198, 18, 0, 10,
    ]);
    f.extend([
        0x30, 0x39, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0,
    ]);
    f.resize(60, 0);
    f
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() -> Result<()> {
    let out_path = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .context("usage: bench <BENCHMARKS.md>")?;
    speaker_tests::require_privileges();

    let mut dp = Dataplane::load_object(SPEAKER_XDP, None)?;
    dp.set_vip(
        &VipKey::ipv4(IFINDEX, 0, VIP),
        &VipEntry {
            mac: OUR_MAC,
            _pad: [0; 2],
            expires_ns: u64::MAX,
        },
    )?;
    let testbed = programs::load_testbed()?;
    let swap: &Xdp = testbed
        .program("testbed_swap_macs")
        .context("swap")?
        .try_into()?;
    let pass: &Xdp = testbed
        .program("testbed_pass")
        .context("pass")?
        .try_into()?;
    let responder = dp.program()?;

    let vip_request = Arp::request(CLIENT_MAC, [198, 18, 0, 2], VIP).bytes();
    let other_request = Arp::request(CLIENT_MAC, [198, 18, 0, 2], [198, 18, 0, 99]).bytes();
    let tcp = ipv4_tcp_frame();
    let runs: [(&Xdp, &[u8]); 5] = [
        (responder, &vip_request),
        (responder, &tcp),
        (responder, &other_request),
        (swap, &vip_request),
        (pass, &vip_request),
    ];
    let mut cases = [
        Case {
            label: "(a) ARP request for a VIP, answered (XDP_TX)",
            expect_action: 3,
            samples: vec![],
        },
        Case {
            label: "(b) IPv4/TCP frame, passed",
            expect_action: 2,
            samples: vec![],
        },
        Case {
            label: "(b') ARP request for another address, passed",
            expect_action: 2,
            samples: vec![],
        },
        Case {
            label: "(c) baseline: swap MACs, XDP_TX",
            expect_action: 3,
            samples: vec![],
        },
        Case {
            label: "(d) empty program, XDP_PASS (harness cost)",
            expect_action: 2,
            samples: vec![],
        },
    ];
    // Interleaved rounds, so drift in the machine touches every case alike.
    for _ in 0..ROUNDS {
        for ((prog, frame), case) in runs.iter().zip(cases.iter_mut()) {
            for _ in 0..PER_ROUND {
                let r = programs::test_run(prog, frame, IFINDEX, 1)?;
                if r.action != case.expect_action {
                    bail!(
                        "{}: verdict {} instead of {}",
                        case.label,
                        r.action,
                        case.expect_action
                    );
                }
                case.samples.push(r.duration_ns);
            }
        }
    }
    let medians: Vec<u64> = cases
        .iter_mut()
        .map(|c| {
            c.samples.sort_unstable();
            percentile(&c.samples, 0.5)
        })
        .collect();
    let baseline = medians[3].max(1) as f64;
    let empty = medians[4] as f64;

    let mut md = String::new();
    writeln!(md, "# Benchmarks\n")?;
    writeln!(
        md,
        "Written by `cargo xtask bench`; rerun it to reproduce. Every figure comes from the same run.\n"
    )?;
    writeln!(
        md,
        "Machine: {} CPUs, kernel {}.\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel()
    )?;
    writeln!(md, "## XDP responder, per frame (BPF_PROG_TEST_RUN)\n")?;
    writeln!(
        md,
        "{} single runs per case (repeat = 1, interleaved in {} rounds); the kernel's reported duration per run, in ns. Repeat > 1 would rerun the program on the same buffer, where an answered request has already become a reply. Each figure includes the test-run timer's own cost, which the empty program (d) shows; the last column takes it out.\n",
        ROUNDS * PER_ROUND,
        ROUNDS
    )?;
    writeln!(
        md,
        "| case | median ns | p90 ns | p99 ns | ratio to (c) | ns above (d) |"
    )?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|")?;
    for (c, m) in cases.iter().zip(&medians) {
        let net = *m as f64 - empty;
        writeln!(
            md,
            "| {} | {} | {} | {} | {:.2} | {:.0} |",
            c.label,
            m,
            percentile(&c.samples, 0.9),
            percentile(&c.samples, 0.99),
            *m as f64 / baseline,
            net
        )?;
    }
    // Frames the program leaves as they came can be timed precisely with
    // repeat: the kernel's timer is read once per batch, not per run.
    let mut eth_dst = Arp::request(CLIENT_MAC, [198, 18, 0, 2], VIP);
    eth_dst.eth_dst = [0x02, 0, 0x5e, 0, 0, 9];
    let mut expired_dp = Dataplane::load_object(SPEAKER_XDP, None)?;
    expired_dp.set_vip(
        &VipKey::ipv4(IFINDEX, 0, VIP),
        &VipEntry {
            mac: OUR_MAC,
            _pad: [0; 2],
            expires_ns: 1,
        },
    )?;
    let eth_dst = eth_dst.bytes();
    let precise: [(&str, &Xdp, &[u8]); 6] = [
        ("(b) IPv4/TCP frame, passed", responder, &tcp),
        (
            "(b') ARP request for another address: prefilter only",
            responder,
            &other_request,
        ),
        (
            "(e) ARP request for a VIP, wrong Ethernet destination: + hash lookup",
            responder,
            &eth_dst,
        ),
        (
            "(f) ARP request for an expired VIP: + hash lookup + clock read",
            expired_dp.program()?,
            &vip_request,
        ),
        ("(c) baseline: swap MACs, XDP_TX", swap, &vip_request),
        ("(d) empty program, XDP_PASS", pass, &vip_request),
    ];
    let mut precise_ns = Vec::new();
    for (label, prog, frame) in precise {
        let mut per_run: Vec<f64> = (0..BATCHES)
            .map(|_| programs::test_run(prog, frame, IFINDEX, BATCH).map(|r| r.duration_ns as f64))
            .collect::<Result<_>>()?;
        per_run.sort_by(f64::total_cmp);
        precise_ns.push((label, per_run[per_run.len() / 2]));
    }
    let precise_baseline = precise_ns[4].1.max(1.0);
    writeln!(
        md,
        "\n## Cost per path, precisely (frames left unchanged)\n"
    )?;
    writeln!(
        md,
        "BPF_PROG_TEST_RUN with repeat = {BATCH}, median of {BATCHES} batches, ns per run. Only paths that leave the frame as it came can be repeated; (e) and (f) stop where the answer path goes on to rewrite the frame, so together they show where its time goes.\n"
    )?;
    writeln!(md, "| path | ns per run | ratio to (c) |")?;
    writeln!(md, "|---|---:|---:|")?;
    for (label, ns) in &precise_ns {
        writeln!(md, "| {label} | {ns:.1} | {:.2} |", ns / precise_baseline)?;
    }

    let ratio = medians[0] as f64 / baseline;
    writeln!(
        md,
        "\n**Target: (a) within 1.5x of (c). Measured: {ratio:.2}x, {}.**",
        if ratio <= 1.5 { "met" } else { "not met" }
    )?;
    writeln!(
        md,
        "\nWhy: (c) does no more than the harness's empty program (d). Answering needs one exact lookup in the VIP hash map (e - b') and one read of the monotonic clock for the dead-man's switch (f - e); on this machine those alone are several times (c). Both are kept on purpose: the kernel hash map is what lets the agent replace an entry atomically under RCU while frames are being answered, and the clock read is what stops a node that lost its lease. Everything else is cheap: non-ARP traffic (b) and ARP for other addresses (b') cost little more than (d), because a bitmap prefilter (an inlined array lookup) spares the hash lookups for addresses that are certainly not VIPs."
    )?;
    std::fs::write(&out_path, &md)
        .with_context(|| format!("cannot write {}", out_path.display()))?;
    print!("{md}");
    Ok(())
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}
