//! Who sent a frame, as the VIP map sees it: ARP's sender protocol address
//! and an ND message's IPv6 source are classified alike.

use speaker_common::maps::{Reason, VipKey};

use crate::{maps, packet::mac_eq};

#[derive(Clone, Copy)]
pub enum Sender {
    /// Not one of our VIPs on this link.
    NotVip,
    /// One of our VIPs with our MAC: our own frame (Linux refuses a local
    /// source address).
    Own,
    /// One of our VIPs with another MAC: another node claims it. Recorded
    /// in the conflicts map for the agent.
    Conflict,
}

impl Sender {
    /// Why a frame from this sender is not answered, if it is not.
    #[inline(always)]
    pub const fn refusal(self) -> Option<Reason> {
        match self {
            Sender::NotVip => None,
            Sender::Own => Some(Reason::PassOwnSender),
            Sender::Conflict => Some(Reason::Conflict),
        }
    }
}

/// Classifies the sender whose address has filter slot `slot` and hardware
/// address `mac`, recording a conflict. `key` is called only past the
/// prefilter, so nearly every frame skips building it.
#[inline(always)]
pub fn classify(slot: u16, key: impl FnOnce() -> VipKey, mac: &[u8; 6]) -> Sender {
    if !maps::maybe_vip(slot) {
        return Sender::NotVip;
    }
    let key = key();
    let Some(entry) = maps::vip(&key) else {
        return Sender::NotVip;
    };
    if mac_eq(&entry.mac, mac) {
        return Sender::Own;
    }
    maps::record_conflict(&key, *mac);
    Sender::Conflict
}
