//! Reference model of the XDP responder: for an input frame, the interface it
//! arrived on, the map contents and the time, what the program must do. It is
//! written from RFC 826, RFC 4861 and Linux's net/ipv4/arp.c and
//! net/ipv6/ndisc.c with plain byte offsets, apart from the eBPF code, and
//! the tests hold the real program to it byte for byte through
//! BPF_PROG_TEST_RUN.

use speaker_common::{
    maps::{Reason, VipEntry, VipKey},
    wire::{ND_MAX_OPT_BYTES, icmpv6_checksum},
};

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
    /// A request for this VIP that found its entry: counted in VIP_STATS,
    /// as answered when the action is Tx.
    pub asked: Option<VipKey>,
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

fn u16_at(f: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([f[at], f[at + 1]])
}

fn u32_at(f: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([f[at], f[at + 1], f[at + 2], f[at + 3]])
}

fn bytes_at<const N: usize>(f: &[u8], at: usize) -> [u8; N] {
    let mut b = [0; N];
    b.copy_from_slice(&f[at..at + N]);
    b
}

/// What the responder does with `frame` arriving on `ifindex` at `now_ns`.
pub fn respond(frame: &[u8], ifindex: u32, now_ns: u64, vips: &impl Vips) -> Outcome {
    let pass = |reason| Outcome {
        action: Action::Pass,
        reason,
        frame: frame.to_vec(),
        conflict: None,
        asked: None,
    };
    if frame.len() < 14 {
        return pass(Reason::EthTruncated);
    }
    let mut ether_type = u16_at(frame, 12);
    let (mut l3, mut vlan) = (14, 0);
    if ether_type == 0x8100 {
        if frame.len() < 18 {
            return pass(Reason::EthTruncated);
        }
        vlan = u16_at(frame, 14) & 0x0fff;
        ether_type = u16_at(frame, 16);
        l3 = 18;
        if ether_type == 0x8100 || ether_type == 0x88a8 {
            return pass(Reason::PassVlan);
        }
    } else if ether_type == 0x88a8 {
        return pass(Reason::PassVlan);
    }
    let at = At {
        frame,
        l3,
        vlan,
        ifindex,
        now_ns,
    };
    let result = match ether_type {
        0x0806 => arp(&at, vips),
        0x86dd => ndp(&at, vips),
        _ => Err(Reason::PassOther),
    };
    match result {
        Ok(out) => out,
        Err(reason) => pass(reason),
    }
}

/// A frame with its network header located.
struct At<'a> {
    frame: &'a [u8],
    l3: usize,
    vlan: u16,
    ifindex: u32,
    now_ns: u64,
}

/// A passed frame's reason, or the outcome (answer or conflict).
type Step = Result<Outcome, Reason>;

fn conflict(at: &At, key: VipKey, mac: [u8; 6]) -> Step {
    Ok(Outcome {
        action: Action::Pass,
        reason: Reason::Conflict,
        frame: at.frame.to_vec(),
        conflict: Some((key, mac)),
        asked: None,
    })
}

/// The outcome of a request that found the entry of VIP `key`: counted for
/// that VIP whether answered or passed.
fn asked(at: &At, key: VipKey, step: Step) -> Step {
    let mut out = match step {
        Ok(out) => out,
        Err(reason) => Outcome {
            action: Action::Pass,
            reason,
            frame: at.frame.to_vec(),
            conflict: None,
            asked: None,
        },
    };
    out.asked = Some(key);
    Ok(out)
}

/// RFC 826 ARP for Ethernet/IPv4, as net/ipv4/arp.c answers it.
fn arp(at: &At, vips: &impl Vips) -> Step {
    let (f, o) = (at.frame, at.l3);
    if f.len() < o + 28 {
        return Err(Reason::ArpTruncated);
    }
    // arp_rcv / arp_process header checks: Linux drops what fails them.
    if !matches!(u16_at(f, o), 1 | 6) {
        return Err(Reason::ArpBadHardware);
    }
    if u16_at(f, o + 2) != 0x0800 {
        return Err(Reason::ArpBadProtocol);
    }
    if f[o + 4] != 6 || f[o + 5] != 4 {
        return Err(Reason::ArpBadLengths);
    }
    let op = u16_at(f, o + 6);
    if op != 1 && op != 2 {
        return Err(Reason::ArpBadOp);
    }
    let sha: [u8; 6] = bytes_at(f, o + 8);
    let spa_bytes: [u8; 4] = bytes_at(f, o + 14);
    let tpa_bytes: [u8; 4] = bytes_at(f, o + 24);
    let (spa, tpa) = (u32_at(f, o + 14), u32_at(f, o + 24));
    let multicast = |a: u32| a >> 28 == 0xe;
    let loopback = |a: u32| a >> 24 == 127;
    if spa != 0 && (multicast(spa) || spa == u32::MAX || loopback(spa) || spa >> 24 == 0) {
        return Err(Reason::PassBadSender);
    }
    // Never a reply to a group hardware address (it would flood the LAN).
    if sha[0] & 1 != 0 {
        return Err(Reason::PassBadSender);
    }
    if spa != 0 {
        let key = VipKey::ipv4(at.ifindex, at.vlan, spa_bytes);
        if let Some(entry) = vips.get(&key) {
            if entry.mac == sha {
                return Err(Reason::PassOwnSender);
            }
            return conflict(at, key, sha);
        }
    }
    if op != 1 {
        return Err(Reason::PassNotRequest);
    }
    if multicast(tpa) || tpa == u32::MAX || loopback(tpa) {
        return Err(Reason::PassBadTarget);
    }
    let key = VipKey::ipv4(at.ifindex, at.vlan, tpa_bytes);
    let entry = vips.get(&key).ok_or(Reason::PassNotVip)?;
    asked(
        at,
        key,
        (|| {
            let eth_dst: [u8; 6] = bytes_at(f, 0);
            if eth_dst != [0xff; 6] && eth_dst != entry.mac {
                return Err(Reason::PassEthDst);
            }
            if !entry.is_live(at.now_ns) {
                return Err(Reason::PassExpired);
            }
            // The reply arp_send(ARPOP_REPLY, ...) would build, written over the
            // request; a VLAN tag and bytes past the ARP body stay as they came.
            let mut out = f.to_vec();
            out[0..6].copy_from_slice(&sha);
            out[6..12].copy_from_slice(&entry.mac);
            out[o..o + 2].copy_from_slice(&1u16.to_be_bytes());
            out[o + 6..o + 8].copy_from_slice(&2u16.to_be_bytes());
            out[o + 8..o + 14].copy_from_slice(&entry.mac);
            out[o + 14..o + 18].copy_from_slice(&tpa_bytes);
            out[o + 18..o + 24].copy_from_slice(&sha);
            out[o + 24..o + 28].copy_from_slice(&spa_bytes);
            Ok(Outcome {
                action: Action::Tx,
                reason: if spa == 0 {
                    Reason::ArpProbeReply
                } else {
                    Reason::ArpReply
                },
                frame: out,
                conflict: None,
                asked: None,
            })
        })(),
    )
}

const ALL_NODES: [u8; 16] = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

fn solicited_node(a: &[u8; 16]) -> [u8; 16] {
    let mut g = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 0];
    g[13..].copy_from_slice(&a[13..]);
    g
}

/// RFC 4861 Neighbor Discovery, validated as RFC 4861 7.1.1 and Linux's
/// ipv6_rcv, icmpv6_rcv, ndisc_rcv and ndisc_recv_ns do.
fn ndp(at: &At, vips: &impl Vips) -> Step {
    let (f, o) = (at.frame, at.l3);
    let l4 = o + 40;
    if f.len() < l4 + 1 || f[o + 6] != 58 || !matches!(f[l4], 135 | 136) {
        return Err(Reason::PassNotNdp);
    }
    let icmp_len = usize::from(u16_at(f, o + 4));
    if f.len() < l4 + icmp_len {
        return Err(Reason::NdpTruncated);
    }
    if !(24..=24 + ND_MAX_OPT_BYTES).contains(&icmp_len) || (icmp_len - 24) % 8 != 0 {
        return Err(Reason::NdpBadLength);
    }
    let src: [u8; 16] = bytes_at(f, o + 8);
    let dst: [u8; 16] = bytes_at(f, o + 24);
    let target: [u8; 16] = bytes_at(f, l4 + 8);
    let msg = &f[l4..l4 + icmp_len];
    let mut loopback = [0; 16];
    loopback[15] = 1;
    if f[o] >> 4 != 6 || src[0] == 0xff || src == loopback {
        return Err(Reason::NdpBadHeader);
    }
    if icmpv6_checksum(&src, &dst, msg) != 0 {
        return Err(Reason::NdpBadChecksum);
    }
    if f[o + 7] != 255 {
        return Err(Reason::NdpBadHopLimit);
    }
    if msg[1] != 0 {
        return Err(Reason::NdpBadCode);
    }
    // ndisc_parse_options: lengths in 8-byte units, none zero, none past the
    // end; the first source link-layer address option counts and must be
    // 8 bytes long.
    let mut options_ok = true;
    let mut slla: Option<[u8; 6]> = None;
    let mut i = 24;
    while i < icmp_len {
        let len = usize::from(msg[i + 1]) * 8;
        if len == 0 || i + len > icmp_len {
            options_ok = false;
            break;
        }
        if msg[i] == 1 {
            if len != 8 {
                options_ok = false;
                break;
            }
            slla.get_or_insert(bytes_at(msg, i + 2));
        }
        i += len;
    }
    let eth_src: [u8; 6] = bytes_at(f, 6);
    let dad = src == [0; 16];
    if !dad {
        let key = VipKey::ipv6(at.ifindex, at.vlan, src);
        if let Some(entry) = vips.get(&key) {
            if entry.mac == eth_src {
                return Err(Reason::PassOwnSender);
            }
            return conflict(at, key, eth_src);
        }
    }
    if msg[0] != 135 {
        return Err(Reason::PassNotRequest);
    }
    if target[0] == 0xff {
        return Err(Reason::NdpBadTarget);
    }
    let group = solicited_node(&target);
    if dad && dst != group {
        return Err(Reason::NdpBadDad);
    }
    if !options_ok {
        return Err(Reason::NdpBadOptions);
    }
    if dad && slla.is_some() {
        return Err(Reason::NdpBadDad);
    }
    if !dad && dst[0] == 0xff && slla.is_none() {
        return Err(Reason::NdpNoLladdr);
    }
    if !dad && dst != target && dst != group && dst != ALL_NODES {
        return Err(Reason::NdpBadDestination);
    }
    let key = VipKey::ipv6(at.ifindex, at.vlan, target);
    let entry = vips.get(&key).ok_or(Reason::PassNotVip)?;
    asked(
        at,
        key,
        (|| {
            let eth_dst: [u8; 6] = bytes_at(f, 0);
            if eth_dst[0] & 1 == 0 && eth_dst != entry.mac {
                return Err(Reason::PassEthDst);
            }
            if !entry.is_live(at.now_ns) {
                return Err(Reason::PassExpired);
            }
            // Never a reply to a group link-layer address (DAD's all-nodes aside).
            if !dad && slla.unwrap_or(eth_src)[0] & 1 != 0 {
                return Err(Reason::PassBadSender);
            }

            // ndisc_send_na for a local address: from the target; to the solicitor,
            // Solicited and Override set; for DAD to all nodes, Override only.
            let (eth_to, ip_to, flags) = if dad {
                ([0x33, 0x33, 0, 0, 0, 1], ALL_NODES, 0x20)
            } else {
                (slla.unwrap_or(eth_src), src, 0x60)
            };
            let mut na = vec![136, 0, 0, 0, flags, 0, 0, 0];
            na.extend_from_slice(&target);
            na.extend_from_slice(&[2, 1]);
            na.extend_from_slice(&entry.mac);
            let csum = icmpv6_checksum(&target, &ip_to, &na);
            na[2..4].copy_from_slice(&csum.to_be_bytes());
            let mut out = f[..o].to_vec();
            out[0..6].copy_from_slice(&eth_to);
            out[6..12].copy_from_slice(&entry.mac);
            out.extend_from_slice(&[0x60, 0, 0, 0]);
            out.extend_from_slice(&(na.len() as u16).to_be_bytes());
            out.extend_from_slice(&[58, 255]);
            out.extend_from_slice(&target);
            out.extend_from_slice(&ip_to);
            out.extend_from_slice(&na);
            Ok(Outcome {
                action: Action::Tx,
                reason: if dad {
                    Reason::NdpDadReply
                } else {
                    Reason::NdpReply
                },
                frame: out,
                conflict: None,
                asked: None,
            })
        })(),
    )
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
