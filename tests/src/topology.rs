//! A front node and a client on one veth link:
//!
//! ```text
//!  node (198.18.0.1, 2001:db8::1; VIPs on lo)  eth0 <--veth--> eth0  client (.2, ::2)
//! ```
//!
//! The node holds the VIPs the way kube-proxy in IPVS mode does (there on a
//! dummy interface; this kernel has no dummy driver, so on lo), with strict
//! ARP (`arp_ignore=1`, `arp_announce=2`): its kernel accepts traffic for
//! the VIPs but never answers ARP for them, nor Neighbor Solicitations
//! (Linux answers those only for addresses on the receiving interface).
//! Only the XDP responder does. The node's front interface can also be a
//! bridge with the veth as its port.

use anyhow::Result;

use crate::{netns::Netns, programs::PassProgram};

pub const NODE_IP: &str = "198.18.0.1";
pub const CLIENT_IP: &str = "198.18.0.2";
pub const VIP: &str = "198.18.0.10";
pub const PREFIX: &str = "24";
pub const NODE_IP6: &str = "2001:db8::1";
pub const CLIENT_IP6: &str = "2001:db8::2";
pub const VIP6: &str = "2001:db8::10";
pub const PREFIX6: &str = "64";

/// The node's front interface: the veth itself, or a bridge with the veth
/// as its port.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Front {
    Plain,
    Bridge,
}

impl Front {
    /// The interface the node's addresses (and the agent) are on.
    pub fn ifname(self) -> &'static str {
        match self {
            Front::Plain => "eth0",
            Front::Bridge => "br0",
        }
    }
}

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
        Self::with_front(Front::Plain)
    }

    pub fn with_front(front: Front) -> Result<Self> {
        let node = Netns::new("node")?;
        let client = Netns::new("cli")?;
        #[rustfmt::skip]
        node.ip(&["link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", client.name()])?;
        if front == Front::Bridge {
            node.ip(&["link", "add", "br0", "type", "bridge"])?;
            node.ip(&["link", "set", "eth0", "master", "br0"])?;
            node.ip(&["link", "set", "br0", "up"])?;
        }
        for (ns, ifname, ip, ip6) in [
            (&node, front.ifname(), NODE_IP, NODE_IP6),
            (&client, "eth0", CLIENT_IP, CLIENT_IP6),
        ] {
            ns.ip(&["addr", "add", &format!("{ip}/{PREFIX}"), "dev", ifname])?;
            #[rustfmt::skip]
            ns.ip(&["-6", "addr", "add", &format!("{ip6}/{PREFIX6}"), "dev", ifname, "nodad"])?;
            ns.ip(&["link", "set", "eth0", "up"])?;
        }
        node.ip(&["addr", "add", &format!("{VIP}/32"), "dev", "lo"])?;
        node.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{VIP6}/128"),
            "dev",
            "lo",
            "nodad",
        ])?;
        node.sysctl("net.ipv4.conf.all.arp_ignore", "1")?;
        node.sysctl("net.ipv4.conf.all.arp_announce", "2")?;
        // The client's kernel must not accept unsolicited ARP on its own:
        // gratuitous ARP has to work with Linux's defaults.
        client.sysctl("net.ipv4.conf.all.arp_accept", "0")?;
        client.sysctl("net.ipv4.conf.eth0.arp_accept", "0")?;
        let pass = PassProgram::attach(&client, "eth0")?;
        let node_mac = node.mac(front.ifname())?;
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

pub fn ipv6(s: &str) -> [u8; 16] {
    s.parse::<std::net::Ipv6Addr>()
        .map(|a| a.octets())
        .unwrap_or_default()
}

pub fn ipv4(s: &str) -> [u8; 4] {
    s.parse::<std::net::Ipv4Addr>()
        .map(|a| a.octets())
        .unwrap_or_default()
}
