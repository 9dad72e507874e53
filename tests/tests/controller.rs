//! `speaker controller` against the API: Services get their addresses in
//! `status.loadBalancer.ingress` by MetalLB's rules, refusals are Warning
//! Events, addresses are freed and reused, a restart changes nothing, and
//! of two replicas one writes while the other stands by and takes over
//! when the first dies, never giving one address to two Services.
//!
//! Each controller runs in a network namespace of its own and reaches the
//! stand-in (or a real cluster, with `SPEAKER_TEST_KUBECONFIG`) there. The
//! test's Services carry a load-balancer class of their own, so a real
//! cluster's other Services are never touched.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use serde_json::{Value, json};
use speaker_tests::{
    agent::Agent,
    apiserver::{EVENTS_V1, IP_ADDRESS_POOLS, LEASES, SERVICES},
    cluster::Cluster,
    netns::Netns,
    require_privileges, wait_for,
};

const CLASS: &str = "speaker.metal/test";
use speaker::k8s::access::CONTROLLER as CONTROLLER_ACCESS;

struct Bed {
    // Controllers stop before the namespaces they run in go.
    controllers: Vec<Option<Agent>>,
    cluster: Cluster,
    nets: Vec<Netns>,
}

impl Bed {
    fn new(replicas: usize) -> Self {
        require_privileges();
        let nets: Vec<Netns> = (0..replicas)
            .map(|i| Netns::new(&format!("ctl{i}")).expect("namespace"))
            .collect();
        let refs: Vec<&Netns> = nets.iter().collect();
        let cluster = Cluster::from_env_in(&refs).expect("cluster");
        Self {
            controllers: (0..replicas).map(|_| None).collect(),
            cluster,
            nets,
        }
    }

    fn start(&mut self, i: usize) {
        let ns = self.cluster.namespace().to_string();
        let kubeconfig = self.cluster.kubeconfig(i).as_os_str().to_owned();
        let args = [
            "--namespace",
            &ns,
            "--config-namespace",
            &ns,
            "--load-balancer-class",
            CLASS,
            "--announce-classless",
            "false",
            "--lease-duration",
            "2s",
            "--renew-interval",
            "500ms",
            "--renew-deadline",
            "1500ms",
            "--metrics-addr",
            "127.0.0.1:7473",
        ];
        let c = Agent::start_controller(&self.nets[i], &args, &[("KUBECONFIG", &kubeconfig)])
            .expect("controller");
        self.controllers[i] = Some(c);
    }

    fn pool(&self, name: &str, spec: Value) {
        self.cluster
            .create(
                &IP_ADDRESS_POOLS,
                json!({"metadata": {"name": name}, "spec": spec}),
            )
            .expect("pool");
    }

    fn service(&self, name: &str, extra: Value) {
        let mut svc = json!({
            "metadata": {"name": name},
            "spec": {
                "type": "LoadBalancer",
                "loadBalancerClass": CLASS,
                "ipFamilies": ["IPv4"],
                "ipFamilyPolicy": "SingleStack",
                "ports": [{"port": 80, "protocol": "TCP"}],
            }
        });
        merge(&mut svc, extra);
        self.cluster.create(&SERVICES, svc).expect("service");
    }

    /// Changes an object with `f`, again from the current one when a
    /// writer (the controller's status write) came first.
    fn edit(&self, gvr: &speaker_tests::apiserver::Gvr, name: &str, f: impl Fn(&mut Value)) {
        for _ in 0..20 {
            let mut obj = self.cluster.get(gvr, name).expect("get").expect("exists");
            f(&mut obj);
            if self.cluster.replace(gvr, obj).is_ok() {
                return;
            }
        }
        panic!("cannot edit {name}");
    }

    /// The addresses `name`'s status shows.
    fn ips(&self, name: &str) -> Vec<String> {
        let svc = self.cluster.get(&SERVICES, name).ok().flatten();
        ingress(svc.as_ref())
    }

    /// Waits until `name`'s status shows `want`; fails with what it shows
    /// and the controllers' logs.
    fn expect_ips(&self, name: &str, want: &[&str]) {
        let ok = wait_for(Duration::from_secs(10), || self.ips(name) == want);
        assert!(
            ok.is_some(),
            "{name}: status shows {:?}, expected {want:?}\n{}",
            self.ips(name),
            self.logs()
        );
    }

    /// The notes of the Events of `reason` about `name`.
    fn events(&self, name: &str, reason: &str) -> Vec<Value> {
        let evs = self.cluster.list(&EVENTS_V1).unwrap_or_default();
        evs.into_iter()
            .filter(|e| e["regarding"]["name"] == name && e["reason"] == reason)
            .collect()
    }

    fn wait_event(&self, name: &str, reason: &str, contains: &str) -> Value {
        let mut found = None;
        wait_for(Duration::from_secs(10), || {
            found = self
                .events(name, reason)
                .into_iter()
                .find(|e| e["note"].as_str().is_some_and(|n| n.contains(contains)));
            found.is_some()
        });
        found.unwrap_or_else(|| {
            panic!(
                "no {reason} Event on {name} saying {contains:?}; events: {:?}\n{}",
                self.events(name, reason),
                self.logs()
            )
        })
    }

    fn holder(&self) -> Option<String> {
        let lease = self.cluster.get(&LEASES, "speaker-controller").ok()??;
        lease["spec"]["holderIdentity"]
            .as_str()
            .filter(|h| !h.is_empty())
            .map(str::to_string)
    }

    /// Waits until controller `i` holds the Lease and has rebuilt its
    /// state (after a crash, a standby waits out the lease first).
    fn wait_active(&self, i: usize) {
        let c = self.controllers[i].as_ref().expect("controller");
        let active = wait_for(Duration::from_secs(10), || {
            let log = c.log();
            self.holder().is_some_and(|h| log.contains(&h)) && log.contains("state rebuilt")
        });
        assert!(
            active.is_some(),
            "controller {i} never became active\n{}",
            self.logs()
        );
    }

    /// Every request the controllers made is one deploy/ grants them
    /// (`speaker::k8s::access::CONTROLLER`, which a test compares with the
    /// manifests). Against the stand-in only, which records requests.
    fn assert_granted(&self) {
        if let Some(server) = self.cluster.stand_in() {
            let ns = self.cluster.namespace();
            let seen = server.stats().accesses;
            let extra = speaker_tests::rbac::ungranted(&seen, CONTROLLER_ACCESS, ns, ns);
            assert!(extra.is_empty(), "requests RBAC does not grant: {extra:#?}");
        }
    }

    fn logs(&self) -> String {
        self.controllers
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, c)| format!("--- controller {i}:\n{}", c.log()))
            .collect()
    }
}

fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (slot, v) => *slot = v,
    }
}

fn ingress(svc: Option<&Value>) -> Vec<String> {
    svc.and_then(|s| s["status"]["loadBalancer"]["ingress"].as_array())
        .map(|a| {
            a.iter()
                .filter_map(|i| i["ip"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Every address held by one Service at most, but for those that asked
/// to share.
fn assert_no_address_twice(bed: &Bed) {
    let mut by_ip: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let services = bed.cluster.list(&SERVICES).expect("services");
    let sharing = |s: &Value| !s["metadata"]["annotations"]["metallb.io/allow-shared-ip"].is_null();
    for svc in services.iter().filter(|s| !sharing(s)) {
        let name = svc["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        for ip in ingress(Some(svc)) {
            by_ip.entry(ip).or_default().push(name.clone());
        }
    }
    let twice: Vec<_> = by_ip.iter().filter(|(_, s)| s.len() > 1).collect();
    assert!(
        twice.is_empty(),
        "addresses given twice: {twice:?}\n{}",
        bed.logs()
    );
}

#[test]
fn services_get_addresses_by_metallbs_rules_and_refusals_are_events() {
    let mut bed = Bed::new(1);
    bed.pool("main", json!({"addresses": ["198.18.1.10-198.18.1.12"]}));
    bed.pool(
        "manual",
        json!({"addresses": ["198.18.2.10-198.18.2.11"], "autoAssign": false}),
    );
    bed.pool(
        "shared",
        json!({"addresses": ["198.18.4.10/32"], "autoAssign": false}),
    );
    bed.start(0);

    // Rows: (Service, what it adds to the base, the addresses it must get).
    let rows: &[(&str, Value, &[&str])] = &[
        ("auto", json!({}), &["198.18.1.10"]),
        (
            "by-ip",
            json!({"metadata": {"annotations": {"metallb.io/loadBalancerIPs": "198.18.1.12"}}}),
            &["198.18.1.12"],
        ),
        (
            "by-pool",
            json!({"metadata": {"annotations": {"metallb.io/address-pool": "manual"}}}),
            &["198.18.2.10"],
        ),
        (
            "legacy-spec",
            json!({"spec": {"loadBalancerIP": "198.18.2.11"}}),
            &["198.18.2.11"],
        ),
        (
            "not-ours",
            json!({"spec": {"loadBalancerClass": "other.example/lb"}}),
            &[],
        ),
        ("cluster-ip", json!({"spec": {"type": "ClusterIP"}}), &[]),
    ];
    for (name, extra, _) in rows {
        bed.service(name, extra.clone());
    }
    for (name, _, want) in rows {
        if !want.is_empty() {
            bed.expect_ips(name, want);
        }
    }
    let ev = bed.wait_event("auto", "IPAllocated", "198.18.1.10");
    assert_eq!(ev["type"], "Normal");
    for name in ["not-ours", "cluster-ip"] {
        assert!(bed.ips(name).is_empty(), "{name} was given an address");
    }

    // Refusals: a Warning Event each, the status left empty.
    bed.service(
        "unknown-pool",
        json!({"metadata": {"annotations": {"metallb.io/address-pool": "nope"}}}),
    );
    bed.wait_event("unknown-pool", "AllocationFailed", "\"nope\"");
    bed.service(
        "taken",
        json!({"metadata": {"annotations": {"metallb.io/loadBalancerIPs": "198.18.1.10"}}}),
    );
    let ev = bed.wait_event("taken", "AllocationFailed", "in use");
    assert_eq!(ev["type"], "Warning");
    bed.service("second", json!({}));
    bed.expect_ips("second", &["198.18.1.11"]);
    bed.service("third", json!({}));
    bed.wait_event("third", "AllocationFailed", "main");
    assert!(bed.ips("third").is_empty());

    // Sharing: same key, other ports; not with another key.
    let share = |key: &str, port: u16| {
        json!({
            "metadata": {"annotations": {"metallb.io/allow-shared-ip": key,
                                         "metallb.io/loadBalancerIPs": "198.18.4.10"}},
            "spec": {"ports": [{"port": port, "protocol": "TCP"}]}
        })
    };
    bed.service("share-a", share("web", 443));
    bed.service("share-b", share("web", 8443));
    bed.expect_ips("share-a", &["198.18.4.10"]);
    bed.expect_ips("share-b", &["198.18.4.10"]);
    bed.service("share-c", share("other", 80));
    bed.wait_event("share-c", "AllocationFailed", "198.18.4.10");

    // A deleted Service frees its address for the ones waiting: the one
    // that asked for it, then one that asked for any.
    bed.cluster.delete(&SERVICES, "auto").expect("delete");
    bed.expect_ips("taken", &["198.18.1.10"]);
    assert!(bed.ips("third").is_empty());
    bed.cluster.delete(&SERVICES, "second").expect("delete");
    bed.expect_ips("third", &["198.18.1.11"]);

    // No longer a LoadBalancer: the status is cleared, the address freed.
    bed.edit(&SERVICES, "by-ip", |s| {
        s["spec"]["type"] = json!("ClusterIP")
    });
    bed.expect_ips("by-ip", &[]);
    bed.service("after", json!({}));
    bed.expect_ips("after", &["198.18.1.12"]);

    // The Events were each posted once, however often the Service was seen.
    assert_eq!(bed.events("auto", "IPAllocated").len(), 1);
    assert_eq!(bed.events("unknown-pool", "AllocationFailed").len(), 1);
    assert_no_address_twice(&bed);
    bed.assert_granted();
}

#[test]
fn a_pool_edit_that_leaves_an_address_outside_every_pool_is_reported_not_yanked() {
    let mut bed = Bed::new(1);
    bed.pool("main", json!({"addresses": ["198.18.1.10-198.18.1.12"]}));
    bed.start(0);
    bed.service("web", json!({}));
    bed.expect_ips("web", &["198.18.1.10"]);

    bed.edit(&IP_ADDRESS_POOLS, "main", |p| {
        p["spec"]["addresses"] = json!(["198.18.3.10-198.18.3.12"]);
    });
    bed.wait_event("web", "ConfigurationProblem", "in no IPAddressPool");
    bed.service("new", json!({}));
    bed.expect_ips("new", &["198.18.3.10"]);
    assert_eq!(bed.ips("web"), ["198.18.1.10"], "the address was yanked");
}

#[test]
fn pool_status_counts_what_is_assigned_as_metallb_shows_it() {
    let mut bed = Bed::new(1);
    // 14 addresses: the /28's network and broadcast are left out.
    bed.pool("main", json!({"addresses": ["198.18.1.0/28"]}));
    bed.start(0);
    for name in ["a", "b", "c"] {
        bed.service(name, json!({}));
    }
    let status = |bed: &Bed| {
        let pool = bed.cluster.get(&IP_ADDRESS_POOLS, "main").ok().flatten();
        pool.map(|p| p["status"].clone()).unwrap_or_default()
    };
    let counts = |assigned: u64| {
        json!({"assignedIPv4": assigned, "assignedIPv6": 0,
               "availableIPv4": 14 - assigned, "availableIPv6": 0})
    };
    let shows = |bed: &Bed, want: Value| {
        let ok = wait_for(Duration::from_secs(10), || status(bed) == want);
        assert!(
            ok.is_some(),
            "pool status {} != {want}\n{}",
            status(bed),
            bed.logs()
        );
    };
    shows(&bed, counts(3));
    // The pool's counts come from the allocations, which may show before
    // the last Service's status write has landed: wait for those first.
    let written = wait_for(Duration::from_secs(10), || {
        ["a", "b", "c"].iter().all(|n| !bed.ips(n).is_empty())
    });
    assert!(written.is_some(), "statuses not written\n{}", bed.logs());
    if let Some(server) = bed.cluster.stand_in() {
        // The pool's status, written by the controller, decides no Service
        // again: nothing more is written to Services.
        server.reset_stats();
        std::thread::sleep(Duration::from_millis(2500));
        assert_eq!(server.stats().resource("services").writes, 0);
    }
    bed.cluster.delete(&SERVICES, "b").expect("delete");
    shows(&bed, counts(2));
    // The same figures on /metrics, under MetalLB's names.
    let page = get(&bed.nets[0], "/metrics").unwrap_or_default();
    for line in [
        "metallb_allocator_addresses_in_use_total{pool=\"main\"} 2.0",
        "metallb_allocator_addresses_total{pool=\"main\"} 14.0",
    ] {
        assert!(page.lines().any(|l| l == line), "{line} not in\n{page}");
    }
}

#[test]
fn a_restarted_controller_keeps_every_address_and_writes_nothing() {
    let mut bed = Bed::new(1);
    bed.pool("main", json!({"addresses": ["198.18.1.1-198.18.1.99"]}));
    bed.start(0);
    for i in 0..20 {
        bed.service(&format!("svc-{i}"), json!({}));
    }
    let all_assigned = |bed: &Bed| {
        wait_for(Duration::from_secs(20), || {
            (0..20).all(|i| bed.ips(&format!("svc-{i}")).len() == 1)
        })
        .is_some()
    };
    assert!(all_assigned(&bed), "{}", bed.logs());
    let before: Vec<Vec<String>> = (0..20).map(|i| bed.ips(&format!("svc-{i}"))).collect();

    // A crash, then a new process; older Services are restored first.
    if let Some(c) = bed.controllers[0].take() {
        c.signal(libc::SIGKILL);
    }
    if let Some(server) = bed.cluster.stand_in() {
        server.reset_stats();
    }
    bed.start(0);
    bed.service("svc-new", json!({}));
    bed.expect_ips("svc-new", &["198.18.1.21"]);
    let after: Vec<Vec<String>> = (0..20).map(|i| bed.ips(&format!("svc-{i}"))).collect();
    assert_eq!(before, after, "addresses moved across a restart");
    if let Some(server) = bed.cluster.stand_in() {
        // One status write: the new Service's.
        let writes = server.stats().resource("services").writes;
        assert_eq!(writes, 1, "status writes after the restart\n{}", bed.logs());
    }
    assert_no_address_twice(&bed);
}

#[test]
fn of_two_controllers_one_writes_and_the_standby_takes_over_when_it_dies() {
    let mut bed = Bed::new(2);
    bed.pool("main", json!({"addresses": ["198.18.1.1-198.18.1.254"]}));
    bed.start(0);
    bed.start(1);
    for i in 0..20 {
        bed.service(&format!("a-{i}"), json!({}));
    }
    assert!(
        wait_for(Duration::from_secs(20), || {
            (0..20).all(|i| bed.ips(&format!("a-{i}")).len() == 1)
        })
        .is_some(),
        "{}",
        bed.logs()
    );
    let first = bed.holder().expect("a holder");
    // Every allocation came from the holder.
    let writers: BTreeSet<String> = (0..20)
        .flat_map(|i| bed.events(&format!("a-{i}"), "IPAllocated"))
        .filter_map(|e| e["reportingInstance"].as_str().map(str::to_string))
        .collect();
    assert_eq!(writers, BTreeSet::from([first.clone()]), "{}", bed.logs());

    // Killed mid-allocation: more Services created, then the active one
    // dies at once; the standby takes over and finishes.
    let active = bed
        .controllers
        .iter()
        .position(|c| c.as_ref().is_some_and(|c| c.log().contains(&first)))
        .expect("the holder's process");
    for i in 0..30 {
        bed.service(&format!("b-{i}"), json!({}));
    }
    if let Some(c) = bed.controllers[active].take() {
        c.signal(libc::SIGKILL);
    }
    assert!(
        wait_for(Duration::from_secs(20), || {
            (0..30).all(|i| bed.ips(&format!("b-{i}")).len() == 1)
        })
        .is_some(),
        "{}",
        bed.logs()
    );
    let second = bed.holder().expect("a holder");
    assert_ne!(first, second, "the standby did not take the Lease");
    assert_no_address_twice(&bed);
}

#[test]
fn a_stopped_controller_hands_over_at_once() {
    let mut bed = Bed::new(2);
    bed.pool("main", json!({"addresses": ["198.18.1.1-198.18.1.254"]}));
    bed.start(0);
    assert!(wait_for(Duration::from_secs(10), || bed.holder().is_some()).is_some());
    bed.start(1);
    let first = bed.holder().expect("holder");
    let mut c = bed.controllers[0].take().expect("controller");
    assert!(c.terminate().expect("stop").success(), "{}", c.log());
    // Well before the 2 s lease would expire.
    let took = wait_for(Duration::from_secs(5), || {
        bed.holder().is_some_and(|h| h != first)
    })
    .unwrap_or_else(|| panic!("no takeover\n{}", bed.logs()));
    assert!(took < Duration::from_millis(1500), "takeover took {took:?}");
    bed.service("web", json!({}));
    bed.expect_ips("web", &["198.18.1.1"]);
    bed.assert_granted();
}

/// A small deterministic generator (xorshift64*), so a failing sequence
/// can be replayed from the seed it prints.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// Every Service's status, read at one moment.
fn statuses(bed: &Bed) -> BTreeMap<String, (bool, Vec<String>)> {
    bed.cluster
        .list(&SERVICES)
        .expect("services")
        .iter()
        .map(|s| {
            let name = s["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            (
                name,
                (s["spec"]["type"] == "LoadBalancer", ingress(Some(s))),
            )
        })
        .collect()
}

/// Waits until the statuses stop changing for half a second.
fn settle(bed: &Bed) -> BTreeMap<String, (bool, Vec<String>)> {
    let mut last = statuses(bed);
    let mut since = std::time::Instant::now();
    let start = since;
    while since.elapsed() < Duration::from_millis(500) && start.elapsed() < Duration::from_secs(15)
    {
        std::thread::sleep(Duration::from_millis(50));
        let now = statuses(bed);
        if now != last {
            (last, since) = (now, std::time::Instant::now());
        }
    }
    last
}

#[test]
fn random_changes_and_restarts_never_give_an_address_twice_nor_lose_one() {
    let seed = std::env::var("SPEAKER_PROPTEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_1234_u64);
    let mut rng = Rng(seed | 1);
    let mut bed = Bed::new(1);
    // Twelve addresses for up to fourteen Services.
    bed.pool("a", json!({"addresses": ["198.18.1.1-198.18.1.8"]}));
    let wide = json!(["198.18.5.1-198.18.5.4"]);
    let narrow = json!(["198.18.5.1-198.18.5.2"]);
    bed.pool("b", json!({"addresses": wide}));
    bed.start(0);
    let names: Vec<String> = (0..14).map(|i| format!("s{i}")).collect();
    let mut before = settle(&bed);
    let mut restarts = 0;
    let mut present: BTreeSet<String> = BTreeSet::new();
    for round in 0..10 {
        let mut touched = BTreeSet::new();
        let mut ops = Vec::new();
        for _ in 0..6 {
            let name = names[rng.below(names.len() as u64) as usize].clone();
            let exists = present.contains(&name);
            let op = match rng.below(10) {
                0..=3 if !exists => {
                    bed.service(&name, json!({}));
                    present.insert(name.clone());
                    "create"
                }
                0..=1 => {
                    bed.cluster.delete(&SERVICES, &name).expect("delete");
                    present.remove(&name);
                    "delete"
                }
                2..=3 => {
                    let lb = rng.below(3) > 0;
                    bed.edit(&SERVICES, &name, |s| {
                        s["spec"]["type"] = json!(if lb { "LoadBalancer" } else { "ClusterIP" });
                    });
                    "retype"
                }
                4..=6 if exists => {
                    let ip = format!("198.18.1.{}", 1 + rng.below(8));
                    bed.edit(&SERVICES, &name, |s| {
                        s["metadata"]["annotations"] = json!({"metallb.io/loadBalancerIPs": ip});
                    });
                    "request"
                }
                7 => {
                    let to = if rng.below(2) == 0 { &wide } else { &narrow };
                    bed.edit(&IP_ADDRESS_POOLS, "b", |p| {
                        p["spec"]["addresses"] = to.clone()
                    });
                    "pool edit"
                }
                8 if restarts < 3 => {
                    restarts += 1;
                    let c = bed.controllers[0].take().expect("controller");
                    if rng.below(2) == 0 {
                        c.signal(libc::SIGKILL);
                    } else {
                        c.signal(libc::SIGTERM);
                    }
                    drop(c);
                    bed.start(0);
                    bed.wait_active(0);
                    "restart"
                }
                _ => continue,
            };
            ops.push(format!("{op} {name}"));
            touched.insert(name);
        }
        let after = settle(&bed);
        let context = || format!("seed {seed}, round {round}, ops {ops:?}\n{}", bed.logs());
        let mut holders: BTreeMap<&String, &String> = BTreeMap::new();
        for (name, (lb, ips)) in &after {
            assert!(
                *lb || ips.is_empty(),
                "{name} is no LoadBalancer but shows {ips:?}; {}",
                context()
            );
            for ip in ips {
                if let Some(other) = holders.insert(ip, name) {
                    panic!("{ip} given to {other} and {name}; {}", context());
                }
            }
            // Untouched, it keeps what it had (restarts and pool edits too).
            if !touched.contains(name)
                && let Some((_, had)) = before.get(name)
                && !had.is_empty()
            {
                assert_eq!(had, ips, "{name} lost its address; {}", context());
            }
        }
        before = after;
    }
}

/// `GET path` on the controller's metrics port, from inside its namespace;
/// the whole reply, or `None` when nothing answers within a second.
fn get(ns: &Netns, path: &str) -> Option<String> {
    use std::io::{Read as _, Write as _};
    ns.enter(|| {
        let mut conn = std::net::TcpStream::connect("127.0.0.1:7473").ok()?;
        conn.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        conn.write_all(request.as_bytes()).ok()?;
        let mut reply = String::new();
        conn.read_to_string(&mut reply).ok()?;
        Some(reply)
    })
    .ok()
    .flatten()
}

/// Idle connections, or running out of file descriptors, must not take the
/// health endpoint down: it once ended its accept loop on the first
/// failed accept, for good.
#[test]
fn the_health_endpoint_outlives_idle_connections_and_running_out_of_descriptors() {
    let mut bed = Bed::new(1);
    bed.start(0);
    bed.wait_active(0);
    let ns = &bed.nets[0];
    let healthy = || get(ns, "/healthz").is_some_and(|r| r.starts_with("HTTP/1.1 200 OK"));
    assert!(healthy());

    let idle = |n: usize| -> Vec<std::net::TcpStream> {
        ns.enter(|| {
            (0..n)
                .filter_map(|_| std::net::TcpStream::connect("127.0.0.1:7473").ok())
                .collect()
        })
        .expect("connect")
    };
    // A connection that sends nothing is closed by the server.
    let held = idle(3);
    let closed = wait_for(Duration::from_secs(10), || {
        held.iter().all(|c| {
            use std::io::Read as _;
            let _ = c.set_read_timeout(Some(Duration::from_millis(50)));
            matches!((&mut &*c).read(&mut [0u8; 1]), Ok(0))
        })
    });
    assert!(closed.is_some(), "idle connections were kept open");

    // Few descriptors left: accepting fails for a while.
    let pid = bed.controllers[0].as_ref().expect("controller").pid();
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fds")
        .count() as u64;
    let limit = libc::rlimit {
        rlim_cur: open + 10,
        rlim_max: open + 10,
    };
    // SAFETY: prlimit(2) on a child of this process, with a valid struct.
    let set = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &limit,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(set, 0, "prlimit");
    let crowd = idle(58);
    std::thread::sleep(Duration::from_secs(1));
    drop(crowd);
    let back = wait_for(Duration::from_secs(10), healthy);
    assert!(back.is_some(), "/healthz is gone\n{}", bed.logs());
    assert!(bed.controllers[0].as_mut().expect("c").running());
}

/// A TCP connection from `source` (any 127/8 address: the namespace's
/// loopback has them all) to the metrics port, sending nothing.
fn idle_from(source: std::net::Ipv4Addr) -> Option<std::net::TcpStream> {
    use std::os::fd::FromRawFd as _;
    let sockaddr = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: a fresh socket, bound and connected with valid sockaddr_in
    // structs; the fd goes to a TcpStream that owns it, or is closed.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        if fd < 0 {
            return None;
        }
        let from = sockaddr(source, 0);
        let to = sockaddr(std::net::Ipv4Addr::LOCALHOST, 7473);
        let ok = libc::bind(fd, (&raw const from).cast(), len) == 0
            && libc::connect(fd, (&raw const to).cast(), len) == 0;
        if !ok {
            libc::close(fd);
            return None;
        }
        Some(std::net::TcpStream::from_raw_fd(fd))
    }
}

/// The agent's listener is on the host network, reachable from the LAN: a
/// crowd of idle connections from many addresses must not keep the
/// kubelet's probe out. One peer gets a few; at the cap, the oldest go.
#[test]
fn a_crowd_of_idle_connections_cannot_keep_the_probe_out() {
    let mut bed = Bed::new(1);
    bed.start(0);
    bed.wait_active(0);
    let ns = &bed.nets[0];
    let crowd: Vec<std::net::TcpStream> = ns
        .enter(|| {
            (0..40u8)
                .flat_map(|host| (0..6).map(move |_| host))
                .filter_map(|host| idle_from(std::net::Ipv4Addr::new(127, 0, 1, host)))
                .collect()
        })
        .expect("crowd");
    assert!(
        crowd.len() >= 200,
        "the kernel accepted {} connections",
        crowd.len()
    );
    // The probe, while the crowd holds on.
    let started = std::time::Instant::now();
    let reply = get(ns, "/healthz").unwrap_or_default();
    assert!(
        reply.starts_with("HTTP/1.1 200 OK"),
        "{reply:?}\n{}",
        bed.logs()
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    drop(crowd);
}
