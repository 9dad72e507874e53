//! A front node and a client on one veth link:
//!
//! ```text
//!  node (198.18.0.1, VIP on lo)  eth0 <--veth--> eth0  client (198.18.0.2)
//! ```
//!
//! The node holds the VIP the way kube-proxy in IPVS mode does (there on a
//! dummy interface; this kernel has no dummy driver, so on lo), with strict
//! ARP (`arp_ignore=1`, `arp_announce=2`): its kernel accepts traffic for
//! the VIP but never answers ARP for it; only the XDP responder does.

use anyhow::Result;

use crate::{netns::Netns, programs::PassProgram};

pub const NODE_IP: &str = "198.18.0.1";
pub const CLIENT_IP: &str = "198.18.0.2";
pub const VIP: &str = "198.18.0.10";
pub const PREFIX: &str = "24";

pub struct Pair {
    // Field order is drop order: the program before the namespaces.
    _pass: PassProgram,
    pub node: Netns,
    pub client: Netns,
    pub node_mac: [u8; 6],
    pub client_mac: [u8; 6],
}

impl Pair {
    pub fn new() -> Result<Self> {
        let node = Netns::new("node")?;
        let client = Netns::new("cli")?;
        node.ip(&[
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            client.name(),
        ])?;
        for (ns, ip) in [(&node, NODE_IP), (&client, CLIENT_IP)] {
            ns.ip(&["addr", "add", &format!("{ip}/{PREFIX}"), "dev", "eth0"])?;
            ns.ip(&["link", "set", "eth0", "up"])?;
        }
        node.ip(&["addr", "add", &format!("{VIP}/32"), "dev", "lo"])?;
        node.sysctl("net.ipv4.conf.all.arp_ignore", "1")?;
        node.sysctl("net.ipv4.conf.all.arp_announce", "2")?;
        // The client's kernel must not accept unsolicited ARP on its own:
        // gratuitous ARP has to work with Linux's defaults.
        client.sysctl("net.ipv4.conf.all.arp_accept", "0")?;
        client.sysctl("net.ipv4.conf.eth0.arp_accept", "0")?;
        let pass = PassProgram::attach(&client, "eth0")?;
        let node_mac = node.mac("eth0")?;
        let client_mac = client.mac("eth0")?;
        Ok(Self {
            _pass: pass,
            node,
            client,
            node_mac,
            client_mac,
        })
    }
}

pub fn ipv4(s: &str) -> [u8; 4] {
    s.parse::<std::net::Ipv4Addr>()
        .map(|a| a.octets())
        .unwrap_or_default()
}
