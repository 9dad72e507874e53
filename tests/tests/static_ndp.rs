//! IPv6 on a real veth link: a Linux client resolves an IPv6 VIP through
//! the XDP responder (kernel, ndisc6, a TCP connection to a listener on the
//! VIP), the unsolicited advertisement is checked on the wire, and the
//! solicited-node group is joined exactly while the VIP is announced.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use speaker_tests::{
    agent::Agent,
    capture::Capture,
    frames::{ALL_NODES, Nd},
    netns::Netns,
    require_privileges,
    topology::{CLIENT_IP6, Pair, VIP6, ipv6},
    wait_for,
};

const OTHER_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x00, 0x00, 0x99];
/// ff02::1:ff00:10, the solicited-node group of 2001:db8::10.
const VIP6_GROUP: &str = "ff02::1:ff00:10";

fn start(pair: &Pair) -> Agent {
    let mut agent = Agent::start(
        &pair.node,
        &["static", "--interface", "eth0", "--vip", VIP6],
    )
    .expect("start speaker");
    agent.wait_ready(&pair.node, "eth0").expect("speaker ready");
    agent
}

/// `ndisc6` from the client: the link-layer address it learnt, if any.
fn ndisc6(client: &Netns, target: &str) -> Option<[u8; 6]> {
    let out = client
        .command("ndisc6")
        .args(["-1", "-r", "2", "-w", "500", target, "eth0"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    let line = text
        .lines()
        .find(|l| l.contains("target link-layer address"))?;
    let mac = line.rsplit(": ").next()?.trim();
    speaker_tests::netns::parse_mac(mac).ok()
}

#[test]
fn client_resolves_the_ipv6_vip_and_reaches_a_listener_on_it() {
    require_privileges();
    let pair = Pair::new().expect("topology");
    // Without the responder nobody answers: the node's kernel does not
    // answer for an address on lo.
    assert_eq!(
        ndisc6(&pair.client, VIP6),
        None,
        "answered before the agent started"
    );

    let agent = start(&pair);
    assert_eq!(
        ndisc6(&pair.client, VIP6),
        Some(pair.node_mac),
        "{}",
        agent.log()
    );

    // A listener on the VIP in the node, a connection from the client's
    // own kernel, which resolves the VIP itself.
    let addr: SocketAddr = format!("[{VIP6}]:8080").parse().expect("address");
    let listener = pair
        .node
        .enter(|| TcpListener::bind(addr))
        .expect("enter")
        .expect("bind to the VIP");
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut conn, _) = listener.accept()?;
        conn.write_all(b"hello from the VIP")
    });
    let got = pair
        .client
        .enter(|| -> std::io::Result<String> {
            let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
            c.set_read_timeout(Some(Duration::from_secs(3)))?;
            let mut s = String::new();
            c.read_to_string(&mut s)?;
            Ok(s)
        })
        .expect("enter")
        .expect("connect to the VIP");
    assert_eq!(got, "hello from the VIP");
    server.join().expect("server thread").expect("serve");
    let mac = pair
        .client
        .neighbour_mac("eth0", VIP6)
        .expect("client has a neighbour entry for the VIP");
    assert_eq!(mac, pair.node_mac);
}

#[test]
fn unsolicited_advertisement_updates_a_stale_entry_and_is_exact() {
    require_privileges();
    let pair = Pair::new().expect("topology");
    let other = speaker::netdev::fmt_mac(&OTHER_MAC);
    pair.client
        .ip(&[
            "neigh", "replace", VIP6, "lladdr", &other, "dev", "eth0", "nud", "stale",
        ])
        .expect("seed a stale entry");
    let cap = Capture::start(&pair.client, "eth0", "icmp6").expect("capture");
    let agent = start(&pair);
    let took = wait_for(Duration::from_secs(1), || {
        pair.client.neighbour_mac("eth0", VIP6) == Some(pair.node_mac)
    });
    assert!(
        took.is_some(),
        "entry did not switch within 1 s:\n{}",
        agent.log()
    );

    let nds: Vec<Nd> = cap
        .finish()
        .expect("capture")
        .iter()
        .filter_map(|f| Nd::parse(f))
        .collect();
    assert!(
        !nds.iter()
            .any(|n| n.icmp_type == 135 && n.src == ipv6(CLIENT_IP6)),
        "the client solicited instead of learning from the advertisement"
    );
    let na = nds
        .iter()
        .find(|n| n.icmp_type == 136 && n.eth_src == pair.node_mac)
        .expect("an unsolicited advertisement from the node");
    assert_eq!(na.eth_dst, [0x33, 0x33, 0, 0, 0, 1]);
    assert_eq!(na.vlan, None);
    assert_eq!((na.version, na.next_header, na.hop_limit), (6, 58, 255));
    assert_eq!((na.src, na.dst), (ipv6(VIP6), ALL_NODES));
    assert_eq!(na.code, 0);
    assert_eq!(na.flags, 0x20, "Override only: not solicited, not a router");
    assert_eq!(na.target, ipv6(VIP6));
    let mut tlla = vec![2, 1];
    tlla.extend(pair.node_mac);
    assert_eq!(na.options, tlla);
    assert!(na.checksum_ok(), "ICMPv6 checksum");
}

#[test]
fn solicited_node_group_is_joined_exactly_while_announcing() {
    require_privileges();
    let pair = Pair::new().expect("topology");
    let joined = || {
        pair.node
            .ipv6_groups("eth0")
            .expect("ip maddr")
            .iter()
            .any(|g| g == VIP6_GROUP)
    };
    assert!(!joined(), "joined before the agent started");
    let mut agent = start(&pair);
    assert!(joined(), "not joined while announcing:\n{}", agent.log());
    assert!(agent.terminate().expect("stop").success());
    assert!(!joined(), "still joined after SIGTERM");

    // A crash leaves no membership either: the kernel drops it with the socket.
    let agent = start(&pair);
    assert!(joined());
    agent.signal(libc::SIGKILL);
    let gone = wait_for(Duration::from_secs(2), || !joined());
    assert!(gone.is_some(), "still joined after SIGKILL");
    // The program stays attached through its pinned link (its entries
    // expire by themselves: the dead-man's switch); removing the pins, as
    // the next start does, detaches it.
    drop(agent);
    assert!(
        wait_for(Duration::from_secs(2), || !pair
            .node
            .has_xdp("eth0")
            .unwrap_or(true))
        .is_some(),
        "XDP still attached once its pins are gone"
    );
}
