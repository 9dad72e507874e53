//! Frames for the tests, built field by field, and a seeded generator of
//! random and mutated frames.

/// An ARP packet on Ethernet, every field settable.
#[derive(Clone, Debug)]
pub struct Arp {
    pub eth_dst: [u8; 6],
    pub eth_src: [u8; 6],
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
        let mut f = Vec::with_capacity(42 + self.trailer.len());
        f.extend(self.eth_dst);
        f.extend(self.eth_src);
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

    /// Parses an Ethernet/IPv4 ARP frame (at least 42 bytes).
    pub fn parse(f: &[u8]) -> Option<Self> {
        if f.len() < 42 {
            return None;
        }
        let a6 = |i: usize| -> [u8; 6] { f[i..i + 6].try_into().unwrap_or_default() };
        let a4 = |i: usize| -> [u8; 4] { f[i..i + 4].try_into().unwrap_or_default() };
        let be = |i: usize| u16::from_be_bytes([f[i], f[i + 1]]);
        Some(Self {
            eth_dst: a6(0),
            eth_src: a6(6),
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
