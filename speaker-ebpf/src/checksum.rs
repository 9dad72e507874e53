//! The Internet checksum (RFC 1071): big-endian 16-bit words added in a
//! 32-bit accumulator, then folded to 16 bits with end-around carry.
//!
//! The accumulator cannot overflow here: the longest sum the responder
//! takes (pseudo-header, a 24-byte ND message and 64 bytes of options) is
//! well under 2^16 words.

/// Sum of the big-endian 16-bit words of `b`.
#[inline(always)]
pub const fn sum16<const N: usize>(b: &[u8; N]) -> u32 {
    const { assert!(N.is_multiple_of(2), "whole 16-bit words only") };
    let mut sum = 0u32;
    let mut i = 0;
    while i < N {
        sum += (b[i] as u32) << 8 | b[i + 1] as u32;
        i += 2;
    }
    sum
}

/// `sum` folded into 16 bits, every carry added back in. Two rounds are
/// enough for any `u32`: the first leaves at most 0x1fffe, the second at
/// most 0xffff.
#[inline(always)]
pub const fn fold(sum: u32) -> u16 {
    let s = (sum & 0xffff) + (sum >> 16);
    ((s & 0xffff) + (s >> 16)) as u16
}

/// Whether a sum over a whole message, its checksum field included, says
/// the message is intact (RFC 1071: all ones).
#[inline(always)]
pub const fn verifies(sum: u32) -> bool {
    fold(sum) == 0xffff
}

/// The checksum field for a message whose words (checksum field as zero)
/// add up to `sum`.
#[inline(always)]
pub const fn field(sum: u32) -> [u8; 2] {
    (!fold(sum)).to_be_bytes()
}

const _: () = {
    assert!(fold(0) == 0);
    assert!(fold(0xffff) == 0xffff);
    assert!(fold(0x1_0000) == 1);
    assert!(fold(0x1_fffe) == 0xffff);
    // The second round's carry: 0xffff + 0xffff = 0x1fffe, then 0xffff.
    assert!(fold(0xffff_ffff) == 0xffff);
    assert!(fold(0x0001_ffff) == 1);
    // RFC 1071 4.1's example: 0001 f203 f4f5 f6f7 sum to 0x2ddf0, folded ddf2.
    assert!(fold(sum16(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7])) == 0xddf2);
    assert!(u16::from_be_bytes(field(0x2ddf0)) == 0x220d);
};
