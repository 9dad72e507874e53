//! Prometheus metrics and health endpoints on one small HTTP listener:
//! `/metrics`, `/healthz` (the process serves), `/readyz` (the agent: the
//! data plane matches the election's view; the controller: standing by, or
//! active with its state rebuilt).
//!
//! The figures live in plain structs the loops update; a scrape turns them
//! into metric families with `prometheus-client`, which writes the
//! OpenMetrics text.

mod serve;

use std::{collections::BTreeMap, sync::Mutex, sync::atomic::AtomicU64};

use prometheus_client::{
    encoding::text::encode,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};
use speaker_common::maps::{Counters, Reason};

use crate::election::{Gained, Lost};

pub use serve::serve;

type Labels = Vec<(&'static str, String)>;

/// One scrape's metric families.
#[derive(Default)]
struct Exposition(Registry);

impl Exposition {
    /// `name` as exposed (with its `_total`, which the library adds).
    fn counter(&mut self, name: &str, help: &str, value: u64) {
        let c: Counter = Counter::default();
        c.inc_by(value);
        self.0.register(name.trim_end_matches("_total"), help, c);
    }

    fn counters(&mut self, name: &str, help: &str, rows: impl IntoIterator<Item = (Labels, u64)>) {
        let family = Family::<Labels, Counter>::default();
        for (labels, value) in rows {
            family.get_or_create(&labels).inc_by(value);
        }
        self.0
            .register(name.trim_end_matches("_total"), help, family);
    }

    fn gauge(&mut self, name: &str, help: &str, value: f64) {
        let g = Gauge::<f64, AtomicU64>::default();
        g.set(value);
        self.0.register(name, help, g);
    }

    fn gauges(&mut self, name: &str, help: &str, rows: impl IntoIterator<Item = (Labels, f64)>) {
        let family = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        for (labels, value) in rows {
            family.get_or_create(&labels).set(value);
        }
        self.0.register(name, help, family);
    }

    fn text(self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.0);
        out
    }
}

/// A latency histogram in seconds, 1 ms to about 4 s.
#[derive(Debug, Clone)]
pub struct Latency(Histogram);

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 13))
}

impl Default for Latency {
    fn default() -> Self {
        Self(latency_histogram())
    }
}

impl Latency {
    pub fn observe(&self, seconds: f64) {
        self.0.observe(seconds);
    }
}

/// Latency histograms by label, up to minutes.
#[derive(Debug, Clone)]
pub struct Latencies(Family<Labels, Histogram, fn() -> Histogram>);

impl Default for Latencies {
    fn default() -> Self {
        Self(Family::new_with_constructor(long_latency_histogram))
    }
}

/// 1 ms to about 9 minutes: a takeover may wait out a hold (5 min).
fn long_latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 20))
}

/// Time the agent's loop spends on one wake-up, by what woke it.
#[derive(Debug, Clone)]
pub struct WorkTimes(Family<Labels, Histogram, fn() -> Histogram>);

impl Default for WorkTimes {
    fn default() -> Self {
        Self(Family::new_with_constructor(work_histogram))
    }
}

/// 8 µs to about 2 s: one event should cost microseconds.
fn work_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_008, 2.0, 19))
}

impl WorkTimes {
    pub fn observe(&self, woke_by: &'static str, took: std::time::Duration) {
        let labels = vec![("event", woke_by.to_owned())];
        self.0.get_or_create(&labels).observe(took.as_secs_f64());
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    pub node: String,
    /// Each (Service `ns/name`, VIP) this node announces.
    pub announced: Vec<(String, std::net::IpAddr)>,
    /// Per VIP answered: requests, replies, announcements.
    pub vips: BTreeMap<std::net::IpAddr, crate::answer::VipFigures>,
    pub xdp: Option<Counters>,
    /// Frames from other hosts claiming a VIP we answer for, per VIP, as
    /// the XDP program counted them.
    pub conflicts: BTreeMap<std::net::IpAddr, u64>,
    pub vips_owned: u64,
    /// VIPs this node started answering for, by how.
    pub takeovers: BTreeMap<Gained, u64>,
    /// From when each VIP needed a new owner to this node answering, by how.
    pub takeover_seconds: Latencies,
    /// VIPs this node stopped answering for, by why.
    pub stopped: BTreeMap<Lost, u64>,
    pub renewals_ok: u64,
    pub renewals_failed: u64,
    /// How long each node-lease renewal took, answered or not.
    pub renewal_seconds: Latency,
    pub record_writes_ok: u64,
    pub record_conflicts: u64,
    pub record_writes_failed: u64,
    pub repairs: u64,
    /// The last repair pass found nothing to repair.
    pub consistent: bool,
    /// Witness side: promises given and refused to owners cut off from the
    /// API, and fences taken for takers.
    pub holds_granted: u64,
    pub holds_refused: u64,
    pub fences: u64,
    /// Owner side: entries kept alive on promises now.
    pub holding: bool,
    /// Holds that ended, and how long they lasted.
    pub holds_ended: u64,
    /// Datagrams on the peer port that failed authentication.
    pub peer_rejected: u64,
    /// VIPs handed over because this node's endpoints failed the local
    /// probe.
    pub probe_handovers: u64,
    /// VIPs this process found answered by its predecessor on the node at
    /// start and went on answering (a restart that moved nothing).
    pub adopted: u64,
    /// The loop's work per wake-up.
    pub work_seconds: WorkTimes,
}

impl Metrics {
    /// This node started answering for a VIP that needed an owner `took`
    /// ago.
    pub fn took_over(&mut self, how: Gained, took: std::time::Duration) {
        *self.takeovers.entry(how).or_default() += 1;
        let labels = vec![("reason", how.label().to_owned())];
        self.takeover_seconds
            .0
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }
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
        let mut e = Exposition::default();
        let pool = |p: &crate::allocation::PoolCount| vec![("pool", p.pool.clone())];
        e.gauges(
            "metallb_allocator_addresses_in_use_total",
            "Number of IP addresses in use, by pool.",
            self.pools.iter().map(|p| (pool(p), p.in_use() as f64)),
        );
        e.gauges(
            "metallb_allocator_addresses_total",
            "Number of usable IP addresses, by pool.",
            self.pools.iter().map(|p| (pool(p), p.total() as f64)),
        );
        e.counters(
            "speaker_allocation_refusals_total",
            "Services refused an address (each new reason once), by reason.",
            self.refusals
                .iter()
                .map(|(reason, n)| (vec![("reason", (*reason).to_owned())], *n)),
        );
        e.counter(
            "speaker_status_writes_total",
            "Service status writes that succeeded.",
            self.status_writes_ok,
        );
        e.counter(
            "speaker_status_write_failures_total",
            "Service status writes that failed (retried unless the Service changed).",
            self.status_writes_failed,
        );
        e.gauge(
            "speaker_controller_active",
            "1 while this process is the active controller.",
            f64::from(u8::from(self.active)),
        );
        e.text()
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
        let mut e = Exposition::default();
        e.counters(
            "speaker_takeovers_total",
            "VIPs this node started answering for, by reason (new, handover, takeover, reclaim).",
            self.takeovers
                .iter()
                .map(|(how, n)| (vec![("reason", how.label().to_owned())], *n)),
        );
        e.counters(
            "speaker_answering_stopped_total",
            "VIPs this node stopped answering for, by reason (handover, lapsed, superseded).",
            self.stopped
                .iter()
                .map(|(why, n)| (vec![("reason", why.label().to_owned())], *n)),
        );
        e.0.register(
            "speaker_takeover_seconds",
            "From when a VIP needed a new owner (its holder's last renewal seen, its release, or its creation) to this node answering, by reason.",
            self.takeover_seconds.0.clone(),
        );
        for (name, help, value) in [
            (
                "speaker_lease_renewals_total",
                "Successful node-lease renewals.",
                self.renewals_ok,
            ),
            (
                "speaker_lease_renewal_failures_total",
                "Failed node-lease renewals.",
                self.renewals_failed,
            ),
            (
                "speaker_ownership_writes_total",
                "VIP ownership records written.",
                self.record_writes_ok,
            ),
            (
                "speaker_ownership_conflicts_total",
                "VIP ownership writes lost to another writer (409).",
                self.record_conflicts,
            ),
            (
                "speaker_ownership_write_failures_total",
                "VIP ownership writes that failed or timed out.",
                self.record_writes_failed,
            ),
            (
                "speaker_dataplane_repairs_total",
                "Map entries that differed from the election's view.",
                self.repairs,
            ),
            (
                "speaker_holds_granted_total",
                "Promises given to peers cut off from the API.",
                self.holds_granted,
            ),
            (
                "speaker_holds_refused_total",
                "Promises refused (this node reaches the API, or fenced the asker).",
                self.holds_refused,
            ),
            (
                "speaker_fences_total",
                "Fences taken on an owner for a peer about to take over from it.",
                self.fences,
            ),
            (
                "speaker_holds_ended_total",
                "Times this node stopped answering on peers' promises.",
                self.holds_ended,
            ),
            (
                "speaker_peer_messages_rejected_total",
                "Datagrams on the peer port that failed authentication.",
                self.peer_rejected,
            ),
            (
                "speaker_endpoint_probe_handovers_total",
                "VIPs handed over because this node's endpoints failed the local probe.",
                self.probe_handovers,
            ),
            (
                "speaker_adopted_vips_total",
                "VIPs found answered by this node's previous agent at start and kept (a restart that moved nothing).",
                self.adopted,
            ),
        ] {
            e.counter(name, help, value);
        }
        e.gauges(
            "metallb_speaker_announced",
            "The Services this node announces, by IP (1 while announced).",
            self.announced.iter().map(|(service, ip)| {
                let labels = vec![
                    ("ip", ip.to_string()),
                    ("node", self.node.clone()),
                    ("protocol", "layer2".to_owned()),
                    ("service", service.clone()),
                ];
                (labels, 1.0)
            }),
        );
        e.counters(
            "speaker_vip_conflicts_total",
            "Frames from another host claiming a VIP this node answers for, by VIP.",
            self.conflicts
                .iter()
                .map(|(ip, n)| (vec![("ip", ip.to_string())], *n)),
        );
        // MetalLB's names for these counters, exactly: the OpenMetrics
        // encoder would add `_total` to a counter, and MetalLB's dashboards
        // query the bare names, so they are exposed as gauges holding the
        // running count (rate() works on them as on counters).
        let per_vip = |f: fn(&crate::answer::VipFigures) -> u64| {
            self.vips
                .iter()
                .map(move |(ip, v)| (vec![("ip", ip.to_string())], f(v) as f64))
        };
        e.gauges(
            "metallb_layer2_requests_received",
            "ARP requests and Neighbor Solicitations for the VIP, counted by the XDP program.",
            per_vip(|v| v.requests),
        );
        e.gauges(
            "metallb_layer2_responses_sent",
            "Of those, answered by the XDP program.",
            per_vip(|v| v.replies),
        );
        e.gauges(
            "metallb_layer2_gratuitous_sent",
            "Gratuitous ARP / unsolicited Neighbor Advertisement rounds sent for the VIP.",
            per_vip(|v| v.announcements),
        );
        e.0.register(
            "speaker_lease_renewal_seconds",
            "How long node-lease renewals took (failed ones up to the request timeout).",
            self.renewal_seconds.0.clone(),
        );
        e.0.register(
            "speaker_event_seconds",
            "Time the agent's loop spent on one wake-up, by what woke it (cluster: a watched object changed; lease: a Lease event or a request's result; timer; carrier; repair; probe).",
            self.work_seconds.0.clone(),
        );
        e.gauge(
            "speaker_vips_owned",
            "VIPs this node answers for.",
            self.vips_owned as f64,
        );
        e.gauge(
            "speaker_holding",
            "1 while this node answers on its peers' promises, its renewals failing.",
            f64::from(u8::from(self.holding)),
        );
        if let Some(c) = &self.xdp {
            e.counters(
                "speaker_xdp_frames_total",
                "Frames seen by the XDP program, by verdict reason.",
                Reason::ALL
                    .iter()
                    .map(|r| (vec![("reason", r.name().to_owned())], c.get(*r))),
            );
        }
        e.text()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allocation::{FamilyCount, PoolCount};

    #[test]
    fn the_controller_page_is_openmetrics_with_metallbs_names() {
        let page = ControllerMetrics {
            active: true,
            pools: vec![PoolCount {
                pool: "main".into(),
                ipv4: FamilyCount {
                    in_use: 3,
                    total: 14,
                },
                ipv6: FamilyCount::default(),
            }],
            refusals: [("pool_exhausted", 2)].into(),
            status_writes_ok: 5,
            ..ControllerMetrics::default()
        };
        let text = page.render();
        for line in [
            "# TYPE metallb_allocator_addresses_in_use_total gauge",
            "metallb_allocator_addresses_in_use_total{pool=\"main\"} 3.0",
            "metallb_allocator_addresses_total{pool=\"main\"} 14.0",
            "# TYPE speaker_allocation_refusals counter",
            "speaker_allocation_refusals_total{reason=\"pool_exhausted\"} 2",
            "speaker_status_writes_total 5",
            "speaker_controller_active 1.0",
            "# EOF",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in\n{text}"
            );
        }
    }

    #[test]
    fn the_agent_page_counts_xdp_verdicts_by_reason() {
        let mut page = Metrics {
            node: "front-1".into(),
            announced: vec![("default/web".into(), "198.18.0.10".parse().expect("ip"))],
            vips_owned: 2,
            xdp: Some(Counters::default()),
            ..Metrics::default()
        };
        for _ in 0..4 {
            page.took_over(Gained::Takeover, std::time::Duration::from_millis(1800));
        }
        let text = page.render();
        assert!(
            text.contains("speaker_takeovers_total{reason=\"takeover\"} 4\n"),
            "{text}"
        );
        assert!(
            text.contains("speaker_takeover_seconds_bucket{le=\"2.048\",reason=\"takeover\"} 4\n"),
            "{text}"
        );
        page.renewal_seconds.observe(0.003);
        let text = page.render();
        assert!(
            text.contains("speaker_lease_renewal_seconds_bucket{le=\"0.004\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("speaker_lease_renewal_seconds_count 1\n"),
            "{text}"
        );
        page.work_seconds
            .observe("cluster", std::time::Duration::from_micros(100));
        let text = page.render();
        assert!(
            text.contains("speaker_event_seconds_bucket{le=\"0.000128\",event=\"cluster\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "metallb_speaker_announced{ip=\"198.18.0.10\",node=\"front-1\",\
                 protocol=\"layer2\",service=\"default/web\"} 1.0\n"
            ),
            "{text}"
        );
        assert!(text.contains("speaker_vips_owned 2.0\n"), "{text}");
        assert!(
            text.contains("speaker_xdp_frames_total{reason=\"arp_reply\"} 0\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
