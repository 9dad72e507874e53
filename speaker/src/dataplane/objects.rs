//! The eBPF objects embedded at build time (see build.rs).

/// The responder: `speaker_xdp` and its maps. Empty when built without
/// `cargo xtask`.
pub static SPEAKER_XDP: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/speaker-xdp"));

/// Test and benchmark programs (`testbed_pass`, `testbed_swap_macs`); only
/// the test crate refers to them, so the agent binary does not carry them.
#[doc(hidden)]
pub static TESTBED: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/testbed"));
