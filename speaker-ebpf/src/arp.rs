//! ARP (RFC 826) validation and the in-place reply, matching what Linux's
//! net/ipv4/arp.c (arp_rcv, arp_process) would answer for a local address.

use speaker_common::{
    maps::{Reason, VipEntry, VipKey, filter_slot_v4},
    wire::{
        ARP_HLEN_ETHER, ARP_PLEN_IPV4, ARPHRD_ETHER, ARPHRD_IEEE802, ARPOP_REPLY, ARPOP_REQUEST,
        ArpHdr, ETH_BROADCAST, ETH_P_IP, EthHdr, ipv4,
    },
};

use crate::{
    L2, Verdict, maps,
    packet::{be16, be32, is_group, mac_eq, ptr_at},
    sender,
};

#[inline(always)]
pub fn respond(ctx: &aya_ebpf::programs::XdpContext, l2: L2) -> Verdict {
    let (Some(eth), Some(arp)) = (ptr_at::<EthHdr>(ctx, 0), ptr_at::<ArpHdr>(ctx, l2.l3)) else {
        return Verdict::pass(Reason::ArpTruncated);
    };
    // SAFETY: ptr_at checked that both headers lie inside the packet; they do
    // not overlap and nothing else references them while the program runs.
    let (eth, arp) = unsafe { (&mut *eth, &mut *arp) };
    if let Err(reason) = validate(arp) {
        return Verdict::pass(reason);
    }
    let ifindex = ctx.ingress_ifindex() as u32;
    let spa = be32(&arp.spa);

    // A martian sender fails Linux's route lookup; 0.0.0.0 is a probe
    // (RFC 5227) and answered, the rest of 0/8 is martian.
    if spa != 0
        && (ipv4::is_multicast(spa)
            || ipv4::is_limited_broadcast(spa)
            || ipv4::is_loopback(spa)
            || ipv4::is_zeronet(spa))
    {
        return Verdict::pass(Reason::PassBadSender);
    }
    // The reply goes to the sender's hardware address: never to a group
    // (broadcast or multicast), which would flood the LAN with replies.
    if is_group(&arp.sha) {
        return Verdict::pass(Reason::PassBadSender);
    }
    // A frame from one of our VIPs, ours or a conflict, is not answered.
    if spa != 0 {
        let sender = sender::classify(
            filter_slot_v4(&arp.spa),
            || VipKey::ipv4(ifindex, l2.vlan_id, arp.spa),
            &arp.sha,
        );
        if let Some(reason) = sender.refusal() {
            return Verdict::pass(reason);
        }
    }
    if be16(&arp.op) != ARPOP_REQUEST {
        return Verdict::pass(Reason::PassNotRequest);
    }
    let tpa = be32(&arp.tpa);
    if ipv4::is_multicast(tpa) || ipv4::is_limited_broadcast(tpa) || ipv4::is_loopback(tpa) {
        return Verdict::pass(Reason::PassBadTarget);
    }
    if !maps::maybe_vip(filter_slot_v4(&arp.tpa)) {
        return Verdict::pass(Reason::PassNotVip);
    }
    let key = VipKey::ipv4(ifindex, l2.vlan_id, arp.tpa);
    let Some(entry) = maps::vip(&key) else {
        return Verdict::pass(Reason::PassNotVip);
    };
    let verdict = answer(eth, arp, &entry, spa);
    maps::count_request(&key, verdict.is_tx());
    verdict
}

/// A request for one of our VIPs: answered unless it is for another host
/// or the entry has expired.
#[inline(always)]
fn answer(eth: &mut EthHdr, arp: &mut ArpHdr, entry: &VipEntry, spa: u32) -> Verdict {
    // Linux drops PACKET_OTHERHOST frames before looking at them.
    if !mac_eq(&eth.dst, &ETH_BROADCAST) && !mac_eq(&eth.dst, &entry.mac) {
        return Verdict::pass(Reason::PassEthDst);
    }
    if !entry.is_live(maps::now_ns()) {
        return Verdict::pass(Reason::PassExpired);
    }
    rewrite_into_reply(eth, arp, &entry.mac);
    if spa == 0 {
        Verdict::tx(Reason::ArpProbeReply)
    } else {
        Verdict::tx(Reason::ArpReply)
    }
}

/// The checks of arp_rcv and the start of arp_process: the kernel drops
/// what fails them, so we pass it to the kernel and never answer.
#[inline(always)]
fn validate(arp: &ArpHdr) -> Result<(), Reason> {
    let htype = be16(&arp.htype);
    if htype != ARPHRD_ETHER && htype != ARPHRD_IEEE802 {
        return Err(Reason::ArpBadHardware);
    }
    if be16(&arp.ptype) != ETH_P_IP {
        return Err(Reason::ArpBadProtocol);
    }
    if arp.hlen != ARP_HLEN_ETHER || arp.plen != ARP_PLEN_IPV4 {
        return Err(Reason::ArpBadLengths);
    }
    let op = be16(&arp.op);
    if op != ARPOP_REQUEST && op != ARPOP_REPLY {
        return Err(Reason::ArpBadOp);
    }
    Ok(())
}

/// Turns a request into the reply Linux's arp_send would build: to the
/// requester's hardware address, from ours, sender = the VIP, target = the
/// requester (0.0.0.0 for a probe). An 802.1Q tag and trailing padding are
/// left as they came.
#[inline(always)]
fn rewrite_into_reply(eth: &mut EthHdr, arp: &mut ArpHdr, our_mac: &[u8; 6]) {
    let requester_mac = arp.sha;
    let requester_ip = arp.spa;
    let vip = arp.tpa;
    eth.dst = requester_mac;
    eth.src = *our_mac;
    // arp_create writes the device's type, so an IEEE 802 (6) request gets an
    // Ethernet (1) reply.
    arp.htype = ARPHRD_ETHER.to_be_bytes();
    arp.op = ARPOP_REPLY.to_be_bytes();
    arp.sha = *our_mac;
    arp.spa = vip;
    arp.tha = requester_mac;
    arp.tpa = requester_ip;
}
