//! On-the-wire layouts and the protocol constants they carry, named after the
//! RFC fields they encode. Multi-byte fields are byte arrays in network
//! order, so the structs have alignment 1 and can sit at any packet offset.

/// IEEE 802.3 Ethernet header.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub ether_type: [u8; 2],
}

pub const ETH_ALEN: usize = 6;
pub const ETH_HLEN: usize = core::mem::size_of::<EthHdr>();
pub const ETH_BROADCAST: [u8; ETH_ALEN] = [0xff; ETH_ALEN];

/// EtherType values (IEEE 802, IANA).
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
pub const ETH_P_IPV6: u16 = 0x86dd;

/// RFC 826 ARP packet for Ethernet hardware and IPv4 protocol addresses
/// (hlen 6, plen 4): the only shape Linux answers on an Ethernet device.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpHdr {
    /// ar$hrd: hardware address space.
    pub htype: [u8; 2],
    /// ar$pro: protocol address space (an EtherType).
    pub ptype: [u8; 2],
    /// ar$hln: hardware address length.
    pub hlen: u8,
    /// ar$pln: protocol address length.
    pub plen: u8,
    /// ar$op: opcode.
    pub op: [u8; 2],
    /// ar$sha: sender hardware address.
    pub sha: [u8; 6],
    /// ar$spa: sender protocol address.
    pub spa: [u8; 4],
    /// ar$tha: target hardware address.
    pub tha: [u8; 6],
    /// ar$tpa: target protocol address.
    pub tpa: [u8; 4],
}

pub const ARP_LEN: usize = core::mem::size_of::<ArpHdr>();

/// An Ethernet frame carrying an ARP packet, as one struct so that a single
/// bounds check covers every byte the responder reads or writes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpFrame {
    pub eth: EthHdr,
    pub arp: ArpHdr,
}

pub const ARP_FRAME_LEN: usize = core::mem::size_of::<ArpFrame>();

/// ar$hrd values: Ethernet (10Mb), and IEEE 802 networks, which Linux accepts
/// on Ethernet devices too (RFC 2625; net/ipv4/arp.c, arp_process).
pub const ARPHRD_ETHER: u16 = 1;
pub const ARPHRD_IEEE802: u16 = 6;
/// ar$hln and ar$pln for Ethernet/IPv4.
pub const ARP_HLEN_ETHER: u8 = 6;
pub const ARP_PLEN_IPV4: u8 = 4;
/// ar$op values.
pub const ARPOP_REQUEST: u16 = 1;
pub const ARPOP_REPLY: u16 = 2;

const _: () = assert!(ETH_HLEN == 14);
const _: () = assert!(ARP_LEN == 28);
const _: () = assert!(ARP_FRAME_LEN == 42);
const _: () = assert!(core::mem::align_of::<ArpFrame>() == 1);

/// IPv4 address classes that Linux never answers ARP for as a target, or
/// accepts as an ARP sender (RFC 1122 3.2.1.3, RFC 5735).
pub mod ipv4 {
    /// 224.0.0.0/4
    #[inline(always)]
    pub const fn is_multicast(a: u32) -> bool {
        a & 0xf000_0000 == 0xe000_0000
    }
    /// 255.255.255.255
    #[inline(always)]
    pub const fn is_limited_broadcast(a: u32) -> bool {
        a == 0xffff_ffff
    }
    /// 127.0.0.0/8
    #[inline(always)]
    pub const fn is_loopback(a: u32) -> bool {
        a & 0xff00_0000 == 0x7f00_0000
    }
    /// 0.0.0.0/8 ("this network")
    #[inline(always)]
    pub const fn is_zeronet(a: u32) -> bool {
        a & 0xff00_0000 == 0
    }
}
