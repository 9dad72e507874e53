//! Prometheus metrics and health endpoints on one small HTTP listener:
//! `/metrics`, `/healthz` (the process serves), `/readyz` (the agent: the
//! data plane matches the election's view; the controller: standing by, or
//! active with its state rebuilt).

mod serve;

use std::{collections::BTreeMap, fmt::Write as _, sync::Mutex};

use speaker_common::maps::{Counters, Reason};

pub use serve::serve;

#[derive(Debug, Default)]
pub struct Metrics {
    pub xdp: Option<Counters>,
    pub vips_owned: u64,
    pub takeovers: u64,
    pub renewals_ok: u64,
    pub renewals_failed: u64,
    pub record_writes_ok: u64,
    pub record_conflicts: u64,
    pub record_writes_failed: u64,
    pub repairs: u64,
    /// The last repair pass found nothing to repair.
    pub consistent: bool,
}

/// What the listener serves.
pub trait Page: Send + 'static {
    fn render(&self) -> String;
    /// Whether `/readyz` says ready.
    fn ready(&self) -> bool;
}

/// `speaker controller`'s figures.
#[derive(Debug, Default)]
pub struct ControllerMetrics {
    /// This process holds the controller Lease.
    pub active: bool,
    /// Active, and the allocator has been rebuilt from the cluster.
    pub synced: bool,
    pub pools: Vec<crate::allocation::PoolCount>,
    pub refusals: BTreeMap<&'static str, u64>,
    pub status_writes_ok: u64,
    pub status_writes_failed: u64,
}

impl Page for ControllerMetrics {
    fn render(&self) -> String {
        let mut s = String::new();
        let head = |s: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        head(
            &mut s,
            "metallb_allocator_addresses_in_use_total",
            "gauge",
            "Number of IP addresses in use, by pool.",
        );
        for p in &self.pools {
            let _ = writeln!(
                s,
                "metallb_allocator_addresses_in_use_total{{pool=\"{}\"}} {}",
                p.pool,
                p.in_use()
            );
        }
        head(
            &mut s,
            "metallb_allocator_addresses_total",
            "gauge",
            "Number of usable IP addresses, by pool.",
        );
        for p in &self.pools {
            let _ = writeln!(
                s,
                "metallb_allocator_addresses_total{{pool=\"{}\"}} {}",
                p.pool,
                p.total()
            );
        }
        head(
            &mut s,
            "speaker_allocation_refusals_total",
            "counter",
            "Services refused an address (each new reason once), by reason.",
        );
        for (reason, n) in &self.refusals {
            let _ = writeln!(
                s,
                "speaker_allocation_refusals_total{{reason=\"{reason}\"}} {n}"
            );
        }
        for (name, help, v) in [
            (
                "speaker_status_writes_total",
                "Service status writes that succeeded.",
                self.status_writes_ok,
            ),
            (
                "speaker_status_write_failures_total",
                "Service status writes that failed (retried unless the Service changed).",
                self.status_writes_failed,
            ),
        ] {
            head(&mut s, name, "counter", help);
            let _ = writeln!(s, "{name} {v}");
        }
        head(
            &mut s,
            "speaker_controller_active",
            "gauge",
            "1 while this process is the active controller.",
        );
        let _ = writeln!(s, "speaker_controller_active {}", u8::from(self.active));
        s
    }

    fn ready(&self) -> bool {
        !self.active || self.synced
    }
}

/// Changes the shared figures (a poisoned lock only loses the update).
pub fn update<T>(metrics: &Mutex<T>, f: impl FnOnce(&mut T)) {
    if let Ok(mut m) = metrics.lock() {
        f(&mut m);
    }
}

impl Page for Metrics {
    fn ready(&self) -> bool {
        self.consistent
    }

    fn render(&self) -> String {
        let mut s = String::new();
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        counter(
            "speaker_takeovers_total",
            "VIPs this node started answering for.",
            self.takeovers,
        );
        counter(
            "speaker_lease_renewals_total",
            "Successful node-lease renewals.",
            self.renewals_ok,
        );
        counter(
            "speaker_lease_renewal_failures_total",
            "Failed node-lease renewals.",
            self.renewals_failed,
        );
        counter(
            "speaker_ownership_writes_total",
            "VIP ownership records written.",
            self.record_writes_ok,
        );
        counter(
            "speaker_ownership_conflicts_total",
            "VIP ownership writes lost to another writer (409).",
            self.record_conflicts,
        );
        counter(
            "speaker_ownership_write_failures_total",
            "VIP ownership writes that failed or timed out.",
            self.record_writes_failed,
        );
        counter(
            "speaker_dataplane_repairs_total",
            "Map entries that differed from the election's view.",
            self.repairs,
        );
        let _ = writeln!(
            s,
            "# HELP speaker_vips_owned VIPs this node answers for.\n# TYPE speaker_vips_owned gauge\nspeaker_vips_owned {}",
            self.vips_owned
        );
        if let Some(c) = &self.xdp {
            let _ = writeln!(
                s,
                "# HELP speaker_xdp_frames_total Frames seen by the XDP program, by verdict reason.\n# TYPE speaker_xdp_frames_total counter"
            );
            for r in Reason::ALL {
                let _ = writeln!(
                    s,
                    "speaker_xdp_frames_total{{reason=\"{}\"}} {}",
                    r.name(),
                    c.get(*r)
                );
            }
        }
        s
    }
}
