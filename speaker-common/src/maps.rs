//! BPF map names, pin names and the keys and values stored in them.

/// Name of the XDP program in the object.
pub const XDP_PROGRAM: &str = "speaker_xdp";
/// Default bpffs folder the agent pins its maps in.
pub const DEFAULT_BPFFS_DIR: &str = "/sys/fs/bpf/speaker";

/// VIPs to answer for: [`VipKey`] -> [`VipEntry`].
pub const VIPS_MAP: &str = "VIPS";
pub const VIPS_MAX_ENTRIES: u32 = 16384;
/// Per-CPU [`Counters`] (a one-element per-CPU array).
pub const COUNTERS_MAP: &str = "COUNTERS";
/// Address conflicts seen on the wire: [`VipKey`] -> per-CPU [`Conflict`].
pub const CONFLICTS_MAP: &str = "CONFLICTS";
pub const CONFLICTS_MAX_ENTRIES: u32 = 4096;
/// Per VIP on an interface: the requests for it and the answers sent,
/// [`VipKey`] -> per-CPU [`VipStats`]. Counted by the program itself, so the
/// figures are what happened on the wire.
pub const VIP_STATS_MAP: &str = "VIP_STATS";

/// Prefilter over VIP addresses: a bitmap of [`FILTER_BITS`] bits, as
/// [`FILTER_WORDS`] `u64` array elements, indexed by [`filter_slot`]. A clear
/// bit means "certainly not a VIP", sparing the hash lookup for nearly all
/// ARP on a LAN. The agent keeps it a superset of the VIP map: a bit is set
/// before its first VIP is inserted and cleared after its last is removed.
pub const FILTER_MAP: &str = "VIP_FILTER";
pub const FILTER_BITS: u32 = 1 << 16;
pub const FILTER_WORDS: u32 = FILTER_BITS / 64;

/// The filter bit of an address (16 bytes, IPv4 in the first 4): the
/// address folded to 16 bits by XOR, so addresses of one subnet, which
/// differ in their low bytes, get distinct bits.
#[inline(always)]
pub const fn filter_slot(addr: &[u8; 16]) -> u16 {
    let mut slot = 0u16;
    let mut i = 0;
    while i < 16 {
        slot ^= ((addr[i] as u16) << 8) | addr[i + 1] as u16;
        i += 2;
    }
    slot
}

/// [`filter_slot`] of an IPv4 address, without building the 16 bytes.
#[inline(always)]
pub const fn filter_slot_v4(a: &[u8; 4]) -> u16 {
    (((a[0] as u16) << 8) | a[1] as u16) ^ (((a[2] as u16) << 8) | a[3] as u16)
}

/// The maps the agent pins, under these file names in its bpffs folder.
pub const PINNED_MAPS: [&str; 5] = [
    VIPS_MAP,
    COUNTERS_MAP,
    CONFLICTS_MAP,
    FILTER_MAP,
    VIP_STATS_MAP,
];

/// Bumped whenever what a pinned map holds changes meaning without its
/// sizes changing (the clock of an expiry, the filter's hash, ...): an
/// agent adopts the pinned maps a predecessor left only of its own layout.
pub const LAYOUT_VERSION: u32 = 1;

/// The pinned maps as the program defines them: (name, key size, value
/// size, max entries).
pub const MAP_LAYOUT: [(&str, u32, u32, u32); 5] = [
    (
        VIPS_MAP,
        size::<VipKey>(),
        size::<VipEntry>(),
        VIPS_MAX_ENTRIES,
    ),
    (COUNTERS_MAP, 4, size::<Counters>(), 1),
    (
        CONFLICTS_MAP,
        size::<VipKey>(),
        size::<Conflict>(),
        CONFLICTS_MAX_ENTRIES,
    ),
    (FILTER_MAP, 4, 8, FILTER_WORDS),
    (
        VIP_STATS_MAP,
        size::<VipKey>(),
        size::<VipStats>(),
        VIPS_MAX_ENTRIES,
    ),
];

const fn size<T>() -> u32 {
    core::mem::size_of::<T>() as u32
}

/// Address family of a [`VipKey`].
pub const FAMILY_IPV4: u16 = 4;
pub const FAMILY_IPV6: u16 = 6;

/// A VIP on one interface (and, for tagged frames, one VLAN).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VipKey {
    /// Interface the frame arrived on; a VIP is answered only where announced.
    pub ifindex: u32,
    /// 802.1Q VLAN ID of the frame, 0 for untagged.
    pub vlan_id: u16,
    /// [`FAMILY_IPV4`] or [`FAMILY_IPV6`].
    pub family: u16,
    /// The address in network order; an IPv4 address fills the first 4 bytes
    /// and the rest are zero.
    pub addr: [u8; 16],
}

impl VipKey {
    #[inline(always)]
    pub const fn ipv4(ifindex: u32, vlan_id: u16, addr: [u8; 4]) -> Self {
        Self {
            ifindex,
            vlan_id,
            family: FAMILY_IPV4,
            addr: [
                addr[0], addr[1], addr[2], addr[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ],
        }
    }

    #[inline(always)]
    pub const fn ipv6(ifindex: u32, vlan_id: u16, addr: [u8; 16]) -> Self {
        Self {
            ifindex,
            vlan_id,
            family: FAMILY_IPV6,
            addr,
        }
    }

    /// The VIP's address.
    pub fn ip(&self) -> core::net::IpAddr {
        if self.family == FAMILY_IPV4 {
            let a = self.addr;
            core::net::IpAddr::from([a[0], a[1], a[2], a[3]])
        } else {
            core::net::IpAddr::from(self.addr)
        }
    }
}

/// How to answer for a VIP.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VipEntry {
    /// The MAC to answer with (the interface's own).
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
    /// Dead-man's switch: `bpf_ktime_get_boot_ns()` (CLOCK_BOOTTIME) after which
    /// the program stops answering; 0 = never expires.
    pub expires_ns: u64,
}

impl VipEntry {
    pub const NEVER: u64 = 0;

    #[inline(always)]
    pub const fn is_live(&self, now_ns: u64) -> bool {
        self.expires_ns == Self::NEVER || now_ns < self.expires_ns
    }
}

/// A frame claimed one of our VIPs as its sender with a MAC that is not ours.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// Frames seen.
    pub count: u64,
    /// `bpf_ktime_get_boot_ns()` of the latest one.
    pub last_seen_ns: u64,
    /// Sender MAC of the latest one.
    pub last_mac: [u8; 6],
    pub _pad: [u8; 2],
}

/// What happened to the requests for one VIP on one interface: every ARP
/// request or Neighbor Solicitation that got as far as finding the VIP's
/// entry, and the ones answered (the rest were passed: expired, for
/// another host's MAC, or from a group address).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VipStats {
    pub requests: u64,
    pub replies: u64,
}

/// Defines [`Counters`] (the per-CPU map value, one `u64` per field, so bpftool
/// prints the names) and [`Reason`] (one variant per field, its index) from one
/// list, so the two cannot drift apart.
macro_rules! counters {
    ($($(#[doc = $doc:literal])* $field:ident => $variant:ident,)+) => {
        /// Per-CPU counters: why each frame got the verdict it got.
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct Counters {
            $($(#[doc = $doc])* pub $field: u64,)+
        }

        /// Index of a field of [`Counters`], viewed as `[u64; Reason::COUNT]`.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Reason {
            $($(#[doc = $doc])* $variant,)+
        }

        impl Reason {
            pub const ALL: &[Reason] = &[$(Reason::$variant,)+];
            pub const COUNT: usize = Self::ALL.len();

            /// The counter's field name, as bpftool and the metrics show it.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Reason::$variant => stringify!($field),)+
                }
            }
        }

        impl Counters {
            pub const fn get(&self, reason: Reason) -> u64 {
                match reason {
                    $(Reason::$variant => self.$field,)+
                }
            }

            pub fn add(&mut self, other: &Counters) {
                $(self.$field = self.$field.wrapping_add(other.$field);)+
            }
        }
    };
}

counters! {
    /// ARP request for a VIP answered with XDP_TX.
    arp_reply => ArpReply,
    /// ARP probe (sender IP 0.0.0.0) for a VIP answered (RFC 5227 defence).
    arp_probe_reply => ArpProbeReply,
    /// Neither ARP nor IPv6: passed.
    pass_other => PassOther,
    /// 802.1ad or doubly tagged (only one 802.1Q tag is parsed): passed.
    pass_vlan => PassVlan,
    /// ARP reply or Neighbor Advertisement: passed.
    pass_not_request => PassNotRequest,
    /// Target is not a VIP on this interface: passed.
    pass_not_vip => PassNotVip,
    /// Target is a VIP whose entry has expired: passed (dead-man's switch).
    pass_expired => PassExpired,
    /// Ethernet destination neither broadcast nor ours: passed.
    pass_eth_dst => PassEthDst,
    /// Target is multicast, broadcast or loopback: passed.
    pass_bad_target => PassBadTarget,
    /// ARP sender IP is multicast, broadcast, loopback or 0.0.0.0/8: passed.
    pass_bad_sender => PassBadSender,
    /// Sender is one of our VIPs with our own MAC: passed.
    pass_own_sender => PassOwnSender,
    /// Sender is one of our VIPs with another MAC: passed and recorded.
    conflict => Conflict,
    /// Frame shorter than an Ethernet header (and its 802.1Q tag).
    eth_truncated => EthTruncated,
    /// ARP frame shorter than its Ethernet/IPv4 body.
    arp_truncated => ArpTruncated,
    /// ARP hardware type other than Ethernet (1) or IEEE 802 (6).
    arp_bad_hardware => ArpBadHardware,
    /// ARP protocol type other than IPv4.
    arp_bad_protocol => ArpBadProtocol,
    /// ARP hardware/protocol address length other than 6/4.
    arp_bad_lengths => ArpBadLengths,
    /// ARP opcode other than request or reply.
    arp_bad_op => ArpBadOp,
    /// Neighbor Solicitation for a VIP answered with a Neighbor Advertisement.
    ndp_reply => NdpReply,
    /// Duplicate address detection probe for a VIP answered to all nodes.
    ndp_dad_reply => NdpDadReply,
    /// IPv6 but not a Neighbor Solicitation or Advertisement: passed.
    pass_not_ndp => PassNotNdp,
    /// ND message cut short, or shorter than its IPv6 payload length says.
    ndp_truncated => NdpTruncated,
    /// ND message shorter than 24 bytes, not 24 plus whole 8-byte options,
    /// or with more options than the responder reads (64 bytes).
    ndp_bad_length => NdpBadLength,
    /// IPv6 version other than 6, or a multicast or loopback source.
    ndp_bad_header => NdpBadHeader,
    /// ICMPv6 checksum wrong.
    ndp_bad_checksum => NdpBadChecksum,
    /// Hop limit other than 255 (the message crossed a router).
    ndp_bad_hop_limit => NdpBadHopLimit,
    /// ICMPv6 code other than 0.
    ndp_bad_code => NdpBadCode,
    /// Solicitation for a multicast target.
    ndp_bad_target => NdpBadTarget,
    /// DAD probe not sent to the target's solicited-node group, or carrying
    /// a source link-layer address.
    ndp_bad_dad => NdpBadDad,
    /// Option of length 0, overrunning the message, or a source link-layer
    /// address option that is not 8 bytes.
    ndp_bad_options => NdpBadOptions,
    /// Multicast solicitation without a source link-layer address.
    ndp_no_lladdr => NdpNoLladdr,
    /// Sent neither to the target, its solicited-node group nor all nodes.
    ndp_bad_destination => NdpBadDestination,
    /// The frame could not be resized to hold the advertisement: passed.
    ndp_no_tailroom => NdpNoTailroom,
}

const _: () = assert!(core::mem::size_of::<Counters>() == Reason::COUNT * 8);
const _: () = {
    let a = [198, 18, 0, 10];
    let k = VipKey::ipv4(1, 0, a);
    assert!(filter_slot(&k.addr) == filter_slot_v4(&a));
};
const _: () = assert!(core::mem::size_of::<VipKey>() == 24);
const _: () = assert!(core::mem::size_of::<VipEntry>() == 16);
const _: () = assert!(core::mem::size_of::<Conflict>() == 24);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain-old-data: repr(C), integer and byte-array fields only,
    // explicit padding, no invalid bit patterns.
    unsafe impl aya::Pod for super::VipKey {}
    unsafe impl aya::Pod for super::VipEntry {}
    unsafe impl aya::Pod for super::Conflict {}
    unsafe impl aya::Pod for super::VipStats {}
    unsafe impl aya::Pod for super::Counters {}
}
