//! Reference model of the XDP responder: for an input frame, the interface it
//! arrived on, the map contents and the time, what the program must do. It is
//! written from RFC 826 and net/ipv4/arp.c with plain byte offsets, apart
//! from the eBPF code, and the tests hold the real program to it byte for
//! byte through BPF_PROG_TEST_RUN.

use speaker_common::maps::{Reason, VipEntry, VipKey};

/// XDP verdicts (linux/bpf.h `enum xdp_action`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Pass = 2,
    Tx = 3,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub action: Action,
    /// The counter the frame must bump.
    pub reason: Reason,
    /// The frame after the program: the input itself unless answered.
    pub frame: Vec<u8>,
    /// A conflict the program must record: the VIP and the foreign MAC.
    pub conflict: Option<(VipKey, [u8; 6])>,
}

/// The map state the program consults.
pub trait Vips {
    fn get(&self, key: &VipKey) -> Option<VipEntry>;
}

impl Vips for std::collections::HashMap<VipKey, VipEntry> {
    fn get(&self, key: &VipKey) -> Option<VipEntry> {
        std::collections::HashMap::get(self, key).copied()
    }
}

// Offsets in an Ethernet frame carrying ARP for Ethernet/IPv4 (RFC 826).
const ETH_DST: usize = 0;
const ETH_SRC: usize = 6;
const ETH_TYPE: usize = 12;
const AR_HRD: usize = 14;
const AR_PRO: usize = 16;
const AR_HLN: usize = 18;
const AR_PLN: usize = 19;
const AR_OP: usize = 20;
const AR_SHA: usize = 22;
const AR_SPA: usize = 28;
const AR_THA: usize = 32;
const AR_TPA: usize = 38;
const ARP_END: usize = 42;

fn u16_at(f: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([f[at], f[at + 1]])
}

fn u32_at(f: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([f[at], f[at + 1], f[at + 2], f[at + 3]])
}

fn mac_at(f: &[u8], at: usize) -> [u8; 6] {
    let mut m = [0; 6];
    m.copy_from_slice(&f[at..at + 6]);
    m
}

fn ip_at(f: &[u8], at: usize) -> [u8; 4] {
    [f[at], f[at + 1], f[at + 2], f[at + 3]]
}

/// What the responder does with `frame` arriving on `ifindex` at `now_ns`.
pub fn respond(frame: &[u8], ifindex: u32, now_ns: u64, vips: &impl Vips) -> Outcome {
    let pass = |reason| Outcome {
        action: Action::Pass,
        reason,
        frame: frame.to_vec(),
        conflict: None,
    };
    if frame.len() < 14 {
        return pass(Reason::EthTruncated);
    }
    match u16_at(frame, ETH_TYPE) {
        0x0806 => {}
        0x8100 | 0x88a8 => return pass(Reason::PassVlan),
        _ => return pass(Reason::PassNotArp),
    }
    if frame.len() < ARP_END {
        return pass(Reason::ArpTruncated);
    }
    // arp_rcv / arp_process header checks: Linux drops what fails them.
    if !matches!(u16_at(frame, AR_HRD), 1 | 6) {
        return pass(Reason::ArpBadHardware);
    }
    if u16_at(frame, AR_PRO) != 0x0800 {
        return pass(Reason::ArpBadProtocol);
    }
    if frame[AR_HLN] != 6 || frame[AR_PLN] != 4 {
        return pass(Reason::ArpBadLengths);
    }
    let op = u16_at(frame, AR_OP);
    if op != 1 && op != 2 {
        return pass(Reason::ArpBadOp);
    }
    let sha = mac_at(frame, AR_SHA);
    let spa = u32_at(frame, AR_SPA);
    let multicast = |a: u32| a >> 28 == 0xe;
    let loopback = |a: u32| a >> 24 == 127;
    if spa != 0 && (multicast(spa) || spa == u32::MAX || loopback(spa) || spa >> 24 == 0) {
        return pass(Reason::PassBadSender);
    }
    if spa != 0 {
        let key = VipKey::ipv4(ifindex, 0, ip_at(frame, AR_SPA));
        if let Some(entry) = vips.get(&key) {
            if entry.mac == sha {
                return pass(Reason::PassOwnSender);
            }
            return Outcome {
                conflict: Some((key, sha)),
                ..pass(Reason::Conflict)
            };
        }
    }
    if op != 1 {
        return pass(Reason::PassNotRequest);
    }
    let tpa = u32_at(frame, AR_TPA);
    if multicast(tpa) || tpa == u32::MAX || loopback(tpa) {
        return pass(Reason::PassBadTarget);
    }
    let Some(entry) = vips.get(&VipKey::ipv4(ifindex, 0, ip_at(frame, AR_TPA))) else {
        return pass(Reason::PassNotVip);
    };
    let eth_dst = mac_at(frame, ETH_DST);
    if eth_dst != [0xff; 6] && eth_dst != entry.mac {
        return pass(Reason::PassEthDst);
    }
    if !entry.is_live(now_ns) {
        return pass(Reason::PassExpired);
    }

    // The reply arp_send(ARPOP_REPLY, ...) would build, written over the
    // request; bytes past the ARP body stay as they came.
    let mut out = frame.to_vec();
    out[ETH_DST..ETH_DST + 6].copy_from_slice(&sha);
    out[ETH_SRC..ETH_SRC + 6].copy_from_slice(&entry.mac);
    out[AR_HRD..AR_HRD + 2].copy_from_slice(&1u16.to_be_bytes());
    out[AR_OP..AR_OP + 2].copy_from_slice(&2u16.to_be_bytes());
    out[AR_SHA..AR_SHA + 6].copy_from_slice(&entry.mac);
    out[AR_SPA..AR_SPA + 4].copy_from_slice(&frame[AR_TPA..AR_TPA + 4]);
    out[AR_THA..AR_THA + 6].copy_from_slice(&sha);
    out[AR_TPA..AR_TPA + 4].copy_from_slice(&frame[AR_SPA..AR_SPA + 4]);
    Outcome {
        action: Action::Tx,
        reason: if spa == 0 {
            Reason::ArpProbeReply
        } else {
            Reason::ArpReply
        },
        frame: out,
        conflict: None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const OUR_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
    const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
    const VIP: [u8; 4] = [198, 18, 0, 10];
    const CLIENT_IP: [u8; 4] = [198, 18, 0, 2];

    fn request(spa: [u8; 4], tpa: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend(CLIENT_MAC);
        f.extend([0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
        f.extend(CLIENT_MAC);
        f.extend(spa);
        f.extend([0; 6]);
        f.extend(tpa);
        f
    }

    fn vips(expires_ns: u64) -> HashMap<VipKey, VipEntry> {
        HashMap::from([(
            VipKey::ipv4(7, 0, VIP),
            VipEntry {
                mac: OUR_MAC,
                _pad: [0; 2],
                expires_ns,
            },
        )])
    }

    #[test]
    fn answers_a_request_with_the_exact_reply() {
        let out = respond(&request(CLIENT_IP, VIP), 7, 5, &vips(0));
        assert_eq!(out.action, Action::Tx);
        assert_eq!(out.reason, Reason::ArpReply);
        let mut want = CLIENT_MAC.to_vec();
        want.extend(OUR_MAC);
        want.extend([0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 2]);
        want.extend(OUR_MAC);
        want.extend(VIP);
        want.extend(CLIENT_MAC);
        want.extend(CLIENT_IP);
        assert_eq!(out.frame, want);
    }

    #[test]
    fn probe_is_answered_to_zero() {
        let out = respond(&request([0; 4], VIP), 7, 5, &vips(0));
        assert_eq!(out.reason, Reason::ArpProbeReply);
        assert_eq!(&out.frame[38..42], &[0; 4]);
        assert_eq!(&out.frame[28..32], &VIP);
    }

    #[test]
    fn expiry_and_interface_are_honoured() {
        assert_eq!(
            respond(&request(CLIENT_IP, VIP), 7, 99, &vips(100)).action,
            Action::Tx
        );
        assert_eq!(
            respond(&request(CLIENT_IP, VIP), 7, 100, &vips(100)).reason,
            Reason::PassExpired
        );
        assert_eq!(
            respond(&request(CLIENT_IP, VIP), 8, 5, &vips(0)).reason,
            Reason::PassNotVip
        );
    }

    #[test]
    fn foreign_claim_is_a_conflict() {
        let out = respond(&request(VIP, VIP), 7, 5, &vips(0));
        assert_eq!(out.reason, Reason::Conflict);
        assert_eq!(out.conflict, Some((VipKey::ipv4(7, 0, VIP), CLIENT_MAC)));
    }
}
