//! IPv6 Neighbor Discovery (RFC 4861): a Neighbor Solicitation for a VIP is
//! validated as RFC 4861 7.1.1 and Linux's net/ipv6/ndisc.c require, and
//! answered with a Neighbor Advertisement built in place.

use aya_ebpf::{helpers::bpf_xdp_adjust_tail, programs::XdpContext};
use speaker_common::{
    maps::{Reason, VipKey, filter_slot},
    wire::{
        ETH_HLEN, EthHdr, IPPROTO_ICMPV6, IPV6_HLEN, Ipv6Hdr, NA_ICMP_LEN, NA_PACKET_LEN,
        ND_HOP_LIMIT, ND_MAX_OPT_BYTES, ND_MSG_LEN, ND_NA_FLAG_OVERRIDE, ND_NA_FLAG_SOLICITED,
        ND_NEIGHBOR_ADVERT, ND_NEIGHBOR_SOLICIT, ND_OPT_SOURCE_LL_ADDR, ND_OPT_TARGET_LL_ADDR,
        ND_OPT_UNIT, NaPacket, NdMsg,
        ipv6::{self, ALL_NODES, ALL_NODES_MAC, LOOPBACK, UNSPECIFIED},
    },
};

use crate::{
    L2, Verdict,
    checksum::{self, sum16},
    maps,
    packet::{addr_eq, be16, mac_eq, ptr_at},
    sender,
};

const MAX_OPT_CHUNKS: usize = ND_MAX_OPT_BYTES / ND_OPT_UNIT;

#[inline(always)]
pub fn respond(ctx: &XdpContext, l2: L2) -> Verdict {
    let l4 = l2.l3 + IPV6_HLEN;
    let (Some(ip), Some(icmp_type)) = (ptr_at::<Ipv6Hdr>(ctx, l2.l3), ptr_at::<u8>(ctx, l4)) else {
        return Verdict::pass(Reason::PassNotNdp);
    };
    // SAFETY: bounds checked by ptr_at; read only before any resize.
    let (ip, icmp_type) = unsafe { (&*ip, *icmp_type) };
    if ip.next_header != IPPROTO_ICMPV6
        || (icmp_type != ND_NEIGHBOR_SOLICIT && icmp_type != ND_NEIGHBOR_ADVERT)
    {
        return Verdict::pass(Reason::PassNotNdp);
    }
    let icmp_len = usize::from(be16(&ip.payload_len));
    if l4 + icmp_len > ctx.data_end() - ctx.data() {
        return Verdict::pass(Reason::NdpTruncated);
    }
    // Options come in whole 8-byte units (Linux's option parser refuses any
    // other length), and the responder reads only so many.
    if icmp_len < ND_MSG_LEN
        || icmp_len > ND_MSG_LEN + ND_MAX_OPT_BYTES
        || (icmp_len - ND_MSG_LEN) % ND_OPT_UNIT != 0
    {
        return Verdict::pass(Reason::NdpBadLength);
    }
    let Some(nd) = ptr_at::<NdMsg>(ctx, l4) else {
        return Verdict::pass(Reason::NdpTruncated);
    };
    // SAFETY: bounds checked by ptr_at.
    let nd = unsafe { &*nd };
    // ipv6_rcv's checks.
    if ip.vtc_flow[0] >> 4 != 6 || ipv6::is_multicast(&ip.src) || addr_eq(&ip.src, &LOOPBACK) {
        return Verdict::pass(Reason::NdpBadHeader);
    }

    // One pass over the options: the checksum, and the option walk (every
    // option is a multiple of 8 bytes, so each starts on a chunk).
    let opt_len = icmp_len - ND_MSG_LEN;
    let mut sum = sum16(&ip.src) + sum16(&ip.dst) + icmp_len as u32 + u32::from(IPPROTO_ICMPV6);
    sum += (u32::from(nd.icmp_type) << 8 | u32::from(nd.code)) + u32::from(be16(&nd.checksum));
    sum += sum16(&nd.flags) + sum16(&nd.target);
    let mut options_ok = true;
    let mut next_opt = 0;
    let mut slla: Option<[u8; 6]> = None;
    for i in 0..MAX_OPT_CHUNKS {
        let at = i * ND_OPT_UNIT;
        if at >= opt_len {
            break;
        }
        let Some(chunk) = ptr_at::<[u8; 8]>(ctx, l4 + ND_MSG_LEN + at) else {
            return Verdict::pass(Reason::NdpTruncated);
        };
        // SAFETY: bounds checked by ptr_at.
        let c = unsafe { *chunk };
        sum += sum16(&c);
        if options_ok && at == next_opt {
            let len = usize::from(c[1]) * ND_OPT_UNIT;
            if len == 0 || at + len > opt_len {
                options_ok = false;
            } else if c[0] == ND_OPT_SOURCE_LL_ADDR {
                // Linux takes the first, and drops a wrong-sized one.
                if len != ND_OPT_UNIT {
                    options_ok = false;
                } else if slla.is_none() {
                    slla = Some([c[2], c[3], c[4], c[5], c[6], c[7]]);
                }
            }
            next_opt = at + len;
        }
    }
    if !checksum::verifies(sum) {
        return Verdict::pass(Reason::NdpBadChecksum);
    }
    // ndisc_rcv's checks.
    if ip.hop_limit != ND_HOP_LIMIT {
        return Verdict::pass(Reason::NdpBadHopLimit);
    }
    if nd.code != 0 {
        return Verdict::pass(Reason::NdpBadCode);
    }

    let ifindex = ctx.ingress_ifindex() as u32;
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return Verdict::pass(Reason::EthTruncated);
    };
    // SAFETY: bounds checked by ptr_at.
    let eth = unsafe { &*eth };
    let dad = addr_eq(&ip.src, &UNSPECIFIED);
    // Sent from one of our VIPs: ours, or a conflict (as for ARP).
    if !dad {
        let sender = sender::classify(
            filter_slot(&ip.src),
            || VipKey::ipv6(ifindex, l2.vlan_id, ip.src),
            &eth.src,
        );
        if let Some(reason) = sender.refusal() {
            return Verdict::pass(reason);
        }
    }
    if icmp_type != ND_NEIGHBOR_SOLICIT {
        return Verdict::pass(Reason::PassNotRequest);
    }
    // ndisc_recv_ns's checks, in its order.
    if ipv6::is_multicast(&nd.target) {
        return Verdict::pass(Reason::NdpBadTarget);
    }
    let solicited_node = ipv6::solicited_node(&nd.target);
    if dad && !addr_eq(&ip.dst, &solicited_node) {
        return Verdict::pass(Reason::NdpBadDad);
    }
    if !options_ok {
        return Verdict::pass(Reason::NdpBadOptions);
    }
    if dad && slla.is_some() {
        return Verdict::pass(Reason::NdpBadDad);
    }
    if !dad {
        if ipv6::is_multicast(&ip.dst) && slla.is_none() {
            return Verdict::pass(Reason::NdpNoLladdr);
        }
        if !addr_eq(&ip.dst, &nd.target)
            && !addr_eq(&ip.dst, &solicited_node)
            && !addr_eq(&ip.dst, &ALL_NODES)
        {
            return Verdict::pass(Reason::NdpBadDestination);
        }
    }
    if !maps::maybe_vip(filter_slot(&nd.target)) {
        return Verdict::pass(Reason::PassNotVip);
    }
    let Some(entry) = maps::vip(&VipKey::ipv6(ifindex, l2.vlan_id, nd.target)) else {
        return Verdict::pass(Reason::PassNotVip);
    };
    // Linux ignores unicast frames for other hosts; multicast is accepted.
    if eth.dst[0] & 1 == 0 && !mac_eq(&eth.dst, &entry.mac) {
        return Verdict::pass(Reason::PassEthDst);
    }
    if !entry.is_live(maps::now_ns()) {
        return Verdict::pass(Reason::PassExpired);
    }

    // The advertisement ndisc_send_na would send for a local address: from
    // the target, to the solicitor (to all nodes for DAD), Override set,
    // Solicited set unless DAD, with our link-layer address.
    let answer = if dad {
        Answer {
            eth_dst: ALL_NODES_MAC,
            ip_dst: ALL_NODES,
            flags: ND_NA_FLAG_OVERRIDE,
        }
    } else {
        Answer {
            eth_dst: match slla {
                Some(mac) => mac,
                None => eth.src,
            },
            ip_dst: ip.src,
            flags: ND_NA_FLAG_SOLICITED | ND_NA_FLAG_OVERRIDE,
        }
    };
    let target = nd.target;
    let frame_len = (ctx.data_end() - ctx.data()) as i32;
    let delta = (l2.l3 + NA_PACKET_LEN) as i32 - frame_len;
    // SAFETY: plain helper call; every packet pointer is fetched anew below.
    if delta != 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } != 0 {
        return Verdict::pass(Reason::NdpNoTailroom);
    }
    write_advert(ctx, l2, &answer, &target, &entry.mac);
    if dad {
        Verdict::tx(Reason::NdpDadReply)
    } else {
        Verdict::tx(Reason::NdpReply)
    }
}

struct Answer {
    eth_dst: [u8; 6],
    ip_dst: [u8; 16],
    flags: u8,
}

#[inline(always)]
fn write_advert(ctx: &XdpContext, l2: L2, a: &Answer, target: &[u8; 16], mac: &[u8; 6]) {
    let (Some(eth), Some(na)) = (ptr_at::<EthHdr>(ctx, 0), ptr_at::<NaPacket>(ctx, l2.l3)) else {
        return;
    };
    // SAFETY: bounds checked by ptr_at after the resize; no overlap.
    let (eth, na) = unsafe { (&mut *eth, &mut *na) };
    eth.dst = a.eth_dst;
    eth.src = *mac;
    na.ip.vtc_flow = [0x60, 0, 0, 0];
    na.ip.payload_len = (NA_ICMP_LEN as u16).to_be_bytes();
    na.ip.next_header = IPPROTO_ICMPV6;
    na.ip.hop_limit = ND_HOP_LIMIT;
    na.ip.src = *target;
    na.ip.dst = a.ip_dst;
    na.nd.icmp_type = ND_NEIGHBOR_ADVERT;
    na.nd.code = 0;
    na.nd.flags = [a.flags, 0, 0, 0];
    na.nd.target = *target;
    na.opt_type = ND_OPT_TARGET_LL_ADDR;
    na.opt_len = 1;
    na.opt_mac = *mac;
    // Computed whole: the message is fixed-size, and the pseudo-header's
    // addresses changed (a solicitation to a multicast group is answered
    // from the target).
    let sum = sum16(target) * 2
        + sum16(&a.ip_dst)
        + NA_ICMP_LEN as u32
        + u32::from(IPPROTO_ICMPV6)
        + (u32::from(ND_NEIGHBOR_ADVERT) << 8)
        + (u32::from(a.flags) << 8)
        + (u32::from(ND_OPT_TARGET_LL_ADDR) << 8 | 1)
        + sum16(mac);
    na.nd.checksum = checksum::field(sum);
}

const _: () = assert!(
    ETH_HLEN + NA_PACKET_LEN >= 60,
    "answers need no Ethernet padding"
);
