//! The maps shared with the agent (names and types in speaker-common).

use aya_ebpf::{
    bindings::BPF_ANY,
    btf_maps::{Array, HashMap, PerCpuArray, PerCpuHashMap},
    helpers::bpf_ktime_get_boot_ns,
    macros::btf_map,
};
use speaker_common::maps::{
    CONFLICTS_MAX_ENTRIES, Conflict, Counters, FILTER_WORDS, Reason, VIPS_MAX_ENTRIES, VipEntry,
    VipKey, VipStats,
};

#[btf_map]
static VIPS: HashMap<VipKey, VipEntry, { VIPS_MAX_ENTRIES as usize }> = HashMap::new();

#[btf_map]
static COUNTERS: PerCpuArray<Counters, 1> = PerCpuArray::new();

#[btf_map]
static CONFLICTS: PerCpuHashMap<VipKey, Conflict, { CONFLICTS_MAX_ENTRIES as usize }> =
    PerCpuHashMap::new();

#[btf_map]
static VIP_STATS: PerCpuHashMap<VipKey, VipStats, { VIPS_MAX_ENTRIES as usize }> =
    PerCpuHashMap::new();

#[btf_map]
static VIP_FILTER: Array<u64, { FILTER_WORDS as usize }> = Array::new();

/// False when `slot` (speaker_common::maps::filter_slot) is certainly no
/// VIP's. An array lookup, which the verifier inlines: no hashing, no call.
#[inline(always)]
pub fn maybe_vip(slot: u16) -> bool {
    match VIP_FILTER.get(u32::from(slot >> 6)) {
        Some(word) => *word & (1u64 << (slot & 63)) != 0,
        None => true,
    }
}

/// The entry for a VIP, copied out of the map (the agent may replace it).
#[inline(always)]
pub fn vip(key: &VipKey) -> Option<VipEntry> {
    // SAFETY: the pointer comes from a successful lookup and is read once.
    VIPS.get_ptr(key).map(|p| unsafe { core::ptr::read(p) })
}

/// CLOCK_BOOTTIME, which keeps counting through a suspend: an entry whose
/// owner slept past its expiry must not answer on resume (CLOCK_MONOTONIC
/// stops while suspended).
#[inline(always)]
pub fn now_ns() -> u64 {
    // SAFETY: helper without preconditions (kernel 5.8+).
    unsafe { bpf_ktime_get_boot_ns() }
}

#[inline(always)]
pub fn count(reason: Reason) {
    if let Some(c) = COUNTERS.get_ptr_mut(0) {
        // SAFETY: Counters is repr(C) with one u64 per Reason, in order
        // (asserted in speaker-common); the slot is this CPU's own.
        unsafe { *c.cast::<u64>().add(reason as usize) += 1 };
    }
}

/// Records a frame that claimed `key` with a MAC that is not ours. The map
/// is per-CPU, so no atomics are needed; the agent adds the CPUs up.
#[inline(always)]
pub fn record_conflict(key: &VipKey, mac: [u8; 6]) {
    let now = now_ns();
    if let Some(c) = CONFLICTS.get_ptr_mut(key) {
        // SAFETY: pointer from a successful lookup, to this CPU's own slot.
        unsafe {
            (*c).count += 1;
            (*c).last_seen_ns = now;
            (*c).last_mac = mac;
        }
        return;
    }
    let fresh = Conflict {
        count: 1,
        last_seen_ns: now,
        last_mac: mac,
        _pad: [0; 2],
    };
    // Fails only when the map is full: the global `conflict` counter still
    // counts the frame.
    let _ = CONFLICTS.insert(key, fresh, BPF_ANY.into());
}

/// Counts a request for the VIP `key`, and whether it was answered. Per
/// CPU, so no atomics; the agent adds the CPUs up and removes the entry
/// with the VIP.
#[inline(always)]
pub fn count_request(key: &VipKey, answered: bool) {
    let replies = u64::from(answered);
    if let Some(s) = VIP_STATS.get_ptr_mut(key) {
        // SAFETY: pointer from a successful lookup, to this CPU's own slot.
        unsafe {
            (*s).requests += 1;
            (*s).replies += replies;
        }
        return;
    }
    let fresh = VipStats {
        requests: 1,
        replies,
    };
    // Fails only when the map is full: the global counters still count it.
    let _ = VIP_STATS.insert(key, fresh, BPF_ANY.into());
}
