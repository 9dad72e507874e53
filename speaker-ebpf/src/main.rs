//! XDP responder: answers ARP requests for VIPs listed in the `VIPS` map by
//! rewriting the frame in place and returning XDP_TX. Everything else is
//! passed untouched. Each frame bumps exactly one per-CPU counter saying why.
//!
//! The pure-Rust model in `speaker/src/dataplane/model.rs` states the same
//! decision; the tests run this program against it with BPF_PROG_TEST_RUN.

#![no_std]
#![no_main]

mod arp;
mod maps;
mod packet;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use speaker_common::{
    maps::Reason,
    wire::{ETH_P_8021AD, ETH_P_8021Q, ETH_P_ARP, EthHdr},
};

use crate::packet::{be16, ptr_at};

/// What the program does with a frame, and the counter that says why.
pub struct Verdict {
    pub action: u32,
    pub reason: Reason,
}

impl Verdict {
    #[inline(always)]
    pub const fn pass(reason: Reason) -> Self {
        Self {
            action: xdp_action::XDP_PASS,
            reason,
        }
    }

    #[inline(always)]
    pub const fn tx(reason: Reason) -> Self {
        Self {
            action: xdp_action::XDP_TX,
            reason,
        }
    }
}

#[xdp]
pub fn speaker_xdp(ctx: XdpContext) -> u32 {
    let verdict = decide(&ctx);
    maps::count(verdict.reason);
    verdict.action
}

#[inline(always)]
fn decide(ctx: &XdpContext) -> Verdict {
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return Verdict::pass(Reason::EthTruncated);
    };
    // SAFETY: ptr_at checked that the header lies inside the frame.
    match be16(unsafe { &(*eth).ether_type }) {
        ETH_P_ARP => arp::respond(ctx),
        ETH_P_8021Q | ETH_P_8021AD => Verdict::pass(Reason::PassVlan),
        _ => Verdict::pass(Reason::PassNotArp),
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
