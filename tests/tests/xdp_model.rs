//! The loaded XDP program against the reference model
//! (speaker::dataplane::model), through BPF_PROG_TEST_RUN: verdict, output
//! bytes, the counter bumped and the conflict recorded must all agree.

use std::collections::HashMap;

use speaker::dataplane::{
    Dataplane, SPEAKER_XDP,
    model::{self, Action},
    monotonic_now_ns,
};
use speaker_common::maps::{Counters, Reason, VipEntry, VipKey};
use speaker_tests::{
    frames::{Arp, Rng},
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
            .conflicts()
            .expect("read conflicts")
            .into_iter()
            .map(|(k, c)| (k, (c.count, c.last_mac)))
            .collect()
    }

    /// Runs one frame through program and model; panics with `name` and the
    /// frame on any difference. Returns the model's outcome.
    fn check(&mut self, name: &str, frame: &[u8], ifindex: u32) -> model::Outcome {
        let want = model::respond(frame, ifindex, monotonic_now_ns(), &self.mirror);
        let prog = self.dp.program().expect("program");
        let counters_before = self.dp.counters().expect("counters");
        let conflicts_before = self.conflicts();
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
        let counters_after = self.dp.counters().expect("counters");
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

/// Every rule of the responder as a named case, with the reason the model
/// must give (so the model is held to the intent, and the program to it).
#[rustfmt::skip]
fn named_cases() -> Vec<(&'static str, Arp, Reason)> {
    use Reason::*;
    let with = |mut a: Arp, f: &dyn Fn(&mut Arp)| {
        f(&mut a);
        a
    };
    vec![
        ("request for a VIP", request(VIP_LIVE), ArpReply),
        ("request for a VIP, entry expiring in the far future", request(VIP_FUTURE), ArpReply),
        ("request with Ethernet padding", with(request(VIP_LIVE), &|a| a.trailer = vec![0xa5; 18]), ArpReply),
        ("unicast request to our MAC", with(request(VIP_LIVE), &|a| a.eth_dst = OUR_MAC), ArpReply),
        ("IEEE 802 hardware type (6)", with(request(VIP_LIVE), &|a| a.htype = 6), ArpReply),
        ("request with a non-zero target MAC", with(request(VIP_LIVE), &|a| a.tha = OTHER_MAC), ArpReply),
        ("ARP probe (sender 0.0.0.0)", with(request(VIP_LIVE), &|a| a.spa = [0; 4]), ArpProbeReply),
        ("expired entry", request(VIP_EXPIRED), PassExpired),
        ("not a VIP", request(NOT_VIP), PassNotVip),
        ("VIP of another interface", request(VIP_OTHER_IF), PassNotVip),
        ("hardware type 2", with(request(VIP_LIVE), &|a| a.htype = 2), ArpBadHardware),
        ("hardware type 0", with(request(VIP_LIVE), &|a| a.htype = 0), ArpBadHardware),
        ("protocol IPv6", with(request(VIP_LIVE), &|a| a.ptype = 0x86dd), ArpBadProtocol),
        ("hardware length 8", with(request(VIP_LIVE), &|a| a.hlen = 8), ArpBadLengths),
        ("protocol length 16", with(request(VIP_LIVE), &|a| a.plen = 16), ArpBadLengths),
        ("opcode 0", with(request(VIP_LIVE), &|a| a.op = 0), ArpBadOp),
        ("RARP request opcode 3", with(request(VIP_LIVE), &|a| a.op = 3), ArpBadOp),
        ("ARP reply for a VIP", with(request(VIP_LIVE), &|a| a.op = 2), PassNotRequest),
        ("Ethernet destination another host", with(request(VIP_LIVE), &|a| a.eth_dst = OTHER_MAC), PassEthDst),
        ("Ethernet destination multicast", with(request(VIP_LIVE), &|a| a.eth_dst = [0x01, 0, 0x5e, 0, 0, 1]), PassEthDst),
        ("target multicast", request(BAD_CLASS[0]), PassBadTarget),
        ("target broadcast", request(BAD_CLASS[1]), PassBadTarget),
        ("target loopback", request(BAD_CLASS[2]), PassBadTarget),
        ("sender multicast", with(request(VIP_LIVE), &|a| a.spa = [239, 1, 1, 1]), PassBadSender),
        ("sender broadcast", with(request(VIP_LIVE), &|a| a.spa = [255; 4]), PassBadSender),
        ("sender loopback", with(request(VIP_LIVE), &|a| a.spa = [127, 0, 0, 9]), PassBadSender),
        ("sender in 0.0.0.0/8", with(request(VIP_LIVE), &|a| a.spa = [0, 1, 2, 3]), PassBadSender),
        ("gratuitous request from another host for our VIP", with(Arp::request(OTHER_MAC, VIP_LIVE, VIP_LIVE), &|_| {}), Conflict),
        ("gratuitous reply from another host for our VIP", with(Arp::request(OTHER_MAC, VIP_LIVE, VIP_LIVE), &|a| {
                a.op = 2;
                a.tha = OTHER_MAC;
            }), Conflict),
        ("another host asks with our VIP as sender", with(Arp::request(OTHER_MAC, VIP_FUTURE, CLIENT_IP), &|_| {}), Conflict),
        ("claim on an expired VIP is still a conflict", with(Arp::request(OTHER_MAC, VIP_EXPIRED, VIP_EXPIRED), &|_| {}), Conflict),
        ("our own gratuitous ARP echoed back", with(Arp::request(OUR_MAC, VIP_LIVE, VIP_LIVE), &|_| {}), PassOwnSender),
        ("IPv4 frame", with(request(VIP_LIVE), &|a| a.ether_type = 0x0800), PassNotArp),
        ("802.1Q tagged", with(request(VIP_LIVE), &|a| a.ether_type = 0x8100), PassVlan),
        ("802.1ad tagged", with(request(VIP_LIVE), &|a| a.ether_type = 0x88a8), PassVlan),
    ]
}

#[test]
fn named_cases_match_model_and_intent() {
    with_harness(|h| {
        let ifindex = h.ifindex;
        for (name, arp, reason) in named_cases() {
            let out = h.check(name, &arp.bytes(), ifindex);
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
        for i in 0..500 {
            let mut f = vec![0u8; 14 + rng.below(100) as usize];
            rng.fill(&mut f);
            h.check(&format!("noise #{i} (seed {seed})"), &f, ifindex);
        }
        // The generators must reach the answering path, or the comparison
        // would prove little.
        assert!(answered > 300, "only {answered} frames were answered");
        assert_eq!(h.checked, 6500);
    });
}
