//! One test (at least) per rule of docs/eligibility.md.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::selectors::Selector;
use super::*;

const SYSTEM: &str = "metallb-system";

fn from<T: DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("test object")
}

/// A LoadBalancer Service in `default` with these ingress IPs; `spec`
/// fields are merged over `type: LoadBalancer`.
fn service(name: &str, ips: &[&str], spec: Value) -> Service {
    let mut full = json!({"type": "LoadBalancer"});
    if let (Some(full), Value::Object(extra)) = (full.as_object_mut(), spec) {
        full.extend(extra);
    }
    let ingress: Vec<Value> = ips.iter().map(|ip| json!({"ip": ip})).collect();
    from(json!({
        "metadata": {"namespace": "default", "name": name},
        "spec": full,
        "status": {"loadBalancer": {"ingress": ingress}},
    }))
}

fn lb(name: &str, ips: &[&str]) -> Service {
    service(name, ips, json!({}))
}

fn local(name: &str, ips: &[&str]) -> Service {
    service(name, ips, json!({"externalTrafficPolicy": "Local"}))
}

/// An EndpointSlice of Service `default/service`: (nodeName, ready).
fn slice(service: &str, endpoints: &[(Option<&str>, Option<bool>)]) -> EndpointSlice {
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|(node, ready)| {
            let mut e = json!({"addresses": ["10.0.0.1"], "conditions": {}});
            if let Some(node) = node {
                e["nodeName"] = json!(node);
            }
            if let Some(ready) = ready {
                e["conditions"]["ready"] = json!(ready);
            }
            e
        })
        .collect();
    from(json!({
        "metadata": {
            "namespace": "default",
            "name": format!("{service}-abcde"),
            "labels": {SERVICE_NAME_LABEL: service},
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
    }))
}

/// A ready endpoint of `service` on each node.
fn ready_on(service: &str, nodes: &[&str]) -> EndpointSlice {
    let endpoints: Vec<_> = nodes.iter().map(|n| (Some(*n), Some(true))).collect();
    slice(service, &endpoints)
}

/// A Ready node with these labels.
fn node(name: &str, labels: Value) -> Node {
    node_with(name, labels, json!([{"type": "Ready", "status": "True"}]))
}

fn node_with(name: &str, labels: Value, conditions: Value) -> Node {
    from(json!({
        "metadata": {"name": name, "labels": labels},
        "status": {"conditions": conditions},
    }))
}

fn pool(name: &str, addresses: &[&str]) -> IPAddressPool {
    pool_labelled(name, addresses, json!({}))
}

fn pool_labelled(name: &str, addresses: &[&str], labels: Value) -> IPAddressPool {
    from(json!({
        "metadata": {"namespace": SYSTEM, "name": name, "labels": labels},
        "spec": {"addresses": addresses},
    }))
}

fn advertisement(name: &str, spec: Value) -> L2Advertisement {
    from(json!({
        "metadata": {"namespace": SYSTEM, "name": name},
        "spec": spec,
    }))
}

pub(super) fn classless() -> Settings {
    Settings {
        load_balancer_class: None,
        announce_classless: true,
    }
}

pub(super) fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

/// Expected `VipPlan::nodes`: node → interfaces (empty = default).
fn nodes(list: &[(&str, &[&str])]) -> Nodes {
    let map: BTreeMap<String, BTreeSet<String>> = list
        .iter()
        .map(|(n, ifs)| (n.to_string(), ifs.iter().map(|s| s.to_string()).collect()))
        .collect();
    std::sync::Arc::new(map)
}

fn issue(kind: &'static str, namespace: &str, name: &str, message: &str) -> Issue {
    Issue {
        object: ObjectRef::new(kind, namespace, name),
        message: message.to_owned(),
    }
}

/// Front nodes a and b, back node c; one pool, one advertisement for all.
pub(super) fn cluster() -> Snapshot {
    Snapshot {
        nodes: vec![
            node("a", json!({"node-role": "front"})),
            node("b", json!({"node-role": "front"})),
            node("c", json!({"node-role": "back"})),
        ],
        pools: vec![pool("front", &["198.18.0.0/28", "2001:db8::/120"])],
        advertisements: vec![advertisement("l2", json!({}))],
        ..Snapshot::default()
    }
}

/// The nodes the plan allows for `vip`, `None` when it is not in the plan.
fn planned(snapshot: &Snapshot, settings: &Settings, vip: &str) -> Option<Vec<String>> {
    let plan = plan(snapshot, settings);
    plan.vips
        .get(&ip(vip))
        .map(|v| v.nodes.keys().cloned().collect())
}

fn names(list: &[&str]) -> Option<Vec<String>> {
    Some(list.iter().map(|s| s.to_string()).collect())
}

// Rule 1: Services.

#[test]
fn only_load_balancer_services_are_announced() {
    let mut s = cluster();
    s.services = vec![
        lb("web", &["198.18.0.1"]),
        service("cip", &["198.18.0.2"], json!({"type": "ClusterIP"})),
        service("np", &["198.18.0.3"], json!({"type": "NodePort"})),
        service("untyped", &["198.18.0.4"], json!({"type": null})),
    ];
    s.endpoint_slices = ["web", "cip", "np", "untyped"]
        .map(|n| ready_on(n, &["a"]))
        .to_vec();
    let plan = plan(&s, &classless());
    assert_eq!(
        plan.vips.keys().copied().collect::<Vec<_>>(),
        [ip("198.18.0.1")]
    );
    assert_eq!(plan.issues, []);
}

#[test]
fn load_balancer_class_selects_services() {
    let class = |c: Option<&str>| service("web", &["198.18.0.1"], json!({"loadBalancerClass": c}));
    #[rustfmt::skip]
    let cases = [
        // settings class,     classless, service class,       announced
        (None,                 true,      None,                true),
        (None,                 false,     None,                false),
        (None,                 true,      Some("other.io/lb"), false),
        (Some("speaker.io/l2"), false,    Some("speaker.io/l2"), true),
        (Some("speaker.io/l2"), false,    Some("other.io/lb"), false),
        (Some("speaker.io/l2"), false,    None,                false),
        (Some("speaker.io/l2"), true,     None,                true),
        (Some("speaker.io/l2"), true,     Some("other.io/lb"), false),
    ];
    for (ours, announce_classless, theirs, announced) in cases {
        let mut s = cluster();
        s.services = vec![class(theirs)];
        s.endpoint_slices = vec![ready_on("web", &["a"])];
        let settings = Settings {
            load_balancer_class: ours.map(str::to_owned),
            announce_classless,
        };
        let plan = plan(&s, &settings);
        assert_eq!(
            !plan.vips.is_empty(),
            announced,
            "{ours:?} {announce_classless} {theirs:?}"
        );
        assert_eq!(plan.issues, [], "ignored silently");
    }
}

#[test]
fn vips_are_ingress_ips_of_both_families() {
    let mut s = cluster();
    let mut web = lb("web", &["198.18.0.1", "2001:db8::1", "198.18.0.1"]);
    if let Some(ingress) = web
        .status
        .as_mut()
        .and_then(|st| st.load_balancer.as_mut())
        .and_then(|lb| lb.ingress.as_mut())
    {
        ingress.push(from(json!({"hostname": "lb.example.com"})));
    }
    s.services = vec![web];
    s.endpoint_slices = vec![ready_on("web", &["a"])];
    let plan = plan(&s, &classless());
    let vips: Vec<_> = plan.vips.keys().copied().collect();
    assert_eq!(vips, [ip("198.18.0.1"), ip("2001:db8::1")]);
    assert_eq!(plan.issues, []);
}

#[test]
fn unparsable_ingress_ip_is_an_issue_on_the_service() {
    let mut s = cluster();
    s.services = vec![lb("web", &["198.18.0.300", "198.18.0.1", "fe80::1%eth0"])];
    s.endpoint_slices = vec![ready_on("web", &["a"])];
    let plan = plan(&s, &classless());
    assert_eq!(
        plan.vips.keys().copied().collect::<Vec<_>>(),
        [ip("198.18.0.1")]
    );
    assert_eq!(
        plan.issues,
        [
            issue(
                "Service",
                "default",
                "web",
                "bad address \"198.18.0.300\" in status.loadBalancer.ingress"
            ),
            issue(
                "Service",
                "default",
                "web",
                "bad address \"fe80::1%eth0\" in status.loadBalancer.ingress"
            ),
        ]
    );
}

// Rule 2: pools.

#[test]
fn range_entries_include_both_ends() {
    let mut s = cluster();
    s.pools = vec![pool("range", &["198.18.1.10-198.18.1.20"])];
    s.services = vec![lb(
        "web",
        &["198.18.1.9", "198.18.1.10", "198.18.1.20", "198.18.1.21"],
    )];
    s.endpoint_slices = vec![ready_on("web", &["a"])];
    let plan = plan(&s, &classless());
    let vips: Vec<_> = plan.vips.keys().copied().collect();
    assert_eq!(vips, [ip("198.18.1.10"), ip("198.18.1.20")]);
    assert_eq!(
        plan.vips[&ip("198.18.1.10")].pools,
        ["metallb-system/range"]
    );
}

#[test]
fn bad_pool_entry_is_an_issue_and_rest_of_pool_works() {
    let mut s = cluster();
    s.pools = vec![pool(
        "front",
        &["198.18.0.0/33", "198.18.0.0/28", "198.18.1.9-198.18.1.1"],
    )];
    s.services = vec![lb("web", &["198.18.0.1"])];
    s.endpoint_slices = vec![ready_on("web", &["a"])];
    let plan = plan(&s, &classless());
    assert_eq!(
        plan.vips[&ip("198.18.0.1")].nodes,
        nodes(&[("a", &[]), ("b", &[]), ("c", &[])])
    );
    assert_eq!(
        plan.issues,
        [
            issue(
                "IPAddressPool",
                SYSTEM,
                "front",
                "bad address entry \"198.18.0.0/33\": prefix length 33 too long"
            ),
            issue(
                "IPAddressPool",
                SYSTEM,
                "front",
                "bad address entry \"198.18.1.9-198.18.1.1\": range start is after its end"
            ),
        ]
    );
}

#[test]
fn vip_in_no_pool_is_an_issue_and_not_announced() {
    let mut s = cluster();
    s.services = vec![lb("web", &["198.18.0.1", "203.0.113.7"])];
    s.endpoint_slices = vec![ready_on("web", &["a"])];
    let plan = plan(&s, &classless());
    assert_eq!(
        plan.vips.keys().copied().collect::<Vec<_>>(),
        [ip("198.18.0.1")]
    );
    assert_eq!(
        plan.issues,
        [issue(
            "Service",
            "default",
            "web",
            "address 203.0.113.7 is in no IPAddressPool"
        )]
    );
}

#[test]
fn network_and_broadcast_of_a_cidr_are_refused_unless_listed() {
    let mut s = cluster();
    s.pools = vec![
        pool("edges", &["198.18.4.8/29"]),
        pool(
            "listed",
            &["198.18.5.8/29", "198.18.5.8/32", "198.18.5.15-198.18.5.15"],
        ),
    ];
    let vips = [
        "198.18.4.8",
        "198.18.4.9",
        "198.18.4.15",
        "198.18.5.8",
        "198.18.5.15",
    ];
    s.services = vec![lb("web", &vips)];
    s.endpoint_slices = vec![ready_on("web", &["a"])];
    let plan = plan(&s, &classless());
    assert_eq!(
        announced(&plan),
        [ip("198.18.4.9"), ip("198.18.5.8"), ip("198.18.5.15")]
    );
    let why = |ip: &str, what: &str| {
        issue(
            "Service",
            "default",
            "web",
            &format!(
                "address {ip} is the {what} address of a CIDR in IPAddressPool {SYSTEM}/edges, \
                 which is not announced; list it in the pool as a range or a /32 to announce it"
            ),
        )
    };
    assert_eq!(
        plan.issues,
        [
            why("198.18.4.15", "broadcast"),
            why("198.18.4.8", "network")
        ]
    );
}

#[test]
fn a_nodes_own_address_is_refused() {
    let mut s = cluster();
    s.nodes[1] = from(json!({
        "metadata": {"name": "b", "labels": {"node-role": "front"}},
        "status": {"addresses": [
            {"type": "Hostname", "address": "b"},
            {"type": "InternalIP", "address": "198.18.0.3"},
        ]},
    }));
    s.services = vec![lb("web", &["198.18.0.2", "198.18.0.3"])];
    s.endpoint_slices = vec![ready_on("web", &["a", "b"])];
    let plan = plan(&s, &classless());
    assert_eq!(announced(&plan), [ip("198.18.0.2")]);
    assert_eq!(
        plan.issues,
        [issue(
            "Service",
            "default",
            "web",
            "address 198.18.0.3 is an address of Node b, not a Service's; it is not announced"
        )]
    );
}

#[test]
fn service_selectors_choose_which_advertisement_announces_a_service() {
    let mut s = cluster();
    s.advertisements = vec![
        advertisement(
            "web-on-a",
            json!({
                "serviceSelectors": [{"matchLabels": {"app": "web"}}],
                "nodeSelectors": [{"matchLabels": {"kubernetes.io/hostname": "a"}}],
                "interfaces": ["eth1"],
            }),
        ),
        advertisement(
            "db-on-b",
            json!({
                "serviceSelectors": [{"matchExpressions": [{"key": "app", "operator": "In", "values": ["db"]}]}],
                "nodeSelectors": [{"matchLabels": {"kubernetes.io/hostname": "b"}}],
            }),
        ),
    ];
    s.nodes = ["a", "b", "c"]
        .map(|n| node(n, json!({"kubernetes.io/hostname": n})))
        .to_vec();
    let labelled = |name: &str, ip: &str, app: Option<&str>| {
        let mut svc = lb(name, &[ip]);
        if let Some(app) = app {
            svc.metadata.labels = Some([("app".to_owned(), app.to_owned())].into());
        }
        svc
    };
    s.services = vec![
        labelled("web", "198.18.0.1", Some("web")),
        labelled("db", "198.18.0.2", Some("db")),
        labelled("other", "198.18.0.3", None),
    ];
    s.endpoint_slices = ["web", "db", "other"]
        .map(|n| ready_on(n, &["a", "b", "c"]))
        .to_vec();
    let planned = plan(&s, &classless());
    let eth1: &[&str] = &["eth1"];
    assert_eq!(planned.vips[&ip("198.18.0.1")].nodes, nodes(&[("a", eth1)]));
    assert_eq!(planned.vips[&ip("198.18.0.2")].nodes, nodes(&[("b", &[])]));
    // Selected by no advertisement: in a pool, but no node announces it.
    assert!(planned.vips[&ip("198.18.0.3")].nodes.is_empty());

    // A bad selector selects nothing and says so.
    s.advertisements[0].spec.service_selectors = Some(vec![from(
        json!({"matchExpressions": [{"key": "app", "operator": "Bad"}]}),
    )]);
    let plan = plan(&s, &classless());
    assert!(plan.vips[&ip("198.18.0.1")].nodes.is_empty());
    assert!(
        plan.issues
            .iter()
            .any(|i| i.to_string().contains("serviceSelectors[0]")),
        "{:?}",
        plan.issues
    );
}

#[test]
fn an_unknown_advertisement_field_is_reported_and_the_rest_works() {
    let mut s = cluster();
    s.advertisements = vec![advertisement(
        "l2",
        json!({"interfaces": ["eth1"], "someFutureField": {"x": 1}}),
    )];
    s.services = vec![lb("web", &["198.18.0.1"])];
    s.endpoint_slices = vec![ready_on("web", &["a"])];
    let plan = plan(&s, &classless());
    assert_eq!(announced(&plan), [ip("198.18.0.1")]);
    assert_eq!(
        plan.issues,
        [issue(
            "L2Advertisement",
            SYSTEM,
            "l2",
            "field spec.someFutureField is not supported by this speaker and has no effect"
        )]
    );
}

#[test]
fn overlapping_pools_are_reported_once_each_and_share_the_vip() {
    let mut s = cluster();
    s.pools = vec![
        pool("one", &["198.18.0.0/28", "198.18.0.8-198.18.0.9"]),
        pool("two", &["198.18.0.8/29"]),
        pool("v6", &["2001:db8::/120"]),
    ];
    s.advertisements = vec![
        advertisement(
            "l2-one",
            json!({"ipAddressPools": ["one"], "interfaces": ["eth1"]}),
        ),
        advertisement(
            "l2-two",
            json!({"ipAddressPools": ["two"], "interfaces": ["eth2"]}),
        ),
    ];
    s.services = vec![lb("web", &["198.18.0.9"])];
    s.endpoint_slices = vec![ready_on("web", &["a"])];
    let plan = plan(&s, &classless());
    let vip = &plan.vips[&ip("198.18.0.9")];
    assert_eq!(vip.pools, ["metallb-system/one", "metallb-system/two"]);
    let both: &[&str] = &["eth1", "eth2"];
    assert_eq!(vip.nodes, nodes(&[("a", both), ("b", both), ("c", both)]));
    assert_eq!(
        plan.issues,
        [
            issue(
                "IPAddressPool",
                SYSTEM,
                "one",
                "overlaps IPAddressPool metallb-system/two"
            ),
            issue(
                "IPAddressPool",
                SYSTEM,
                "two",
                "overlaps IPAddressPool metallb-system/one"
            ),
        ]
    );
}

// Rule 3: advertisements select pools.

/// Pools "one" (198.18.0.0/28, tier=gold) and "two" (198.18.1.0/28,
/// tier=silver), a Service on each, and the given advertisements.
fn two_pools(ads: Vec<L2Advertisement>) -> Plan {
    let mut s = cluster();
    s.pools = vec![
        pool_labelled("one", &["198.18.0.0/28"], json!({"tier": "gold"})),
        pool_labelled("two", &["198.18.1.0/28"], json!({"tier": "silver"})),
    ];
    s.advertisements = ads;
    s.services = vec![lb("one", &["198.18.0.1"]), lb("two", &["198.18.1.1"])];
    s.endpoint_slices = vec![ready_on("one", &["a"]), ready_on("two", &["a"])];
    plan(&s, &classless())
}

/// Which of the two VIPs of `two_pools` have nodes.
fn announced(plan: &Plan) -> Vec<IpAddr> {
    plan.vips
        .iter()
        .filter(|(_, v)| !v.nodes.is_empty())
        .map(|(ip, _)| *ip)
        .collect()
}

#[test]
fn advertisement_without_pools_or_selectors_selects_all_pools() {
    for spec in [
        json!({}),
        json!({"ipAddressPools": [], "ipAddressPoolSelectors": []}),
    ] {
        let plan = two_pools(vec![advertisement("l2", spec)]);
        assert_eq!(announced(&plan), [ip("198.18.0.1"), ip("198.18.1.1")]);
        assert_eq!(plan.issues, []);
    }
    // MetalLB's documented minimal advertisement has no spec at all.
    let bare = from(json!({"metadata": {"namespace": SYSTEM, "name": "l2"}}));
    let plan = two_pools(vec![bare]);
    assert_eq!(announced(&plan), [ip("198.18.0.1"), ip("198.18.1.1")]);
}

#[test]
fn advertisement_selects_pools_by_name_in_its_namespace() {
    let plan = two_pools(vec![advertisement(
        "l2",
        json!({"ipAddressPools": ["two"]}),
    )]);
    assert_eq!(announced(&plan), [ip("198.18.1.1")]);
    assert_eq!(plan.issues, []);

    // The same names from another namespace select nothing there.
    let mut elsewhere = advertisement("l2", json!({}));
    elsewhere.metadata.namespace = Some("other".into());
    let mut named = advertisement("l2-named", json!({"ipAddressPools": ["one"]}));
    named.metadata.namespace = Some("other".into());
    let plan = two_pools(vec![elsewhere, named]);
    assert!(announced(&plan).is_empty());
    assert_eq!(
        plan.issues,
        [
            issue("L2Advertisement", "other", "l2", "selects no IPAddressPool"),
            issue(
                "L2Advertisement",
                "other",
                "l2-named",
                "selects no IPAddressPool"
            ),
            issue(
                "L2Advertisement",
                "other",
                "l2-named",
                "unknown IPAddressPool one"
            ),
        ]
    );
}

#[test]
fn advertisement_selects_pools_by_label_selector() {
    let spec = json!({"ipAddressPoolSelectors": [{"matchLabels": {"tier": "gold"}}]});
    let plan = two_pools(vec![advertisement("l2", spec)]);
    assert_eq!(announced(&plan), [ip("198.18.0.1")]);
    assert_eq!(plan.issues, []);
}

#[test]
fn pool_names_and_selectors_select_the_union() {
    let spec = json!({
        "ipAddressPools": ["two"],
        "ipAddressPoolSelectors": [{"matchLabels": {"tier": "gold"}}],
    });
    let plan = two_pools(vec![advertisement("l2", spec)]);
    assert_eq!(announced(&plan), [ip("198.18.0.1"), ip("198.18.1.1")]);
    assert_eq!(plan.issues, []);
}

#[test]
fn unknown_pool_name_is_an_issue_and_the_rest_works() {
    let spec = json!({"ipAddressPools": ["gone", "one"]});
    let plan = two_pools(vec![advertisement("l2", spec)]);
    assert_eq!(announced(&plan), [ip("198.18.0.1")]);
    assert_eq!(
        plan.issues,
        [issue(
            "L2Advertisement",
            SYSTEM,
            "l2",
            "unknown IPAddressPool gone"
        )]
    );
}

#[test]
fn advertisement_selecting_no_pool_is_an_issue() {
    let by_label = json!({"ipAddressPoolSelectors": [{"matchLabels": {"tier": "bronze"}}]});
    let plan = two_pools(vec![advertisement("l2", by_label)]);
    assert!(announced(&plan).is_empty());
    assert_eq!(
        plan.issues,
        [issue(
            "L2Advertisement",
            SYSTEM,
            "l2",
            "selects no IPAddressPool"
        )]
    );

    let by_name = json!({"ipAddressPools": ["gone"]});
    let plan = two_pools(vec![advertisement("l2", by_name)]);
    assert_eq!(
        plan.issues,
        [
            issue("L2Advertisement", SYSTEM, "l2", "selects no IPAddressPool"),
            issue(
                "L2Advertisement",
                SYSTEM,
                "l2",
                "unknown IPAddressPool gone"
            ),
        ]
    );
}

#[test]
fn vip_in_unadvertised_pool_is_planned_with_no_nodes() {
    // "two" may be a BGP pool: no Issue, but the VIP is listed so the agent
    // withdraws it.
    let plan = two_pools(vec![advertisement(
        "l2",
        json!({"ipAddressPools": ["one"]}),
    )]);
    let two = &plan.vips[&ip("198.18.1.1")];
    assert_eq!(two.nodes, nodes(&[]));
    assert_eq!(two.pools, ["metallb-system/two"]);
    assert_eq!(two.services, [ObjectRef::new("Service", "default", "two")]);
    assert_eq!(plan.issues, []);
}

// Rule 4: label selectors.

fn selector(v: Value) -> LabelSelector {
    from(v)
}

#[test]
fn label_selector_operators() {
    let labels: BTreeMap<String, String> = [("role", "front"), ("zone", "a")]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .into();
    let expr = |key: &str, op: &str, values: &[&str]| {
        selector(json!({"matchExpressions": [{"key": key, "operator": op, "values": values}]}))
    };
    let exists =
        |key: &str, op: &str| selector(json!({"matchExpressions": [{"key": key, "operator": op}]}));
    #[rustfmt::skip]
    let cases = [
        (selector(json!({})),                                       true),
        (selector(json!({"matchLabels": {}, "matchExpressions": []})), true),
        (selector(json!({"matchLabels": {"role": "front"}})),       true),
        (selector(json!({"matchLabels": {"role": "back"}})),        false),
        (selector(json!({"matchLabels": {"role": "front", "zone": "b"}})), false),
        (selector(json!({"matchLabels": {"missing": ""}})),         false),
        (expr("zone", "In", &["a", "b"]),                           true),
        (expr("zone", "In", &["b"]),                                false),
        (expr("missing", "In", &["a"]),                             false),
        (expr("zone", "NotIn", &["b"]),                             true),
        (expr("zone", "NotIn", &["a"]),                             false),
        (expr("missing", "NotIn", &["a"]),                          true),
        (exists("zone", "Exists"),                                  true),
        (exists("missing", "Exists"),                               false),
        (exists("zone", "DoesNotExist"),                            false),
        (exists("missing", "DoesNotExist"),                         true),
        (expr("zone", "Exists", &[]),                               true),
        (selector(json!({"matchLabels": {"role": "front"},
            "matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]})), false),
    ];
    for (sel, want) in cases {
        let parsed = Selector::parse(&sel).expect("valid selector");
        assert_eq!(parsed.matches(&labels), want, "{sel:?}");
    }
}

#[test]
fn bad_label_selectors_are_rejected() {
    let expr = |op: &str, values: Option<&[&str]>| {
        let mut e = json!({"key": "zone", "operator": op});
        if let Some(values) = values {
            e["values"] = json!(values);
        }
        selector(json!({"matchExpressions": [e]}))
    };
    #[rustfmt::skip]
    let cases = [
        (expr("In", None),                "operator In on key \"zone\" needs values"),
        (expr("In", Some(&[])),           "operator In on key \"zone\" needs values"),
        (expr("NotIn", None),             "operator NotIn on key \"zone\" needs values"),
        (expr("Exists", Some(&["a"])),    "operator Exists on key \"zone\" takes no values"),
        (expr("DoesNotExist", Some(&["a"])), "operator DoesNotExist on key \"zone\" takes no values"),
        (expr("in", Some(&["a"])),        "unknown operator \"in\" on key \"zone\""),
        (expr("Gt", Some(&["1"])),        "unknown operator \"Gt\" on key \"zone\""),
    ];
    for (sel, want) in cases {
        assert_eq!(Selector::parse(&sel), Err(want.to_owned()), "{sel:?}");
    }
}

/// The nodes that may announce 198.18.0.1 with these node selectors.
fn selected_nodes(node_selectors: Value) -> (Option<Vec<String>>, Vec<Issue>) {
    let mut s = cluster();
    s.advertisements = vec![advertisement(
        "l2",
        json!({"nodeSelectors": node_selectors}),
    )];
    s.services = vec![lb("web", &["198.18.0.1"])];
    s.endpoint_slices = vec![ready_on("web", &["a"])];
    let plan = plan(&s, &classless());
    let nodes = plan
        .vips
        .get(&ip("198.18.0.1"))
        .map(|v| v.nodes.keys().cloned().collect());
    (nodes, plan.issues)
}

#[test]
fn node_selectors_absent_empty_or_empty_selector_select_all_nodes() {
    for sel in [json!(null), json!([]), json!([{}])] {
        assert_eq!(
            selected_nodes(sel.clone()),
            (names(&["a", "b", "c"]), vec![]),
            "{sel}"
        );
    }
}

#[test]
fn node_selector_list_selects_the_union() {
    let sel = json!([
        {"matchLabels": {"node-role": "front"}},
        {"matchExpressions": [{"key": "node-role", "operator": "In", "values": ["back"]}]},
    ]);
    assert_eq!(selected_nodes(sel), (names(&["a", "b", "c"]), vec![]));
    let front = json!([{"matchLabels": {"node-role": "front"}}]);
    assert_eq!(selected_nodes(front), (names(&["a", "b"]), vec![]));
}

#[test]
fn bad_node_selector_is_an_issue_and_selects_no_node() {
    let bad = json!({"matchExpressions": [{"key": "node-role", "operator": "Equals", "values": ["front"]}]});
    let message =
        "nodeSelectors[0] selects nothing: unknown operator \"Equals\" on key \"node-role\"";
    assert_eq!(
        selected_nodes(json!([bad])),
        (
            names(&[]),
            vec![issue("L2Advertisement", SYSTEM, "l2", message)]
        )
    );
    // Only the bad selector of a list is dropped.
    let back = json!({"matchLabels": {"node-role": "back"}});
    assert_eq!(
        selected_nodes(json!([bad, back])),
        (
            names(&["c"]),
            vec![issue("L2Advertisement", SYSTEM, "l2", message)]
        )
    );
}

#[test]
fn bad_pool_selector_is_an_issue_and_selects_no_pool() {
    let bad =
        json!({"matchExpressions": [{"key": "tier", "operator": "Exists", "values": ["gold"]}]});
    let plan = two_pools(vec![advertisement(
        "l2",
        json!({"ipAddressPoolSelectors": [bad]}),
    )]);
    assert!(announced(&plan).is_empty());
    let message = "ipAddressPoolSelectors[0] selects nothing: operator Exists on key \"tier\" takes no values";
    assert_eq!(
        plan.issues,
        [
            issue("L2Advertisement", SYSTEM, "l2", message),
            issue("L2Advertisement", SYSTEM, "l2", "selects no IPAddressPool"),
        ]
    );
    // Names still select alongside a bad selector.
    let spec = json!({"ipAddressPools": ["two"], "ipAddressPoolSelectors": [bad]});
    let plan = two_pools(vec![advertisement("l2", spec)]);
    assert_eq!(announced(&plan), [ip("198.18.1.1")]);
}

#[test]
fn broken_advertisement_does_not_change_other_vips() {
    let good = advertisement(
        "good",
        json!({"ipAddressPools": ["one"], "interfaces": ["eth1"]}),
    );
    let before = two_pools(vec![good.clone()]);
    let broken = [
        json!({"nodeSelectors": [{"matchExpressions": [{"key": "x", "operator": "Bogus"}]}]}),
        json!({"ipAddressPoolSelectors": [{"matchExpressions": [{"key": "x", "operator": "In"}]}]}),
        json!({"ipAddressPools": ["one"], "nodeSelectors": [{"matchExpressions": [{"key": "x", "operator": "NotIn"}]}]}),
    ];
    for spec in broken {
        let after = two_pools(vec![advertisement("broken", spec.clone()), good.clone()]);
        assert_eq!(after.vips, before.vips, "{spec}");
        assert!(
            after.issues.iter().all(|i| i.object.name == "broken"),
            "{:?}",
            after.issues
        );
        assert!(!after.issues.is_empty());
    }
}

// Rule 5: nodes.

#[test]
fn node_conditions_and_exclude_label() {
    let ready = json!({"type": "Ready", "status": "True"});
    #[rustfmt::skip]
    let cases = [
        (json!({}), json!([ready]),                                                         true),
        (json!({}), json!([{"type": "Ready", "status": "False"}]),                          false),
        (json!({}), json!([{"type": "Ready", "status": "Unknown"}]),                        false),
        (json!({}), json!([]),                                                              false),
        (json!({}), json!([ready, {"type": "NetworkUnavailable", "status": "True"}]),       false),
        (json!({}), json!([ready, {"type": "NetworkUnavailable", "status": "False"}]),      true),
        (json!({}), json!([ready, {"type": "MemoryPressure", "status": "True"}]),           true),
        (json!({EXCLUDE_LABEL: ""}), json!([ready]),                                        false),
        (json!({EXCLUDE_LABEL: "false"}), json!([ready]),                                   false),
    ];
    for (labels, conditions, eligible) in cases {
        let mut s = cluster();
        s.nodes = vec![
            node_with("a", labels.clone(), conditions.clone()),
            node("b", json!({})),
        ];
        s.services = vec![lb("web", &["198.18.0.1"])];
        s.endpoint_slices = vec![ready_on("web", &["a"])];
        let want = if eligible {
            names(&["a", "b"])
        } else {
            names(&["b"])
        };
        assert_eq!(
            planned(&s, &classless(), "198.18.0.1"),
            want,
            "{labels} {conditions}"
        );
    }
    // A node without status is not Ready.
    let mut s = cluster();
    s.nodes = vec![from(json!({"metadata": {"name": "a"}}))];
    s.services = vec![lb("web", &["198.18.0.1"])];
    s.endpoint_slices = vec![ready_on("web", &["a"])];
    assert_eq!(planned(&s, &classless(), "198.18.0.1"), names(&[]));
}

#[test]
fn interfaces_are_the_union_of_selecting_advertisements() {
    let mut s = cluster();
    s.advertisements = vec![
        advertisement("eth1", json!({"interfaces": ["eth1"]})),
        advertisement(
            "front-eth2",
            json!({"interfaces": ["eth2", "eth1"], "nodeSelectors": [{"matchLabels": {"node-role": "front"}}]}),
        ),
        // Selects another pool: its interfaces do not apply here.
        advertisement(
            "other",
            json!({"ipAddressPools": ["other"], "interfaces": ["eth9"]}),
        ),
    ];
    s.pools.push(pool("other", &["203.0.113.0/24"]));
    s.services = vec![lb("web", &["198.18.0.1"])];
    s.endpoint_slices = vec![ready_on("web", &["a"])];
    let plan = plan(&s, &classless());
    let front: &[&str] = &["eth1", "eth2"];
    assert_eq!(
        plan.vips[&ip("198.18.0.1")].nodes,
        nodes(&[("a", front), ("b", front), ("c", &["eth1"])])
    );
}

#[test]
fn advertisement_without_interfaces_means_default_interfaces() {
    for default in [json!({}), json!({"interfaces": []})] {
        let mut s = cluster();
        s.advertisements = vec![
            advertisement("eth1", json!({"interfaces": ["eth1"]})),
            advertisement("front-default", {
                let mut d = default.clone();
                d["nodeSelectors"] = json!([{"matchLabels": {"node-role": "front"}}]);
                d
            }),
        ];
        s.services = vec![lb("web", &["198.18.0.1"])];
        s.endpoint_slices = vec![ready_on("web", &["a"])];
        let plan = plan(&s, &classless());
        assert_eq!(
            plan.vips[&ip("198.18.0.1")].nodes,
            nodes(&[("a", &[]), ("b", &[]), ("c", &["eth1"])]),
            "{default}"
        );
    }
}

// Rule 6: endpoints.

#[test]
fn local_policy_allows_only_nodes_with_a_ready_endpoint() {
    let mut s = cluster();
    s.services = vec![local("web", &["198.18.0.1"])];
    s.endpoint_slices = vec![
        slice(
            "web",
            &[
                (Some("a"), Some(false)),
                (Some("b"), None),
                (None, Some(true)),
            ],
        ),
        // Ready is checked per endpoint, not per node or slice.
        slice("web", &[(Some("c"), Some(false)), (Some("c"), Some(true))]),
    ];
    assert_eq!(planned(&s, &classless(), "198.18.0.1"), names(&["b", "c"]));

    // A ready endpoint on a node the advertisements do not select does not
    // add it.
    s.advertisements = vec![advertisement(
        "front",
        json!({"nodeSelectors": [{"matchLabels": {"node-role": "front"}}]}),
    )];
    assert_eq!(planned(&s, &classless(), "198.18.0.1"), names(&["b"]));

    s.endpoint_slices = vec![slice("web", &[(Some("a"), Some(false))])];
    assert_eq!(planned(&s, &classless(), "198.18.0.1"), names(&[]));
}

#[test]
fn cluster_policy_needs_one_ready_endpoint_anywhere() {
    for policy in [json!(null), json!("Cluster")] {
        let mut s = cluster();
        s.services = vec![service(
            "web",
            &["198.18.0.1"],
            json!({"externalTrafficPolicy": policy}),
        )];
        // Ready on a node that is not even in the cluster, and without a node.
        s.endpoint_slices = vec![slice("web", &[(Some("gone"), Some(false)), (None, None)])];
        assert_eq!(
            planned(&s, &classless(), "198.18.0.1"),
            names(&["a", "b", "c"]),
            "{policy}"
        );

        s.endpoint_slices = vec![slice("web", &[(Some("a"), Some(false))]), slice("web", &[])];
        assert_eq!(
            planned(&s, &classless(), "198.18.0.1"),
            names(&[]),
            "{policy}"
        );

        s.endpoint_slices = vec![];
        assert_eq!(
            planned(&s, &classless(), "198.18.0.1"),
            names(&[]),
            "{policy}"
        );
    }
}

#[test]
fn endpoint_slices_belong_by_label_in_the_same_namespace() {
    let mut s = cluster();
    s.services = vec![local("web", &["198.18.0.1"])];
    let mut other_namespace = ready_on("web", &["a"]);
    other_namespace.metadata.namespace = Some("other".into());
    let mut unlabelled = ready_on("web", &["b"]);
    unlabelled.metadata.labels = None;
    // The slice's name does not matter, only its label.
    let mut renamed = ready_on("web", &["c"]);
    renamed.metadata.name = Some("anything".into());
    s.endpoint_slices = vec![
        other_namespace,
        unlabelled,
        renamed,
        ready_on("api", &["a"]),
    ];
    assert_eq!(planned(&s, &classless(), "198.18.0.1"), names(&["c"]));
}

// Rule 7: shared addresses.

#[test]
fn shared_vip_unions_nodes_and_lists_all_services() {
    let mut s = cluster();
    s.services = vec![
        local("web-tcp", &["198.18.0.1"]),
        local("web-udp", &["198.18.0.1", "198.18.0.2"]),
        local("idle", &["198.18.0.1"]),
    ];
    s.endpoint_slices = vec![ready_on("web-tcp", &["a"]), ready_on("web-udp", &["b"])];
    let plan = plan(&s, &classless());
    let shared = &plan.vips[&ip("198.18.0.1")];
    assert_eq!(shared.nodes, nodes(&[("a", &[]), ("b", &[])]));
    assert_eq!(
        shared.services,
        ["idle", "web-tcp", "web-udp"].map(|n| ObjectRef::new("Service", "default", n))
    );
    assert_eq!(shared.pools, ["metallb-system/front"]);
    assert_eq!(plan.vips[&ip("198.18.0.2")].nodes, nodes(&[("b", &[])]));
}

// Rule 8: bad objects.

#[test]
fn objects_with_missing_fields_are_skipped() {
    let mut s = cluster();
    s.services = vec![
        lb("web", &["198.18.0.1"]),
        from(json!({})),
        from(
            json!({"metadata": {"name": "nospec"}, "status": {"loadBalancer": {"ingress": [{"ip": "198.18.0.2"}]}}}),
        ),
        from(json!({"metadata": {"name": "nostatus"}, "spec": {"type": "LoadBalancer"}})),
        from(
            json!({"spec": {"type": "LoadBalancer"}, "status": {"loadBalancer": {"ingress": [{"ip": "198.18.0.3"}]}}}),
        ),
        from(
            json!({"metadata": {"name": "noingress"}, "spec": {"type": "LoadBalancer"}, "status": {"loadBalancer": {}}}),
        ),
        from(
            json!({"metadata": {"name": "empty"}, "spec": {"type": "LoadBalancer"}, "status": {"loadBalancer": {"ingress": [{}]}}}),
        ),
    ];
    s.endpoint_slices = vec![
        ready_on("web", &["a"]),
        from(json!({"addressType": "IPv4", "endpoints": []})),
        from(json!({"metadata": {"labels": {SERVICE_NAME_LABEL: "web"}}, "addressType": "IPv4"})),
        from(
            json!({"metadata": {"labels": {SERVICE_NAME_LABEL: "web"}}, "addressType": "IPv4", "endpoints": [{"addresses": []}]}),
        ),
    ];
    s.nodes.push(from(json!({})));
    s.nodes
        .push(from(json!({"metadata": {"name": "x"}, "status": {}})));
    s.pools.push(from(
        json!({"metadata": {"namespace": SYSTEM}, "spec": {"addresses": ["198.18.0.0/24"]}}),
    ));
    s.pools.push(from(
        json!({"metadata": {"name": "empty", "namespace": SYSTEM}, "spec": {}}),
    ));
    s.advertisements.push(from(
        json!({"spec": {"nodeSelectors": [{"matchExpressions": [{}]}]}}),
    ));
    s.advertisements.push(from(
        json!({"metadata": {"name": "bare", "namespace": SYSTEM}, "spec": {"nodeSelectors": [{}]}}),
    ));
    let plan = plan(&s, &classless());
    assert_eq!(
        plan.vips.keys().copied().collect::<Vec<_>>(),
        [ip("198.18.0.1")]
    );
    assert_eq!(
        plan.vips[&ip("198.18.0.1")].nodes,
        nodes(&[("a", &[]), ("b", &[]), ("c", &[])])
    );
    assert_eq!(plan.issues, []);
}

#[test]
fn plan_does_not_depend_on_object_order() {
    let mut s = cluster();
    s.pools.push(pool("overlap", &["198.18.0.8/29", "bad"]));
    s.advertisements.push(advertisement(
        "eth1",
        json!({"interfaces": ["eth1"], "ipAddressPools": ["gone"]}),
    ));
    s.services = vec![
        local("b", &["198.18.0.1", "2001:db8::1"]),
        local("a", &["198.18.0.1", "203.0.113.1"]),
        lb("c", &["198.18.0.9"]),
    ];
    s.endpoint_slices = vec![
        ready_on("a", &["a"]),
        ready_on("b", &["b"]),
        ready_on("c", &["c"]),
    ];
    let forward = plan(&s, &classless());
    s.services.reverse();
    s.endpoint_slices.reverse();
    s.nodes.reverse();
    s.pools.reverse();
    s.advertisements.reverse();
    assert_eq!(plan(&s, &classless()), forward);
    assert_eq!(forward.vips.len(), 3);
    assert_eq!(forward.issues.len(), 6, "{:#?}", forward.issues);
}

// The incremental plan (cluster.rs) against the whole one.

/// A small deterministic generator (xorshift), so a failing seed replays.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, from: &'a [T]) -> &'a T {
        &from[self.below(from.len())]
    }
}

/// The same change, made to a snapshot.
type SnapshotChange = Box<dyn FnOnce(&mut Snapshot)>;

/// One random object of a random kind, or its removal.
fn random_change(rng: &mut Rng) -> (cluster::Change, SnapshotChange) {
    use cluster::Change;
    let names = ["a", "b", "c", "d"];
    let name = rng.pick(&names).to_string();
    let gone = rng.below(5) == 0;
    let ips = [
        "198.18.0.1",
        "198.18.0.2",
        "198.18.0.9",
        "2001:db8::1",
        "203.0.113.1",
        "198.18.0.0",
    ];
    let key = |ns: &str, n: &str| (ns.to_owned(), n.to_owned());
    fn upsert<T: Clone + 'static>(
        list: fn(&mut Snapshot) -> &mut Vec<T>,
        same: impl Fn(&T) -> bool + 'static,
        obj: Option<T>,
    ) -> SnapshotChange {
        Box::new(move |s| {
            let l = list(s);
            l.retain(|o| !same(o));
            l.extend(obj);
        })
    }
    let named = |n: String| move |m: &ObjectMeta| m.name.as_deref() == Some(n.as_str());
    match rng.below(5) {
        0 => {
            let ips = [*rng.pick(&ips), *rng.pick(&ips)];
            let spec = match rng.below(4) {
                0 => json!({"externalTrafficPolicy": "Local"}),
                1 => json!({"type": "ClusterIP"}),
                2 => json!({"loadBalancerClass": "other"}),
                _ => json!({}),
            };
            let mut svc = service(&name, &ips[..1 + rng.below(2)], spec);
            if rng.below(3) == 0 {
                svc.metadata.labels = Some(BTreeMap::from([("tier".into(), "web".into())]));
            }
            let obj = (!gone).then_some(svc);
            let slim = obj.as_ref().and_then(|s| slim::service(s, &classless()));
            let same = named(name.clone());
            (
                Change::Service(key("default", &name), slim),
                upsert(
                    |s| &mut s.services,
                    move |o: &Service| same(&o.metadata),
                    obj,
                ),
            )
        }
        1 => {
            let endpoints: Vec<(Option<&str>, Option<bool>)> = (0..rng.below(3))
                .map(|_| {
                    let ready = [Some(true), Some(false), None];
                    (Some(*rng.pick(&names)), *rng.pick(&ready))
                })
                .collect();
            let obj = (!gone).then(|| slice(&name, &endpoints));
            let slice_name = format!("{name}-abcde");
            let slim = obj.as_ref().map(slim::slice);
            let same = named(slice_name.clone());
            (
                Change::Slice(key("default", &slice_name), slim),
                upsert(
                    |s| &mut s.endpoint_slices,
                    move |o: &EndpointSlice| same(&o.metadata),
                    obj,
                ),
            )
        }
        2 => {
            let role = *rng.pick(&["front", "back"]);
            let ready = *rng.pick(&["True", "False"]);
            let mut n = node_with(
                &name,
                json!({"node-role": role}),
                json!([{"type": "Ready", "status": ready}]),
            );
            if rng.below(4) == 0 {
                n.status.get_or_insert_default().addresses = Some(vec![from(
                    json!({"type": "InternalIP", "address": "198.18.0.2"}),
                )]);
            }
            let obj = (!gone).then_some(n);
            let slim = obj.as_ref().map(slim::node);
            let same = named(name.clone());
            (
                Change::Node(key("", &name), slim),
                upsert(|s| &mut s.nodes, move |o: &Node| same(&o.metadata), obj),
            )
        }
        3 => {
            let name = rng.pick(&["p1", "p2"]).to_string();
            let ranges: [&[&str]; 4] = [
                &["198.18.0.0/28"],
                &["198.18.0.8/29", "bad"],
                &["2001:db8::/120"],
                &["198.18.0.1-198.18.0.2"],
            ];
            let addresses = *rng.pick(&ranges);
            let obj = (!gone).then(|| pool(&name, addresses));
            let same = named(name.clone());
            (
                Change::Pool(key(SYSTEM, &name), obj.clone()),
                upsert(
                    |s| &mut s.pools,
                    move |o: &IPAddressPool| same(&o.metadata),
                    obj,
                ),
            )
        }
        _ => {
            let name = rng.pick(&["l1", "l2"]).to_string();
            let specs = [
                json!({}),
                json!({"nodeSelectors": [{"matchLabels": {"node-role": "front"}}]}),
                json!({"interfaces": ["eth1"], "ipAddressPools": ["p2"]}),
                json!({"serviceSelectors": [{"matchLabels": {"tier": "web"}}]}),
            ];
            let obj = (!gone).then(|| advertisement(&name, rng.pick(&specs).clone()));
            let same = named(name.clone());
            (
                Change::Advertisement(key(SYSTEM, &name), obj.clone()),
                upsert(
                    |s| &mut s.advertisements,
                    move |o: &L2Advertisement| same(&o.metadata),
                    obj,
                ),
            )
        }
    }
}

#[test]
fn the_plan_kept_change_by_change_is_the_plan_computed_whole() {
    for seed in 1..=200u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut snapshot = Snapshot::default();
        let mut kept = cluster::Cluster::new(classless());
        // The plan as the deltas describe it, starting from nothing.
        let mut told: BTreeMap<IpAddr, VipPlan> = BTreeMap::new();
        let mut issues = Vec::new();
        for kind in cluster::Kind::ALL {
            kept.apply(cluster::Change::Listed(kind));
        }
        for step in 0..60 {
            // A few changes at a time, as the agent drains its queue.
            for _ in 0..1 + rng.below(3) {
                let (change, apply) = random_change(&mut rng);
                kept.apply(change);
                apply(&mut snapshot);
            }
            let delta = kept.update();
            for (ip, vip) in delta.vips {
                match vip {
                    Some(v) => told.insert(ip, v),
                    None => told.remove(&ip),
                };
            }
            if let Some(i) = delta.issues {
                issues = i;
            }
            let whole = plan(&snapshot, &classless());
            assert_eq!(kept.plan(), &whole, "seed {seed}, step {step}");
            assert_eq!(told, whole.vips, "seed {seed}, step {step}");
            assert_eq!(issues, whole.issues, "seed {seed}, step {step}");
        }
    }
}

#[test]
fn a_slice_of_a_service_that_is_not_ours_changes_nothing() {
    let mut kept = cluster::Cluster::new(classless());
    for kind in cluster::Kind::ALL {
        kept.apply(cluster::Change::Listed(kind));
    }
    let s = cluster();
    let key = |ns: &str, n: &str| (ns.to_owned(), n.to_owned());
    for n in &s.nodes {
        let name = n.metadata.name.clone().unwrap_or_default();
        kept.apply(cluster::Change::Node(key("", &name), Some(slim::node(n))));
    }
    kept.apply(cluster::Change::Pool(
        key(SYSTEM, "front"),
        Some(s.pools[0].clone()),
    ));
    kept.apply(cluster::Change::Advertisement(
        key(SYSTEM, "l2"),
        Some(s.advertisements[0].clone()),
    ));
    let web = lb("web", &["198.18.0.1"]);
    kept.apply(cluster::Change::Service(
        key("default", "web"),
        slim::service(&web, &classless()),
    ));
    kept.apply(cluster::Change::Slice(
        key("default", "web-abcde"),
        Some(slim::slice(&ready_on("web", &["a"]))),
    ));
    assert_eq!(kept.update().vips.len(), 1);
    let other = slim::slice(&ready_on("other", &["b"]));
    kept.apply(cluster::Change::Slice(
        key("default", "other-abcde"),
        Some(other),
    ));
    assert!(kept.update().is_empty());
    // A Node heartbeat: the slim Node is the same.
    let mut a = s.nodes[0].clone();
    a.metadata.resource_version = Some("999".into());
    kept.apply(cluster::Change::Node(key("", "a"), Some(slim::node(&a))));
    assert!(kept.update().is_empty());
}
