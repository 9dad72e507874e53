//! The frames that tell the LAN a VIP is here.
//!
//! IPv4: gratuitous ARP in both forms Linux accepts as gratuitous
//! (net/ipv4/arp.c, arp_is_garp): a request with sender IP = target IP, and
//! a reply whose target MAC equals its sender MAC. Either overrides an
//! existing neighbour entry at once, even with arp_accept = 0 and within
//! locktime. A reply whose target MAC is broadcast would not count.
//!
//! IPv6: an unsolicited Neighbor Advertisement to all nodes (RFC 4861
//! 7.2.6) with Override set, which makes Linux replace the link-layer
//! address of an existing entry (ndisc_recv_na).

use std::net::{Ipv4Addr, Ipv6Addr};

use speaker_common::wire::{
    ARP_HLEN_ETHER, ARP_PLEN_IPV4, ARPHRD_ETHER, ARPOP_REPLY, ARPOP_REQUEST, ETH_BROADCAST,
    ETH_P_8021Q, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, IPPROTO_ICMPV6, NA_ICMP_LEN, ND_HOP_LIMIT,
    ND_NA_FLAG_OVERRIDE, ND_NEIGHBOR_ADVERT, ND_OPT_TARGET_LL_ADDR, icmpv6_checksum,
    ipv6::{ALL_NODES, ALL_NODES_MAC},
};

/// Ethernet minimum frame length without FCS (64 with an 802.1Q tag);
/// AF_PACKET does not pad.
pub const ETH_ZLEN: usize = 60;

/// Ethernet header (with an 802.1Q tag for `vlan_id` > 0) and padding to the
/// minimum length once `body` is added.
fn ethernet(dst: [u8; 6], src: [u8; 6], vlan_id: u16, ether_type: u16, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(ETH_ZLEN + 4 + body.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    let mut min = ETH_ZLEN;
    if vlan_id != 0 {
        f.extend_from_slice(&ETH_P_8021Q.to_be_bytes());
        f.extend_from_slice(&vlan_id.to_be_bytes());
        min += 4;
    }
    f.extend_from_slice(&ether_type.to_be_bytes());
    f.extend_from_slice(body);
    if f.len() < min {
        f.resize(min, 0);
    }
    f
}

fn arp(op: u16, mac: [u8; 6], vip: Ipv4Addr, tha: [u8; 6], vlan_id: u16) -> Vec<u8> {
    let ip = vip.octets();
    let mut body = Vec::with_capacity(28);
    body.extend_from_slice(&ARPHRD_ETHER.to_be_bytes());
    body.extend_from_slice(&ETH_P_IP.to_be_bytes());
    body.extend_from_slice(&[ARP_HLEN_ETHER, ARP_PLEN_IPV4]);
    body.extend_from_slice(&op.to_be_bytes());
    body.extend_from_slice(&mac);
    body.extend_from_slice(&ip);
    body.extend_from_slice(&tha);
    body.extend_from_slice(&ip);
    ethernet(ETH_BROADCAST, mac, vlan_id, ETH_P_ARP, &body)
}

/// Broadcast request "who has VIP? tell VIP" from `mac`; target MAC zero, as
/// Linux's own arp_send leaves it.
pub fn garp_request(mac: [u8; 6], vip: Ipv4Addr, vlan_id: u16) -> Vec<u8> {
    arp(ARPOP_REQUEST, mac, vip, [0; 6], vlan_id)
}

/// Broadcast reply "VIP is at mac", target MAC = sender MAC.
pub fn garp_reply(mac: [u8; 6], vip: Ipv4Addr, vlan_id: u16) -> Vec<u8> {
    arp(ARPOP_REPLY, mac, vip, mac, vlan_id)
}

/// Unsolicited Neighbor Advertisement for `vip` to all nodes: Override set,
/// Solicited and Router clear, target link-layer address option.
pub fn unsolicited_na(mac: [u8; 6], vip: Ipv6Addr, vlan_id: u16) -> Vec<u8> {
    let target = vip.octets();
    let mut msg = Vec::with_capacity(NA_ICMP_LEN);
    msg.extend_from_slice(&[ND_NEIGHBOR_ADVERT, 0, 0, 0, ND_NA_FLAG_OVERRIDE, 0, 0, 0]);
    msg.extend_from_slice(&target);
    msg.extend_from_slice(&[ND_OPT_TARGET_LL_ADDR, 1]);
    msg.extend_from_slice(&mac);
    let csum = icmpv6_checksum(&target, &ALL_NODES, &msg);
    msg[2..4].copy_from_slice(&csum.to_be_bytes());
    let mut body = Vec::with_capacity(40 + msg.len());
    body.extend_from_slice(&[0x60, 0, 0, 0]);
    body.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    body.extend_from_slice(&[IPPROTO_ICMPV6, ND_HOP_LIMIT]);
    body.extend_from_slice(&target);
    body.extend_from_slice(&ALL_NODES);
    body.extend_from_slice(&msg);
    ethernet(ALL_NODES_MAC, mac, vlan_id, ETH_P_IPV6, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 9];

    #[test]
    fn garp_request_form() {
        let f = garp_request(MAC, Ipv4Addr::new(198, 18, 0, 10), 0);
        assert_eq!(f.len(), 60);
        assert_eq!(&f[..6], &[0xff; 6]);
        assert_eq!(&f[6..12], &MAC);
        assert_eq!(&f[12..22], &[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
        assert_eq!(&f[22..28], &MAC);
        assert_eq!(&f[28..32], &[198, 18, 0, 10]);
        assert_eq!(&f[32..38], &[0; 6]);
        assert_eq!(&f[38..42], &[198, 18, 0, 10]);
        assert!(f[42..].iter().all(|b| *b == 0));
    }

    #[test]
    fn garp_reply_targets_itself() {
        let f = garp_reply(MAC, Ipv4Addr::new(198, 18, 0, 10), 0);
        assert_eq!(&f[20..22], &[0, 2]);
        assert_eq!(&f[32..38], &MAC);
        assert_eq!(&f[28..32], &f[38..42]);
    }

    #[test]
    fn tagged_frames_carry_the_tag_and_minimum_length() {
        let f = garp_request(MAC, Ipv4Addr::new(198, 18, 0, 10), 100);
        assert_eq!(f.len(), 64);
        assert_eq!(&f[12..18], &[0x81, 0x00, 0, 100, 0x08, 0x06]);
        let na = unsolicited_na(MAC, "2001:db8::10".parse().unwrap(), 100);
        assert_eq!(&na[12..18], &[0x81, 0x00, 0, 100, 0x86, 0xdd]);
    }

    #[test]
    fn unsolicited_na_fields_and_checksum() {
        let vip: Ipv6Addr = "2001:db8::10".parse().unwrap();
        let f = unsolicited_na(MAC, vip, 0);
        assert_eq!(f.len(), 14 + 40 + 32);
        assert_eq!(&f[..6], &[0x33, 0x33, 0, 0, 0, 1]);
        assert_eq!(&f[12..14], &[0x86, 0xdd]);
        assert_eq!(&f[14..22], &[0x60, 0, 0, 0, 0, 32, 58, 255]);
        assert_eq!(&f[22..38], &vip.octets());
        assert_eq!(&f[38..54], &ALL_NODES);
        assert_eq!(&f[54..56], &[136, 0]);
        assert_eq!(f[58], 0x20, "Override only");
        assert_eq!(&f[62..78], &vip.octets());
        assert_eq!(&f[78..80], &[2, 1]);
        assert_eq!(&f[80..86], &MAC);
        // Summing the message with its checksum in place gives zero.
        assert_eq!(icmpv6_checksum(&vip.octets(), &ALL_NODES, &f[54..]), 0);
    }
}
