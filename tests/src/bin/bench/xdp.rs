//! The XDP program per frame through BPF_PROG_TEST_RUN against baselines
//! measured in the same run, and native against generic attachment on a
//! veth link.
//!
//! Per-frame figures come from single runs (repeat = 1): with repeat > 1 the
//! kernel runs the program again on the same buffer, and an answered request
//! would have become a reply after the first pass. The duration the kernel
//! reports for one run includes its timer's own cost, so an empty XDP_PASS
//! program is measured too. Paths that leave the frame unchanged are also
//! timed precisely with repeat.

use std::fmt::Write as _;

use anyhow::{Context as _, Result, bail};
use aya::programs::Xdp;
use speaker::dataplane::{Dataplane, SPEAKER_XDP};
use speaker_common::maps::{VipEntry, VipKey};
use speaker_tests::{
    agent::Agent,
    frames::{Arp, Nd},
    programs,
    topology::{Pair, VIP},
};

const ROUNDS: usize = 40;
const PER_ROUND: usize = 500;
const BATCH: u32 = 100_000;
const BATCHES: usize = 31;
/// BPF_PROG_TEST_RUN's default ingress interface: loopback.
const IFINDEX: u32 = 1;
const OUR_MAC: [u8; 6] = [0x02, 0, 0x5e, 0, 0, 1];
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0x5e, 0, 0, 2];
const CLIENT_IP: [u8; 4] = [198, 18, 0, 2];
const VIP4: [u8; 4] = [198, 18, 0, 10];
const VIP6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];
const CLIENT6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

struct Case<'a> {
    id: &'static str,
    label: &'static str,
    prog: &'a Xdp,
    frame: Vec<u8>,
    action: u32,
}

fn percentile<T: Copy + PartialOrd>(sorted: &[T], p: f64) -> T {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn tcp_frame(ipv6: bool) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend(OUR_MAC);
    f.extend(CLIENT_MAC);
    if ipv6 {
        f.extend([0x86, 0xdd, 0x60, 0, 0, 0, 0, 20, 6, 64]);
        f.extend(CLIENT6);
        f.extend(VIP6);
    } else {
        f.extend([0x08, 0x00, 0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0]);
        f.extend(CLIENT_IP);
        f.extend(VIP4);
    }
    f.extend([
        0x30, 0x39, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0,
    ]);
    f.resize(f.len().max(60), 0);
    f
}

fn entry(expires_ns: u64) -> VipEntry {
    VipEntry {
        mac: OUR_MAC,
        _pad: [0; 2],
        expires_ns,
    }
}

/// Measures and appends its sections to `md`.
pub fn run(md: &mut String) -> Result<()> {
    let mut dp = Dataplane::load_object(SPEAKER_XDP, None)?;
    dp.set_vip(&VipKey::ipv4(IFINDEX, 0, VIP4), &entry(u64::MAX))?;
    dp.set_vip(&VipKey::ipv4(IFINDEX, 100, VIP4), &entry(u64::MAX))?;
    dp.set_vip(&VipKey::ipv6(IFINDEX, 0, VIP6), &entry(u64::MAX))?;
    let mut expired = Dataplane::load_object(SPEAKER_XDP, None)?;
    expired.set_vip(&VipKey::ipv4(IFINDEX, 0, VIP4), &entry(1))?;
    expired.set_vip(&VipKey::ipv6(IFINDEX, 0, VIP6), &entry(1))?;
    let testbed = programs::load_testbed()?;
    let swap: &Xdp = testbed
        .program("testbed_swap_macs")
        .context("swap")?
        .try_into()?;
    let pass: &Xdp = testbed
        .program("testbed_pass")
        .context("pass")?
        .try_into()?;
    let (responder, expired) = (dp.program()?, expired.program()?);

    let vip_request = Arp::request(CLIENT_MAC, CLIENT_IP, VIP4);
    let mut tagged = vip_request.clone();
    tagged.vlan = Some(100);
    let mut wrong_dst = vip_request.clone();
    wrong_dst.eth_dst = [0x02, 0, 0x5e, 0, 0, 9];
    let solicit = Nd::solicit(CLIENT_MAC, CLIENT6, VIP6).bytes();
    let other = Arp::request(CLIENT_MAC, CLIENT_IP, [198, 18, 0, 99]).bytes();
    #[rustfmt::skip]
    let single = [
        Case { id: "a", label: "ARP request for a VIP, answered", prog: responder, frame: vip_request.bytes(), action: 3 },
        Case { id: "a'", label: "same, 802.1Q tagged", prog: responder, frame: tagged.bytes(), action: 3 },
        Case { id: "g", label: "Neighbor Solicitation for a VIP, answered", prog: responder, frame: solicit.clone(), action: 3 },
        Case { id: "b", label: "IPv4/TCP frame, passed", prog: responder, frame: tcp_frame(false), action: 2 },
        Case { id: "b6", label: "IPv6/TCP frame, passed", prog: responder, frame: tcp_frame(true), action: 2 },
        Case { id: "b'", label: "ARP request for another address, passed", prog: responder, frame: other.clone(), action: 2 },
        Case { id: "c", label: "baseline: swap MACs, XDP_TX", prog: swap, frame: vip_request.bytes(), action: 3 },
        Case { id: "d", label: "empty program, XDP_PASS", prog: pass, frame: vip_request.bytes(), action: 2 },
    ];
    #[rustfmt::skip]
    let precise = [
        Case { id: "b", label: "IPv4/TCP frame, passed", prog: responder, frame: tcp_frame(false), action: 2 },
        Case { id: "b6", label: "IPv6/TCP frame, passed", prog: responder, frame: tcp_frame(true), action: 2 },
        Case { id: "b'", label: "ARP for another address: prefilter only", prog: responder, frame: other, action: 2 },
        Case { id: "e", label: "ARP for a VIP, wrong Ethernet destination: + hash lookup and count", prog: responder, frame: wrong_dst.bytes(), action: 2 },
        Case { id: "f", label: "ARP for an expired VIP: + hash lookup and count + clock read", prog: expired, frame: vip_request.bytes(), action: 2 },
        Case { id: "h", label: "NS for an expired VIP: validation, checksum, lookup, clock", prog: expired, frame: solicit, action: 2 },
        Case { id: "c", label: "baseline: swap MACs, XDP_TX", prog: swap, frame: vip_request.bytes(), action: 3 },
        Case { id: "d", label: "empty program, XDP_PASS", prog: pass, frame: vip_request.bytes(), action: 2 },
    ];

    // Interleaved rounds, so drift in the machine touches every case alike.
    let mut samples: Vec<Vec<u64>> = vec![Vec::new(); single.len()];
    for _ in 0..ROUNDS {
        for (case, s) in single.iter().zip(samples.iter_mut()) {
            for _ in 0..PER_ROUND {
                let r = programs::test_run(case.prog, &case.frame, IFINDEX, 1)?;
                if r.action != case.action {
                    bail!(
                        "({}) {}: verdict {} instead of {}",
                        case.id,
                        case.label,
                        r.action,
                        case.action
                    );
                }
                s.push(r.duration_ns);
            }
        }
    }
    samples.iter_mut().for_each(|s| s.sort_unstable());
    let median = |id: &str| {
        let i = single.iter().position(|c| c.id == id).unwrap_or(0);
        percentile(&samples[i], 0.5) as f64
    };
    let (base, empty) = (median("c").max(1.0), median("d"));

    let mut per_run = Vec::new();
    for case in &precise {
        let mut ns: Vec<f64> = (0..BATCHES)
            .map(|_| {
                programs::test_run(case.prog, &case.frame, IFINDEX, BATCH)
                    .map(|r| r.duration_ns as f64)
            })
            .collect::<Result<_>>()?;
        ns.sort_by(f64::total_cmp);
        per_run.push(percentile(&ns, 0.5));
    }
    let precise_base = per_run[precise.iter().position(|c| c.id == "c").unwrap_or(0)].max(1.0);

    let wire = wire_rtts()?;

    writeln!(md, "## XDP responder, per frame (BPF_PROG_TEST_RUN)\n")?;
    writeln!(
        md,
        "{} single runs per case (repeat = 1, interleaved in {ROUNDS} rounds); the kernel's reported duration per run, in ns. Repeat > 1 would rerun the program on the same buffer, where an answered request has already become a reply. Each figure includes the test-run timer's own cost, which the empty program (d) shows; the last column takes it out.\n",
        ROUNDS * PER_ROUND
    )?;
    writeln!(
        md,
        "| case | median ns | p90 ns | p99 ns | ratio to (c) | ns above (d) |"
    )?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|")?;
    for (c, s) in single.iter().zip(&samples) {
        let m = percentile(s, 0.5) as f64;
        writeln!(
            md,
            "| ({}) {} | {m:.0} | {} | {} | {:.2} | {:.0} |",
            c.id,
            c.label,
            percentile(s, 0.9),
            percentile(s, 0.99),
            m / base,
            m - empty
        )?;
    }
    writeln!(
        md,
        "\n## Cost per path, precisely (frames left unchanged)\n"
    )?;
    writeln!(
        md,
        "BPF_PROG_TEST_RUN with repeat = {BATCH}, median of {BATCHES} batches, ns per run. Only paths that leave the frame as it came can be repeated; (e), (f) and (h) stop where the answer paths go on to rewrite the frame, so they show where the answer paths' time goes.\n"
    )?;
    writeln!(md, "| path | ns per run | ratio to (c) |")?;
    writeln!(md, "|---|---:|---:|")?;
    for (c, ns) in precise.iter().zip(&per_run) {
        writeln!(
            md,
            "| ({}) {} | {ns:.1} | {:.2} |",
            c.id,
            c.label,
            ns / precise_base
        )?;
    }
    let (ra, rg) = (median("a") / base, median("g") / base);
    let verdict = |ok: bool| if ok { "met" } else { "not met" };
    writeln!(
        md,
        "\n**Targets: (a) within 1.5x of (c): {ra:.2}x, {}. (g) within 2x of (c): {rg:.2}x, {}.**\n",
        verdict(ra <= 1.5),
        verdict(rg <= 2.0)
    )?;
    writeln!(
        md,
        "Why: (c) does no more than the harness's empty program (d). Answering needs one exact lookup in the VIP hash map and one in the per-CPU per-VIP counts that MetalLB's per-IP metrics come from (e - b'), and one read of the boot-time clock for the dead-man's switch (f - e); on this machine those alone are several times (c). All are kept on purpose: the kernel hash map is what lets the agent replace an entry atomically under RCU while frames are being answered, the counts are what users judge the answers by, and the clock read is what stops a node that lost its lease. An NS adds its validation and the ICMPv6 checksum over the message (h - f), and the advertisement's own checksum. Everything else is cheap: non-ARP traffic (b, b6) and ARP for other addresses (b') cost little more than (d), because a bitmap prefilter (an inlined array lookup) spares the hash lookups for addresses that are certainly not VIPs.\n"
    )?;
    writeln!(md, "## Native against generic attachment, on the wire\n")?;
    writeln!(
        md,
        "`arping` round trips from a client namespace to `speaker static` on a veth link, {} requests each, in µs. Generic (skb) mode is all an 802.1Q VLAN device or a bridge offers; the responder instead answers tagged frames natively on the parent interface. On veth the two modes cannot be told apart: veth's native path also starts from a socket buffer the sender already built, and the round trip is dominated by arping and the scheduler. On a physical NIC, native mode runs in the driver before any socket buffer is allocated, which is where generic mode's cost lies; this machine has no NIC to show it.\n",
        WIRE_REQUESTS
    )?;
    writeln!(md, "| attach mode | median µs | p90 µs |")?;
    writeln!(md, "|---|---:|---:|")?;
    for (mode, rtts) in &wire {
        writeln!(
            md,
            "| {mode} | {:.1} | {:.1} |",
            percentile(rtts, 0.5),
            percentile(rtts, 0.9)
        )?;
    }
    Ok(())
}

const WIRE_REQUESTS: u32 = 300;

/// arping round trips against the agent in native and in generic mode.
fn wire_rtts() -> Result<Vec<(&'static str, Vec<f64>)>> {
    let mut out = Vec::new();
    for mode in ["native", "generic"] {
        let pair = Pair::new()?;
        let mut agent = Agent::start(
            &pair.node,
            &["static", "-i", "eth0", "--vip", VIP, "--xdp-mode", mode],
        )?;
        agent.wait_ready(&pair.node, "eth0")?;
        let run = pair
            .client
            .command("arping")
            .args([
                "-i",
                "eth0",
                "-c",
                &WIRE_REQUESTS.to_string(),
                "-W",
                "0.002",
                VIP,
            ])
            .output()?;
        let mut rtts: Vec<f64> = String::from_utf8_lossy(&run.stdout)
            .lines()
            .filter_map(|l| l.split("time=").nth(1))
            .filter_map(|t| {
                let (n, unit) = t.trim().split_once(' ')?;
                let n: f64 = n.parse().ok()?;
                Some(if unit.starts_with("msec") {
                    n * 1000.0
                } else {
                    n
                })
            })
            .collect();
        if rtts.len() < WIRE_REQUESTS as usize * 9 / 10 {
            bail!(
                "{mode}: only {} of {WIRE_REQUESTS} answered:\n{}",
                rtts.len(),
                agent.log()
            );
        }
        rtts.sort_by(f64::total_cmp);
        agent.terminate()?;
        out.push((mode, rtts));
    }
    Ok(out)
}
