//! ARP and ND storms: what a flood of requests for the VIP costs the node
//! that answers, side by side for (a) the XDP responder (`speaker static`),
//! (b) the kernel answering for the VIP configured on its interface
//! (kube-vip's and keepalived's way), (c) a user-space AF_PACKET responder
//! of MetalLB's design (afpacket.rs: a stand-in, not MetalLB); and what the
//! flood does to an nginx on the same node.
//!
//! One veth link between a generator namespace and a node namespace. The
//! two CPUs are split: the generator (and everything its side receives) on
//! one, the node on the other. veth has no interrupts: a frame sent is
//! received on the sender's CPU unless the receiving end runs threaded
//! NAPI, so both ends do, each pinned to its own side's CPU, and every
//! process of the node (the agent, nginx, the stand-in) is pinned to the
//! node's. The node's CPU is then that CPU's busy time in /proc/stat
//! (user, system, irq, softirq), which also catches the kernel's receive
//! path that no process is charged for; its busy time in the second before
//! each step, with no flood, is subtracted.

mod afpacket;
mod flood;

use std::{
    fmt::Write as _,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use aya::{
    Ebpf,
    programs::{Xdp, XdpMode},
};
use speaker_tests::{
    agent::Agent,
    frames::{Arp, Nd},
    netns::{self, Netns},
    nginx::{self, Nginx},
    programs,
    topology::{ipv4, ipv6},
};

use crate::quantile;
use flood::{Flood, Sent};

const NODE_IF: &str = "storm0";
const GEN_IF: &str = "flood0";
const NODE_IP: &str = "198.18.0.1";
const GEN_IP: &str = "198.18.0.2";
const VIP: &str = "198.18.0.10";
const NODE_IP6: &str = "2001:db8::1";
const GEN_IP6: &str = "2001:db8::2";
const VIP6: &str = "2001:db8::10";
const GEN_CPU: usize = 0;
const NODE_CPU: usize = 1;
/// Offered rates in frames per second; 0: as fast as the generator can.
const RATES: [u64; 7] = [10_000, 50_000, 100_000, 200_000, 400_000, 800_000, 0];
const STEP: Duration = Duration::from_secs(3);
/// The quiet second before each step, for the node CPU's background.
const QUIET: Duration = Duration::from_secs(1);
/// "Without loss": at least this share of the requests sent answered.
const LOSSLESS: f64 = 0.999;
/// A step reached its rate when the generator sent at least this share.
const REACHED: f64 = 0.95;
/// The flood under which nginx is measured, the same for every responder.
const HTTP_FLOOD_PPS: u64 = 100_000;
const HTTP_PERIOD: Duration = Duration::from_millis(5);
const HTTP_FOR: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Responder {
    Xdp,
    Kernel,
    AfPacket,
}

impl Responder {
    fn label(self) -> &'static str {
        match self {
            Responder::Xdp => "(a) XDP (`speaker static`)",
            Responder::Kernel => "(b) kernel, VIP on the interface",
            Responder::AfPacket => "(c) AF_PACKET stand-in of MetalLB's design",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Proto {
    Arp,
    Nd,
}

/// One rate step.
struct Step {
    rate: u64,
    sent: Sent,
    answered: u64,
    /// Dropped because veth's receive ring at the node was full (the NIC's
    /// ring overflowing).
    ring: u64,
    /// Share of the node's CPU busy during the step (background included).
    busy: f64,
    /// The node's CPU time above its background, µs.
    cpu_us: f64,
}

impl Step {
    fn sent_pps(&self) -> f64 {
        (self.sent.sent + self.sent.refused) as f64 / self.sent.elapsed.as_secs_f64()
    }

    fn answered_share(&self) -> f64 {
        let offered = self.sent.sent + self.sent.refused;
        if offered == 0 {
            return 0.0;
        }
        self.answered as f64 / offered as f64
    }

    fn lossless(&self) -> bool {
        self.answered_share() >= LOSSLESS
    }

    /// Whether the generator kept up with the rate asked of it.
    fn reached(&self) -> bool {
        self.rate == 0 || self.sent_pps() >= self.rate as f64 * REACHED
    }

    fn us_per_answer(&self) -> f64 {
        self.cpu_us / self.answered.max(1) as f64
    }
}

struct Latency {
    ms: Vec<f64>,
    failed: usize,
}

struct Outcome {
    who: Responder,
    arp: Vec<Step>,
    nd: Vec<Step>,
    quiet: Latency,
    flooded: Latency,
    /// The stand-in's socket drops over all its steps.
    socket_drops: Option<u64>,
}

pub fn run(md: &mut String) -> Result<()> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        bail!("the storm part needs 2 CPUs (one for the generator, one for the node); {cpus} here");
    }
    // Everything this thread starts (commands, the generator's and the
    // client's threads) runs on the generator's CPU; the node's own
    // processes are moved to the node's.
    let _affinity = Affinity::pin_this_thread(GEN_CPU)?;
    let mut bed = Bed::new()?;
    // nginx stays up throughout; idle, it costs nothing.
    let nginx = Nginx::start(&bed.node, "node", NODE_IP)?;
    let pid_file = std::env::temp_dir()
        .join(format!("{}-nginx", bed.node.name()))
        .join("nginx.pid");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .with_context(|| format!("cannot read {}", pid_file.display()))?
        .trim()
        .parse()
        .context("nginx's pid file")?;
    pin_process(pid, NODE_CPU)?;
    let mut out = Vec::new();
    for who in [Responder::Xdp, Responder::Kernel, Responder::AfPacket] {
        eprintln!("bench: storm, {}", who.label());
        out.push(measure(&mut bed, who)?);
    }
    drop(nginx);
    write(md, &out)
}

/// The sweeps and nginx's latency with responder `who` on the node.
fn measure(bed: &mut Bed, who: Responder) -> Result<Outcome> {
    let vip = ipv4(VIP);
    // What the node runs; dropped (stopped, detached, removed) at the end.
    let mut agent = None;
    let mut standin = None;
    match who {
        Responder::Xdp => {
            let mut a = Agent::start(
                &bed.node,
                &[
                    "static",
                    "-i",
                    NODE_IF,
                    "--vip",
                    VIP,
                    "--vip",
                    VIP6,
                    "--xdp-mode",
                    "native",
                    // No gratuitous ARP: the generator's side counts every
                    // frame it receives as a reply.
                    "--garp-count",
                    "0",
                ],
            )?;
            a.wait_ready(&bed.node, NODE_IF)?;
            pin_process(a.pid() as i32, NODE_CPU)?;
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
            standin = Some(afpacket::Responder::start(
                &bed.node,
                NODE_IF,
                vip,
                bed.node_mac,
                NODE_CPU,
            )?);
        }
    }
    threaded_napi(&bed.node, NODE_IF, NODE_CPU)?;
    // Let the start's own frames (MLD reports, the kernel's neighbour
    // work) pass before counting.
    std::thread::sleep(Duration::from_millis(500));

    let arp = Arp {
        trailer: vec![0; 18], // padded to Ethernet's 60 bytes, as on a wire
        ..Arp::request(bed.gen_mac, ipv4(GEN_IP), vip)
    }
    .bytes();
    let nd = Nd::solicit(bed.gen_mac, ipv6(GEN_IP6), ipv6(VIP6)).bytes();
    let mut steps = Vec::new();
    for rate in RATES {
        steps.push(step(bed, &arp, rate)?);
        eprintln!(
            "bench: storm, {} ARP {}",
            who.label(),
            line(&steps[steps.len() - 1])
        );
    }
    let mut nd_steps = Vec::new();
    if who != Responder::AfPacket {
        for rate in RATES {
            nd_steps.push(step(bed, &nd, rate)?);
            eprintln!(
                "bench: storm, {} ND {}",
                who.label(),
                line(&nd_steps[nd_steps.len() - 1])
            );
        }
    }

    // nginx's clients need their own side to pass frames to the stack.
    bed.gen_prog = None;
    bed.gen_prog = Some(attach(&bed.generator, GEN_IF, "testbed_pass")?);
    threaded_napi(&bed.generator, GEN_IF, GEN_CPU)?;
    let quiet = latencies(bed, None)?;
    let flooded = latencies(bed, Some(&arp))?;
    bed.gen_prog = None;
    bed.gen_prog = Some(attach(&bed.generator, GEN_IF, "testbed_drop")?);
    threaded_napi(&bed.generator, GEN_IF, GEN_CPU)?;

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
        arp: steps,
        nd: nd_steps,
        quiet,
        flooded,
        socket_drops,
    })
}

fn line(s: &Step) -> String {
    format!(
        "{}: sent {:.0}/s, answered {:.2}%, ring drops {}, node CPU {:.0}%, {:.2} µs/answer",
        rate_label(s.rate),
        s.sent_pps(),
        s.answered_share() * 100.0,
        s.ring,
        s.busy * 100.0,
        s.us_per_answer()
    )
}

/// One flood step at `rate`: the frames sent and answered, and the node's
/// CPU.
fn step(bed: &Bed, frame: &[u8], rate: u64) -> Result<Step> {
    let q0 = cpu_times()?;
    std::thread::sleep(QUIET);
    let q1 = cpu_times()?;
    let background = share(&q0, &q1, NODE_CPU);
    let (gen0, node0) = (link(&bed.generator, GEN_IF)?, link(&bed.node, NODE_IF)?);
    let frame = frame.to_vec();
    let ifindex = bed.gen_ifindex;
    let (sent, t0, t1) = bed.generator.enter(move || -> Result<_> {
        let flood = Flood::open(ifindex, frame)?;
        let t0 = cpu_times()?;
        let sent = flood.run(rate, STEP)?;
        Ok((sent, t0, cpu_times()?))
    })??;
    // Replies still in flight.
    std::thread::sleep(Duration::from_millis(200));
    let (gen1, node1) = (link(&bed.generator, GEN_IF)?, link(&bed.node, NODE_IF)?);
    let busy = share(&t0, &t1, NODE_CPU);
    let ticks = t1[NODE_CPU].busy.saturating_sub(t0[NODE_CPU].busy);
    let busy_us = ticks as f64 * 1e6 / clock_ticks();
    let cpu_us = (busy_us - background * sent.elapsed.as_secs_f64() * 1e6).max(0.0);
    Ok(Step {
        rate,
        sent,
        answered: gen1.rx.saturating_sub(gen0.rx),
        ring: (gen1.tx_dropped + node1.rx_dropped)
            .saturating_sub(gen0.tx_dropped + node0.rx_dropped),
        busy,
        cpu_us,
    })
}

/// nginx's latency seen from the generator's namespace, one new connection
/// per request every `HTTP_PERIOD`, with `flood` sent at `HTTP_FLOOD_PPS`
/// meanwhile, if given.
fn latencies(bed: &Bed, flood: Option<&[u8]>) -> Result<Latency> {
    let flooder = match flood {
        Some(frame) => {
            let (frame, ifindex) = (frame.to_vec(), bed.gen_ifindex);
            Some(bed.generator.spawn(move || -> Result<Sent> {
                Flood::open(ifindex, frame)?.run(HTTP_FLOOD_PPS, HTTP_FOR + Duration::from_secs(1))
            })?)
        }
        None => None,
    };
    std::thread::sleep(Duration::from_millis(500));
    let target: SocketAddr = format!("{VIP}:{}", nginx::PORT).parse()?;
    let lat = bed.generator.enter(move || {
        let (mut ms, mut failed) = (Vec::new(), 0);
        let start = Instant::now();
        let mut next = start;
        while start.elapsed() < HTTP_FOR {
            let t = Instant::now();
            match get(target) {
                Ok(()) => ms.push(t.elapsed().as_secs_f64() * 1e3),
                Err(_) => failed += 1,
            }
            next += HTTP_PERIOD;
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        ms.sort_by(f64::total_cmp);
        Latency { ms, failed }
    })?;
    if let Some(f) = flooder {
        f.join()
            .map_err(|_| anyhow::anyhow!("the flood's thread panicked"))??;
    }
    Ok(lat)
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

/// The generator's namespace and the node's on one veth link.
struct Bed {
    // Field order is drop order: the programs before the namespaces.
    gen_prog: Option<Ebpf>,
    node_prog: Option<Ebpf>,
    node: Netns,
    generator: Netns,
    node_mac: [u8; 6],
    gen_mac: [u8; 6],
    gen_ifindex: u32,
}

impl Bed {
    fn new() -> Result<Self> {
        let node = Netns::new("stn")?;
        let generator = Netns::new("stg")?;
        #[rustfmt::skip]
        node.ip(&["link", "add", NODE_IF, "type", "veth", "peer", "name", GEN_IF, "netns", generator.name()])?;
        // No frames of their own during the steps: the generator's side
        // counts everything it receives as a reply.
        generator.sysctl(&format!("net.ipv6.conf.{GEN_IF}.disable_ipv6"), "1")?;
        node.sysctl(
            &format!("net.ipv6.conf.{NODE_IF}.router_solicitations"),
            "0",
        )?;
        node.ip(&["addr", "add", &format!("{NODE_IP}/24"), "dev", NODE_IF])?;
        #[rustfmt::skip]
        node.ip(&["-6", "addr", "add", &format!("{NODE_IP6}/64"), "dev", NODE_IF, "nodad"])?;
        generator.ip(&["addr", "add", &format!("{GEN_IP}/24"), "dev", GEN_IF])?;
        // The VIPs on lo with strict ARP, as kube-proxy in IPVS mode has
        // them: the node accepts traffic for them, its kernel does not
        // answer for them; (b) adds them to the interface.
        node.ip(&["addr", "add", &format!("{VIP}/32"), "dev", "lo"])?;
        #[rustfmt::skip]
        node.ip(&["-6", "addr", "add", &format!("{VIP6}/128"), "dev", "lo", "nodad"])?;
        node.sysctl("net.ipv4.conf.all.arp_ignore", "1")?;
        node.sysctl("net.ipv4.conf.all.arp_announce", "2")?;
        node.ip(&["link", "set", NODE_IF, "up"])?;
        generator.ip(&["link", "set", GEN_IF, "up"])?;
        let gen_prog = attach(&generator, GEN_IF, "testbed_drop")?;
        threaded_napi(&generator, GEN_IF, GEN_CPU)?;
        Ok(Self {
            gen_prog: Some(gen_prog),
            node_prog: None,
            node_mac: node.mac(NODE_IF)?,
            gen_mac: generator.mac(GEN_IF)?,
            gen_ifindex: generator.ifindex(GEN_IF)?,
            node,
            generator,
        })
    }
}

/// Testbed program `name` attached natively to `ifname` in `ns`; detached
/// when the returned object is dropped. On veth, a native program is also
/// what gives the receiving end NAPI (and so threaded NAPI) and what makes
/// XDP_TX frames from the other end arrive.
fn attach(ns: &Netns, ifname: &str, name: &str) -> Result<Ebpf> {
    ns.enter(|| -> Result<Ebpf> {
        let mut ebpf = Ebpf::load(programs::TESTBED)
            .context("cannot load the testbed object (built by `cargo xtask build-ebpf`)")?;
        let prog: &mut Xdp = ebpf
            .program_mut(name)
            .with_context(|| format!("{name} missing from the testbed object"))?
            .try_into()?;
        prog.load()?;
        prog.attach(ifname, XdpMode::Driver)
            .with_context(|| format!("cannot attach {name} to {ifname}"))?;
        Ok(ebpf)
    })?
}

/// Turns threaded NAPI on for `ifname` in `ns` and pins its thread to
/// `cpu`, so that what the interface receives is processed there and not
/// on the sender's CPU. Called after every attach: the NAPI instance (and
/// its thread) comes and goes with the XDP program.
fn threaded_napi(ns: &Netns, ifname: &str, cpu: usize) -> Result<()> {
    // Through `ip netns exec`, whose private /sys is the namespace's own.
    for v in ["0", "1"] {
        netns::run(Command::new("ip").args([
            "netns",
            "exec",
            ns.name(),
            "sh",
            "-c",
            &format!("echo {v} > /sys/class/net/{ifname}/threaded"),
        ]))?;
    }
    // The kernel names the thread napi/<ifname>-<id>; a command name holds
    // 15 characters, and these interface names are ours alone.
    let prefix = format!("napi/{ifname}-");
    let prefix = &prefix[..prefix.len().min(15)];
    let mut pinned = 0;
    for entry in std::fs::read_dir("/proc").context("/proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.starts_with(prefix) {
            set_affinity(pid, cpu).with_context(|| format!("cannot pin {}", comm.trim()))?;
            pinned += 1;
        }
    }
    if pinned == 0 {
        bail!("no NAPI thread for {ifname} in {}", ns.name());
    }
    Ok(())
}

/// Per-CPU busy and total time from /proc/stat, in clock ticks.
#[derive(Clone, Copy, Default)]
struct CpuTime {
    busy: u64,
    total: u64,
}

fn cpu_times() -> Result<Vec<CpuTime>> {
    let stat = std::fs::read_to_string("/proc/stat").context("/proc/stat")?;
    let mut out = Vec::new();
    for l in stat.lines() {
        let mut f = l.split_whitespace();
        let Some(cpu) = f.next().and_then(|c| c.strip_prefix("cpu")) else {
            continue;
        };
        if cpu.is_empty() {
            continue; // the sum line
        }
        // user nice system idle iowait irq softirq steal ...: busy is all
        // but idle, iowait and steal (the hypervisor's, not ours).
        let v: Vec<u64> = f.take(8).map(|x| x.parse().unwrap_or(0)).collect();
        if v.len() < 8 {
            bail!("unexpected /proc/stat line: {l}");
        }
        out.push(CpuTime {
            busy: v[0] + v[1] + v[2] + v[5] + v[6],
            total: v.iter().sum(),
        });
    }
    if out.len() <= NODE_CPU {
        bail!("/proc/stat has no cpu{NODE_CPU}");
    }
    Ok(out)
}

/// The busy share of `cpu` between two readings.
fn share(a: &[CpuTime], b: &[CpuTime], cpu: usize) -> f64 {
    let busy = b[cpu].busy.saturating_sub(a[cpu].busy) as f64;
    let total = b[cpu].total.saturating_sub(a[cpu].total) as f64;
    if total > 0.0 { busy / total } else { 0.0 }
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

/// An interface's packet counters (`ip -s`).
#[derive(Clone, Copy, Default)]
struct LinkCounts {
    rx: u64,
    rx_dropped: u64,
    tx_dropped: u64,
}

fn link(ns: &Netns, ifname: &str) -> Result<LinkCounts> {
    let out = ns.ip(&["-s", "-j", "link", "show", "dev", ifname])?;
    let v: serde_json::Value = serde_json::from_str(&out).context("`ip -s -j link` output")?;
    let s = &v[0]["stats64"];
    let n = |dir: &str, key: &str| -> Result<u64> {
        s[dir][key]
            .as_u64()
            .with_context(|| format!("no {dir}.{key} for {ifname}"))
    };
    Ok(LinkCounts {
        rx: n("rx", "packets")?,
        rx_dropped: n("rx", "dropped")?,
        tx_dropped: n("tx", "dropped")?,
    })
}

fn set_affinity(tid: i32, cpu: usize) -> Result<()> {
    // SAFETY: all-zero is an empty CPU set; CPU_SET stays within it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: cpu is below CPU_SETSIZE (checked by the caller's CPU count).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: set is a valid cpu_set_t of the size given.
    if unsafe { libc::sched_setaffinity(tid, size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(std::io::Error::last_os_error()).context("sched_setaffinity");
    }
    Ok(())
}

/// Pins the calling thread to `cpu`.
fn pin_thread(cpu: usize) -> Result<()> {
    set_affinity(0, cpu)
}

/// Pins every thread of process `pid` to `cpu` (threads it starts later
/// inherit it).
fn pin_process(pid: i32, cpu: usize) -> Result<()> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .with_context(|| format!("no process {pid}"))?;
    for t in tasks.flatten() {
        if let Some(tid) = t.file_name().to_str().and_then(|s| s.parse().ok()) {
            set_affinity(tid, cpu)?;
        }
    }
    Ok(())
}

/// The calling thread's CPU affinity, given back on drop: the other parts
/// run after this one in the same thread.
struct Affinity(libc::cpu_set_t);

impl Affinity {
    fn pin_this_thread(cpu: usize) -> Result<Self> {
        // SAFETY: all-zero is a valid cpu_set_t, filled in by the call.
        let mut old: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: old is writable for its size.
        if unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut old) } != 0 {
            return Err(std::io::Error::last_os_error()).context("sched_getaffinity");
        }
        pin_thread(cpu)?;
        Ok(Self(old))
    }
}

impl Drop for Affinity {
    fn drop(&mut self) {
        // SAFETY: a cpu_set_t read back from the kernel.
        unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &self.0) };
    }
}

fn rate_label(rate: u64) -> String {
    match rate {
        0 => "max".into(),
        r => format!("{}k", r / 1000),
    }
}

/// The highest rate answered without loss; and whether even the
/// generator's fastest was (then the responder's limit lies beyond).
fn highest_lossless(steps: &[Step]) -> (f64, bool) {
    let best = steps
        .iter()
        .filter(|s| s.lossless() && s.reached())
        .map(Step::sent_pps)
        .fold(0.0, f64::max);
    let at_max = steps.iter().any(|s| s.rate == 0 && s.lossless());
    (best, at_max)
}

fn write(md: &mut String, out: &[Outcome]) -> Result<()> {
    writeln!(md, "## ARP and ND storms\n")?;
    writeln!(
        md,
        "What a flood of ARP requests for the VIP costs the node that answers, and what it does to a web server on that node. Side by side in one run, on one veth link between a generator namespace and a node namespace:\n\n\
         - (a) the XDP responder, `speaker static` (native mode);\n\
         - (b) no responder: the VIP configured on the node's interface, the kernel answers (kube-vip's and keepalived's way);\n\
         - (c) a user-space AF_PACKET responder of MetalLB's design: **a stand-in of MetalLB's design written for this benchmark, not MetalLB** (tests/src/bin/bench/storm/afpacket.rs). Like MetalLB's speaker (github.com/mdlayher/arp) it reads every ARP frame from a packet socket bound to ETH_P_ARP, one recvfrom(2) each, and answers a request for the VIP with one sendto(2); it has none of Go's runtime or MetalLB's bookkeeping, so MetalLB itself would cost more per request, not less. The node's kernel sees every request too (strict ARP: the VIP on lo, `arp_ignore=1`), as on a MetalLB node.\n"
    )?;
    writeln!(
        md,
        "The generator (storm/flood.rs, our own rather than trafgen: it counts exactly what the kernel took from it) sends one 60-byte broadcast \"who has VIP?\" from one host over and over through a packet socket (`sendmmsg`, qdisc bypassed), paced to each rate for {} s; *max* is as fast as it can. *Answered*: frames arriving back on the generator's end (an XDP_DROP program there, counted by veth), as a share of the requests sent; without loss means at least {:.1}%. *Ring*: requests dropped because veth's 256-frame receive ring at the node was full. The two CPUs are split: the generator and its end on CPU {GEN_CPU}, the node on CPU {NODE_CPU} (both veth ends run threaded NAPI pinned to their side's CPU, so the node's receive path runs on the node's CPU and not on the sender's; the agent, nginx and the stand-in are pinned there too). *Node CPU*: CPU {NODE_CPU}'s busy share in /proc/stat (user + system + irq + softirq), which includes the kernel's receive path that no process is charged for; *CPU-µs per answer*: that busy time less the same CPU's busy share in the quiet second before the step, over the requests answered.\n",
        STEP.as_secs(),
        LOSSLESS * 100.0
    )?;
    for (proto, title) in [
        (Proto::Arp, "ARP requests"),
        (Proto::Nd, "Neighbor Solicitations (IPv6, (a) and (b) only)"),
    ] {
        writeln!(md, "### {title}\n")?;
        writeln!(
            md,
            "| responder | offered | sent /s | answered | ring drops | node CPU | CPU-µs per answer |"
        )?;
        writeln!(md, "|---|---:|---:|---:|---:|---:|---:|")?;
        for o in out {
            let steps = if proto == Proto::Arp { &o.arp } else { &o.nd };
            for s in steps {
                writeln!(
                    md,
                    "| {} | {} | {:.0} | {:.2}% | {} | {:.0}% | {:.2} |",
                    o.who.label(),
                    rate_label(s.rate),
                    s.sent_pps(),
                    s.answered_share() * 100.0,
                    s.ring,
                    s.busy * 100.0,
                    s.us_per_answer()
                )?;
            }
        }
        writeln!(md)?;
    }

    // Equal load: the highest offered rate every responder answered in
    // full, where each one's CPU per answer is compared.
    let common = RATES
        .iter()
        .copied()
        .filter(|&r| r != 0)
        .filter(|&r| {
            out.iter().all(|o| {
                o.arp
                    .iter()
                    .any(|s| s.rate == r && s.lossless() && s.reached())
            })
        })
        .max();
    writeln!(md, "### Summary (ARP)\n")?;
    let at = common.map_or("-".to_string(), rate_label);
    writeln!(
        md,
        "| responder | highest rate answered without loss, /s | CPU-µs per answer at {at} | answers per node CPU-second at {at} |"
    )?;
    writeln!(md, "|---|---:|---:|---:|")?;
    let mut per_cpu = Vec::new();
    let mut highest = Vec::new();
    for o in out {
        let (best, at_max) = highest_lossless(&o.arp);
        let us = common
            .and_then(|r| o.arp.iter().find(|s| s.rate == r))
            .map_or(f64::NAN, Step::us_per_answer);
        per_cpu.push(1e6 / us);
        highest.push(best);
        writeln!(
            md,
            "| {} | {}{best:.0}{} | {us:.2} | {:.0} |",
            o.who.label(),
            if at_max { "≥ " } else { "" },
            if at_max {
                " (the generator's limit)"
            } else {
                ""
            },
            1e6 / us
        )?;
    }
    if let Some(drops) = out.iter().find_map(|o| o.socket_drops) {
        writeln!(
            md,
            "\nThe stand-in's socket dropped {drops} requests over its steps (its receive buffer full: it could not read as fast as they came)."
        )?;
    }
    let verdict = |ok: bool| if ok { "met" } else { "not met" };
    let ratio = |i: usize| per_cpu[0] / per_cpu[i];
    let rate_ratio = |i: usize| highest[0] / highest[i].max(1.0);
    writeln!(
        md,
        "\n**Target: (a) at least 10x the rate of (b) and (c) at equal CPU.** Answers per node CPU-second at {at}: (a)/(b) {:.1}x, {}; (a)/(c) {:.1}x, {}. Highest rate without loss on the node's one CPU: (a)/(b) {:.1}x, (a)/(c) {:.1}x{}.\n",
        ratio(1),
        verdict(ratio(1) >= 10.0),
        ratio(2),
        verdict(ratio(2) >= 10.0),
        rate_ratio(1),
        rate_ratio(2),
        if highest_lossless(&out[0].arp).1 {
            " ((a)'s figure is the generator's limit, not (a)'s)"
        } else {
            ""
        }
    )?;

    writeln!(md, "### nginx under the flood\n")?;
    writeln!(
        md,
        "Debian's nginx on the node (pinned to the node's CPU), a client in the generator's namespace sending `GET /` to the VIP on a new connection every {} ms for {} s (the worst case for a flood sharing the link: every request starts with a SYN queued behind the flood in the node's receive ring), without flood and then with a flood of {} ARP requests per second, with each responder. Latency in ms.\n",
        HTTP_PERIOD.as_millis(),
        HTTP_FOR.as_secs(),
        rate_label(HTTP_FLOOD_PPS)
    )?;
    writeln!(
        md,
        "| responder | no flood p50 | no flood p99 | flood p50 | flood p99 | p99 change | failed (no flood / flood) |"
    )?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|---:|")?;
    let mut changes = Vec::new();
    for o in out {
        let (q99, f99) = (quantile(&o.quiet.ms, 0.99), quantile(&o.flooded.ms, 0.99));
        let change = (f99 / q99 - 1.0) * 100.0;
        changes.push(change);
        writeln!(
            md,
            "| {} | {:.3} | {q99:.3} | {:.3} | {f99:.3} | {change:+.0}% | {} / {} |",
            o.who.label(),
            quantile(&o.quiet.ms, 0.5),
            quantile(&o.flooded.ms, 0.5),
            o.quiet.failed,
            o.flooded.failed
        )?;
    }
    writeln!(
        md,
        "\n**Target: nginx latency under flood within 10% of no flood, with (a):** p99 {:+.0}%, {}.\n",
        changes[0],
        verdict(changes[0] <= 10.0)
    )?;
    writeln!(
        md,
        "What limits this measurement: veth is no NIC. Its receive ring holds 256 frames (NICs: 512 to 4096 and several queues), and a frame from a packet socket reaches a native XDP program only after veth copies it into a page of its own (a NIC's driver hands XDP its receive buffer), so (a) pays a copy here that it would not pay on hardware; a reply built by the kernel (b, c) is copied again on the generator's end, whose XDP program counts it (charged to the generator's CPU). Two CPUs only: one generator, one node CPU, and the generator's own limit caps the highest rate that can be offered. Threaded NAPI stands in for the NIC's interrupt and softirq; on the node's CPU its thread competes with the agent, nginx and the stand-in as an ordinary thread, where softirq work would preempt them. /proc/stat counts in ticks of 10 ms, sampled, so CPU figures at low rates are coarse. One flooding host with one MAC and address, so (b)'s neighbour table sees one entry updated (a scan from many addresses would also churn it). Other load on the machine during a step shows in the node CPU's background, which is subtracted but not controlled."
    )?;
    Ok(())
}
