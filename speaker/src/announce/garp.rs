//! Gratuitous ARP frames, in both forms Linux accepts as gratuitous
//! (net/ipv4/arp.c, arp_is_garp): a request with sender IP = target IP, and
//! a reply whose target MAC equals its sender MAC. Either one overrides an
//! existing neighbour entry at once, even with arp_accept = 0 and within
//! locktime. A reply whose target MAC is broadcast would not count.

use std::net::Ipv4Addr;

use speaker_common::wire::{
    ARP_HLEN_ETHER, ARP_PLEN_IPV4, ARPHRD_ETHER, ARPOP_REPLY, ARPOP_REQUEST, ETH_BROADCAST,
    ETH_P_ARP, ETH_P_IP,
};

/// Ethernet minimum frame length without FCS; AF_PACKET does not pad.
pub const ETH_ZLEN: usize = 60;

fn frame(op: u16, mac: [u8; 6], vip: Ipv4Addr, tha: [u8; 6]) -> [u8; ETH_ZLEN] {
    let mut f = [0u8; ETH_ZLEN];
    let ip = vip.octets();
    f[0..6].copy_from_slice(&ETH_BROADCAST);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    f[14..16].copy_from_slice(&ARPHRD_ETHER.to_be_bytes());
    f[16..18].copy_from_slice(&ETH_P_IP.to_be_bytes());
    f[18] = ARP_HLEN_ETHER;
    f[19] = ARP_PLEN_IPV4;
    f[20..22].copy_from_slice(&op.to_be_bytes());
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&ip);
    f[32..38].copy_from_slice(&tha);
    f[38..42].copy_from_slice(&ip);
    f
}

/// Broadcast request "who has VIP? tell VIP" from `mac`; target MAC zero, as
/// Linux's own arp_send leaves it.
pub fn garp_request(mac: [u8; 6], vip: Ipv4Addr) -> [u8; ETH_ZLEN] {
    frame(ARPOP_REQUEST, mac, vip, [0; 6])
}

/// Broadcast reply "VIP is at mac", target MAC = sender MAC.
pub fn garp_reply(mac: [u8; 6], vip: Ipv4Addr) -> [u8; ETH_ZLEN] {
    frame(ARPOP_REPLY, mac, vip, mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 9];

    #[test]
    fn request_form() {
        let f = garp_request(MAC, Ipv4Addr::new(198, 18, 0, 10));
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
    fn reply_form_targets_itself() {
        let f = garp_reply(MAC, Ipv4Addr::new(198, 18, 0, 10));
        assert_eq!(&f[20..22], &[0, 2]);
        assert_eq!(&f[32..38], &MAC);
        assert_eq!(&f[28..32], &f[38..42]);
    }
}
