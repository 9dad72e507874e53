//! The eBPF object embedded at build time (see build.rs); the testbed
//! programs are embedded by the test crate.

/// The responder: `speaker_xdp` and its maps. Empty when built without
/// `cargo xtask`.
pub static SPEAKER_XDP: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/speaker-xdp"));
