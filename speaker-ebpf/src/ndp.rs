//! IPv6 Neighbor Discovery (RFC 4861): a Neighbor Solicitation for a VIP is
//! validated as RFC 4861 7.1.1 and Linux's net/ipv6/ndisc.c require, and
//! answered with a Neighbor Advertisement built in place (7.2.4).
//!
//! The steps, in order: [`headers`] (IPv6 header, lengths), [`scan_options`]
//! (checksum share, option validity, source link-layer address), the
//! checksum, [`nd_rules`], the sender, [`ns_rules`], the VIP, then
//! [`resize`] and [`write_advert`].

use aya_ebpf::{helpers::bpf_xdp_adjust_tail, programs::XdpContext};
use speaker_common::{
    maps::{Reason, VipEntry, VipKey, filter_slot},
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
    packet::{addr_eq, be16, is_group, mac_eq, ptr_at},
    sender,
};

const MAX_OPT_CHUNKS: usize = ND_MAX_OPT_BYTES / ND_OPT_UNIT;

#[inline(always)]
pub fn respond(ctx: &XdpContext, l2: L2) -> Verdict {
    match solicitation(ctx, l2) {
        Ok(reason) => Verdict::tx(reason),
        Err(reason) => Verdict::pass(reason),
    }
}

/// An ND message whose IPv6 header passed [`headers`]. The references point
/// into the frame: read them only before it is resized.
struct Msg<'a> {
    ip: &'a Ipv6Hdr,
    nd: &'a NdMsg,
    /// Offset of the ICMPv6 message in the frame.
    l4: usize,
    /// ICMPv6 length, from the IPv6 payload length.
    icmp_len: usize,
}

/// What the option scan found (ndisc_parse_options).
struct Options {
    /// The options' share of the ICMPv6 checksum.
    sum: u32,
    /// No option of length 0, none past the end, no source link-layer
    /// address option of other than 8 bytes.
    valid: bool,
    /// The first source link-layer address option's address.
    slla: Option<[u8; 6]>,
}

/// The advertisement to write, copied out of the solicitation before the
/// frame is resized.
struct Answer {
    eth_dst: [u8; 6],
    ip_dst: [u8; 16],
    flags: u8,
    target: [u8; 16],
    mac: [u8; 6],
}

/// RFC 4861 7.1.1 for a solicitation, with the checks of Linux's ipv6_rcv,
/// icmpv6_rcv, ndisc_rcv and ndisc_recv_ns in their order (the order picks
/// the counter), then the 7.2.4 answer. Ok: the frame is now the
/// advertisement; Err: why it is passed.
#[inline(always)]
fn solicitation(ctx: &XdpContext, l2: L2) -> Result<Reason, Reason> {
    let msg = headers(ctx, l2)?;
    let opts = scan_options(ctx, &msg)?;
    if !checksum::verifies(msg.sum() + opts.sum) {
        return Err(Reason::NdpBadChecksum);
    }
    nd_rules(&msg)?;
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return Err(Reason::EthTruncated);
    };
    // SAFETY: bounds checked by ptr_at; read only before the resize.
    let eth = unsafe { &*eth };
    let ifindex = ctx.ingress_ifindex() as u32;
    let (ip, nd) = (msg.ip, msg.nd);
    let dad = addr_eq(&ip.src, &UNSPECIFIED);
    // Sent from one of our VIPs: ours, or a conflict (as for ARP). This is
    // how a peer's unsolicited advertisement is seen.
    if !dad {
        let sender = sender::classify(
            filter_slot(&ip.src),
            || VipKey::ipv6(ifindex, l2.vlan_id, ip.src),
            &eth.src,
        );
        if let Some(reason) = sender.refusal() {
            return Err(reason);
        }
    }
    if nd.icmp_type != ND_NEIGHBOR_SOLICIT {
        return Err(Reason::PassNotRequest);
    }
    ns_rules(&msg, &opts, dad)?;
    if !maps::maybe_vip(filter_slot(&nd.target)) {
        return Err(Reason::PassNotVip);
    }
    let key = VipKey::ipv6(ifindex, l2.vlan_id, nd.target);
    let Some(entry) = maps::vip(&key) else {
        return Err(Reason::PassNotVip);
    };
    let result = advertise(ctx, l2, &msg, &opts, dad, eth, &entry);
    maps::count_request(&key, result.is_ok());
    result
}

/// A solicitation for one of our VIPs: answered in place unless it is for
/// another host, the entry has expired, or the answer would go to a group.
#[inline(always)]
fn advertise(
    ctx: &XdpContext,
    l2: L2,
    msg: &Msg,
    opts: &Options,
    dad: bool,
    eth: &EthHdr,
    entry: &VipEntry,
) -> Result<Reason, Reason> {
    // Linux ignores unicast frames for other hosts; multicast is accepted.
    if !is_group(&eth.dst) && !mac_eq(&eth.dst, &entry.mac) {
        return Err(Reason::PassEthDst);
    }
    if !entry.is_live(maps::now_ns()) {
        return Err(Reason::PassExpired);
    }
    let answer = Answer::new(msg, opts, dad, &eth.src, &entry.mac);
    // To the solicitor's link-layer address: never to a group (DAD's
    // all-nodes reply aside), which would flood the LAN with replies.
    if !dad && is_group(&answer.eth_dst) {
        return Err(Reason::PassBadSender);
    }
    // `eth` points into the frame: not used past the resize.
    resize(ctx, l2)?;
    write_advert(ctx, l2, &answer);
    Ok(if dad {
        Reason::NdpDadReply
    } else {
        Reason::NdpReply
    })
}

/// The IPv6 header and the message's length: ICMPv6 NS or NA directly
/// after the header, all of it in the frame, 24 bytes plus whole 8-byte
/// options (Linux's option parser refuses any other length) and no more
/// options than the responder reads; then ipv6_rcv's checks.
#[inline(always)]
fn headers(ctx: &XdpContext, l2: L2) -> Result<Msg<'_>, Reason> {
    let l4 = l2.l3 + IPV6_HLEN;
    let (Some(ip), Some(icmp_type)) = (ptr_at::<Ipv6Hdr>(ctx, l2.l3), ptr_at::<u8>(ctx, l4)) else {
        return Err(Reason::PassNotNdp);
    };
    // SAFETY: bounds checked by ptr_at.
    let (ip, icmp_type) = unsafe { (&*ip, *icmp_type) };
    if ip.next_header != IPPROTO_ICMPV6
        || (icmp_type != ND_NEIGHBOR_SOLICIT && icmp_type != ND_NEIGHBOR_ADVERT)
    {
        return Err(Reason::PassNotNdp);
    }
    let icmp_len = usize::from(be16(&ip.payload_len));
    if l4 + icmp_len > ctx.data_end() - ctx.data() {
        return Err(Reason::NdpTruncated);
    }
    if !(ND_MSG_LEN..=ND_MSG_LEN + ND_MAX_OPT_BYTES).contains(&icmp_len)
        || !(icmp_len - ND_MSG_LEN).is_multiple_of(ND_OPT_UNIT)
    {
        return Err(Reason::NdpBadLength);
    }
    let Some(nd) = ptr_at::<NdMsg>(ctx, l4) else {
        return Err(Reason::NdpTruncated);
    };
    // SAFETY: bounds checked by ptr_at.
    let nd = unsafe { &*nd };
    if ip.vtc_flow[0] >> 4 != 6 || ipv6::is_multicast(&ip.src) || addr_eq(&ip.src, &LOOPBACK) {
        return Err(Reason::NdpBadHeader);
    }
    Ok(Msg {
        ip,
        nd,
        l4,
        icmp_len,
    })
}

impl Msg<'_> {
    /// The ICMPv6 checksum's sum over the pseudo-header and the fixed part
    /// of the message, checksum field included.
    #[inline(always)]
    fn sum(&self) -> u32 {
        let (ip, nd) = (self.ip, self.nd);
        sum16(&ip.src)
            + sum16(&ip.dst)
            + self.icmp_len as u32
            + u32::from(IPPROTO_ICMPV6)
            + (u32::from(nd.icmp_type) << 8 | u32::from(nd.code))
            + u32::from(be16(&nd.checksum))
            + sum16(&nd.flags)
            + sum16(&nd.target)
    }
}

/// One pass over the options in 8-byte chunks: every chunk goes into the
/// checksum, and the option walk (each option starts on a chunk) notes
/// whether the options are well formed and the source link-layer address.
#[inline(always)]
fn scan_options(ctx: &XdpContext, msg: &Msg) -> Result<Options, Reason> {
    let opt_len = msg.icmp_len - ND_MSG_LEN;
    let mut found = Options {
        sum: 0,
        valid: true,
        slla: None,
    };
    let mut next_opt = 0;
    for i in 0..MAX_OPT_CHUNKS {
        let at = i * ND_OPT_UNIT;
        if at >= opt_len {
            break;
        }
        let Some(chunk) = ptr_at::<[u8; 8]>(ctx, msg.l4 + ND_MSG_LEN + at) else {
            return Err(Reason::NdpTruncated);
        };
        // SAFETY: bounds checked by ptr_at.
        let c = unsafe { *chunk };
        found.sum += sum16(&c);
        if found.valid && at == next_opt {
            let len = usize::from(c[1]) * ND_OPT_UNIT;
            if len == 0 || at + len > opt_len {
                found.valid = false;
            } else if c[0] == ND_OPT_SOURCE_LL_ADDR {
                // Linux takes the first, and drops a wrong-sized one.
                if len != ND_OPT_UNIT {
                    found.valid = false;
                } else if found.slla.is_none() {
                    found.slla = Some([c[2], c[3], c[4], c[5], c[6], c[7]]);
                }
            }
            next_opt = at + len;
        }
    }
    Ok(found)
}

/// ndisc_rcv's checks, for every ND message: it crossed no router, and
/// its code is 0.
#[inline(always)]
fn nd_rules(msg: &Msg) -> Result<(), Reason> {
    if msg.ip.hop_limit != ND_HOP_LIMIT {
        return Err(Reason::NdpBadHopLimit);
    }
    if msg.nd.code != 0 {
        return Err(Reason::NdpBadCode);
    }
    Ok(())
}

/// ndisc_recv_ns's checks of a solicitation, in its order. `dad`: from the
/// unspecified address, a duplicate address detection probe.
#[inline(always)]
fn ns_rules(msg: &Msg, opts: &Options, dad: bool) -> Result<(), Reason> {
    let (ip, nd) = (msg.ip, msg.nd);
    if ipv6::is_multicast(&nd.target) {
        return Err(Reason::NdpBadTarget);
    }
    let solicited_node = ipv6::solicited_node(&nd.target);
    if dad && !addr_eq(&ip.dst, &solicited_node) {
        return Err(Reason::NdpBadDad);
    }
    if !opts.valid {
        return Err(Reason::NdpBadOptions);
    }
    if dad && opts.slla.is_some() {
        return Err(Reason::NdpBadDad);
    }
    if !dad {
        if ipv6::is_multicast(&ip.dst) && opts.slla.is_none() {
            return Err(Reason::NdpNoLladdr);
        }
        if !addr_eq(&ip.dst, &nd.target)
            && !addr_eq(&ip.dst, &solicited_node)
            && !addr_eq(&ip.dst, &ALL_NODES)
        {
            return Err(Reason::NdpBadDestination);
        }
    }
    Ok(())
}

impl Answer {
    /// The advertisement ndisc_send_na would send for a local address: from
    /// the target, to the solicitor (to all nodes for DAD), Override set,
    /// Solicited set unless DAD, with our link-layer address.
    #[inline(always)]
    fn new(msg: &Msg, opts: &Options, dad: bool, eth_src: &[u8; 6], mac: &[u8; 6]) -> Self {
        let (eth_dst, ip_dst, flags) = if dad {
            (ALL_NODES_MAC, ALL_NODES, ND_NA_FLAG_OVERRIDE)
        } else {
            (
                match opts.slla {
                    Some(mac) => mac,
                    None => *eth_src,
                },
                msg.ip.src,
                ND_NA_FLAG_SOLICITED | ND_NA_FLAG_OVERRIDE,
            )
        };
        Self {
            eth_dst,
            ip_dst,
            flags,
            target: msg.nd.target,
            mac: *mac,
        }
    }
}

/// Grows or shrinks the frame to hold exactly the advertisement; every
/// packet pointer taken before is invalid afterwards.
#[inline(always)]
fn resize(ctx: &XdpContext, l2: L2) -> Result<(), Reason> {
    let frame_len = (ctx.data_end() - ctx.data()) as i32;
    let delta = (l2.l3 + NA_PACKET_LEN) as i32 - frame_len;
    // SAFETY: plain helper call; the caller fetches packet pointers anew.
    if delta != 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } != 0 {
        return Err(Reason::NdpNoTailroom);
    }
    Ok(())
}

#[inline(always)]
fn write_advert(ctx: &XdpContext, l2: L2, a: &Answer) {
    let (Some(eth), Some(na)) = (ptr_at::<EthHdr>(ctx, 0), ptr_at::<NaPacket>(ctx, l2.l3)) else {
        return;
    };
    // SAFETY: bounds checked by ptr_at after the resize; no overlap.
    let (eth, na) = unsafe { (&mut *eth, &mut *na) };
    eth.dst = a.eth_dst;
    eth.src = a.mac;
    na.ip.vtc_flow = [0x60, 0, 0, 0];
    na.ip.payload_len = (NA_ICMP_LEN as u16).to_be_bytes();
    na.ip.next_header = IPPROTO_ICMPV6;
    na.ip.hop_limit = ND_HOP_LIMIT;
    na.ip.src = a.target;
    na.ip.dst = a.ip_dst;
    na.nd.icmp_type = ND_NEIGHBOR_ADVERT;
    na.nd.code = 0;
    na.nd.flags = [a.flags, 0, 0, 0];
    na.nd.target = a.target;
    na.opt_type = ND_OPT_TARGET_LL_ADDR;
    na.opt_len = 1;
    na.opt_mac = a.mac;
    // Computed whole: the message is fixed-size, and the pseudo-header's
    // addresses changed (a solicitation to a multicast group is answered
    // from the target).
    let sum = sum16(&a.target) * 2
        + sum16(&a.ip_dst)
        + NA_ICMP_LEN as u32
        + u32::from(IPPROTO_ICMPV6)
        + (u32::from(ND_NEIGHBOR_ADVERT) << 8)
        + (u32::from(a.flags) << 8)
        + (u32::from(ND_OPT_TARGET_LL_ADDR) << 8 | 1)
        + sum16(&a.mac);
    na.nd.checksum = checksum::field(sum);
}

const _: () = assert!(
    ETH_HLEN + NA_PACKET_LEN >= 60,
    "answers need no Ethernet padding"
);
