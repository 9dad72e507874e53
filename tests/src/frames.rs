//! Frames for the tests, built field by field, and a seeded generator of
//! random and mutated frames.

/// An ARP packet on Ethernet, every field settable.
#[derive(Clone, Debug)]
pub struct Arp {
    pub eth_dst: [u8; 6],
    pub eth_src: [u8; 6],
    /// 802.1Q tag control information, when tagged.
    pub vlan: Option<u16>,
    pub ether_type: u16,
    pub htype: u16,
    pub ptype: u16,
    pub hlen: u8,
    pub plen: u8,
    pub op: u16,
    pub sha: [u8; 6],
    pub spa: [u8; 4],
    pub tha: [u8; 6],
    pub tpa: [u8; 4],
    /// Bytes after the ARP body (Ethernet padding).
    pub trailer: Vec<u8>,
}

impl Arp {
    /// A broadcast "who has `tpa`? tell `spa`" from `mac`, as Linux sends it.
    pub fn request(mac: [u8; 6], spa: [u8; 4], tpa: [u8; 4]) -> Self {
        Self {
            eth_dst: [0xff; 6],
            eth_src: mac,
            vlan: None,
            ether_type: 0x0806,
            htype: 1,
            ptype: 0x0800,
            hlen: 6,
            plen: 4,
            op: 1,
            sha: mac,
            spa,
            tha: [0; 6],
            tpa,
            trailer: Vec::new(),
        }
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut f = Vec::with_capacity(46 + self.trailer.len());
        f.extend(self.eth_dst);
        f.extend(self.eth_src);
        push_tag(&mut f, self.vlan);
        f.extend(self.ether_type.to_be_bytes());
        f.extend(self.htype.to_be_bytes());
        f.extend(self.ptype.to_be_bytes());
        f.push(self.hlen);
        f.push(self.plen);
        f.extend(self.op.to_be_bytes());
        f.extend(self.sha);
        f.extend(self.spa);
        f.extend(self.tha);
        f.extend(self.tpa);
        f.extend(&self.trailer);
        f
    }

    /// Parses an Ethernet/IPv4 ARP frame, untagged or with one 802.1Q tag.
    pub fn parse(frame: &[u8]) -> Option<Self> {
        let (vlan, f) = untag(frame)?;
        if f.len() < 42 {
            return None;
        }
        let a6 = |i: usize| -> [u8; 6] { f[i..i + 6].try_into().unwrap_or_default() };
        let a4 = |i: usize| -> [u8; 4] { f[i..i + 4].try_into().unwrap_or_default() };
        let be = |i: usize| u16::from_be_bytes([f[i], f[i + 1]]);
        Some(Self {
            eth_dst: a6(0),
            eth_src: a6(6),
            vlan,
            ether_type: be(12),
            htype: be(14),
            ptype: be(16),
            hlen: f[18],
            plen: f[19],
            op: be(20),
            sha: a6(22),
            spa: a4(28),
            tha: a6(32),
            tpa: a4(38),
            trailer: f[42..].to_vec(),
        })
    }
}

fn push_tag(f: &mut Vec<u8>, vlan: Option<u16>) {
    if let Some(tci) = vlan {
        f.extend(0x8100u16.to_be_bytes());
        f.extend(tci.to_be_bytes());
    }
}

/// The tag control information of a singly tagged frame, and the frame with
/// the tag taken out.
pub fn untag(f: &[u8]) -> Option<(Option<u16>, Vec<u8>)> {
    if f.len() < 14 {
        return None;
    }
    if f[12..14] == [0x81, 0x00] {
        if f.len() < 18 {
            return None;
        }
        let tci = u16::from_be_bytes([f[14], f[15]]);
        let mut rest = f[..12].to_vec();
        rest.extend(&f[16..]);
        return Some((Some(tci), rest));
    }
    Some((None, f.to_vec()))
}

/// An ICMPv6 Neighbor Discovery message in IPv6 on Ethernet, every field
/// settable; `bytes` fills in the payload length and the checksum unless
/// they are overridden.
#[derive(Clone, Debug)]
pub struct Nd {
    pub eth_dst: [u8; 6],
    pub eth_src: [u8; 6],
    pub vlan: Option<u16>,
    pub version: u8,
    pub hop_limit: u8,
    pub next_header: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub icmp_type: u8,
    pub code: u8,
    pub flags: u8,
    pub target: [u8; 16],
    /// Options as raw bytes (type, length in 8-byte units, body).
    pub options: Vec<u8>,
    pub payload_len: Option<u16>,
    pub checksum: Option<u16>,
    pub trailer: Vec<u8>,
}

pub const ALL_NODES: [u8; 16] = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

pub fn solicited_node(a: &[u8; 16]) -> [u8; 16] {
    [
        0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, a[13], a[14], a[15],
    ]
}

/// A Source (1) or Target (2) Link-Layer Address option.
pub fn lladdr_option(kind: u8, mac: [u8; 6]) -> Vec<u8> {
    let mut o = vec![kind, 1];
    o.extend(mac);
    o
}

impl Nd {
    /// A multicast solicitation for `target` from `src`/`mac`, as Linux
    /// sends it: to the solicited-node group, with a source link-layer
    /// address option.
    pub fn solicit(mac: [u8; 6], src: [u8; 16], target: [u8; 16]) -> Self {
        let group = solicited_node(&target);
        Self {
            eth_dst: [0x33, 0x33, group[12], group[13], group[14], group[15]],
            eth_src: mac,
            vlan: None,
            version: 6,
            hop_limit: 255,
            next_header: 58,
            src,
            dst: group,
            icmp_type: 135,
            code: 0,
            flags: 0,
            target,
            options: lladdr_option(1, mac),
            payload_len: None,
            checksum: None,
            trailer: Vec::new(),
        }
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut msg = vec![self.icmp_type, self.code, 0, 0, self.flags, 0, 0, 0];
        msg.extend(self.target);
        msg.extend(&self.options);
        let csum = self
            .checksum
            .unwrap_or_else(|| icmpv6_checksum(&self.src, &self.dst, &msg));
        msg[2..4].copy_from_slice(&csum.to_be_bytes());
        let mut f = Vec::new();
        f.extend(self.eth_dst);
        f.extend(self.eth_src);
        push_tag(&mut f, self.vlan);
        f.extend(0x86ddu16.to_be_bytes());
        f.extend([self.version << 4, 0, 0, 0]);
        f.extend(self.payload_len.unwrap_or(msg.len() as u16).to_be_bytes());
        f.extend([self.next_header, self.hop_limit]);
        f.extend(self.src);
        f.extend(self.dst);
        f.extend(msg);
        f.extend(&self.trailer);
        f
    }

    /// Parses an untagged or singly tagged ND frame (no checks).
    pub fn parse(frame: &[u8]) -> Option<Self> {
        let (vlan, f) = untag(frame)?;
        if f.len() < 14 + 40 + 24 || f[12..14] != [0x86, 0xdd] {
            return None;
        }
        let a16 = |i: usize| -> [u8; 16] { f[i..i + 16].try_into().unwrap_or_default() };
        let plen = u16::from_be_bytes([f[18], f[19]]);
        let end = (54 + usize::from(plen)).min(f.len());
        Some(Self {
            eth_dst: f[0..6].try_into().unwrap_or_default(),
            eth_src: f[6..12].try_into().unwrap_or_default(),
            vlan,
            version: f[14] >> 4,
            hop_limit: f[21],
            next_header: f[20],
            src: a16(22),
            dst: a16(38),
            icmp_type: f[54],
            code: f[55],
            flags: f[58],
            target: a16(62),
            options: f[78..end].to_vec(),
            payload_len: Some(plen),
            checksum: Some(u16::from_be_bytes([f[56], f[57]])),
            trailer: f[end..].to_vec(),
        })
    }

    /// Whether the ICMPv6 checksum of this (parsed) message is right.
    pub fn checksum_ok(&self) -> bool {
        let mut msg = vec![self.icmp_type, self.code, 0, 0, self.flags, 0, 0, 0];
        msg.extend(self.target);
        msg.extend(&self.options);
        self.checksum == Some(icmpv6_checksum(&self.src, &self.dst, &msg))
    }
}

/// RFC 1071 checksum over the IPv6 pseudo-header and an ICMPv6 message
/// whose checksum field is zero. Written for the tests, apart from the
/// model's.
pub fn icmpv6_checksum(src: &[u8; 16], dst: &[u8; 16], msg: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |b: &[u8]| {
        for pair in b.chunks(2) {
            let hi = u32::from(pair[0]) << 8;
            sum += hi | u32::from(*pair.get(1).unwrap_or(&0));
        }
    };
    add(src);
    add(dst);
    add(&(msg.len() as u32).to_be_bytes());
    add(&[0, 0, 0, 58]);
    add(msg);
    while sum > 0xffff {
        sum = (sum >> 16) + (sum & 0xffff);
    }
    !(sum as u16)
}

/// xorshift64*: small, seeded, reproducible; enough for frame fuzzing.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    pub fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.byte();
        }
    }
}
