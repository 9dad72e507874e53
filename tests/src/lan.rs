//! The origin scenario's network: front nodes and a client on one L2
//! segment, a bridge in a namespace of its own, and the API stand-in
//! reachable from each front node through a listener of its own.
//!
//! ```text
//!  front-0 eth0 --- p0 \
//!  front-1 eth0 --- p1 -- br0 (lan namespace) -- pc --- eth0 client
//!  front-2 eth0 --- p2 /
//! ```
//!
//! Each front node holds the VIPs as kube-proxy in IPVS mode does (on lo,
//! strict ARP), so only the XDP responder ever answers for them.

use anyhow::Result;

use crate::{cluster::Cluster, netns::Netns, programs::PassProgram};

pub const CLIENT_IP: &str = "198.18.0.100";

pub struct FrontNode {
    pub name: String,
    pub ns: Netns,
    pub mac: [u8; 6],
}

pub struct Lan {
    // Field order is drop order: programs, then namespaces, then the API.
    _pass: Vec<PassProgram>,
    pub fronts: Vec<FrontNode>,
    pub client: Netns,
    pub client_mac: [u8; 6],
    pub lan: Netns,
    pub cluster: Cluster,
}

impl Lan {
    /// Front node `i`'s address on the LAN.
    pub fn front_ip(i: usize) -> String {
        format!("198.18.0.{}", i + 1)
    }

    /// `n` front nodes named front-0.. and a client; `vips` are accepted on
    /// every front node.
    pub fn new(n: usize, vips: &[&str]) -> Result<Self> {
        let lan = Netns::new("lan")?;
        lan.ip(&["link", "add", "br0", "type", "bridge"])?;
        lan.ip(&["link", "set", "br0", "up"])?;
        let mut fronts = Vec::new();
        let mut pass = Vec::new();
        for i in 0..n {
            let ns = Netns::new(&format!("f{i}"))?;
            let port = format!("p{i}");
            plug(&lan, &port, &ns)?;
            ns.ip(&[
                "addr",
                "add",
                &format!("{}/24", Self::front_ip(i)),
                "dev",
                "eth0",
            ])?;
            for vip in vips {
                let (flag, plen) = if vip.contains(':') {
                    ("-6", "128")
                } else {
                    ("-4", "32")
                };
                ns.ip(&[
                    flag,
                    "addr",
                    "add",
                    &format!("{vip}/{plen}"),
                    "dev",
                    "lo",
                    "nodad",
                ])?;
            }
            ns.sysctl("net.ipv4.conf.all.arp_ignore", "1")?;
            ns.sysctl("net.ipv4.conf.all.arp_announce", "2")?;
            // XDP_TX from a front node reaches the bridge only through a
            // peer that has an XDP program (veth, native mode).
            pass.push(PassProgram::attach(&lan, &port)?);
            let mac = ns.mac("eth0")?;
            fronts.push(FrontNode {
                name: format!("front-{i}"),
                ns,
                mac,
            });
        }
        let client = Netns::new("cli")?;
        plug(&lan, "pc", &client)?;
        client.ip(&["addr", "add", &format!("{CLIENT_IP}/24"), "dev", "eth0"])?;
        client.sysctl("net.ipv4.conf.all.arp_accept", "0")?;
        client.sysctl("net.ipv4.conf.eth0.arp_accept", "0")?;
        let client_mac = client.mac("eth0")?;
        let cluster = Cluster::from_env_in(&fronts.iter().map(|f| &f.ns).collect::<Vec<_>>())?;
        Ok(Self {
            _pass: pass,
            fronts,
            client,
            client_mac,
            lan,
            cluster,
        })
    }

    /// The front node whose MAC this is.
    pub fn front_by_mac(&self, mac: [u8; 6]) -> Option<usize> {
        self.fronts.iter().position(|f| f.mac == mac)
    }
}

/// A veth from `ns`'s eth0 to `port` on the bridge.
fn plug(lan: &Netns, port: &str, ns: &Netns) -> Result<()> {
    lan.ip(&[
        "link",
        "add",
        port,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        ns.name(),
    ])?;
    lan.ip(&["link", "set", port, "master", "br0"])?;
    lan.ip(&["link", "set", port, "up"])?;
    ns.ip(&["link", "set", "eth0", "up"])?;
    Ok(())
}
