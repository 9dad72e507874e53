//! Programs for the testbed and the benchmarks, never loaded by the agent.

#![no_std]
#![no_main]

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

/// XDP_PASS everything. On veth, frames sent with XDP_TX reach the peer only
/// when the peer has an XDP program attached, so test topologies attach this
/// to every veth end facing a node running the responder.
#[xdp]
pub fn testbed_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// XDP_DROP everything: the storm benchmark's flood generator end, where
/// the replies are counted (veth's own receive counters) and discarded at
/// the least cost to the generator's CPU.
#[xdp]
pub fn testbed_drop(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_DROP
}

/// Benchmark baseline: the least a responder can do, swap the Ethernet
/// addresses and send the frame back.
#[xdp]
pub fn testbed_swap_macs(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    if start + 12 > ctx.data_end() {
        return xdp_action::XDP_PASS;
    }
    let eth = start as *mut [u8; 6];
    // SAFETY: bounds checked above: two 6-byte addresses at offsets 0 and 6.
    unsafe {
        let dst = core::ptr::read(eth);
        let src = core::ptr::read(eth.add(1));
        core::ptr::write(eth, src);
        core::ptr::write(eth.add(1), dst);
    }
    xdp_action::XDP_TX
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
