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
const _: () = assert!(core::mem::align_of::<ArpHdr>() == 1);

/// IEEE 802.1Q tag, after the Ethernet addresses.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VlanHdr {
    /// Tag control information: PCP (3 bits), DEI (1), VLAN ID (12).
    pub tci: [u8; 2],
    /// EtherType of what the tag carries.
    pub ether_type: [u8; 2],
}

pub const VLAN_HLEN: usize = core::mem::size_of::<VlanHdr>();
pub const VLAN_VID_MASK: u16 = 0x0fff;

/// RFC 8200 IPv6 header.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Hdr {
    /// Version (4 bits), traffic class (8), flow label (20).
    pub vtc_flow: [u8; 4],
    pub payload_len: [u8; 2],
    pub next_header: u8,
    pub hop_limit: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
}

pub const IPV6_HLEN: usize = core::mem::size_of::<Ipv6Hdr>();
pub const IPPROTO_ICMPV6: u8 = 58;

/// RFC 4861 4.3/4.4 Neighbor Solicitation and Advertisement: the ICMPv6
/// header and the fields both share.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NdMsg {
    pub icmp_type: u8,
    pub code: u8,
    pub checksum: [u8; 2],
    /// NA: R, S, O flags in the top bits; NS: reserved.
    pub flags: [u8; 4],
    pub target: [u8; 16],
}

pub const ND_MSG_LEN: usize = core::mem::size_of::<NdMsg>();
pub const ND_NEIGHBOR_SOLICIT: u8 = 135;
pub const ND_NEIGHBOR_ADVERT: u8 = 136;
/// NA flags (first byte of `flags`).
pub const ND_NA_FLAG_ROUTER: u8 = 0x80;
pub const ND_NA_FLAG_SOLICITED: u8 = 0x40;
pub const ND_NA_FLAG_OVERRIDE: u8 = 0x20;
/// Every ND message travels with hop limit 255 (RFC 4861 7.1).
pub const ND_HOP_LIMIT: u8 = 255;
/// ND option types (RFC 4861 4.6.1): source / target link-layer address.
pub const ND_OPT_SOURCE_LL_ADDR: u8 = 1;
pub const ND_OPT_TARGET_LL_ADDR: u8 = 2;
/// Option lengths are in units of 8 octets.
pub const ND_OPT_UNIT: usize = 8;
/// Options the responder reads, at most (a solicitation normally carries
/// one or two 8-byte options); a message with more is passed to the kernel.
/// The responder's own limit, not RFC 4861's.
pub const ND_MAX_OPT_BYTES: usize = 64;

/// What the responder writes after the Ethernet header (and tag) when it
/// answers: IPv6 header, NA, and one Target Link-Layer Address option.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NaPacket {
    pub ip: Ipv6Hdr,
    pub nd: NdMsg,
    pub opt_type: u8,
    pub opt_len: u8,
    pub opt_mac: [u8; 6],
}

pub const NA_PACKET_LEN: usize = core::mem::size_of::<NaPacket>();
/// ICMPv6 length of that NA (payload length of its IPv6 header).
pub const NA_ICMP_LEN: usize = ND_MSG_LEN + ND_OPT_UNIT;

const _: () = assert!(VLAN_HLEN == 4);
const _: () = assert!(IPV6_HLEN == 40);
const _: () = assert!(ND_MSG_LEN == 24);
const _: () = assert!(NA_PACKET_LEN == 72);
const _: () = assert!(ND_MAX_OPT_BYTES.is_multiple_of(ND_OPT_UNIT));

/// IPv6 address classes and the multicast groups ND uses (RFC 4291).
pub mod ipv6 {
    pub const UNSPECIFIED: [u8; 16] = [0; 16];
    pub const LOOPBACK: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    /// ff02::1, all nodes on the link.
    pub const ALL_NODES: [u8; 16] = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    /// 33:33:00:00:00:01, the Ethernet group of ff02::1 (RFC 2464 7).
    pub const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];

    #[inline(always)]
    pub const fn is_multicast(a: &[u8; 16]) -> bool {
        a[0] == 0xff
    }

    /// ff02::1:ffXX:XXXX for an address's low 24 bits (RFC 4291 2.7.1).
    #[inline(always)]
    pub const fn solicited_node(a: &[u8; 16]) -> [u8; 16] {
        [
            0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, a[13], a[14], a[15],
        ]
    }

    /// The Ethernet group an IPv6 multicast address maps to (RFC 2464 7).
    #[inline(always)]
    pub const fn multicast_mac(group: &[u8; 16]) -> [u8; 6] {
        [0x33, 0x33, group[12], group[13], group[14], group[15]]
    }
}

/// The ICMPv6 checksum (RFC 1071 over the RFC 8200 8.1 pseudo-header and
/// `msg`, whose checksum field must be zero), as it goes on the wire.
pub fn icmpv6_checksum(src: &[u8; 16], dst: &[u8; 16], msg: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    let mut add = |bytes: &[u8]| {
        let mut i = 0;
        while i < bytes.len() {
            let lo = if i + 1 < bytes.len() { bytes[i + 1] } else { 0 };
            sum += u64::from(u16::from_be_bytes([bytes[i], lo]));
            i += 2;
        }
    };
    add(src);
    add(dst);
    add(&(msg.len() as u32).to_be_bytes());
    add(&[0, 0, 0, IPPROTO_ICMPV6]);
    add(msg);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

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
