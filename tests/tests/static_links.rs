//! Where a VIP is answered: on chosen links only, on an 802.1Q VLAN of the
//! interface (tagged frames, tag kept), and on a bridge as front interface.

use std::time::Duration;

use speaker_tests::{
    agent::Agent,
    capture::Capture,
    frames::{Arp, Nd},
    require_privileges,
    topology::{CLIENT_IP, Front, Pair, VIP, ipv4, ipv6},
};

const VIP_VLAN: &str = "198.18.0.20";
const VIP6_VLAN: &str = "2001:db8::20";
const CLIENT_IP6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

#[test]
fn a_vlan_vip_is_answered_on_its_vlan_only_and_keeps_the_tag() {
    require_privileges();
    let pair = Pair::new().expect("topology");
    let cap = Capture::start(&pair.client, "eth0", "").expect("capture");
    let mut agent = Agent::start(
        &pair.node,
        &[
            "static",
            "--interface",
            "eth0",
            "--vip",
            VIP,
            "--vip",
            &format!("{VIP_VLAN}@eth0:100"),
            "--vip",
            &format!("{VIP6_VLAN}@eth0:100"),
        ],
    )
    .expect("start speaker");
    agent.wait_ready(&pair.node, "eth0").expect("speaker ready");

    let c = pair.client_mac;
    let request = |tpa: &str, vlan: Option<u16>| {
        let mut a = Arp::request(c, ipv4(CLIENT_IP), ipv4(tpa));
        a.vlan = vlan;
        a.bytes()
    };
    let solicit = |vlan: Option<u16>| {
        let mut n = Nd::solicit(c, CLIENT_IP6, ipv6(VIP6_VLAN));
        n.vlan = vlan;
        n.bytes()
    };
    pair.client
        .send_frames(
            "eth0",
            &[
                request(VIP_VLAN, Some(100)),
                request(VIP_VLAN, Some(200)),
                request(VIP_VLAN, None),
                request(VIP, Some(100)),
                request(VIP, None),
                solicit(Some(100)),
                solicit(Some(200)),
                solicit(None),
            ],
        )
        .expect("send requests");
    std::thread::sleep(Duration::from_millis(300));
    let frames = cap.finish().expect("capture");
    let from_node = |f: &&Vec<u8>| f.len() > 12 && f[6..12] == pair.node_mac;

    let arp_replies: Vec<Arp> = frames
        .iter()
        .filter(from_node)
        .filter_map(|f| Arp::parse(f))
        .filter(|a| a.op == 2 && a.eth_dst == c)
        .collect();
    let vids = |spa: &str| -> Vec<Option<u16>> {
        arp_replies
            .iter()
            .filter(|a| a.spa == ipv4(spa))
            .map(|a| a.vlan.map(|t| t & 0x0fff))
            .collect()
    };
    assert_eq!(
        vids(VIP_VLAN),
        vec![Some(100)],
        "VLAN VIP: only on VLAN 100, tagged"
    );
    assert_eq!(vids(VIP), vec![None], "untagged VIP: never on VLAN 100");

    let advert_vids: Vec<Option<u16>> = frames
        .iter()
        .filter(from_node)
        .filter_map(|f| Nd::parse(f))
        .filter(|n| n.icmp_type == 136 && n.eth_dst == c && n.target == ipv6(VIP6_VLAN))
        .map(|n| n.vlan.map(|t| t & 0x0fff))
        .collect();
    assert_eq!(
        advert_vids,
        vec![Some(100)],
        "IPv6 VLAN VIP: only on VLAN 100, tagged"
    );

    // The announcements went out on the VLAN too.
    let garp = frames
        .iter()
        .filter(from_node)
        .filter_map(|f| Arp::parse(f))
        .find(|a| a.spa == ipv4(VIP_VLAN) && a.tpa == ipv4(VIP_VLAN))
        .expect("gratuitous ARP for the VLAN VIP");
    assert_eq!(garp.vlan.map(|t| t & 0x0fff), Some(100));
    let na = frames
        .iter()
        .filter(from_node)
        .filter_map(|f| Nd::parse(f))
        .find(|n| n.icmp_type == 136 && n.eth_dst == [0x33, 0x33, 0, 0, 0, 1])
        .expect("unsolicited advertisement for the IPv6 VLAN VIP");
    assert_eq!(na.vlan.map(|t| t & 0x0fff), Some(100));
    assert!(na.checksum_ok());
    assert!(agent.terminate().expect("stop").success());
}

#[test]
fn a_bridge_front_falls_back_to_generic_mode_and_answers() {
    require_privileges();
    let pair = Pair::with_front(Front::Bridge).expect("topology");

    // A bridge has no native XDP: forcing it is a clear error.
    let out = pair
        .node
        .command(speaker_tests::agent::speaker_bin().to_str().expect("path"))
        .args(["static", "-i", "br0", "--vip", VIP, "--xdp-mode", "native"])
        .args([
            "--bpffs",
            &format!("/sys/fs/bpf/{}-native", pair.node.name()),
        ])
        .output()
        .expect("run speaker");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot attach to br0 in native mode"),
        "{stderr}"
    );
    assert!(!pair.node.has_xdp("br0").expect("ip link"));

    // The default falls back to generic mode, where answers go out through
    // the bridge like any other frame.
    let mut agent =
        Agent::start(&pair.node, &["static", "-i", "br0", "--vip", VIP]).expect("start");
    agent.wait_ready(&pair.node, "br0").expect("speaker ready");
    assert_eq!(
        pair.node.xdp_mode("br0").expect("ip link"),
        Some(2),
        "generic mode"
    );
    let out = pair
        .client
        .command("arping")
        .args(["-r", "-i", "eth0", "-c", "2", "-w", "2", VIP])
        .output()
        .expect("arping");
    let macs: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(
        macs,
        vec![speaker::netdev::fmt_mac(&pair.node_mac); 2],
        "{}",
        agent.log()
    );
    assert!(agent.terminate().expect("stop").success());
}
