//! The loaded XDP program against the reference model
//! (speaker_tests::model), through BPF_PROG_TEST_RUN: verdict, output
//! bytes, the counter bumped and the conflict recorded must all agree.

use std::collections::HashMap;

use speaker::dataplane::{Dataplane, SPEAKER_XDP, now_ns};
use speaker_common::maps::{Counters, Reason, VipEntry, VipKey};
use speaker_tests::{
    frames::{ALL_NODES, Arp, Nd, Rng, lladdr_option, solicited_node},
    model::{self, Action},
    netns::Netns,
    programs::test_run,
    require_privileges,
};

const OUR_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x00, 0x00, 0x01];
const CLIENT_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x00, 0x00, 0x02];
const OTHER_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x00, 0x00, 0x03];
const CLIENT_IP: [u8; 4] = [198, 18, 0, 2];
const VIP_LIVE: [u8; 4] = [198, 18, 0, 10];
const VIP_FUTURE: [u8; 4] = [198, 18, 0, 11];
const VIP_EXPIRED: [u8; 4] = [198, 18, 0, 12];
const VIP_OTHER_IF: [u8; 4] = [198, 18, 0, 13];
const NOT_VIP: [u8; 4] = [198, 18, 0, 99];
/// Never installed by the agent, but present here to prove the program
/// refuses them before it ever looks them up.
const BAD_CLASS: [[u8; 4]; 3] = [[224, 0, 0, 5], [255, 255, 255, 255], [127, 0, 0, 1]];
/// Announced on VLAN 100 of the interface only.
const VIP_VLAN: [u8; 4] = [198, 18, 0, 20];
const VLAN: u16 = 100;

const fn v6(last: u8) -> [u8; 16] {
    [
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, last,
    ]
}
const CLIENT6: [u8; 16] = v6(2);
const VIP6_LIVE: [u8; 16] = v6(0x10);
const VIP6_EXPIRED: [u8; 16] = v6(0x12);
const VIP6_VLAN: [u8; 16] = v6(0x20);
const NOT_VIP6: [u8; 16] = v6(0x99);
const MCAST6: [u8; 16] = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 2];

struct Harness {
    dp: Dataplane,
    mirror: HashMap<VipKey, VipEntry>,
    ifindex: u32,
    checked: usize,
}

impl Harness {
    fn new(ifindex: u32) -> Self {
        let dp = Dataplane::load_object(SPEAKER_XDP, None).expect("load the responder");
        let mut h = Self {
            dp,
            mirror: HashMap::new(),
            ifindex,
            checked: 0,
        };
        let entry = |expires_ns| VipEntry {
            mac: OUR_MAC,
            _pad: [0; 2],
            expires_ns,
        };
        h.install(VipKey::ipv4(ifindex, 0, VIP_LIVE), entry(VipEntry::NEVER));
        h.install(VipKey::ipv4(ifindex, 0, VIP_FUTURE), entry(u64::MAX));
        h.install(VipKey::ipv4(ifindex, 0, VIP_EXPIRED), entry(1));
        h.install(
            VipKey::ipv4(ifindex + 100, 0, VIP_OTHER_IF),
            entry(VipEntry::NEVER),
        );
        for bad in BAD_CLASS {
            h.install(VipKey::ipv4(ifindex, 0, bad), entry(VipEntry::NEVER));
        }
        h.install(
            VipKey::ipv4(ifindex, VLAN, VIP_VLAN),
            entry(VipEntry::NEVER),
        );
        h.install(VipKey::ipv6(ifindex, 0, VIP6_LIVE), entry(VipEntry::NEVER));
        h.install(VipKey::ipv6(ifindex, 0, VIP6_EXPIRED), entry(1));
        h.install(
            VipKey::ipv6(ifindex, VLAN, VIP6_VLAN),
            entry(VipEntry::NEVER),
        );
        h.install(VipKey::ipv6(ifindex, 0, MCAST6), entry(VipEntry::NEVER));
        h
    }

    fn install(&mut self, key: VipKey, entry: VipEntry) {
        self.dp.set_vip(&key, &entry).expect("set VIP");
        self.mirror.insert(key, entry);
    }

    fn remove(&mut self, key: VipKey) {
        self.dp.remove_vip(&key).expect("remove VIP");
        self.mirror.remove(&key);
    }

    fn conflicts(&self) -> HashMap<VipKey, (u64, [u8; 6])> {
        self.dp
            .maps()
            .conflicts()
            .expect("read conflicts")
            .into_iter()
            .map(|(k, c)| (k, (c.count, c.last_mac)))
            .collect()
    }

    fn stats(&self) -> HashMap<VipKey, (u64, u64)> {
        self.dp
            .maps()
            .vip_stats()
            .expect("read VIP stats")
            .into_iter()
            .map(|(k, s)| (k, (s.requests, s.replies)))
            .collect()
    }

    /// Runs one frame through program and model; panics with `name` and the
    /// frame on any difference. Returns the model's outcome.
    fn check(&mut self, name: &str, frame: &[u8], ifindex: u32) -> model::Outcome {
        let want = model::respond(frame, ifindex, now_ns(), &self.mirror);
        let prog = self.dp.program().expect("program");
        let counters_before = self.dp.maps().counters().expect("counters");
        let conflicts_before = self.conflicts();
        let stats_before = self.stats();
        let run = test_run(prog, frame, ifindex, 1);
        let ctx = || format!("case {name:?}, frame {}", hex(frame));
        if frame.len() < 14 {
            // BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet
            // header (net/bpf/test_run.c); no driver hands such runts to XDP.
            assert!(run.is_err(), "{}: kernel accepted a runt", ctx());
            assert_eq!(want.reason, Reason::EthTruncated, "{}", ctx());
            return want;
        }
        let run = run.unwrap_or_else(|e| panic!("{}: test_run failed: {e:#}", ctx()));
        let want_action = match want.action {
            Action::Pass => 2,
            Action::Tx => 3,
        };
        assert_eq!(
            run.action,
            want_action,
            "{}: verdict (model: {:?})",
            ctx(),
            want.reason
        );
        assert_eq!(hex(&run.frame), hex(&want.frame), "{}: output bytes", ctx());
        let counters_after = self.dp.maps().counters().expect("counters");
        assert_eq!(
            delta(&counters_before, &counters_after),
            vec![(want.reason, 1)],
            "{}: counters",
            ctx()
        );
        let conflicts_after = self.conflicts();
        match want.conflict {
            Some((key, mac)) => {
                let before = conflicts_before.get(&key).map_or(0, |c| c.0);
                let after = conflicts_after.get(&key).copied().unwrap_or_default();
                assert_eq!(after, (before + 1, mac), "{}: conflict record", ctx());
            }
            None => assert_eq!(conflicts_before, conflicts_after, "{}: conflicts", ctx()),
        }
        // The VIP a request was for counts it, and its answer.
        let mut stats_want = stats_before;
        if let Some(key) = want.asked {
            let s = stats_want.entry(key).or_default();
            s.0 += 1;
            s.1 += u64::from(want.action == Action::Tx);
        }
        assert_eq!(self.stats(), stats_want, "{}: VIP request counts", ctx());
        self.checked += 1;
        want
    }
}

fn delta(before: &Counters, after: &Counters) -> Vec<(Reason, u64)> {
    Reason::ALL
        .iter()
        .map(|r| (*r, after.get(*r) - before.get(*r)))
        .filter(|(_, d)| *d != 0)
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Runs `f` with a harness in a fresh namespace whose veth interface gives
/// frames a real ingress ifindex other than loopback.
fn with_harness(f: impl FnOnce(&mut Harness) + Send) {
    require_privileges();
    let ns = Netns::new("model").expect("namespace");
    ns.ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d1"])
        .expect("veth");
    let ifindex = ns.ifindex("d0").expect("ifindex");
    ns.enter(|| {
        let mut h = Harness::new(ifindex);
        f(&mut h);
    })
    .expect("run in namespace");
}

fn request(tpa: [u8; 4]) -> Arp {
    Arp::request(CLIENT_MAC, CLIENT_IP, tpa)
}

fn ns(target: [u8; 16]) -> Nd {
    Nd::solicit(CLIENT_MAC, CLIENT6, target)
}

/// A unicast solicitation (neighbour unreachability detection).
fn unicast_ns(target: [u8; 16]) -> Nd {
    let mut n = ns(target);
    n.eth_dst = OUR_MAC;
    n.dst = target;
    n
}

fn dad(target: [u8; 16]) -> Nd {
    let mut n = ns(target);
    n.src = [0; 16];
    n.options = Vec::new();
    n
}

fn tagged(mut a: Arp, tci: u16) -> Arp {
    a.vlan = Some(tci);
    a
}

/// Every rule of the responder as a named case, with the reason the model
/// must give (so the model is held to the intent, and the program to it).
#[rustfmt::skip]
fn named_cases() -> Vec<(&'static str, Vec<u8>, Reason)> {
    use Reason::*;
    let arp = |mut a: Arp, f: &dyn Fn(&mut Arp)| { f(&mut a); a.bytes() };
    let nd = |mut n: Nd, f: &dyn Fn(&mut Nd)| { f(&mut n); n.bytes() };
    let nonce = vec![14, 1, 1, 2, 3, 4, 5, 6];
    vec![
        // ARP (RFC 826, net/ipv4/arp.c)
        ("request for a VIP", request(VIP_LIVE).bytes(), ArpReply),
        ("request for a VIP, entry expiring in the far future", request(VIP_FUTURE).bytes(), ArpReply),
        ("request with Ethernet padding", arp(request(VIP_LIVE), &|a| a.trailer = vec![0xa5; 18]), ArpReply),
        ("unicast request to our MAC", arp(request(VIP_LIVE), &|a| a.eth_dst = OUR_MAC), ArpReply),
        ("IEEE 802 hardware type (6)", arp(request(VIP_LIVE), &|a| a.htype = 6), ArpReply),
        ("request with a non-zero target MAC", arp(request(VIP_LIVE), &|a| a.tha = OTHER_MAC), ArpReply),
        ("ARP probe (sender 0.0.0.0)", arp(request(VIP_LIVE), &|a| a.spa = [0; 4]), ArpProbeReply),
        ("expired entry", request(VIP_EXPIRED).bytes(), PassExpired),
        ("not a VIP", request(NOT_VIP).bytes(), PassNotVip),
        ("VIP of another interface", request(VIP_OTHER_IF).bytes(), PassNotVip),
        ("hardware type 2", arp(request(VIP_LIVE), &|a| a.htype = 2), ArpBadHardware),
        ("hardware type 0", arp(request(VIP_LIVE), &|a| a.htype = 0), ArpBadHardware),
        ("protocol IPv6", arp(request(VIP_LIVE), &|a| a.ptype = 0x86dd), ArpBadProtocol),
        ("hardware length 8", arp(request(VIP_LIVE), &|a| a.hlen = 8), ArpBadLengths),
        ("protocol length 16", arp(request(VIP_LIVE), &|a| a.plen = 16), ArpBadLengths),
        ("opcode 0", arp(request(VIP_LIVE), &|a| a.op = 0), ArpBadOp),
        ("RARP request opcode 3", arp(request(VIP_LIVE), &|a| a.op = 3), ArpBadOp),
        ("ARP reply for a VIP", arp(request(VIP_LIVE), &|a| a.op = 2), PassNotRequest),
        ("Ethernet destination another host", arp(request(VIP_LIVE), &|a| a.eth_dst = OTHER_MAC), PassEthDst),
        ("Ethernet destination multicast", arp(request(VIP_LIVE), &|a| a.eth_dst = [0x01, 0, 0x5e, 0, 0, 1]), PassEthDst),
        ("target multicast", request(BAD_CLASS[0]).bytes(), PassBadTarget),
        ("target broadcast", request(BAD_CLASS[1]).bytes(), PassBadTarget),
        ("target loopback", request(BAD_CLASS[2]).bytes(), PassBadTarget),
        ("sender multicast", arp(request(VIP_LIVE), &|a| a.spa = [239, 1, 1, 1]), PassBadSender),
        ("sender broadcast", arp(request(VIP_LIVE), &|a| a.spa = [255; 4]), PassBadSender),
        ("sender loopback", arp(request(VIP_LIVE), &|a| a.spa = [127, 0, 0, 9]), PassBadSender),
        ("sender in 0.0.0.0/8", arp(request(VIP_LIVE), &|a| a.spa = [0, 1, 2, 3]), PassBadSender),
        ("sender hardware address multicast (a reply would flood)", arp(request(VIP_LIVE), &|a| a.sha = [0x01, 0, 0x5e, 0, 0, 1]), PassBadSender),
        ("sender hardware address broadcast", arp(request(VIP_LIVE), &|a| a.sha = [0xff; 6]), PassBadSender),
        ("probe from a group hardware address", arp(request(VIP_LIVE), &|a| { a.spa = [0; 4]; a.sha = [0xff; 6]; }), PassBadSender),
        ("gratuitous request from another host for our VIP", Arp::request(OTHER_MAC, VIP_LIVE, VIP_LIVE).bytes(), Conflict),
        ("gratuitous reply from another host for our VIP", arp(Arp::request(OTHER_MAC, VIP_LIVE, VIP_LIVE), &|a| { a.op = 2; a.tha = OTHER_MAC; }), Conflict),
        ("another host asks with our VIP as sender", Arp::request(OTHER_MAC, VIP_FUTURE, CLIENT_IP).bytes(), Conflict),
        ("claim on an expired VIP is still a conflict", Arp::request(OTHER_MAC, VIP_EXPIRED, VIP_EXPIRED).bytes(), Conflict),
        ("our own gratuitous ARP echoed back", Arp::request(OUR_MAC, VIP_LIVE, VIP_LIVE).bytes(), PassOwnSender),
        ("IPv4 frame", arp(request(VIP_LIVE), &|a| a.ether_type = 0x0800), PassOther),
        // VLANs: one 802.1Q tag, VIPs keyed by VLAN ID
        ("request on VLAN 100 for a VLAN 100 VIP", tagged(request(VIP_VLAN), VLAN).bytes(), ArpReply),
        ("same with priority bits in the tag", tagged(request(VIP_VLAN), 0xa000 | VLAN).bytes(), ArpReply),
        ("request on VLAN 200 for a VLAN 100 VIP", tagged(request(VIP_VLAN), 200).bytes(), PassNotVip),
        ("untagged request for a VLAN 100 VIP", request(VIP_VLAN).bytes(), PassNotVip),
        ("request on VLAN 100 for an untagged VIP", tagged(request(VIP_LIVE), VLAN).bytes(), PassNotVip),
        ("priority-tagged (VLAN 0) request for an untagged VIP", tagged(request(VIP_LIVE), 0x6000).bytes(), ArpReply),
        ("doubly tagged (Q-in-Q)", arp(tagged(request(VIP_VLAN), VLAN), &|a| a.ether_type = 0x8100), PassVlan),
        ("802.1ad outer tag", arp(request(VIP_LIVE), &|a| a.ether_type = 0x88a8), PassVlan),
        ("solicitation on VLAN 100 for a VLAN 100 VIP", nd(ns(VIP6_VLAN), &|n| n.vlan = Some(VLAN)), NdpReply),
        ("solicitation on VLAN 200 for a VLAN 100 VIP", nd(ns(VIP6_VLAN), &|n| n.vlan = Some(200)), PassNotVip),
        // NDP (RFC 4861 7.1.1, net/ipv6/ndisc.c)
        ("multicast solicitation for a VIP", ns(VIP6_LIVE).bytes(), NdpReply),
        ("solicitation to all nodes", nd(ns(VIP6_LIVE), &|n| { n.dst = ALL_NODES; n.eth_dst = [0x33, 0x33, 0, 0, 0, 1]; }), NdpReply),
        ("unicast solicitation", unicast_ns(VIP6_LIVE).bytes(), NdpReply),
        ("unicast solicitation without options (the answer is longer)", nd(unicast_ns(VIP6_LIVE), &|n| n.options.clear()), NdpReply),
        ("solicitation with a source address and a nonce option", nd(ns(VIP6_LIVE), &|n| n.options.extend(nonce.clone())), NdpReply),
        ("two source address options: the first counts", nd(ns(VIP6_LIVE), &|n| n.options.extend(lladdr_option(1, OTHER_MAC))), NdpReply),
        ("solicitation with Ethernet trailer", nd(ns(VIP6_LIVE), &|n| n.trailer = vec![0xee; 10]), NdpReply),
        ("DAD probe", dad(VIP6_LIVE).bytes(), NdpDadReply),
        ("DAD probe with a nonce option", nd(dad(VIP6_LIVE), &|n| n.options = nonce.clone()), NdpDadReply),
        ("solicitation for an address that is no VIP", ns(NOT_VIP6).bytes(), PassNotVip),
        ("solicitation for an expired VIP", ns(VIP6_EXPIRED).bytes(), PassExpired),
        ("unicast solicitation to another host's MAC", nd(unicast_ns(VIP6_LIVE), &|n| n.eth_dst = OTHER_MAC), PassEthDst),
        ("source link-layer address option multicast (a reply would flood)", nd(ns(VIP6_LIVE), &|n| n.options = lladdr_option(1, [0x33, 0x33, 0, 0, 0, 1])), PassBadSender),
        ("unicast solicitation without options from a group Ethernet source", nd(unicast_ns(VIP6_LIVE), &|n| { n.options.clear(); n.eth_src = [0x01, 0, 0x5e, 0, 0, 1]; }), PassBadSender),
        ("DAD probe from a group Ethernet source (answered to all nodes)", nd(dad(VIP6_LIVE), &|n| n.eth_src = [0x33, 0x33, 0, 0, 0, 1]), NdpDadReply),
        ("hop limit 254", nd(ns(VIP6_LIVE), &|n| n.hop_limit = 254), NdpBadHopLimit),
        ("ICMP code 1", nd(ns(VIP6_LIVE), &|n| n.code = 1), NdpBadCode),
        ("bad checksum", nd(ns(VIP6_LIVE), &|n| n.checksum = Some(0x1234)), NdpBadChecksum),
        ("ICMP length 16", nd(ns(VIP6_LIVE), &|n| n.payload_len = Some(16)), NdpBadLength),
        ("ICMP length not 24 plus whole options", nd(ns(VIP6_LIVE), &|n| n.payload_len = Some(31)), NdpBadLength),
        ("more options than the responder reads", nd(ns(VIP6_LIVE), &|n| n.options.extend(nonce.repeat(8))), NdpBadLength),
        ("payload length past the frame", nd(ns(VIP6_LIVE), &|n| n.payload_len = Some(40)), NdpTruncated),
        ("IP version 4 in an IPv6 frame", nd(ns(VIP6_LIVE), &|n| n.version = 4), NdpBadHeader),
        ("multicast source", nd(ns(VIP6_LIVE), &|n| n.src = ALL_NODES), NdpBadHeader),
        ("loopback source", nd(ns(VIP6_LIVE), &|n| n.src = { let mut l = [0; 16]; l[15] = 1; l }), NdpBadHeader),
        ("multicast target", ns(MCAST6).bytes(), NdpBadTarget),
        ("option of length 0", nd(ns(VIP6_LIVE), &|n| n.options.extend([14, 0, 0, 0, 0, 0, 0, 0])), NdpBadOptions),
        ("option running past the message", nd(ns(VIP6_LIVE), &|n| n.options.extend([14, 2, 0, 0, 0, 0, 0, 0])), NdpBadOptions),
        ("source address option of 16 bytes", nd(ns(VIP6_LIVE), &|n| n.options = [vec![1, 2], vec![0; 14]].concat()), NdpBadOptions),
        ("DAD probe with a source address option", nd(dad(VIP6_LIVE), &|n| n.options = lladdr_option(1, CLIENT_MAC)), NdpBadDad),
        ("DAD probe sent to the target itself", nd(dad(VIP6_LIVE), &|n| n.dst = VIP6_LIVE), NdpBadDad),
        ("DAD probe sent to another solicited-node group", nd(dad(VIP6_LIVE), &|n| n.dst = solicited_node(&NOT_VIP6)), NdpBadDad),
        ("multicast solicitation without a source address option", nd(ns(VIP6_LIVE), &|n| n.options.clear()), NdpNoLladdr),
        ("unicast solicitation to another address", nd(unicast_ns(VIP6_LIVE), &|n| n.dst = NOT_VIP6), NdpBadDestination),
        ("hop-by-hop extension header", nd(ns(VIP6_LIVE), &|n| n.next_header = 0), PassNotNdp),
        ("fragment header", nd(ns(VIP6_LIVE), &|n| n.next_header = 44), PassNotNdp),
        ("ICMPv6 echo request", nd(ns(VIP6_LIVE), &|n| n.icmp_type = 128), PassNotNdp),
        ("advertisement from another host for our VIP", nd(ns(CLIENT6), &|n| { n.icmp_type = 136; n.src = VIP6_LIVE; n.dst = ALL_NODES; n.eth_src = OTHER_MAC; n.options = lladdr_option(2, OTHER_MAC); }), Conflict),
        ("solicitation from another host using our VIP", nd(ns(CLIENT6), &|n| { n.src = VIP6_LIVE; n.eth_src = OTHER_MAC; }), Conflict),
        ("our own advertisement echoed back", nd(ns(CLIENT6), &|n| { n.icmp_type = 136; n.src = VIP6_LIVE; n.eth_src = OUR_MAC; }), PassOwnSender),
        ("advertisement from a client", nd(ns(VIP6_LIVE), &|n| n.icmp_type = 136), PassNotRequest),
    ]
}

#[test]
fn named_cases_match_model_and_intent() {
    with_harness(|h| {
        let ifindex = h.ifindex;
        for (name, frame, reason) in named_cases() {
            let out = h.check(name, &frame, ifindex);
            assert_eq!(out.reason, reason, "case {name:?}: model reason");
        }
        // A VIP arriving on another interface (loopback here) is not ours.
        let out = h.check("VIP on the wrong interface", &request(VIP_LIVE).bytes(), 1);
        assert_eq!(out.reason, Reason::PassNotVip);
    });
}

#[test]
fn answered_reply_has_every_field_right() {
    with_harness(|h| {
        let mut req = request(VIP_LIVE);
        req.trailer = vec![0x5a; 18];
        let ifindex = h.ifindex;
        let out = h.check("padded request", &req.bytes(), ifindex);
        let reply = Arp::parse(&out.frame).expect("ARP");
        assert_eq!(reply.eth_dst, CLIENT_MAC);
        assert_eq!(reply.eth_src, OUR_MAC);
        assert_eq!(reply.ether_type, 0x0806);
        assert_eq!(
            (reply.htype, reply.ptype, reply.hlen, reply.plen),
            (1, 0x0800, 6, 4)
        );
        assert_eq!(reply.op, 2);
        assert_eq!((reply.sha, reply.spa), (OUR_MAC, VIP_LIVE));
        assert_eq!((reply.tha, reply.tpa), (CLIENT_MAC, CLIENT_IP));
        assert_eq!(
            reply.trailer,
            vec![0x5a; 18],
            "padding kept, not answered short"
        );

        let probe = with_sender(request(VIP_LIVE), [0; 4]);
        let out = h.check("probe", &probe.bytes(), ifindex);
        let reply = Arp::parse(&out.frame).expect("ARP");
        assert_eq!(
            reply.eth_dst, CLIENT_MAC,
            "probe answered unicast to the sender"
        );
        assert_eq!((reply.spa, reply.tpa), (VIP_LIVE, [0; 4]));
    });
}

#[test]
fn prefilter_is_transparent_when_vips_share_a_bit() {
    use speaker_common::maps::filter_slot_v4;
    // 198.19.0.11 folds to the same filter bit as VIP_LIVE.
    const COLLIDER: [u8; 4] = [198, 19, 0, 11];
    assert_eq!(filter_slot_v4(&COLLIDER), filter_slot_v4(&VIP_LIVE));
    with_harness(|h| {
        let ifindex = h.ifindex;
        let key = |a| VipKey::ipv4(ifindex, 0, a);
        let req = |a| request(a).bytes();
        let answered = |h: &mut Harness, name, a| h.check(name, &req(a), ifindex).reason;
        assert_eq!(
            answered(h, "collider, not a VIP yet", COLLIDER),
            Reason::PassNotVip
        );
        h.install(
            key(COLLIDER),
            VipEntry {
                mac: OUR_MAC,
                _pad: [0; 2],
                expires_ns: 0,
            },
        );
        assert_eq!(
            answered(h, "collider installed", COLLIDER),
            Reason::ArpReply
        );
        h.remove(key(COLLIDER));
        assert_eq!(
            answered(h, "collider removed", COLLIDER),
            Reason::PassNotVip
        );
        assert_eq!(
            answered(h, "bit still held by VIP_LIVE", VIP_LIVE),
            Reason::ArpReply
        );
        h.install(
            key(COLLIDER),
            VipEntry {
                mac: OUR_MAC,
                _pad: [0; 2],
                expires_ns: 0,
            },
        );
        h.remove(key(VIP_LIVE));
        assert_eq!(
            answered(h, "VIP_LIVE removed", VIP_LIVE),
            Reason::PassNotVip
        );
        assert_eq!(
            answered(h, "bit still held by collider", COLLIDER),
            Reason::ArpReply
        );
        h.remove(key(COLLIDER));
        assert_eq!(answered(h, "both removed", COLLIDER), Reason::PassNotVip);
        // Removing what is not there is harmless.
        h.remove(key(COLLIDER));
    });
}

#[test]
fn advertisement_has_every_field_right() {
    with_harness(|h| {
        let ifindex = h.ifindex;
        let tlla = lladdr_option(2, OUR_MAC);
        let check_na = |out: &model::Outcome, eth_dst, ip_dst, flags, vlan| {
            let na = Nd::parse(&out.frame).expect("an ND frame");
            assert_eq!(na.eth_dst, eth_dst);
            assert_eq!(na.eth_src, OUR_MAC);
            assert_eq!(na.vlan, vlan, "the tag is kept");
            assert_eq!((na.version, na.next_header, na.hop_limit), (6, 58, 255));
            assert_eq!(
                &out.frame[out.frame.len() - 72..][..4],
                &[0x60, 0, 0, 0],
                "traffic class and flow label 0"
            );
            assert_eq!((na.src, na.dst), (VIP6_LIVE, ip_dst));
            assert_eq!((na.icmp_type, na.code), (136, 0));
            assert_eq!(na.flags, flags, "R clear; S unless DAD; O set");
            assert_eq!(na.target, VIP6_LIVE);
            assert_eq!(
                na.options, tlla,
                "exactly one target link-layer address option"
            );
            assert_eq!(na.payload_len, Some(32));
            assert!(na.trailer.is_empty(), "trimmed to the advertisement");
            assert!(na.checksum_ok(), "ICMPv6 checksum");
        };
        let out = h.check("multicast NS", &ns(VIP6_LIVE).bytes(), ifindex);
        check_na(&out, CLIENT_MAC, CLIENT6, 0x60, None);

        let mut other_slla = ns(VIP6_LIVE);
        other_slla.options = lladdr_option(1, OTHER_MAC);
        let out = h.check(
            "NS whose option names another MAC",
            &other_slla.bytes(),
            ifindex,
        );
        check_na(&out, OTHER_MAC, CLIENT6, 0x60, None);

        let mut bare = unicast_ns(VIP6_LIVE);
        bare.options.clear();
        let out = h.check("unicast NS without options", &bare.bytes(), ifindex);
        check_na(&out, CLIENT_MAC, CLIENT6, 0x60, None);

        let out = h.check("DAD", &dad(VIP6_LIVE).bytes(), ifindex);
        check_na(&out, [0x33, 0x33, 0, 0, 0, 1], ALL_NODES, 0x20, None);

        let mut tagged_ns = ns(VIP6_LIVE);
        tagged_ns.vlan = Some(0x6000);
        tagged_ns.trailer = vec![1; 30];
        let out = h.check(
            "priority-tagged NS with trailer",
            &tagged_ns.bytes(),
            ifindex,
        );
        check_na(&out, CLIENT_MAC, CLIENT6, 0x60, Some(0x6000));

        let out = h.check(
            "tagged ARP",
            &tagged(request(VIP_VLAN), VLAN).bytes(),
            ifindex,
        );
        let reply = Arp::parse(&out.frame).expect("ARP");
        assert_eq!(reply.vlan, Some(VLAN));
        assert_eq!(
            (reply.op, reply.spa, reply.eth_dst),
            (2, VIP_VLAN, CLIENT_MAC)
        );
    });
}

#[test]
fn every_truncation_length_of_ndp_and_tagged_frames() {
    with_harness(|h| {
        let ifindex = h.ifindex;
        let full = ns(VIP6_LIVE).bytes(); // 14 + 40 + 32 bytes
        for len in 0..=full.len() {
            let out = h.check(&format!("NS truncated to {len}"), &full[..len], ifindex);
            let want = match len {
                0..14 => Reason::EthTruncated,
                14..55 => Reason::PassNotNdp,
                55..86 => Reason::NdpTruncated,
                _ => Reason::NdpReply,
            };
            assert_eq!(out.reason, want, "NS length {len}");
        }
        let full = tagged(request(VIP_VLAN), VLAN).bytes(); // 18 + 28 bytes
        for len in 14..=full.len() {
            let out = h.check(
                &format!("tagged ARP truncated to {len}"),
                &full[..len],
                ifindex,
            );
            let want = match len {
                14..18 => Reason::EthTruncated,
                18..46 => Reason::ArpTruncated,
                _ => Reason::ArpReply,
            };
            assert_eq!(out.reason, want, "tagged ARP length {len}");
        }
    });
}

fn with_sender(mut a: Arp, spa: [u8; 4]) -> Arp {
    a.spa = spa;
    a
}

#[test]
fn every_truncation_length() {
    with_harness(|h| {
        let ifindex = h.ifindex;
        let mut full = request(VIP_LIVE);
        full.trailer = vec![0; 22]; // 64 bytes
        let bytes = full.bytes();
        for len in 0..=bytes.len() {
            let out = h.check(&format!("truncated to {len}"), &bytes[..len], ifindex);
            let want = match len {
                0..14 => Reason::EthTruncated,
                14..42 => Reason::ArpTruncated,
                _ => Reason::ArpReply,
            };
            assert_eq!(out.reason, want, "length {len}");
        }
    });
}

fn seed() -> u64 {
    std::env::var("SPEAKER_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_a2b1)
}

/// Structured random ARP frames: each field drawn from the values that
/// matter to some rule, or at random.
fn random_arp(rng: &mut Rng) -> Vec<u8> {
    let addrs = [
        VIP_LIVE,
        VIP_FUTURE,
        VIP_EXPIRED,
        VIP_OTHER_IF,
        NOT_VIP,
        CLIENT_IP,
        [0; 4],
        BAD_CLASS[0],
        BAD_CLASS[1],
        BAD_CLASS[2],
        [0, 1, 2, 3],
    ];
    let macs = [
        OUR_MAC,
        CLIENT_MAC,
        OTHER_MAC,
        [0xff; 6],
        [0x01, 0, 0x5e, 0, 0, 1],
    ];
    let mut a = Arp::request(rng.pick(&macs), rng.pick(&addrs), rng.pick(&addrs));
    a.sha = if rng.below(4) == 0 {
        rng.pick(&macs)
    } else {
        a.eth_src
    };
    a.eth_dst = rng.pick(&[[0xff; 6], OUR_MAC, OTHER_MAC, CLIENT_MAC]);
    let (r16, r8) = (rng.next_u64() as u16, rng.byte());
    a.htype = rng.pick(&[1, 1, 1, 6, 2, r16]);
    a.ptype = rng.pick(&[0x0800, 0x0800, 0x0800, 0x86dd, r16]);
    a.hlen = rng.pick(&[6, 6, 6, r8]);
    a.plen = rng.pick(&[4, 4, 4, r8]);
    a.op = rng.pick(&[1, 1, 2, 3, 0, r16]);
    a.ether_type = rng.pick(&[0x0806, 0x0806, 0x0806, 0x0800, 0x8100, 0x86dd]);
    if rng.below(3) == 0 {
        a.spa = [rng.byte(), rng.byte(), rng.byte(), rng.byte()];
    }
    a.trailer = vec![0; rng.below(40) as usize];
    rng.fill(&mut a.trailer);
    let mut f = a.bytes();
    if rng.below(8) == 0 {
        f.truncate(14 + rng.below(f.len() as u64 - 14) as usize);
    }
    f
}

/// Random ND frames: a valid template (multicast, unicast or DAD
/// solicitation, or an advertisement) with zero to three fields changed to
/// values that matter to some rule, or to random ones. The checksum is
/// recomputed unless it is the field changed, so later rules are reached.
fn random_nd(rng: &mut Rng) -> Vec<u8> {
    let addrs = [
        VIP6_LIVE,
        VIP6_EXPIRED,
        VIP6_VLAN,
        NOT_VIP6,
        CLIENT6,
        MCAST6,
        ALL_NODES,
        [0; 16],
        solicited_node(&VIP6_LIVE),
        solicited_node(&NOT_VIP6),
    ];
    let macs = [
        OUR_MAC,
        CLIENT_MAC,
        OTHER_MAC,
        [0x33, 0x33, 0xff, 0, 0, 0x10],
    ];
    let target = rng.pick(&[VIP6_LIVE, VIP6_LIVE, VIP6_EXPIRED, VIP6_VLAN, NOT_VIP6]);
    let mut n = match rng.below(4) {
        0 => unicast_ns(target),
        1 => dad(target),
        2 => {
            let mut n = ns(CLIENT6);
            n.icmp_type = 136;
            n.src = target;
            n.eth_src = rng.pick(&macs);
            n
        }
        _ => ns(target),
    };
    if target == VIP6_VLAN || rng.below(8) == 0 {
        n.vlan = Some(rng.pick(&[VLAN, VLAN, 200, 0]));
    }
    for _ in 0..rng.below(4) {
        match rng.below(14) {
            0 => n.eth_dst = rng.pick(&[OUR_MAC, OTHER_MAC, [0x33, 0x33, 0, 0, 0, 1]]),
            1 => n.eth_src = rng.pick(&macs),
            2 => n.src = rng.pick(&addrs),
            3 => n.dst = rng.pick(&addrs),
            4 => n.target = rng.pick(&addrs),
            5 => n.hop_limit = rng.pick(&[64, 254, 0]),
            6 => n.code = rng.byte().max(1),
            7 => {
                let any = rng.byte();
                n.icmp_type = rng.pick(&[128, 133, 137, any]);
            }
            8 => n.next_header = rng.pick(&[0, 17, 44, 60]),
            9 => n.version = rng.below(16) as u8,
            10 => n.checksum = Some(rng.next_u64() as u16),
            11 => n.payload_len = Some(rng.below(100) as u16),
            12 => {
                let kind = rng.pick(&[1, 2, 14, 3]);
                let units = rng.pick(&[1, 1, 0, 2, 9]);
                let mut o = vec![kind, units];
                o.resize(usize::from(units.clamp(1, 2)) * 8, 0);
                rng.fill(&mut o[2..]);
                n.options.extend(o);
            }
            _ => n.trailer = vec![0; 1 + rng.below(12) as usize],
        }
    }
    let mut f = n.bytes();
    if rng.below(12) == 0 {
        f.truncate(14 + rng.below(f.len() as u64 - 14) as usize);
    }
    f
}

/// A valid request for a VIP with one to three bytes changed at random.
fn mutated_request(rng: &mut Rng) -> Vec<u8> {
    let mut a = request(rng.pick(&[VIP_LIVE, VIP_FUTURE, VIP_EXPIRED]));
    a.trailer = vec![0; rng.below(20) as usize];
    let mut f = a.bytes();
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(42) as usize;
        f[at] = rng.byte();
    }
    f
}

#[test]
fn seeded_random_and_mutated_frames() {
    let seed = seed();
    with_harness(|h| {
        let mut rng = Rng::new(seed);
        let ifindex = h.ifindex;
        let mut answered = 0;
        for i in 0..3000 {
            let f = random_arp(&mut rng);
            if h.check(&format!("random #{i} (seed {seed})"), &f, ifindex)
                .action
                == Action::Tx
            {
                answered += 1;
            }
        }
        for i in 0..3000 {
            let f = mutated_request(&mut rng);
            if h.check(&format!("mutated #{i} (seed {seed})"), &f, ifindex)
                .action
                == Action::Tx
            {
                answered += 1;
            }
        }
        let mut nd_answered = 0;
        for i in 0..3000 {
            let f = random_nd(&mut rng);
            if h.check(&format!("random ND #{i} (seed {seed})"), &f, ifindex)
                .action
                == Action::Tx
            {
                nd_answered += 1;
            }
        }
        for i in 0..1000 {
            // A valid solicitation with bytes flipped past the Ethernet header.
            let mut f = ns(rng.pick(&[VIP6_LIVE, VIP6_EXPIRED])).bytes();
            for _ in 0..1 + rng.below(2) {
                let at = 14 + rng.below(f.len() as u64 - 14) as usize;
                f[at] = rng.byte();
            }
            h.check(&format!("mutated NS #{i} (seed {seed})"), &f, ifindex);
        }
        assert!(
            nd_answered > 100,
            "only {nd_answered} ND frames were answered"
        );
        for i in 0..500 {
            let mut f = vec![0u8; 14 + rng.below(100) as usize];
            rng.fill(&mut f);
            h.check(&format!("noise #{i} (seed {seed})"), &f, ifindex);
        }
        // The generators must reach the answering path, or the comparison
        // would prove little.
        assert!(answered > 300, "only {answered} frames were answered");
        assert_eq!(h.checked, 10_500);
    });
}

/// The dead-man's switch reads CLOCK_BOOTTIME, the clock the agent writes
/// expiries in: CLOCK_MONOTONIC stops while the machine is suspended, and
/// an entry would outlive its owner's sleep. Both clocks agree on a machine
/// that never slept, so the program's own instructions are what tell.
#[test]
fn the_dead_mans_switch_reads_the_boot_time_clock() {
    with_harness(|h| {
        let program = h.dp.program().expect("program");
        let id = program.info().expect("program info").id();
        let out = std::process::Command::new("bpftool")
            .args(["prog", "dump", "xlated", "id", &id.to_string()])
            .output()
            .expect("bpftool");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("bpf_ktime_get_boot_ns"), "{text}");
        assert!(!text.contains("bpf_ktime_get_ns"), "{text}");
    });
}

#[test]
fn a_renewal_moves_every_entry_in_one_write() {
    with_harness(|h| {
        let keys: Vec<VipKey> = (0..300u16)
            .map(|i| VipKey::ipv4(h.ifindex, 0, [198, 19, (i >> 8) as u8, i as u8]))
            .collect();
        for expires_ns in [1, u64::MAX - 1] {
            let entries: Vec<(VipKey, VipEntry)> = keys
                .iter()
                .map(|k| {
                    let entry = VipEntry {
                        mac: OUR_MAC,
                        _pad: [0; 2],
                        expires_ns,
                    };
                    (*k, entry)
                })
                .collect();
            h.dp.set_vips(&entries).expect("set VIPs");
            h.mirror.extend(entries.iter().copied());
            let have: HashMap<VipKey, VipEntry> =
                h.dp.maps().vips().expect("read VIPs").into_iter().collect();
            for (key, entry) in &entries {
                assert_eq!(have.get(key), Some(entry), "{key:?}");
            }
            // The program reads them as the model does: expired, then
            // answered.
            let frame = request([198, 19, 0, 7]).bytes();
            let ifindex = h.ifindex;
            let out = h.check("a batched entry", &frame, ifindex);
            assert_eq!(out.reason == Reason::ArpReply, expires_ns > 1);
        }
    });
}
