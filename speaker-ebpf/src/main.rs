//! XDP responder: answers ARP requests and IPv6 Neighbor Solicitations for
//! VIPs listed in the `VIPS` map by rewriting the frame in place and
//! returning XDP_TX. Everything else is passed untouched. Each frame bumps
//! exactly one per-CPU counter saying why.
//!
//! The pure-Rust model in `tests/src/model.rs` states the same decision;
//! the tests run this program against it with BPF_PROG_TEST_RUN.

#![no_std]
#![no_main]

mod arp;
mod checksum;
mod maps;
mod ndp;
mod packet;
mod sender;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use speaker_common::{
    maps::Reason,
    wire::{
        ETH_HLEN, ETH_P_8021AD, ETH_P_8021Q, ETH_P_ARP, ETH_P_IPV6, EthHdr, VLAN_HLEN,
        VLAN_VID_MASK, VlanHdr,
    },
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

    #[inline(always)]
    pub const fn is_tx(&self) -> bool {
        self.action == xdp_action::XDP_TX
    }
}

/// Where the network header starts and which VLAN the frame is on.
#[derive(Clone, Copy)]
pub struct L2 {
    pub l3: usize,
    pub vlan_id: u16,
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
    let mut ether_type = be16(unsafe { &(*eth).ether_type });
    let mut l2 = L2 {
        l3: ETH_HLEN,
        vlan_id: 0,
    };
    // One 802.1Q tag is parsed, so a VIP can be announced on a VLAN of the
    // interface the program runs on; replies keep the tag.
    if ether_type == ETH_P_8021Q {
        let Some(tag) = ptr_at::<VlanHdr>(ctx, ETH_HLEN) else {
            return Verdict::pass(Reason::EthTruncated);
        };
        // SAFETY: bounds checked by ptr_at.
        let tag = unsafe { &*tag };
        l2 = L2 {
            l3: ETH_HLEN + VLAN_HLEN,
            vlan_id: be16(&tag.tci) & VLAN_VID_MASK,
        };
        ether_type = be16(&tag.ether_type);
        if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
            return Verdict::pass(Reason::PassVlan);
        }
    } else if ether_type == ETH_P_8021AD {
        return Verdict::pass(Reason::PassVlan);
    }
    match ether_type {
        ETH_P_ARP => arp::respond(ctx, l2),
        ETH_P_IPV6 => ndp::respond(ctx, l2),
        _ => Verdict::pass(Reason::PassOther),
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
