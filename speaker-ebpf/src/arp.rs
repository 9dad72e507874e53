//! ARP (RFC 826) validation and the in-place reply, matching what Linux's
//! net/ipv4/arp.c (arp_rcv, arp_process) would answer for a local address.

use speaker_common::{
    maps::{Reason, VipKey, filter_slot_v4},
    wire::{
        ARP_HLEN_ETHER, ARP_PLEN_IPV4, ARPHRD_ETHER, ARPHRD_IEEE802, ARPOP_REPLY, ARPOP_REQUEST,
        ArpFrame, ETH_BROADCAST, ETH_P_IP, ipv4,
    },
};

use crate::{
    Verdict, maps,
    packet::{be16, be32, mac_eq, ptr_at},
};

#[inline(always)]
pub fn respond(ctx: &aya_ebpf::programs::XdpContext) -> Verdict {
    let Some(frame) = ptr_at::<ArpFrame>(ctx, 0) else {
        return Verdict::pass(Reason::ArpTruncated);
    };
    // SAFETY: ptr_at checked that the whole ARP frame lies inside the packet;
    // nothing else references it while the program runs.
    let frame = unsafe { &mut *frame };
    if let Err(reason) = validate(frame) {
        return Verdict::pass(reason);
    }
    let ifindex = ctx.ingress_ifindex() as u32;
    let arp = &frame.arp;
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
    // A frame whose sender is one of our VIPs: with our MAC it is our own
    // (Linux rejects a local source address); with another MAC it is a
    // conflict the agent must hear about. Either way it is not answered.
    if spa != 0 && maps::maybe_vip(filter_slot_v4(&arp.spa)) {
        let key = VipKey::ipv4(ifindex, 0, arp.spa);
        if let Some(entry) = maps::vip(&key) {
            if mac_eq(&entry.mac, &arp.sha) {
                return Verdict::pass(Reason::PassOwnSender);
            }
            maps::record_conflict(&key, arp.sha);
            return Verdict::pass(Reason::Conflict);
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
    let Some(entry) = maps::vip(&VipKey::ipv4(ifindex, 0, arp.tpa)) else {
        return Verdict::pass(Reason::PassNotVip);
    };
    // Linux drops PACKET_OTHERHOST frames before looking at them.
    if !mac_eq(&frame.eth.dst, &ETH_BROADCAST) && !mac_eq(&frame.eth.dst, &entry.mac) {
        return Verdict::pass(Reason::PassEthDst);
    }
    if entry.expires_ns != 0 && maps::now_ns() >= entry.expires_ns {
        return Verdict::pass(Reason::PassExpired);
    }
    rewrite_into_reply(frame, &entry.mac);
    if spa == 0 {
        Verdict::tx(Reason::ArpProbeReply)
    } else {
        Verdict::tx(Reason::ArpReply)
    }
}

/// The checks of arp_rcv and the start of arp_process: the kernel drops
/// what fails them, so we pass it to the kernel and never answer.
#[inline(always)]
fn validate(frame: &ArpFrame) -> Result<(), Reason> {
    let arp = &frame.arp;
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
/// requester (0.0.0.0 for a probe). Trailing padding is left as it came.
#[inline(always)]
fn rewrite_into_reply(frame: &mut ArpFrame, our_mac: &[u8; 6]) {
    let requester_mac = frame.arp.sha;
    let requester_ip = frame.arp.spa;
    let vip = frame.arp.tpa;
    frame.eth.dst = requester_mac;
    frame.eth.src = *our_mac;
    let arp = &mut frame.arp;
    // arp_create writes the device's type, so an IEEE 802 (6) request gets an
    // Ethernet (1) reply.
    arp.htype = ARPHRD_ETHER.to_be_bytes();
    arp.op = ARPOP_REPLY.to_be_bytes();
    arp.sha = *our_mac;
    arp.spa = vip;
    arp.tha = requester_mac;
    arp.tpa = requester_ip;
}
