//! The storm's testbed: a generator namespace and a node namespace on one
//! veth link, each end with an XDP program and threaded NAPI pinned to its
//! side's CPU.

use std::process::Command;

use anyhow::{Context as _, Result, bail};
use aya::{
    Ebpf,
    programs::{Xdp, XdpMode},
};
use speaker_tests::{
    netns::{self, Netns},
    programs,
};

use super::cpu;

pub const NODE_IF: &str = "storm0";
pub const GEN_IF: &str = "flood0";
pub const NODE_IP: &str = "198.18.0.1";
pub const GEN_IP: &str = "198.18.0.2";
pub const VIP: &str = "198.18.0.10";
pub const NODE_IP6: &str = "2001:db8::1";
pub const GEN_IP6: &str = "2001:db8::2";
pub const VIP6: &str = "2001:db8::10";
pub const GEN_CPU: usize = 0;
pub const NODE_CPU: usize = 1;

pub struct Bed {
    // Field order is drop order: the programs before the namespaces.
    pub gen_prog: Option<Ebpf>,
    pub node_prog: Option<Ebpf>,
    pub node: Netns,
    pub generator: Netns,
    pub node_mac: [u8; 6],
    pub gen_mac: [u8; 6],
    pub gen_ifindex: u32,
}

impl Bed {
    pub fn new() -> Result<Self> {
        let node = Netns::new("stn")?;
        let generator = Netns::new("stg")?;
        #[rustfmt::skip]
        node.ip(&["link", "add", NODE_IF, "type", "veth", "peer", "name", GEN_IF, "netns", generator.name()])?;
        // No frames of their own during the steps: the generator's end
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
        let mut bed = Self {
            gen_prog: None,
            node_prog: None,
            node_mac: node.mac(NODE_IF)?,
            gen_mac: generator.mac(GEN_IF)?,
            gen_ifindex: generator.ifindex(GEN_IF)?,
            node,
            generator,
        };
        bed.generator_end("testbed_drop")?;
        Ok(bed)
    }

    /// Attaches testbed program `name` at the generator's end: `testbed_drop`
    /// to count the replies at the least cost, `testbed_pass` for nginx's
    /// client.
    pub fn generator_end(&mut self, name: &str) -> Result<()> {
        self.gen_prog = None;
        self.gen_prog = Some(attach(&self.generator, GEN_IF, name)?);
        threaded_napi(&self.generator, GEN_IF, GEN_CPU)?;
        Ok(())
    }

    /// The frames counted at both ends so far.
    pub fn counts(&self) -> Result<Counts> {
        Ok(Counts {
            arrived: rx_packets(&self.node, NODE_IF)?,
            answered: rx_packets(&self.generator, GEN_IF)?,
        })
    }
}

/// Frames received at each end (veth counts every frame its receive thread
/// polls, whatever the XDP verdict), as totals or as the difference of two.
pub struct Counts {
    /// At the node's end: the requests that made it into its receive path.
    pub arrived: u64,
    /// At the generator's end: the replies.
    pub answered: u64,
}

impl Counts {
    pub fn since(&self, before: &Counts) -> Counts {
        Counts {
            arrived: self.arrived.saturating_sub(before.arrived),
            answered: self.answered.saturating_sub(before.answered),
        }
    }
}

fn rx_packets(ns: &Netns, ifname: &str) -> Result<u64> {
    let out = ns.ip(&["-s", "-j", "link", "show", "dev", ifname])?;
    let v: serde_json::Value = serde_json::from_str(&out).context("`ip -s -j link` output")?;
    v[0]["stats64"]["rx"]["packets"]
        .as_u64()
        .with_context(|| format!("no receive count for {ifname}"))
}

/// Testbed program `name` attached natively to `ifname` in `ns`; detached
/// when the returned object is dropped. On veth a native program is also
/// what gives the receiving end NAPI (so, threaded NAPI), and what makes
/// XDP_TX frames from the other end arrive at all.
pub fn attach(ns: &Netns, ifname: &str, name: &str) -> Result<Ebpf> {
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

/// Turns threaded NAPI on for `ifname` in `ns` and places its thread on
/// `cpu` at [`cpu::RECEIVE`], so that what the interface receives is
/// processed there and not on the sender's CPU; the thread's pids. Called
/// after every attach: the NAPI instance (and its thread) comes and goes
/// with the XDP program.
pub fn threaded_napi(ns: &Netns, ifname: &str, cpu: usize) -> Result<Vec<i32>> {
    // Through `ip netns exec`, whose private /sys is the namespace's own;
    // off first, as setting an unchanged value does nothing.
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
    let mut placed = Vec::new();
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
            cpu::place(pid, cpu, cpu::RECEIVE)
                .with_context(|| format!("cannot place {}", comm.trim()))?;
            placed.push(pid);
        }
    }
    if placed.is_empty() {
        bail!("no NAPI thread for {ifname} in {}", ns.name());
    }
    Ok(placed)
}
