//! One test (at least) per rule of docs/allocation.md.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Namespace, Service};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::*;

const SYSTEM: &str = "metallb-system";

fn from<T: DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("test object")
}

pub(super) fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

pub(super) fn ips(list: &[&str]) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = list.iter().map(|s| ip(s)).collect();
    v.sort();
    v
}

fn merge(into: &mut Value, patch: Value) {
    if let (Some(into), Value::Object(patch)) = (into.as_object_mut(), patch) {
        into.extend(patch);
    }
}

/// An IPAddressPool in the config namespace; `spec` is merged over the
/// addresses.
pub(super) fn pool(name: &str, addresses: &[&str], spec: Value) -> IPAddressPool {
    let mut full = json!({"addresses": addresses});
    merge(&mut full, spec);
    from(json!({
        "metadata": {"namespace": SYSTEM, "name": name},
        "spec": full,
    }))
}

/// A LoadBalancer Service `ns/name` (or `name` in `default`), IPv4
/// SingleStack, port TCP/80. `patch` keys: `ann` (annotations; `ips`,
/// `pool` and `share` stand for the metallb.io ones), `labels`, `status`
/// (ingress IPs), `ports` (`"UDP/53"`), `families`, `policy`; any other
/// key goes into `spec`.
pub(super) fn svc(id: &str, patch: Value) -> Service {
    let (namespace, name) = id.split_once('/').unwrap_or(("default", id));
    let mut meta = json!({"namespace": namespace, "name": name});
    let mut spec = json!({
        "type": "LoadBalancer",
        "ipFamilies": ["IPv4"],
        "ipFamilyPolicy": "SingleStack",
        "ports": [{"port": 80, "protocol": "TCP"}],
    });
    let mut status = json!({});
    let Value::Object(patch) = patch else {
        panic!("patch must be an object");
    };
    for (key, value) in patch {
        match key.as_str() {
            "ann" => {
                let mut annotations = serde_json::Map::new();
                for (k, v) in value.as_object().expect("annotations").clone() {
                    let k = match k.as_str() {
                        "ips" => "metallb.io/loadBalancerIPs".to_owned(),
                        "pool" => "metallb.io/address-pool".to_owned(),
                        "share" => "metallb.io/allow-shared-ip".to_owned(),
                        _ => k,
                    };
                    annotations.insert(k, v);
                }
                meta["annotations"] = Value::Object(annotations);
            }
            "labels" => meta["labels"] = value,
            "status" => {
                let ingress: Vec<Value> = value
                    .as_array()
                    .expect("status ips")
                    .iter()
                    .map(|ip| json!({"ip": ip}))
                    .collect();
                status = json!({"loadBalancer": {"ingress": ingress}});
            }
            "ports" => {
                let ports: Vec<Value> = value
                    .as_array()
                    .expect("ports")
                    .iter()
                    .map(|p| {
                        let (proto, port) =
                            p.as_str().and_then(|p| p.split_once('/')).expect("P/N");
                        json!({"protocol": proto, "port": port.parse::<i32>().expect("port")})
                    })
                    .collect();
                spec["ports"] = json!(ports);
            }
            "families" => spec["ipFamilies"] = value,
            "policy" => spec["ipFamilyPolicy"] = value,
            _ => spec[key] = value,
        }
    }
    from(json!({"metadata": meta, "spec": spec, "status": status}))
}

fn namespace(name: &str, labels: Value) -> Namespace {
    from(json!({"metadata": {"name": name, "labels": labels}}))
}

pub(super) fn classless() -> Settings {
    Settings {
        load_balancer_class: None,
        announce_classless: true,
    }
}

/// Namespaces `default`, `team-a` (team=a) and `team-b` (team=b).
fn world(pools: &[IPAddressPool]) -> Allocator {
    let mut a = Allocator::new(classless());
    a.set_namespace(&namespace("default", json!({})));
    a.set_namespace(&namespace("team-a", json!({"team": "a"})));
    a.set_namespace(&namespace("team-b", json!({"team": "b"})));
    let issues = a.set_pools(pools);
    assert!(issues.is_empty(), "{issues:?}");
    a
}

/// `svc` with the status an Outcome asks for, as the controller writes it.
pub(super) fn written(svc: &Service, outcome: &Outcome) -> Service {
    let mut svc = svc.clone();
    let set = |svc: &mut Service, ips: &[IpAddr]| {
        let ingress: Vec<Value> = ips.iter().map(|ip| json!({"ip": ip.to_string()})).collect();
        svc.status = Some(from(json!({"loadBalancer": {"ingress": ingress}})));
    };
    match outcome {
        Outcome::Assigned(ips) => set(&mut svc, ips),
        Outcome::Refused { kept, .. } => set(&mut svc, kept),
        Outcome::Released => set(&mut svc, &[]),
        Outcome::Unchanged | Outcome::NotOurs => {}
    }
    svc
}

/// Updates `before` in order (each must get an address), then `svc`.
fn run(pools: &[IPAddressPool], before: &[Service], svc: &Service) -> Outcome {
    let mut a = world(pools);
    for b in before {
        let outcome = a.update(b);
        assert!(
            matches!(outcome, Outcome::Assigned(_)),
            "{b:?}: {outcome:?}"
        );
    }
    a.update(svc)
}

fn got(list: &[&str]) -> Outcome {
    Outcome::Assigned(ips(list))
}

fn refused(reason: Refusal) -> Outcome {
    Outcome::Refused {
        reason,
        kept: Vec::new(),
    }
}

fn default(name: &str) -> ObjectRef {
    ObjectRef::new("Service", "default", name)
}

/// Name, pools, Services updated first, the Service, what it gets.
type Case = (
    &'static str,
    Vec<IPAddressPool>,
    Vec<Service>,
    Service,
    Outcome,
);

#[test]
fn allocation_cases() {
    let none = json!({});
    let v4 = || pool("a", &["198.18.0.0-198.18.0.3"], json!({}));
    let dual = |name: &str| {
        pool(
            name,
            &["198.18.0.0-198.18.0.3", "2001:db8::/126"],
            json!({}),
        )
    };
    let v6only = |name: &str| pool(name, &["2001:db8::/126"], json!({}));
    let manual = |name: &str, addr: &str| pool(name, &[addr], json!({"autoAssign": false}));
    let prio = |name: &str, addr: &str, p: i32| {
        pool(name, &[addr], json!({"serviceAllocation": {"priority": p}}))
    };
    let alloc =
        |name: &str, addr: &str, a: Value| pool(name, &[addr], json!({"serviceAllocation": a}));
    let buggy = |addr: &str| pool("a", &[addr], json!({"avoidBuggyIPs": true}));
    let x = svc("x", json!({}));
    let shared = |id: &str, p: Value| {
        let mut p = p;
        merge(&mut p, json!({"ann": {"share": "k", "ips": "198.18.0.1"}}));
        svc(id, p)
    };
    let in_use = |by: &str, why| Refusal::InUse {
        ip: ip("198.18.0.1"),
        by: default(by),
        why,
    };
    let first = |id: &str| svc(id, json!({"ann": {"ips": "198.18.0.1"}}));

    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        // Pools: CIDRs, ranges, IPv6, avoidBuggyIPs.
        ("cidr: first address",              vec![v4()], vec![], svc("s", none.clone()), got(&["198.18.0.0"])),
        ("cidr: next free address",          vec![v4()], vec![x.clone()], svc("s", none.clone()), got(&["198.18.0.1"])),
        ("cidr: network address left out",   vec![pool("a", &["198.18.0.8/29"], none.clone())], vec![], svc("s", none.clone()), got(&["198.18.0.9"])),
        ("cidr: network not requestable",    vec![pool("a", &["198.18.0.8/29"], none.clone())], vec![], svc("s", json!({"ann": {"ips": "198.18.0.8"}})), refused(Refusal::NotInAnyPool(ip("198.18.0.8")))),
        ("cidr: broadcast not requestable",  vec![pool("a", &["198.18.0.8/29"], none.clone())], vec![], svc("s", json!({"ann": {"ips": "198.18.0.15"}})), refused(Refusal::NotInAnyPool(ip("198.18.0.15")))),
        ("cidr: network listed as /32",      vec![pool("a", &["198.18.0.8/29", "198.18.0.8/32"], none.clone())], vec![], svc("s", json!({"ann": {"ips": "198.18.0.8"}})), got(&["198.18.0.8"])),
        ("cidr: broadcast listed as range",  vec![pool("a", &["198.18.0.8/29", "198.18.0.15-198.18.0.15"], none.clone())], vec![], svc("s", json!({"ann": {"ips": "198.18.0.15"}})), got(&["198.18.0.15"])),
        ("cidr: /31 has no edges",           vec![pool("a", &["198.18.0.8/31"], none.clone())], vec![], svc("s", none.clone()), got(&["198.18.0.8"])),
        ("cidr: IPv6 has no broadcast",      vec![v6only("a")], vec![], svc("s", json!({"families": ["IPv6"]})), got(&["2001:db8::"])),
        ("range: first address",             vec![pool("a", &["198.18.1.10-198.18.1.12"], none.clone())], vec![], svc("s", none.clone()), got(&["198.18.1.10"])),
        ("entries in listed order",          vec![pool("a", &["198.18.9.9/32", "198.18.0.0-198.18.0.3"], none.clone())], vec![], svc("s", none.clone()), got(&["198.18.9.9"])),
        ("ipv6 single stack",                vec![dual("a")], vec![], svc("s", json!({"families": ["IPv6"]})), got(&["2001:db8::"])),
        ("ipv6 pool, ipv4 Service",          vec![v6only("a")], vec![], svc("s", none.clone()), refused(Refusal::NoFreeAddress { need: Need::One(Family::V4), tried: vec!["a".into()] })),
        ("avoidBuggyIPs skips .0",           vec![buggy("198.18.0.0/24")], vec![], svc("s", none.clone()), got(&["198.18.0.1"])),
        ("avoidBuggyIPs skips .255 and .0",  vec![buggy("198.18.0.254-198.18.1.2")], vec![x.clone()], svc("s", none.clone()), got(&["198.18.1.1"])),
        ("avoidBuggyIPs: .255 in no pool",   vec![buggy("198.18.0.0/24")], vec![], svc("s", json!({"ann": {"ips": "198.18.0.255"}})), refused(Refusal::NotInAnyPool(ip("198.18.0.255")))),
        ("without avoidBuggyIPs .255 is ok", vec![pool("a", &["198.18.0.0-198.18.0.255"], none.clone())], vec![], svc("s", json!({"ann": {"ips": "198.18.0.255"}})), got(&["198.18.0.255"])),
        // autoAssign: false.
        ("autoAssign false: not automatic",  vec![manual("a", "198.18.0.0-198.18.0.3")], vec![], svc("s", none.clone()), refused(Refusal::NoPoolForService)),
        ("autoAssign false: next pool",      vec![manual("a", "198.18.0.0-198.18.0.3"), pool("b", &["198.18.5.0-198.18.5.3"], none.clone())], vec![], svc("s", none.clone()), got(&["198.18.5.0"])),
        ("autoAssign false: by name",        vec![manual("a", "198.18.0.0-198.18.0.3")], vec![], svc("s", json!({"ann": {"pool": "a"}})), got(&["198.18.0.0"])),
        ("autoAssign false: by IP",          vec![manual("a", "198.18.0.0-198.18.0.3")], vec![], svc("s", json!({"ann": {"ips": "198.18.0.2"}})), got(&["198.18.0.2"])),
        // Requests.
        ("loadBalancerIPs annotation",       vec![v4()], vec![], svc("s", json!({"ann": {"ips": "198.18.0.3"}})), got(&["198.18.0.3"])),
        ("deprecated annotation",            vec![v4()], vec![], svc("s", json!({"ann": {"metallb.universe.tf/loadBalancerIPs": "198.18.0.3"}})), got(&["198.18.0.3"])),
        ("spec.loadBalancerIP",              vec![v4()], vec![], svc("s", json!({"loadBalancerIP": "198.18.0.2"})), got(&["198.18.0.2"])),
        ("both forms, same address",         vec![v4()], vec![], svc("s", json!({"loadBalancerIP": "198.18.0.2", "ann": {"ips": "198.18.0.2"}})), got(&["198.18.0.2"])),
        ("both forms, different addresses",  vec![v4()], vec![], svc("s", json!({"loadBalancerIP": "198.18.0.2", "ann": {"ips": "198.18.0.3"}})), refused(Refusal::ConflictingRequests { annotation: ips(&["198.18.0.3"]), spec: ip("198.18.0.2") })),
        ("unparsable request",               vec![v4()], vec![], svc("s", json!({"ann": {"ips": "198.18.0.300"}})), refused(Refusal::InvalidRequest { field: "metallb.io/loadBalancerIPs", value: "198.18.0.300".into(), why: "\"198.18.0.300\" is not an IP address".into() })),
        ("two of one family",                vec![v4()], vec![], svc("s", json!({"ann": {"ips": "198.18.0.1, 198.18.0.2"}})), refused(Refusal::InvalidRequest { field: "metallb.io/loadBalancerIPs", value: "198.18.0.1, 198.18.0.2".into(), why: "two addresses of the same family".into() })),
        ("requested IP in use",              vec![v4()], vec![first("x")], first("s"), refused(in_use("x", SharingConflict::HolderDoesNotShare))),
        ("requested IP in no pool",          vec![v4()], vec![], svc("s", json!({"ann": {"ips": "203.0.113.1"}})), refused(Refusal::NotInAnyPool(ip("203.0.113.1")))),
        ("requested IP of the wrong family", vec![dual("a")], vec![], svc("s", json!({"ann": {"ips": "2001:db8::1"}})), refused(Refusal::WrongFamilies { requested: ips(&["2001:db8::1"]), families: vec![Family::V4] })),
        ("requested IPs in two pools",       vec![v4(), v6only("b")], vec![], svc("s", json!({"policy": "RequireDualStack", "ann": {"ips": "198.18.0.1,2001:db8::1"}})), refused(Refusal::NotInOnePool(ips(&["198.18.0.1", "2001:db8::1"])))),
        ("requested IP outside named pool",  vec![v4(), pool("b", &["198.18.5.0-198.18.5.3"], none.clone())], vec![], svc("s", json!({"ann": {"ips": "198.18.0.1", "pool": "b"}})), refused(Refusal::NotInRequestedPool { ips: ips(&["198.18.0.1"]), pool: "b".into() })),
        // Pools by name.
        ("address-pool annotation",          vec![v4(), pool("b", &["198.18.5.0-198.18.5.3"], none.clone())], vec![], svc("s", json!({"ann": {"pool": "b"}})), got(&["198.18.5.0"])),
        ("unknown pool",                     vec![v4()], vec![], svc("s", json!({"ann": {"pool": "nope"}})), refused(Refusal::UnknownPool("nope".into()))),
        ("named pool exhausted",             vec![pool("a", &["198.18.0.0/32"], none.clone())], vec![x.clone()], svc("s", json!({"ann": {"pool": "a"}})), refused(Refusal::PoolExhausted { pool: "a".into(), need: Need::One(Family::V4) })),
        // Order of automatic assignment.
        ("lower priority number first",      vec![prio("a", "198.18.0.0-198.18.0.3", 20), prio("b", "198.18.5.0-198.18.5.3", 10)], vec![], svc("s", none.clone()), got(&["198.18.5.0"])),
        ("no priority comes after",          vec![pool("a", &["198.18.0.0-198.18.0.3"], none.clone()), prio("b", "198.18.5.0-198.18.5.3", 5)], vec![], svc("s", none.clone()), got(&["198.18.5.0"])),
        ("ties broken by name",              vec![pool("b", &["198.18.5.0-198.18.5.3"], none.clone()), v4()], vec![], svc("s", none.clone()), got(&["198.18.0.0"])),
        ("full pool: next in order",         vec![prio("a", "198.18.0.0/32", 1), prio("b", "198.18.5.0-198.18.5.3", 2)], vec![x.clone()], svc("s", none.clone()), got(&["198.18.5.0"])),
        ("pinned pools before open ones",    vec![v4(), alloc("z", "198.18.5.0-198.18.5.3", json!({"namespaces": ["default"]}))], vec![], svc("s", none.clone()), got(&["198.18.5.0"])),
        // serviceAllocation restrictions.
        ("namespaces: listed namespace",     vec![alloc("a", "198.18.0.0-198.18.0.3", json!({"namespaces": ["team-a"]}))], vec![], svc("team-a/s", none.clone()), got(&["198.18.0.0"])),
        ("namespaces: other namespace",      vec![alloc("a", "198.18.0.0-198.18.0.3", json!({"namespaces": ["team-a"]}))], vec![], svc("s", none.clone()), refused(Refusal::NoPoolForService)),
        ("namespaceSelectors: match",        vec![alloc("a", "198.18.0.0-198.18.0.3", json!({"namespaceSelectors": [{"matchLabels": {"team": "b"}}]}))], vec![], svc("team-b/s", none.clone()), got(&["198.18.0.0"])),
        ("namespaceSelectors: no match",     vec![alloc("a", "198.18.0.0-198.18.0.3", json!({"namespaceSelectors": [{"matchLabels": {"team": "b"}}]}))], vec![], svc("team-a/s", none.clone()), refused(Refusal::NoPoolForService)),
        ("namespaces or selectors",          vec![alloc("a", "198.18.0.0-198.18.0.3", json!({"namespaces": ["default"], "namespaceSelectors": [{"matchLabels": {"team": "b"}}]}))], vec![], svc("team-b/s", none.clone()), got(&["198.18.0.0"])),
        ("serviceSelectors: match",          vec![alloc("a", "198.18.0.0-198.18.0.3", json!({"serviceSelectors": [{"matchLabels": {"app": "web"}}]}))], vec![], svc("s", json!({"labels": {"app": "web"}})), got(&["198.18.0.0"])),
        ("serviceSelectors: no match",       vec![alloc("a", "198.18.0.0-198.18.0.3", json!({"serviceSelectors": [{"matchLabels": {"app": "web"}}]}))], vec![], svc("s", none.clone()), refused(Refusal::NoPoolForService)),
        ("restricted pool by IP",            vec![alloc("a", "198.18.0.0-198.18.0.3", json!({"namespaces": ["team-a"]}))], vec![], svc("s", json!({"ann": {"ips": "198.18.0.1"}})), refused(Refusal::PoolNotAllowed { pool: "a".into() })),
        ("restricted pool by name",          vec![alloc("a", "198.18.0.0-198.18.0.3", json!({"namespaces": ["team-a"]}))], vec![], svc("s", json!({"ann": {"pool": "a"}})), refused(Refusal::PoolNotAllowed { pool: "a".into() })),
        // ipFamilyPolicy.
        ("SingleStack IPv6 of dual pool",    vec![dual("a")], vec![], svc("s", json!({"families": ["IPv6", "IPv4"], "policy": "SingleStack"})), got(&["2001:db8::"])),
        ("RequireDualStack",                 vec![dual("a")], vec![], svc("s", json!({"families": ["IPv4", "IPv6"], "policy": "RequireDualStack"})), got(&["198.18.0.0", "2001:db8::"])),
        ("RequireDualStack: one pool",       vec![v4(), v6only("b")], vec![], svc("s", json!({"families": ["IPv4", "IPv6"], "policy": "RequireDualStack"})), refused(Refusal::NoFreeAddress { need: Need::Both, tried: vec!["a".into(), "b".into()] })),
        ("RequireDualStack: skips v4 pool",  vec![v4(), dual("b")], vec![], svc("s", json!({"families": ["IPv4", "IPv6"], "policy": "RequireDualStack"})), got(&["198.18.0.0", "2001:db8::"])),
        ("RequireDualStack: named pool",     vec![v4()], vec![], svc("s", json!({"families": ["IPv4", "IPv6"], "policy": "RequireDualStack", "ann": {"pool": "a"}})), refused(Refusal::PoolExhausted { pool: "a".into(), need: Need::Both })),
        ("RequireDualStack: requested",      vec![dual("a")], vec![], svc("s", json!({"families": ["IPv4", "IPv6"], "policy": "RequireDualStack", "ann": {"ips": "2001:db8::2,198.18.0.2"}})), got(&["198.18.0.2", "2001:db8::2"])),
        ("PreferDualStack: both",            vec![dual("a")], vec![], svc("s", json!({"families": ["IPv4", "IPv6"], "policy": "PreferDualStack"})), got(&["198.18.0.0", "2001:db8::"])),
        ("PreferDualStack: falls back",      vec![v4()], vec![], svc("s", json!({"families": ["IPv4", "IPv6"], "policy": "PreferDualStack"})), got(&["198.18.0.0"])),
        ("PreferDualStack: primary first",   vec![v4(), v6only("b")], vec![], svc("s", json!({"families": ["IPv6", "IPv4"], "policy": "PreferDualStack"})), got(&["2001:db8::"])),
        ("PreferDualStack: pool with both",  vec![prio("a", "198.18.0.0-198.18.0.3", 1), pool("b", &["198.18.5.0-198.18.5.3", "2001:db8::/126"], json!({"serviceAllocation": {"priority": 2}}))], vec![], svc("s", json!({"families": ["IPv4", "IPv6"], "policy": "PreferDualStack"})), got(&["198.18.5.0", "2001:db8::"])),
        ("PreferDualStack, one family",      vec![dual("a")], vec![], svc("s", json!({"families": ["IPv6"], "policy": "PreferDualStack"})), got(&["2001:db8::"])),
        // Sharing.
        ("sharing: same key, other ports",   vec![v4()], vec![shared("x", json!({}))], shared("s", json!({"ports": ["TCP/443"]})), got(&["198.18.0.1"])),
        ("sharing: first of free or shared",vec![v4()], vec![shared("x", json!({}))], svc("s", json!({"ann": {"share": "k"}, "ports": ["TCP/443"]})), got(&["198.18.0.0"])),
        ("sharing: joins before free ones",  vec![v4()], vec![svc("x", json!({"ann": {"share": "k"}}))], svc("s", json!({"ann": {"share": "k"}, "ports": ["TCP/443"]})), got(&["198.18.0.0"])),
        ("sharing: other protocol",          vec![v4()], vec![shared("x", json!({}))], shared("s", json!({"ports": ["UDP/80"]})), got(&["198.18.0.1"])),
        ("sharing: holder does not share",   vec![v4()], vec![first("x")], shared("s", json!({"ports": ["TCP/443"]})), refused(in_use("x", SharingConflict::HolderDoesNotShare))),
        ("sharing: this one does not share", vec![v4()], vec![shared("x", json!({}))], svc("s", json!({"ann": {"ips": "198.18.0.1"}, "ports": ["TCP/443"]})), refused(in_use("x", SharingConflict::DoesNotShare))),
        ("sharing: different keys",          vec![v4()], vec![shared("x", json!({}))], svc("s", json!({"ann": {"ips": "198.18.0.1", "share": "other"}, "ports": ["TCP/443"]})), refused(in_use("x", SharingConflict::DifferentKeys { theirs: "k".into() }))),
        ("sharing: same port",               vec![v4()], vec![shared("x", json!({}))], shared("s", json!({})), refused(in_use("x", SharingConflict::PortInUse(Port { protocol: "TCP".into(), port: 80 })))),
        ("sharing: Local, same selector",    vec![v4()], vec![shared("x", json!({"externalTrafficPolicy": "Local", "selector": {"app": "a"}}))], shared("s", json!({"externalTrafficPolicy": "Local", "selector": {"app": "a"}, "ports": ["TCP/443"]})), got(&["198.18.0.1"])),
        ("sharing: Local and Cluster",       vec![v4()], vec![shared("x", json!({}))], shared("s", json!({"externalTrafficPolicy": "Local", "selector": {"app": "a"}, "ports": ["TCP/443"]})), refused(in_use("x", SharingConflict::TrafficPolicy))),
        ("sharing: Local, other selectors",  vec![v4()], vec![shared("x", json!({"externalTrafficPolicy": "Local", "selector": {"app": "a"}}))], shared("s", json!({"externalTrafficPolicy": "Local", "selector": {"app": "b"}, "ports": ["TCP/443"]})), refused(in_use("x", SharingConflict::TrafficPolicy))),
        ("sharing: incompatible skipped",    vec![v4()], vec![x.clone()], svc("s", json!({"ann": {"share": "k"}})), got(&["198.18.0.1"])),
        // Exhaustion, and Services that are not ours.
        ("pool exhausted",                   vec![pool("a", &["198.18.0.0/31"], none.clone())], vec![x.clone(), svc("y", none.clone())], svc("s", none.clone()), refused(Refusal::NoFreeAddress { need: Need::One(Family::V4), tried: vec!["a".into()] })),
        ("no pools at all",                  vec![], vec![], svc("s", none.clone()), refused(Refusal::NoPools)),
        ("not a LoadBalancer",               vec![v4()], vec![], svc("s", json!({"type": "ClusterIP"})), Outcome::NotOurs),
        ("another class",                    vec![v4()], vec![], svc("s", json!({"loadBalancerClass": "other"})), Outcome::NotOurs),
    ];
    for (name, pools, before, svc, want) in cases {
        assert_eq!(run(&pools, &before, &svc), want, "{name}");
    }
}

/// Updates `svc` and returns it as the controller writes it back.
fn apply(a: &mut Allocator, svc: &Service) -> (Outcome, Service) {
    let outcome = a.update(svc);
    let svc = written(svc, &outcome);
    (outcome, svc)
}

#[test]
fn release_on_delete_frees_the_address() {
    let mut a = world(&[pool("a", &["198.18.0.0/32"], json!({}))]);
    let (outcome, _) = apply(&mut a, &svc("s", json!({})));
    assert_eq!(outcome, got(&["198.18.0.0"]));
    let t = svc("t", json!({}));
    assert!(matches!(a.update(&t), Outcome::Refused { .. }));
    assert_eq!(a.waiting().collect::<Vec<_>>(), vec![&default("t")]);
    assert!(a.remove("default", "s"));
    assert!(!a.remove("default", "s"), "released once");
    assert_eq!(a.update(&t), got(&["198.18.0.0"]));
    assert_eq!(a.waiting().count(), 0);
}

#[test]
fn release_when_no_longer_a_load_balancer_or_ours() {
    let mut a = world(&[pool("a", &["198.18.0.0/32"], json!({}))]);
    for change in [
        json!({"type": "ClusterIP"}),
        json!({"loadBalancerClass": "other"}),
    ] {
        let (_, s) = apply(&mut a, &svc("s", json!({})));
        assert_eq!(a.addresses("default", "s"), ips(&["198.18.0.0"]));
        let mut changed = svc("s", change);
        changed.status = s.status.clone();
        assert_eq!(a.update(&changed), Outcome::Released);
        assert_eq!(a.update(&changed), Outcome::NotOurs);
        assert_eq!(a.users(ip("198.18.0.0")).count(), 0);
        assert_eq!(a.update(&svc("t", json!({}))), got(&["198.18.0.0"]));
        a.remove("default", "t");
    }
}

#[test]
fn restore_after_restart_keeps_every_address() {
    let pools = [pool("a", &["198.18.0.0/29", "2001:db8::/125"], json!({}))];
    let mut a = world(&pools);
    let specs = [
        svc("s1", json!({})),
        svc(
            "s2",
            json!({"families": ["IPv4", "IPv6"], "policy": "RequireDualStack"}),
        ),
        svc("s3", json!({"ann": {"share": "k"}})),
        svc("s4", json!({"ann": {"share": "k"}, "ports": ["UDP/53"]})),
        svc("s5", json!({"ann": {"ips": "198.18.0.6"}})),
    ];
    let mut written_back = Vec::new();
    for s in &specs {
        let (outcome, s) = apply(&mut a, s);
        assert!(matches!(outcome, Outcome::Assigned(_)), "{outcome:?}");
        written_back.push(s);
    }
    let before: Vec<Vec<IpAddr>> = written_back
        .iter()
        .map(|s| {
            a.addresses("default", s.metadata.name.as_deref().unwrap_or_default())
                .to_vec()
        })
        .collect();
    assert_eq!(before[2], before[3], "s3 and s4 share");

    // A fresh allocator, Services restored in another order.
    let mut b = world(&pools);
    for s in written_back.iter().rev() {
        assert!(b.restore(s).is_empty());
    }
    for (s, had) in written_back.iter().zip(&before) {
        assert_eq!(b.update(s), Outcome::Unchanged);
        let name = s.metadata.name.as_deref().unwrap_or_default();
        assert_eq!(b.addresses("default", name), had.as_slice());
    }
    // A new Service gets a free address, not one restored.
    // (.0 is the /29's network address.)
    assert_eq!(b.update(&svc("new", json!({}))), got(&["198.18.0.4"]));
    assert_eq!(
        a.counts(),
        b.counts()
            .into_iter()
            .map(|mut c| {
                c.ipv4.in_use -= 1;
                c
            })
            .collect::<Vec<_>>()
    );
}

#[test]
fn restore_reports_a_clash_and_update_reassigns() {
    let mut a = world(&[pool("a", &["198.18.0.0-198.18.0.3"], json!({}))]);
    let s = svc("s", json!({"status": ["198.18.0.1"]}));
    let t = svc("t", json!({"status": ["198.18.0.1"]}));
    assert!(a.restore(&s).is_empty());
    let issues = a.restore(&t);
    assert_eq!(issues.len(), 1);
    assert_eq!(issues[0].object, default("t"));
    assert!(
        issues[0].message.contains("also held by Service default/s"),
        "{}",
        issues[0]
    );
    assert_eq!(a.update(&s), Outcome::Unchanged);
    assert_eq!(a.update(&t), got(&["198.18.0.0"]));
}

#[test]
fn pool_edit_leaving_an_address_in_no_pool_keeps_it_and_reports_it() {
    let mut a = world(&[pool("a", &["198.18.0.0-198.18.0.3"], json!({}))]);
    let (_, s) = apply(&mut a, &svc("s", json!({})));
    let moved = [pool("a", &["198.18.5.0-198.18.5.3"], json!({}))];
    let issues = a.set_pools(&moved);
    assert_eq!(issues.len(), 1);
    assert_eq!(
        issues[0].to_string(),
        "Service default/s: address 198.18.0.0 is in no IPAddressPool; the Service keeps it \
         until it asks for another address or is deleted"
    );
    // Not yanked: kept on update, across a restart, and reported again.
    assert_eq!(a.update(&s), Outcome::Unchanged);
    assert_eq!(a.set_pools(&moved), issues);
    let mut b = world(&moved);
    assert_eq!(b.restore(&s), issues);
    assert_eq!(b.update(&s), Outcome::Unchanged);
    assert_eq!(b.counts()[0].in_use(), 0, "counted in no pool");
    // Deleting every pool is no different.
    assert_eq!(a.set_pools(&[]), issues);
    assert_eq!(a.update(&s), Outcome::Unchanged);
    // Once it asks for another address, it moves.
    a.set_pools(&moved);
    let asks = svc("s", json!({"ann": {"pool": "a"}, "status": ["198.18.0.0"]}));
    assert_eq!(a.update(&asks), got(&["198.18.5.0"]));
    assert!(a.set_pools(&moved).is_empty());
}

#[test]
fn pool_edit_that_no_longer_serves_the_service_reassigns() {
    let restricted = json!({"serviceAllocation": {"namespaces": ["team-a"]}});
    let mut a = world(&[
        pool("a", &["198.18.0.0-198.18.0.3"], json!({})),
        pool("b", &["198.18.5.0-198.18.5.3"], json!({})),
    ]);
    let (_, s) = apply(&mut a, &svc("s", json!({})));
    assert_eq!(a.addresses("default", "s"), ips(&["198.18.0.0"]));
    assert!(
        a.set_pools(&[
            pool("a", &["198.18.0.0-198.18.0.3"], restricted),
            pool("b", &["198.18.5.0-198.18.5.3"], json!({}))
        ])
        .is_empty()
    );
    assert_eq!(a.update(&s), got(&["198.18.5.0"]));
}

#[test]
fn valid_assignment_stays_put() {
    let mut a = world(&[pool("b", &["198.18.5.0-198.18.5.3"], json!({}))]);
    let (_, s) = apply(&mut a, &svc("s", json!({})));
    // A pool that would now come first does not move it.
    a.set_pools(&[
        pool(
            "a",
            &["198.18.0.0-198.18.0.3"],
            json!({"serviceAllocation": {"priority": 1}}),
        ),
        pool("b", &["198.18.5.0-198.18.5.3"], json!({})),
    ]);
    assert_eq!(a.update(&s), Outcome::Unchanged);
    // A stale copy without the status we wrote: same address, written again.
    assert_eq!(a.update(&svc("s", json!({}))), got(&["198.18.5.0"]));
    // New ports, sharing key alone on the address: kept.
    let s2 = svc(
        "s",
        json!({"ports": ["UDP/53"], "ann": {"share": "k"}, "status": ["198.18.5.0"]}),
    );
    assert_eq!(a.update(&s2), Outcome::Unchanged);
}

#[test]
fn new_request_moves_the_service() {
    let mut a = world(&[
        pool("a", &["198.18.0.0-198.18.0.3"], json!({})),
        pool("b", &["198.18.5.0-198.18.5.3"], json!({})),
    ]);
    let (_, s) = apply(&mut a, &svc("s", json!({})));
    let by_ip = svc(
        "s",
        json!({"ann": {"ips": "198.18.0.3"}, "status": ["198.18.0.0"]}),
    );
    assert_eq!(a.update(&by_ip), got(&["198.18.0.3"]));
    let by_pool = svc("s", json!({"ann": {"pool": "b"}, "status": ["198.18.0.3"]}));
    assert_eq!(a.update(&by_pool), got(&["198.18.5.0"]));
    assert_eq!(a.users(ip("198.18.0.3")).count(), 0);
    // An unreadable request keeps the current address (as MetalLB does).
    let broken = svc(
        "s",
        json!({"ann": {"pool": "b", "ips": "nonsense"}, "status": ["198.18.5.0"]}),
    );
    let Outcome::Refused { reason, kept } = a.update(&broken) else {
        panic!("refused");
    };
    assert_eq!(kept, ips(&["198.18.5.0"]));
    assert!(matches!(reason, Refusal::InvalidRequest { .. }));
    let _ = s;
}

#[test]
fn prefer_dual_stack_gains_the_missing_family_from_its_pool() {
    let prefer = json!({"families": ["IPv4", "IPv6"], "policy": "PreferDualStack"});
    let mut a = world(&[pool("a", &["198.18.0.0-198.18.0.3"], json!({}))]);
    let (outcome, s) = apply(&mut a, &svc("s", prefer));
    assert_eq!(outcome, got(&["198.18.0.0"]));
    assert_eq!(a.update(&s), Outcome::Unchanged);
    a.set_pools(&[
        pool("a", &["198.18.0.0-198.18.0.3", "2001:db8::/126"], json!({})),
        pool("b", &["2001:db8:1::/126"], json!({})),
    ]);
    assert_eq!(a.update(&s), got(&["198.18.0.0", "2001:db8::"]));
}

#[test]
fn addresses_of_the_wrong_families_are_given_up() {
    let mut a = world(&[pool(
        "a",
        &["198.18.0.0-198.18.0.3", "2001:db8::/126"],
        json!({}),
    )]);
    // An IPv4 Service whose status shows an IPv6 address.
    let s = svc("s", json!({"status": ["2001:db8::3"]}));
    assert!(a.restore(&s).is_empty());
    assert_eq!(a.update(&s), got(&["198.18.0.0"]));
    assert_eq!(a.users(ip("2001:db8::3")).count(), 0);
    // Now RequireDualStack: one address is not enough.
    let dual = svc(
        "s",
        json!({"families": ["IPv4", "IPv6"], "policy": "RequireDualStack", "status": ["198.18.0.0"]}),
    );
    assert_eq!(a.update(&dual), got(&["198.18.0.0", "2001:db8::"]));
    // Back to SingleStack IPv6: two are too many.
    let single = svc(
        "s",
        json!({"families": ["IPv6"], "status": ["198.18.0.0", "2001:db8::"]}),
    );
    assert_eq!(a.update(&single), got(&["2001:db8::"]));
}

#[test]
fn port_clash_after_an_edit_moves_the_service() {
    let mut a = world(&[pool("a", &["198.18.0.0-198.18.0.3"], json!({}))]);
    let share = |id: &str, ports: Value, status: &[&str]| {
        svc(
            id,
            json!({"ann": {"share": "k"}, "ports": ports, "status": status}),
        )
    };
    let (_, x) = apply(&mut a, &share("x", json!(["TCP/80"]), &[]));
    let (outcome, _) = apply(&mut a, &share("s", json!(["TCP/443"]), &[]));
    assert_eq!(outcome, got(&["198.18.0.0"]));
    assert_eq!(a.users(ip("198.18.0.0")).count(), 2);
    // s now also wants port 80, which x uses there.
    assert_eq!(
        a.update(&share("s", json!(["TCP/443", "TCP/80"]), &["198.18.0.0"])),
        got(&["198.18.0.1"])
    );
    assert_eq!(a.update(&x), Outcome::Unchanged);
}

#[test]
fn counts_per_pool_without_enumerating() {
    let mut a = world(&[
        pool(
            "buggy",
            &["198.18.0.0/23", "198.18.3.250-198.18.4.5"],
            json!({"avoidBuggyIPs": true}),
        ),
        pool("plain", &["198.18.8.0/24", "198.18.8.128/25"], json!({})),
        pool("six", &["2001:db8::/64"], json!({})),
        // Overlaps "six"; an address is counted in the first pool by name.
        pool("whole", &["::/0"], json!({"autoAssign": false})),
    ]);
    let count = |a: &Allocator, name: &str| {
        a.counts()
            .into_iter()
            .find(|c| c.pool == name)
            .expect("pool")
    };
    // /23: 512 - 4; .250-.255 and .0-.5 across a /24 boundary: 12 - 2.
    assert_eq!(
        count(&a, "buggy").ipv4,
        FamilyCount {
            in_use: 0,
            total: 508 + 10
        }
    );
    assert_eq!(
        count(&a, "plain").ipv4.total,
        254,
        "overlapping entries count once, network and broadcast left out"
    );
    assert_eq!(count(&a, "six").ipv6.total, 1 << 64);
    assert_eq!(count(&a, "whole").total(), u128::MAX);
    for i in 0..3 {
        a.update(&svc(
            &format!("s{i}"),
            json!({"ann": {"pool": "six"}, "families": ["IPv6"]}),
        ));
        a.update(&svc(&format!("t{i}"), json!({"ann": {"pool": "buggy"}})));
    }
    assert_eq!(count(&a, "six").ipv6.in_use, 3);
    assert_eq!(count(&a, "buggy").in_use(), 3);
    assert_eq!(a.addresses("default", "t0"), ips(&["198.18.0.1"]));
    a.remove("default", "s0");
    assert_eq!(count(&a, "six").ipv6.in_use, 2);
}

#[test]
fn pool_problems_are_reported() {
    let mut a = Allocator::new(classless());
    let issues = a.set_pools(&[
        pool("a", &["198.18.0.0/33", "198.18.1.0/30"], json!({})),
        pool("b", &["198.18.2.0/30"], json!({"serviceAllocation": {"priority": "high"}})),
        pool("c", &["198.18.3.0/30"], json!({"serviceAllocation": {"serviceSelectors": [{"matchExpressions": [{"key": "k", "operator": "Bad"}]}]}})),
        pool("d", &["198.18.4.0/30"], json!({"future": 1, "serviceAllocation": {"later": true}})),
    ]);
    let messages: Vec<String> = issues.iter().map(ToString::to_string).collect();
    assert_eq!(messages.len(), 5, "{messages:#?}");
    assert_eq!(
        messages[3..],
        [
            "IPAddressPool metallb-system/d: field spec.future is not supported by this speaker \
             and has no effect",
            "IPAddressPool metallb-system/d: field spec.serviceAllocation.later is not supported \
             by this speaker and has no effect"
        ]
    );
    assert!(
        messages[0]
            .starts_with("IPAddressPool metallb-system/a: bad address entry \"198.18.0.0/33\"")
    );
    assert!(
        messages[1].starts_with("IPAddressPool metallb-system/b: serviceAllocation is unreadable")
    );
    assert!(messages[2].starts_with(
        "IPAddressPool metallb-system/c: serviceAllocation.serviceSelectors[0] selects nothing"
    ));
    // The good entry of a works; b and c take no Service unasked.
    assert_eq!(a.update(&svc("s", json!({}))), got(&["198.18.1.1"]));
    let by_name = |p: &str| svc("t", json!({"ann": {"pool": p}}));
    assert_eq!(
        a.update(&by_name("b")),
        refused(Refusal::PoolNotAllowed { pool: "b".into() })
    );
    assert_eq!(
        a.update(&by_name("c")),
        refused(Refusal::PoolNotAllowed { pool: "c".into() })
    );
}

#[test]
fn namespace_labels_change_which_pools_serve() {
    let mut a = world(&[pool(
        "a",
        &["198.18.0.0-198.18.0.3"],
        json!({"serviceAllocation": {"namespaceSelectors": [{"matchLabels": {"tier": "gold"}}]}}),
    )]);
    let s = svc("team-a/s", json!({}));
    assert_eq!(a.update(&s), refused(Refusal::NoPoolForService));
    a.set_namespace(&namespace("team-a", json!({"tier": "gold"})));
    assert_eq!(a.update(&s), got(&["198.18.0.0"]));
    a.remove_namespace("team-a");
    assert_eq!(a.update(&s), refused(Refusal::NoPoolForService));
}

#[test]
fn order_of_pools_and_of_services_within_a_pass_does_not_matter() {
    let pools = [
        pool(
            "a",
            &["198.18.0.0-198.18.0.3"],
            json!({"serviceAllocation": {"priority": 3}}),
        ),
        pool(
            "b",
            &["198.18.5.0-198.18.5.3"],
            json!({"serviceAllocation": {"priority": 3}}),
        ),
        pool("c", &["198.18.6.0/30"], json!({})),
    ];
    let mut reversed = pools.clone();
    reversed.reverse();
    let mut x = world(&pools);
    let mut y = world(&reversed);
    for i in 0..6 {
        let s = svc(&format!("s{i}"), json!({}));
        assert_eq!(x.update(&s), y.update(&s));
    }
    assert_eq!(x.addresses("default", "s4"), ips(&["198.18.5.0"]));
}

#[test]
fn refusals_read_as_sentences() {
    let in_use = Refusal::InUse {
        ip: ip("198.18.0.1"),
        by: default("x"),
        why: SharingConflict::PortInUse(Port {
            protocol: "TCP".into(),
            port: 80,
        }),
    };
    assert_eq!(
        in_use.to_string(),
        "address 198.18.0.1 is in use by Service default/x and cannot be shared: both use port TCP/80"
    );
    let dual = Refusal::NoFreeAddress {
        need: Need::Both,
        tried: vec!["a".into(), "b".into()],
    };
    assert_eq!(
        dual.to_string(),
        "RequireDualStack cannot be met: no IPAddressPool has a free IPv4 address together with a free IPv6 address left for this Service (pools tried: a, b)"
    );
    let exhausted = Refusal::PoolExhausted {
        pool: "a".into(),
        need: Need::One(Family::V6),
    };
    assert_eq!(
        exhausted.to_string(),
        "IPAddressPool \"a\" has no free IPv6 address left for this Service"
    );
    assert_eq!(
        Refusal::NotInAnyPool(ip("203.0.113.1")).to_string(),
        "requested address 203.0.113.1 is in no IPAddressPool (pools leave out the network and broadcast addresses of IPv4 CIDRs, and addresses ending in .0 and .255 when they avoid buggy IPs)"
    );
}

/// Cost per change: thousands of Services in a /64 and a /16, each
/// allocation a few B-tree lookups (a scan would still finish, so the test
/// checks results, and the runs that make it cheap).
#[test]
fn large_pools_allocate_in_order() {
    let mut a = world(&[
        pool("v6", &["2001:db8::/64"], json!({})),
        pool("v4", &["10.0.0.0/16"], json!({"avoidBuggyIPs": true})),
    ]);
    for i in 0..3000 {
        a.update(&svc(&format!("s{i}"), json!({"families": ["IPv6"]})));
        a.update(&svc(&format!("t{i}"), json!({})));
    }
    assert_eq!(a.addresses("default", "s2999"), ips(&["2001:db8::bb7"]));
    // 254 per /24 (no .0 nor .255): the 3000th = 11 * 254 + 206.
    assert_eq!(a.addresses("default", "t2999"), ips(&["10.0.11.206"]));
    a.remove("default", "t1000");
    a.remove("default", "s5");
    a.ledger.check_runs();
    assert_eq!(a.update(&svc("u", json!({}))), got(&["10.0.3.239"]));
    assert_eq!(
        a.update(&svc("w", json!({"families": ["IPv6"]}))),
        got(&["2001:db8::5"])
    );
    a.ledger.check_runs();
}
