//! `speaker agent` on three front nodes against the API stand-in: one
//! owner per VIP, and ownership moves on SIGTERM, SIGKILL (after the
//! lease), endpoint unreadiness and node exclusion, never to an ineligible
//! node. At every step the record in the API, every node's BPF map and the
//! answer on the wire agree. Bad configuration is reported and harms
//! nothing else; pools outside the config namespace are not used.

use std::time::Duration;

use serde_json::json;
use speaker_tests::{
    apiserver::{
        EVENTS, EVENTS_V1, IP_ADDRESS_POOLS, L2_ADVERTISEMENTS, SERVICE_L2_STATUSES, SERVICES,
    },
    require_privileges,
    scenario::Scenario,
    wait_for,
};

const VIP: &str = "198.18.0.10";

fn running(vips: &[&str]) -> Scenario {
    require_privileges();
    let mut s = Scenario::new(3, vips).expect("testbed");
    s.start_all().expect("agents");
    s
}

#[test]
fn ownership_moves_on_sigterm_and_on_sigkill_after_the_lease() {
    let mut s = running(&[VIP]);
    let first = s.settled(VIP, Duration::from_secs(10), |_| true);
    l2_status_names(&s, &first);

    // Graceful: the owner removes its entry, releases; a peer takes over.
    let mut a = s.take(&first).expect("agent");
    assert!(a.terminate().expect("stop").success(), "{}", a.log());
    let second = s.settled(VIP, Duration::from_secs(2), |h| h != first);
    l2_status_names(&s, &second);

    // Crash: nobody releases; a peer takes over after the lease duration,
    // and clears the dead owner's ServiceL2Status.
    let b = s.take(&second).expect("agent");
    b.signal(libc::SIGKILL);
    let third = s.settled(VIP, Duration::from_secs(6), |h| h != first && h != second);
    l2_status_names(&s, &third);
    drop((a, b));
    s.assert_agents_granted();
}

/// Waits until MetalLB's ServiceL2Status objects say, as MetalLB writes
/// them, that `node` alone announces the Service: one object, `l2-*`,
/// labelled and with a status naming the node and the Service.
fn l2_status_names(s: &Scenario, node: &str) {
    let ns = s.lan.cluster.namespace().to_string();
    let want = json!({"node": node, "serviceName": "nginx-0", "serviceNamespace": ns});
    let mut seen = Vec::new();
    let shown = wait_for(Duration::from_secs(5), || {
        seen = s
            .lan
            .cluster
            .list_in(&SERVICE_L2_STATUSES, &ns)
            .unwrap_or_default();
        seen.len() == 1
            && seen[0]["status"] == want
            && seen[0]["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("l2-"))
            && seen[0]["metadata"]["labels"]
                == json!({
                    "metallb.io/node": node,
                    "metallb.io/service-name": "nginx-0",
                    "metallb.io/service-namespace": ns,
                })
    });
    assert!(shown.is_some(), "ServiceL2Status for {node}: {seen:#?}");
}

#[test]
fn eligibility_changes_move_ownership_never_to_an_ineligible_node() {
    let s = running(&[VIP]);
    let first = s.settled(VIP, Duration::from_secs(10), |_| true);

    // The owner's endpoint turns unready (externalTrafficPolicy: Local).
    s.set_endpoint_ready(&first, false).expect("slice");
    let second = s.settled(VIP, Duration::from_secs(3), |h| h != first);

    // The new owner's node is excluded from load balancers.
    s.exclude(&second).expect("node");
    let third = s.settled(VIP, Duration::from_secs(3), |h| h != first && h != second);

    // And it stays with the one eligible node.
    let left = wait_for(Duration::from_secs(2), || {
        s.holder(VIP).as_deref() != Some(third.as_str())
    });
    assert!(left.is_none(), "ownership left the only eligible node");
}

#[test]
fn configuration_errors_become_events_and_harm_nothing_else() {
    require_privileges();
    let mut s = Scenario::new(3, &[VIP]).expect("testbed");
    let c = &s.lan.cluster;
    #[rustfmt::skip]
    let broken = [
        (&IP_ADDRESS_POOLS, json!({"metadata": {"name": "overlap"}, "spec": {"addresses": ["198.18.0.8/29"]}})),
        (&L2_ADVERTISEMENTS, json!({"metadata": {"name": "typo"}, "spec": {"ipAddressPools": ["no-such-pool"]}})),
        (&L2_ADVERTISEMENTS, json!({"metadata": {"name": "bad-selector"}, "spec": {"ipAddressPools": ["front"], "nodeSelectors": [{"matchExpressions": [{"key": "node-role", "operator": "Sometimes", "values": ["front"]}]}]}})),
        (&L2_ADVERTISEMENTS, json!({"metadata": {"name": "no-pools"}, "spec": {"ipAddressPoolSelectors": [{"matchLabels": {"tier": "none"}}]}})),
    ];
    for (gvr, obj) in broken {
        c.create(gvr, obj).expect("create");
    }
    s.start_all().expect("agents");
    // The VIP is served as if the broken objects were not there.
    s.settled(VIP, Duration::from_secs(10), |_| true);
    // Each problem is an Event on the object at fault.
    let c = &s.lan.cluster;
    let named = |name: &str| {
        let mut events = c.list(&EVENTS_V1).unwrap_or_default();
        events.extend(c.list(&EVENTS).unwrap_or_default());
        events.iter().any(|e| {
            e["reason"] == "ConfigurationProblem"
                && (e["regarding"]["name"] == name || e["involvedObject"]["name"] == name)
        })
    };
    for name in ["overlap", "typo", "bad-selector", "no-pools"] {
        let seen = wait_for(Duration::from_secs(3), || named(name));
        assert!(seen.is_some(), "no ConfigurationProblem event for {name}");
    }
    for a in s.agents.iter_mut().flatten() {
        assert!(a.running(), "an agent died:\n{}", a.log());
    }
}

#[test]
fn a_second_agent_under_the_same_node_name_refuses_to_run() {
    let s = running(&[VIP]);
    let owner = s.settled(VIP, Duration::from_secs(10), |_| true);
    let record = s.record(VIP);
    // A misconfigured agent on another machine, claiming the owner's name.
    let elsewhere = (s.index(&owner) + 1) % 3;
    let mut twin = s.spawn_elsewhere(elsewhere, &owner).expect("twin");
    let status = twin.wait_exit(Duration::from_secs(8));
    assert!(
        status.is_some_and(|st| !st.success()),
        "the twin did not refuse to run:\n{}",
        twin.log()
    );
    assert!(
        twin.log().contains("another speaker agent"),
        "no clear error:\n{}",
        twin.log()
    );
    let c = &s.lan.cluster;
    let warned = wait_for(Duration::from_secs(3), || {
        let mut events = c.list_in(&EVENTS_V1, "default").unwrap_or_default();
        events.extend(c.list_in(&EVENTS, "default").unwrap_or_default());
        events.iter().any(|e| {
            e["reason"] == "DuplicateAgent"
                && (e["regarding"]["name"] == owner.as_str()
                    || e["involvedObject"]["name"] == owner.as_str())
        })
    });
    assert!(warned.is_some(), "no DuplicateAgent event on the Node");
    // The first agent goes on as before, alone.
    assert_eq!(s.record(VIP), record, "the record was written");
    assert_eq!(s.answering_by_map(VIP), vec![owner]);
}

#[test]
fn pools_outside_the_config_namespace_are_not_used() {
    require_privileges();
    const ELSEWHERE_VIP: &str = "198.18.0.11";
    let mut s = Scenario::new(3, &[VIP, ELSEWHERE_VIP]).expect("testbed");
    let c = &s.lan.cluster;
    // The config namespace's pool keeps VIP only; ELSEWHERE_VIP's pool and
    // advertisement, otherwise the same, live in another namespace.
    let pool = |vip: &str| json!({"metadata": {"name": "front"}, "spec": {"addresses": [format!("{vip}/32")]}});
    c.replace(&IP_ADDRESS_POOLS, pool(VIP)).expect("pool");
    let elsewhere = format!("{}-elsewhere", c.namespace());
    let ad = c
        .get(&L2_ADVERTISEMENTS, "front")
        .expect("get")
        .expect("the scenario's advertisement");
    let ad = json!({"metadata": {"name": "front"}, "spec": ad["spec"]});
    c.create_in(&IP_ADDRESS_POOLS, &elsewhere, pool(ELSEWHERE_VIP))
        .expect("pool elsewhere");
    c.create_in(&L2_ADVERTISEMENTS, &elsewhere, ad)
        .expect("advertisement elsewhere");
    s.start_all().expect("agents");
    s.settled(VIP, Duration::from_secs(10), |_| true);

    // The Service of ELSEWHERE_VIP is seen, its address in no pool.
    let c = &s.lan.cluster;
    assert!(c.get(&SERVICES, "nginx-1").expect("get").is_some());
    let reported = wait_for(Duration::from_secs(3), || {
        let mut events = c.list(&EVENTS_V1).unwrap_or_default();
        events.extend(c.list(&EVENTS).unwrap_or_default());
        events.iter().any(|e| {
            let note = e["note"].as_str().or(e["message"].as_str()).unwrap_or("");
            e["reason"] == "ConfigurationProblem"
                && note.contains(&format!("address {ELSEWHERE_VIP} is in no IPAddressPool"))
        })
    });
    assert!(
        reported.is_some(),
        "no Event: {ELSEWHERE_VIP} is in no pool"
    );
    let announced = wait_for(Duration::from_secs(2), || {
        s.holder(ELSEWHERE_VIP).is_some() || !s.answering_by_map(ELSEWHERE_VIP).is_empty()
    });
    assert!(announced.is_none(), "a pool of another namespace was used");
}
