//! Verifier-friendly access to frame bytes.

use aya_ebpf::programs::XdpContext;

/// A pointer to a `T` at `offset` in the frame, or `None` when the frame is
/// too short. The comparison against `data_end` is what lets the verifier
/// accept every later access through the pointer.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *mut T)
}

#[inline(always)]
pub fn be16(b: &[u8; 2]) -> u16 {
    u16::from_be_bytes(*b)
}

#[inline(always)]
pub fn be32(b: &[u8; 4]) -> u32 {
    u32::from_be_bytes(*b)
}

/// Byte-wise MAC comparison: a slice `==` may become a `bcmp` call, which
/// BPF cannot link.
#[inline(always)]
pub fn mac_eq(a: &[u8; 6], b: &[u8; 6]) -> bool {
    (a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) | (a[4] ^ b[4]) | (a[5] ^ b[5])
        == 0
}

/// A group (broadcast or multicast) MAC: the I/G bit is set.
#[inline(always)]
pub fn is_group(mac: &[u8; 6]) -> bool {
    mac[0] & 1 != 0
}

/// Byte-wise comparison of IPv6 addresses (see mac_eq).
#[inline(always)]
pub fn addr_eq(a: &[u8; 16], b: &[u8; 16]) -> bool {
    let mut diff = 0;
    let mut i = 0;
    while i < 16 {
        diff |= a[i] ^ b[i];
        i += 1;
    }
    diff == 0
}
