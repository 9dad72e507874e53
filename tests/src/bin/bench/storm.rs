//! ARP and ND storms: what a flood of requests for the VIP costs the node
//! that answers, side by side for (a) the XDP responder (`speaker static`),
//! (b) the kernel answering for the VIP configured on its interface
//! (kube-vip's and keepalived's way), (c) a user-space AF_PACKET responder
//! of MetalLB's design (afpacket.rs: a stand-in, not MetalLB), against a
//! floor (the node drops every request in XDP); and what the flood does to
//! an nginx on the same node.
//!
//! One veth link between a generator namespace and a node namespace
//! (bed.rs), the two CPUs split between them. veth has no interrupts: a
//! frame is received on the sender's CPU unless the receiving end runs
//! threaded NAPI, so both ends do, each thread on its own side's CPU, and
//! the node's processes run on the node's CPU too. The node's CPU is the
//! CPU time of its tasks (its receive thread, the agent or the stand-in,
//! nginx), exact and blind to whatever else runs on the machine.

mod afpacket;
mod bed;
mod cpu;
mod flood;

use std::{
    fmt::Write as _,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use speaker_tests::{
    agent::Agent,
    frames::{Arp, Nd},
    nginx::{self, Nginx},
    topology::{ipv4, ipv6},
};

use crate::quantile;
use bed::{
    Bed, GEN_CPU, GEN_IP, GEN_IP6, NODE_CPU, NODE_IF, NODE_IP, VIP, VIP6, attach, threaded_napi,
};
use flood::{Flood, Sent};

/// Offered rates, requests per second.
const RATES: [u64; 7] = [
    10_000, 50_000, 100_000, 200_000, 400_000, 800_000, 1_600_000,
];
/// Each step is the best of `TRIALS` runs of `TRIAL`: the machine is
/// shared, and a stall of the node's virtual CPU by the host loses frames
/// that the node's own load would not.
const TRIAL: Duration = Duration::from_secs(1);
const TRIALS: usize = 3;
/// "Without loss": at least this share of the requests sent answered.
const LOSSLESS: f64 = 0.999;
/// A step counts for the highest rate without loss only if the generator
/// offered at least this share of its rate (it slows down when its own
/// CPU is busy with the replies).
const REACHED: f64 = 0.95;
/// The floods under which nginx is measured, the same for every responder
/// (0: none).
const HTTP_FLOODS: [u64; 3] = [0, 100_000, 400_000];
const HTTP_PERIOD: Duration = Duration::from_millis(5);
/// nginx is measured in rounds, each flood rate for `HTTP_BLOCK` in turn,
/// so that the machine's other load falls on every rate alike.
const HTTP_BLOCK: Duration = Duration::from_secs(2);
const HTTP_ROUNDS: usize = 4;
/// The rate at which the responders' costs are compared at equal load: a
/// storm each of them keeps up with.
const REFERENCE: u64 = 100_000;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Responder {
    /// The node drops every frame in XDP: what receiving one costs.
    Floor,
    /// The node sends every frame straight back (XDP_TX, MACs swapped): the
    /// least an answer costs.
    Bounce,
    Xdp,
    Kernel,
    AfPacket,
}

impl Responder {
    fn label(self) -> &'static str {
        match self {
            Responder::Floor => "floor: received and dropped (XDP_DROP)",
            Responder::Bounce => "floor: sent straight back (XDP_TX, MACs swapped)",
            Responder::Xdp => "(a) XDP (`speaker static`)",
            Responder::Kernel => "(b) kernel, VIP on the interface",
            Responder::AfPacket => "(c) AF_PACKET stand-in of MetalLB's design",
        }
    }

    fn is_floor(self) -> bool {
        matches!(self, Responder::Floor | Responder::Bounce)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Proto {
    Arp,
    Nd,
}

/// One rate step.
struct Step {
    rate: u64,
    sent: Sent,
    /// Requests that reached the node's receive path.
    arrived: u64,
    answered: u64,
    /// CPU time of the node's tasks, µs.
    cpu_us: f64,
    /// The node CPU's busy share, whoever kept it busy (for the log).
    cpu_busy: f64,
    /// The node's CPU time by task, µs (for the log).
    per_task: Vec<(&'static str, f64)>,
}

impl Step {
    fn offered(&self) -> u64 {
        self.sent.sent + self.sent.refused
    }

    fn sent_pps(&self) -> f64 {
        self.offered() as f64 / self.sent.elapsed.as_secs_f64()
    }

    fn answered_per_s(&self) -> f64 {
        self.answered as f64 / self.sent.elapsed.as_secs_f64()
    }

    fn answered_share(&self) -> f64 {
        self.answered as f64 / self.offered().max(1) as f64
    }

    /// Requests lost before the node's receive path: veth's ring full.
    fn lost_before(&self) -> u64 {
        self.offered().saturating_sub(self.arrived)
    }

    /// Requests that arrived and got no reply back.
    fn lost_after(&self) -> u64 {
        self.arrived.saturating_sub(self.answered)
    }

    fn lossless(&self) -> bool {
        self.answered_share() >= LOSSLESS
    }

    fn reached(&self) -> bool {
        self.sent_pps() >= self.rate as f64 * REACHED
    }

    /// The node's tasks' CPU time as a share of one CPU.
    fn node_share(&self) -> f64 {
        self.cpu_us / (self.sent.elapsed.as_secs_f64() * 1e6)
    }

    fn us_per_request(&self) -> f64 {
        self.cpu_us / self.arrived.max(1) as f64
    }

    fn us_per_answer(&self) -> f64 {
        if self.answered == 0 {
            return f64::NAN;
        }
        self.cpu_us / self.answered as f64
    }
}

struct Latency {
    flood: u64,
    ms: Vec<f64>,
    failed: usize,
}

struct Outcome {
    who: Responder,
    arp: Vec<Step>,
    nd: Vec<Step>,
    http: Vec<Latency>,
    /// The stand-in's socket drops over all its steps.
    socket_drops: Option<u64>,
}

pub fn run(md: &mut String) -> Result<()> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        bail!("the storm part needs 2 CPUs (one for the generator, one for the node); {cpus} here");
    }
    // Everything this thread starts (commands, the generator's and the
    // client's threads) runs on the generator's CPU; the node's own tasks
    // are moved to the node's.
    let _pinned = cpu::Pinned::this_thread(GEN_CPU)?;
    let mut bed = Bed::new()?;
    // nginx stays up throughout; idle, it costs nothing.
    let nginx = Nginx::start(&bed.node, "node", NODE_IP)?;
    let pid_file = std::env::temp_dir()
        .join(format!("{}-nginx", bed.node.name()))
        .join("nginx.pid");
    let nginx_pid: i32 = std::fs::read_to_string(&pid_file)
        .with_context(|| format!("cannot read {}", pid_file.display()))?
        .trim()
        .parse()
        .context("nginx's pid file")?;
    cpu::place_process(nginx_pid, NODE_CPU)?;
    let load_before = load_average();
    let mut out = Vec::new();
    for who in [
        Responder::Floor,
        Responder::Bounce,
        Responder::Xdp,
        Responder::Kernel,
        Responder::AfPacket,
    ] {
        eprintln!("bench: storm, {}", who.label());
        out.push(measure(&mut bed, who, nginx_pid)?);
    }
    drop(nginx);
    write(md, &out, &load_before, &load_average())
}

/// The machine's load averages (other work shares it with the benchmark).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// The sweeps and nginx's latency with responder `who` on the node.
fn measure(bed: &mut Bed, who: Responder, nginx_pid: i32) -> Result<Outcome> {
    let vip = ipv4(VIP);
    // What the node runs; dropped (stopped, detached, removed) at the end.
    let mut agent = None;
    let mut standin = None;
    // The node's tasks, whose CPU time is the node's.
    let mut tasks = vec![("nginx", PathBuf::from(format!("/proc/{nginx_pid}/stat")))];
    match who {
        Responder::Floor => {
            bed.node_prog = Some(attach(&bed.node, NODE_IF, "testbed_drop")?);
        }
        Responder::Bounce => {
            bed.node_prog = Some(attach(&bed.node, NODE_IF, "testbed_swap_macs")?);
        }
        Responder::Xdp => {
            #[rustfmt::skip]
            let mut a = Agent::start(&bed.node, &[
                "static", "-i", NODE_IF, "--vip", VIP, "--vip", VIP6, "--xdp-mode", "native",
                // No gratuitous ARP: the generator's end counts every frame
                // it receives as a reply.
                "--garp-count", "0",
            ])?;
            a.wait_ready(&bed.node, NODE_IF)?;
            cpu::place_process(a.pid() as i32, NODE_CPU)?;
            tasks.push(("agent", format!("/proc/{}/stat", a.pid()).into()));
            agent = Some(a);
        }
        Responder::Kernel => {
            bed.node_prog = Some(attach(&bed.node, NODE_IF, "testbed_pass")?);
            bed.node
                .ip(&["addr", "add", &format!("{VIP}/32"), "dev", NODE_IF])?;
            #[rustfmt::skip]
            bed.node.ip(&["-6", "addr", "add", &format!("{VIP6}/128"), "dev", NODE_IF, "nodad"])?;
        }
        Responder::AfPacket => {
            bed.node_prog = Some(attach(&bed.node, NODE_IF, "testbed_pass")?);
            let s = afpacket::Responder::start(&bed.node, NODE_IF, vip, bed.node_mac, NODE_CPU)?;
            tasks.push(("stand-in", format!("/proc/self/task/{}/stat", s.tid).into()));
            standin = Some(s);
        }
    }
    for pid in threaded_napi(&bed.node, NODE_IF, NODE_CPU)? {
        tasks.push(("receive", format!("/proc/{pid}/stat").into()));
    }
    // Let the start's own frames (MLD reports, neighbour work) pass before
    // counting.
    std::thread::sleep(Duration::from_millis(500));

    let arp = Arp {
        trailer: vec![0; 18], // padded to Ethernet's 60 bytes, as on a wire
        ..Arp::request(bed.gen_mac, ipv4(GEN_IP), vip)
    }
    .bytes();
    let nd = Nd::solicit(bed.gen_mac, ipv6(GEN_IP6), ipv6(VIP6)).bytes();
    let mut arp_steps = Vec::new();
    let mut nd_steps = Vec::new();
    for (proto, frame, steps) in [
        (Proto::Arp, &arp, &mut arp_steps),
        (Proto::Nd, &nd, &mut nd_steps),
    ] {
        // MetalLB answers NDP too, but the stand-in is ARP's alone; the
        // floors are the same for either.
        if proto == Proto::Nd && (who == Responder::AfPacket || who.is_floor()) {
            continue;
        }
        for rate in RATES {
            let s = step(bed, who, &tasks, frame, rate)?;
            eprintln!("bench: storm, {} {proto:?} {}", who.label(), line(&s));
            steps.push(s);
        }
    }

    let mut http = Vec::new();
    if !who.is_floor() {
        // nginx's client needs its end to pass frames to its stack.
        bed.generator_end("testbed_pass")?;
        http = HTTP_FLOODS
            .iter()
            .map(|&flood| Latency {
                flood,
                ms: Vec::new(),
                failed: 0,
            })
            .collect::<Vec<_>>();
        for _ in 0..HTTP_ROUNDS {
            for l in &mut http {
                let (ms, failed) = latencies(bed, &arp, l.flood)?;
                l.ms.extend(ms);
                l.failed += failed;
            }
        }
        for l in &mut http {
            l.ms.sort_by(f64::total_cmp);
            eprintln!(
                "bench: storm, {} nginx under {}: p50 {:.3} ms, p99 {:.3} ms, {} failed",
                who.label(),
                rate_label(l.flood),
                quantile(&l.ms, 0.5),
                quantile(&l.ms, 0.99),
                l.failed
            );
        }
        bed.generator_end("testbed_drop")?;
    }

    let socket_drops = match standin {
        Some(s) => Some(s.stop()?.socket_drops),
        None => None,
    };
    if let Some(mut a) = agent {
        a.terminate()?;
    }
    if who == Responder::Kernel {
        bed.node
            .ip(&["addr", "del", &format!("{VIP}/32"), "dev", NODE_IF])?;
        bed.node
            .ip(&["-6", "addr", "del", &format!("{VIP6}/128"), "dev", NODE_IF])?;
    }
    bed.node_prog = None;
    Ok(Outcome {
        who,
        arp: arp_steps,
        nd: nd_steps,
        http,
        socket_drops,
    })
}

fn line(s: &Step) -> String {
    format!(
        "{}: sent {:.0}/s, answered {:.2}%, lost before the node {}, lost at the node {}, node tasks {:.0}% of a CPU (CPU {NODE_CPU} {:.0}% busy; {}), {:.2} µs/request, {:.2} µs/answer",
        rate_label(s.rate),
        s.sent_pps(),
        s.answered_share() * 100.0,
        s.lost_before(),
        s.lost_after(),
        s.node_share() * 100.0,
        s.cpu_busy * 100.0,
        s.per_task
            .iter()
            .map(|(n, us)| format!("{n} {:.0} ms", us / 1e3))
            .collect::<Vec<_>>()
            .join(", "),
        s.us_per_request(),
        s.us_per_answer()
    )
}

/// One flood step at `rate`: the best of `TRIALS` runs, the one that lost
/// the fewest requests (dropped by the dropping floor's design aside).
fn step(
    bed: &Bed,
    who: Responder,
    tasks: &[(&'static str, PathBuf)],
    frame: &[u8],
    rate: u64,
) -> Result<Step> {
    let kept = |s: &Step| {
        if who == Responder::Floor {
            s.arrived
        } else {
            s.answered
        }
    };
    let mut best: Option<Step> = None;
    for _ in 0..TRIALS {
        let s = trial(bed, tasks, frame, rate)?;
        if best.as_ref().is_none_or(|b| kept(&s) > kept(b)) {
            best = Some(s);
        }
    }
    best.context("no trial")
}

/// One run at `rate` for `TRIAL`: the frames sent, arrived and answered,
/// and the CPU time of the node's `tasks`.
fn trial(bed: &Bed, tasks: &[(&'static str, PathBuf)], frame: &[u8], rate: u64) -> Result<Step> {
    let node_us = || -> Result<Vec<f64>> { tasks.iter().map(|(_, t)| cpu::task_us(t)).collect() };
    let (c0, u0) = (bed.counts()?, node_us()?);
    let frame = frame.to_vec();
    let ifindex = bed.gen_ifindex;
    let (sent, t0, t1) = bed.generator.enter(move || -> Result<_> {
        cpu::place(0, GEN_CPU, cpu::TASK)?;
        let flood = Flood::open(ifindex, frame)?;
        let t0 = cpu::cpu_times()?;
        let sent = flood.run(rate, TRIAL)?;
        Ok((sent, t0, cpu::cpu_times()?))
    })??;
    // Replies still in flight.
    std::thread::sleep(Duration::from_millis(200));
    let (c1, u1) = (bed.counts()?, node_us()?);
    let d = c1.since(&c0);
    let per_task: Vec<(&'static str, f64)> = tasks
        .iter()
        .zip(u1.iter().zip(&u0))
        .map(|((name, _), (a, b))| (*name, a - b))
        .collect();
    Ok(Step {
        rate,
        sent,
        arrived: d.arrived,
        answered: d.answered,
        cpu_us: per_task.iter().map(|(_, us)| us).sum(),
        cpu_busy: cpu::busy_share(&t0, &t1, NODE_CPU),
        per_task,
    })
}

/// nginx's latency seen from the generator's namespace for `HTTP_BLOCK`,
/// one new connection per request every `HTTP_PERIOD`, with `frame`
/// flooding at `flood` per second meanwhile (0: none); in ms, and the
/// requests that failed.
fn latencies(bed: &Bed, frame: &[u8], flood: u64) -> Result<(Vec<f64>, usize)> {
    let flooder = if flood > 0 {
        let (frame, ifindex) = (frame.to_vec(), bed.gen_ifindex);
        Some(bed.generator.spawn(move || -> Result<Sent> {
            cpu::place(0, GEN_CPU, cpu::TASK)?;
            Flood::open(ifindex, frame)?.run(flood, HTTP_BLOCK + Duration::from_secs(1))
        })?)
    } else {
        None
    };
    std::thread::sleep(Duration::from_millis(500));
    let target: SocketAddr = format!("{VIP}:{}", nginx::PORT).parse()?;
    let measured = bed.generator.enter(move || -> Result<(Vec<f64>, usize)> {
        cpu::place(0, GEN_CPU, cpu::TASK)?;
        let (mut ms, mut failed) = (Vec::new(), 0);
        let start = Instant::now();
        let mut next = start;
        while start.elapsed() < HTTP_BLOCK {
            let t = Instant::now();
            match get(target) {
                Ok(()) => ms.push(t.elapsed().as_secs_f64() * 1e3),
                Err(_) => failed += 1,
            }
            next += HTTP_PERIOD;
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        Ok((ms, failed))
    });
    // The flood's thread is joined whatever the client's outcome.
    if let Some(f) = flooder {
        f.join()
            .map_err(|_| anyhow::anyhow!("the flood's thread panicked"))??;
    }
    measured?
}

/// One `GET /` on a new connection, answered 200 within a second.
fn get(target: SocketAddr) -> Result<()> {
    let timeout = Duration::from_secs(1);
    let mut s = TcpStream::connect_timeout(&target, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: storm\r\n\r\n")?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)?;
    if !answer.starts_with(b"HTTP/1.1 200") {
        bail!("not a 200");
    }
    Ok(())
}

fn rate_label(rate: u64) -> String {
    match rate {
        0 => "no flood".into(),
        r if r >= 1_000_000 && r % 100_000 == 0 => format!("{:.1}M", r as f64 / 1e6),
        r => format!("{}k", r / 1000),
    }
}

/// The highest rate answered without loss, among the rates the generator
/// reached.
fn highest_lossless(steps: &[Step]) -> f64 {
    steps
        .iter()
        .filter(|s| s.lossless() && s.reached())
        .map(Step::sent_pps)
        .fold(0.0, f64::max)
}

fn write(md: &mut String, out: &[Outcome], load_before: &str, load_after: &str) -> Result<()> {
    writeln!(md, "## ARP and ND storms\n")?;
    writeln!(
        md,
        "What a flood of ARP requests for the VIP costs the node that answers, and what it does to a web server on that node. Side by side in one run, on one veth link between a generator namespace and a node namespace:\n\n\
         - (a) the XDP responder, `speaker static` (native mode);\n\
         - (b) no responder: the VIP configured on the node's interface, and the kernel answers (kube-vip's and keepalived's way);\n\
         - (c) a user-space AF_PACKET responder of MetalLB's design: **a stand-in of MetalLB's design written for this benchmark, not MetalLB** (tests/src/bin/bench/storm/afpacket.rs). Like MetalLB's speaker (github.com/mdlayher/arp) it reads every ARP frame from a packet socket bound to ETH_P_ARP, one recvfrom(2) each, and answers a request for the VIP with one sendto(2). It has none of Go's runtime or of MetalLB's bookkeeping, so MetalLB itself would cost more per request, not less. The node's kernel sees every request too (strict ARP: the VIP on lo, `arp_ignore=1`), as on a MetalLB node;\n\
         - two floors, testbed XDP programs at the node: one drops every frame (what receiving a frame on this link costs), one sends every frame straight back with its MAC addresses swapped (the least an answer can cost: receiving, and sending one frame back).\n"
    )?;
    writeln!(
        md,
        "The generator (storm/flood.rs; our own rather than trafgen, as it counts exactly what the kernel took from it) sends one 60-byte broadcast \"who has VIP?\" from one host over and over through a packet socket (`sendmmsg`, qdisc bypassed), paced to each rate; each step is the best of {TRIALS} one-second runs (the one that lost the fewest requests), as the machine is shared and a stall of the node's virtual CPU by the host loses frames that the node's own load would not. The two CPUs are split: the generator and its end of the link on CPU {GEN_CPU}, the node on CPU {NODE_CPU}. veth has no interrupts, so each end runs threaded NAPI (the receive path in a kernel thread), pinned to its side's CPU; the node's processes (the agent, the stand-in, nginx) run on the node's CPU too. Every thread that matters runs SCHED_FIFO, the receive threads above the processes as a NIC's softirq preempts them, so that other load on the machine cannot delay them.\n\n\
         *Sent*: requests the generator offered per second. *Answered*: replies back at the generator's end (an XDP_DROP program there; veth counts every frame it receives), as a share of the requests offered; without loss means at least {:.1}%. *Lost before the node*: requests that never reached the node's receive path (veth's 256-frame ring full). *Lost at the node*: requests received and not answered. *Node CPU*: the CPU time of the node's tasks (the receive thread, where the XDP program, the kernel's ARP and the reply's transmission run; the agent or the stand-in; nginx) as a share of one CPU, from their utime + stime, which the kernel takes from the scheduler's exact run time. *CPU-µs per request*: that time over the requests received; *per answer*: over the replies.\n",
        LOSSLESS * 100.0
    )?;
    writeln!(
        md,
        "The machine was shared with other work during the run (load averages {load_before} at its start, {load_after} at its end); the node's figures count its own tasks only, but caches, memory and the hypervisor are shared.\n"
    )?;
    for (proto, title) in [
        (Proto::Arp, "ARP requests"),
        (
            Proto::Nd,
            "Neighbor Solicitations for an IPv6 VIP ((a) and (b) only)",
        ),
    ] {
        writeln!(md, "### {title}\n")?;
        writeln!(
            md,
            "| responder | offered | sent /s | answered | lost before the node | lost at the node | node CPU | CPU-µs per request | CPU-µs per answer |"
        )?;
        writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|")?;
        for o in out {
            let steps = if proto == Proto::Arp { &o.arp } else { &o.nd };
            for s in steps {
                // The dropping floor answers nothing.
                let floor = o.who == Responder::Floor;
                writeln!(
                    md,
                    "| {} | {} | {:.0} | {} | {} | {} | {:.0}% | {:.2} | {} |",
                    o.who.label(),
                    rate_label(s.rate),
                    s.sent_pps(),
                    if floor {
                        "-".into()
                    } else {
                        format!("{:.2}%", s.answered_share() * 100.0)
                    },
                    s.lost_before(),
                    if floor {
                        "-".into()
                    } else {
                        s.lost_after().to_string()
                    },
                    s.node_share() * 100.0,
                    s.us_per_request(),
                    if floor {
                        "-".into()
                    } else {
                        format!("{:.2}", s.us_per_answer())
                    },
                )?;
            }
        }
        writeln!(md)?;
    }
    if let Some(drops) = out.iter().find_map(|o| o.socket_drops) {
        writeln!(
            md,
            "The stand-in's packet socket dropped {drops} requests over its steps (its receive buffer full: it could not read them as fast as they came).\n"
        )?;
    }
    summary(md, out)?;
    nginx_table(md, out)?;
    writeln!(
        md,
        "What limits this measurement. veth is no NIC: its receive ring holds 256 frames (NICs: 512 to 4096, and several queues); a frame from a packet socket reaches a native XDP program only after veth copies it into a page of its own, and the sender's buffer is freed on the receiver's CPU, costs a NIC's driver does not have, which the floor row shows and every responder pays. Waking the other end's receive thread is an inter-processor interrupt, which in this virtual machine costs microseconds; at low rates every few frames pay one, which is why the cost per frame falls as the rate rises. Threaded NAPI at real-time priority stands in for the NIC's interrupt and softirq: close to them while the node keeps up, harsher in overload, where the kernel would hand the remaining softirq work to ksoftirqd and share the CPU with the stand-in, and here the receive thread keeps it. Two CPUs only: one for the generator and one for the node; the generator's CPU also receives the replies, and veth copies a reply the kernel built (b, c) for the XDP program that counts it there, so with (b) and (c) the generator fell short of the highest rates (*sent* below *offered*; such steps do not count for the highest rate without loss). Run to run, on this shared machine, the figures at the highest rates varied by a third. One flooding host with one MAC and address, so (b)'s neighbour table sees one entry refreshed; a scan from many addresses would also churn it. A real MetalLB speaker (Go) would cost more than the stand-in per request, not less."
    )?;
    Ok(())
}

/// The step at `rate`.
fn at(o: &Outcome, rate: u64) -> Option<&Step> {
    o.arp.iter().find(|s| s.rate == rate)
}

/// The step with the most answers per second, whatever was lost.
fn peak(steps: &[Step]) -> Option<&Step> {
    steps
        .iter()
        .max_by(|a, b| a.answered_per_s().total_cmp(&b.answered_per_s()))
}

/// Each responder at its peak and at equal load (`REFERENCE`), and the
/// targets.
fn summary(md: &mut String, out: &[Outcome]) -> Result<()> {
    let responders: Vec<&Outcome> = out.iter().filter(|o| !o.who.is_floor()).collect();
    let reference = rate_label(REFERENCE);
    let bounced = out
        .iter()
        .find(|o| o.who == Responder::Bounce)
        .and_then(|o| at(o, REFERENCE))
        .map_or(f64::NAN, Step::us_per_answer);
    writeln!(md, "### Summary (ARP)\n")?;
    writeln!(
        md,
        "*Peak*: the step with the most answers per second, whatever was lost; the node's one CPU, or the generator, was the limit there. *Answers per node CPU-second* at the peak is the rate at equal CPU. *At {reference}*, a storm every responder here keeps up with, *above the floor* is the CPU per answer less the bouncing floor's at that rate ({bounced:.2} µs): the cost of deciding and building the answer, beyond receiving a frame and sending one back.\n"
    )?;
    writeln!(
        md,
        "| responder | highest rate answered without loss, /s | peak answers /s | node CPU at the peak | CPU-µs per answer at the peak | answers per node CPU-second | answered at {reference} | CPU-µs per answer at {reference} | above the floor |"
    )?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    let (mut per_cpu, mut above, mut highest) = (Vec::new(), Vec::new(), Vec::new());
    for o in &responders {
        let best = highest_lossless(&o.arp);
        let (rate, share, us) = peak(&o.arp).map_or((f64::NAN, f64::NAN, f64::NAN), |s| {
            (s.answered_per_s(), s.node_share(), s.us_per_answer())
        });
        let (answered, at_ref) = at(o, REFERENCE).map_or((f64::NAN, f64::NAN), |s| {
            (s.answered_share(), s.us_per_answer())
        });
        per_cpu.push(1e6 / us);
        above.push(at_ref - bounced);
        highest.push(best);
        writeln!(
            md,
            "| {} | {best:.0} | {rate:.0} | {:.0}% | {us:.2} | {:.0} | {:.2}% | {at_ref:.2} | {:.2} |",
            o.who.label(),
            share * 100.0,
            1e6 / us,
            answered * 100.0,
            at_ref - bounced
        )?;
    }
    if per_cpu.len() == 3 {
        let r = |i: usize| per_cpu[0] / per_cpu[i];
        let h = |i: usize| highest[0] / highest[i].max(1.0);
        let ok = r(1) >= 10.0 && r(2) >= 10.0;
        writeln!(
            md,
            "\n**Target: (a) at least 10x the rate of (b) and (c) at equal CPU: {}.** Answers per node CPU-second at each one's peak, (a) over (b): {:.1}x, over (c): {:.1}x; highest rate answered without loss on the node's one CPU, (a) over (b): {:.1}x, over (c): {:.1}x. {}\n",
            if ok { "met" } else { "not met" },
            r(1),
            r(2),
            h(1),
            h(2),
            // Noise in the floor can exceed what (a) adds to it.
            if above[0] > 0.05 {
                format!(
                    "Above the floor at {reference}, the cost of answering itself: (b) {:.1}x (a)'s, (c) {:.1}x.",
                    above[1] / above[0],
                    above[2] / above[0]
                )
            } else {
                format!(
                    "Above the floor at {reference}, (a) adds {:.2} µs, within the measurement's noise, where (b) adds {:.2} µs and (c) {:.2} µs.",
                    above[0], above[1], above[2]
                )
            }
        )?;
    }
    Ok(())
}

fn nginx_table(md: &mut String, out: &[Outcome]) -> Result<()> {
    writeln!(md, "### nginx under the flood\n")?;
    writeln!(
        md,
        "Debian's nginx on the node, a client in the generator's namespace sending `GET /` to the VIP on a new connection every {} ms, {} s for each flood rate in {} rounds of {} s (each request starts with a SYN queued behind the flood in the node's receive ring, as on a NIC), without flood and under a flood of ARP requests for the VIP at the same rates for every responder. Latency in ms; *p99 vs no flood*: against the same responder's run without flood; a request unanswered within 1 s failed. Where the node's CPU is overrun, its receive thread (at real-time priority) keeps the CPU and nginx waits: harsher than a kernel, which would hand the excess to ksoftirqd and share the CPU with nginx.\n",
        HTTP_PERIOD.as_millis(),
        HTTP_BLOCK.as_secs() * HTTP_ROUNDS as u64,
        HTTP_ROUNDS,
        HTTP_BLOCK.as_secs(),
    )?;
    writeln!(
        md,
        "| responder | flood | requests | p50 | p99 | p99 vs no flood | failed |"
    )?;
    writeln!(md, "|---|---|---:|---:|---:|---:|---:|")?;
    let mut target = None;
    for o in out.iter().filter(|o| !o.http.is_empty()) {
        let quiet = o
            .http
            .iter()
            .find(|l| l.flood == 0)
            .map_or(f64::NAN, |l| quantile(&l.ms, 0.99));
        for l in &o.http {
            let p99 = quantile(&l.ms, 0.99);
            let change = (p99 / quiet - 1.0) * 100.0;
            if o.who == Responder::Xdp && l.flood == HTTP_FLOODS[1] {
                target = Some(change);
            }
            writeln!(
                md,
                "| {} | {} | {} | {:.3} | {p99:.3} | {} | {} |",
                o.who.label(),
                rate_label(l.flood),
                l.ms.len() + l.failed,
                quantile(&l.ms, 0.5),
                if l.flood == 0 {
                    "-".into()
                } else {
                    format!("{change:+.0}%")
                },
                l.failed
            )?;
        }
    }
    if let Some(change) = target {
        writeln!(
            md,
            "\n**Target: nginx's latency under flood within 10% of no flood, with (a): p99 {change:+.0}% under {}, {}.**\n",
            rate_label(HTTP_FLOODS[1]),
            if change <= 10.0 { "met" } else { "not met" }
        )?;
    }
    Ok(())
}
