//! `speaker agent` on three front nodes against the API stand-in: one
//! owner per VIP, and ownership moves on SIGTERM, SIGKILL (after the
//! lease), endpoint unreadiness and node exclusion, never to an ineligible
//! node. At every step the record in the API, every node's BPF map and the
//! answer on the wire agree.

use std::time::Duration;

use serde_json::{Value, json};
use speaker_tests::{
    agent::Agent,
    apiserver::{
        ENDPOINT_SLICES, EVENTS, EVENTS_V1, IP_ADDRESS_POOLS, L2_ADVERTISEMENTS, LEASES, NODES,
        SERVICES,
    },
    lan::Lan,
    require_privileges, wait_for,
};

const VIP: &str = "198.18.0.10";
const LEASE: &str = "speaker-vip-198-18-0-10";

fn node(name: &str) -> Value {
    json!({
        "metadata": {"name": name, "labels": {"node-role": "front"}},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}
    })
}

fn slice(ready: &[bool]) -> Value {
    let endpoints: Vec<Value> = ready
        .iter()
        .enumerate()
        .map(|(i, r)| json!({"addresses": [format!("10.0.0.{}", i + 1)], "conditions": {"ready": r}, "nodeName": format!("front-{i}")}))
        .collect();
    json!({
        "metadata": {"name": "nginx-1", "labels": {"kubernetes.io/service-name": "nginx"}},
        "addressType": "IPv4",
        "endpoints": endpoints
    })
}

/// The origin picture: a pool with one address, an L2Advertisement for
/// the front nodes, nginx with a ready endpoint on each.
fn seed(lan: &Lan) {
    let c = &lan.cluster;
    for f in &lan.fronts {
        c.create(&NODES, node(&f.name)).expect("node");
    }
    c.create(
        &IP_ADDRESS_POOLS,
        json!({"metadata": {"name": "front"}, "spec": {"addresses": [format!("{VIP}/32")]}}),
    )
    .expect("pool");
    c.create(&L2_ADVERTISEMENTS, json!({"metadata": {"name": "front"}, "spec": {"ipAddressPools": ["front"], "nodeSelectors": [{"matchLabels": {"node-role": "front"}}]}})).expect("advertisement");
    c.create(&SERVICES, json!({
        "metadata": {"name": "nginx"},
        "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "ports": [{"port": 80}]},
        "status": {"loadBalancer": {"ingress": [{"ip": VIP}]}}
    })).expect("service");
    c.create(&ENDPOINT_SLICES, slice(&vec![true; lan.fronts.len()]))
        .expect("slice");
}

fn start(lan: &Lan, i: usize) -> Agent {
    let f = &lan.fronts[i];
    let kubeconfig = lan.cluster.kubeconfig(i).as_os_str().to_owned();
    let args = [
        "agent",
        "--node-name",
        &f.name,
        "--namespace",
        lan.cluster.namespace(),
        "-i",
        "eth0",
        "--metrics-addr",
        "127.0.0.1:7472",
    ];
    let mut agent = Agent::start_with_env(&f.ns, &args, &[("KUBECONFIG", kubeconfig.as_os_str())])
        .expect("start agent");
    agent.wait_ready(&f.ns, "eth0").expect("agent ready");
    agent
}

/// The VIP's owner according to its record in the API.
fn holder(lan: &Lan) -> Option<String> {
    let lease = lan.cluster.get(&LEASES, LEASE).ok()??;
    lease["spec"]["holderIdentity"].as_str().map(str::to_string)
}

/// The nodes whose BPF map holds an unexpired entry for the VIP.
fn answering_by_map(lan: &Lan, agents: &[Option<Agent>]) -> Vec<String> {
    let now = speaker::dataplane::monotonic_now_ns();
    lan.fronts
        .iter()
        .zip(agents)
        .filter(|(_, a)| {
            a.as_ref().is_some_and(|a| {
                let out = std::process::Command::new("bpftool")
                    .args(["-j", "map", "dump", "pinned"])
                    .arg(a.bpffs.join("VIPS"))
                    .output();
                let Ok(out) = out else { return false };
                let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
                v.as_array().into_iter().flatten().any(|e| {
                    let f = &e["formatted"];
                    let addr: Vec<u64> = f["key"]["addr"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_u64)
                        .take(4)
                        .collect();
                    let exp = f["value"]["expires_ns"].as_u64().unwrap_or(0);
                    addr == [198, 18, 0, 10] && (exp == 0 || exp > now)
                })
            })
        })
        .map(|(f, _)| f.name.clone())
        .collect()
}

/// The node whose MAC answers the client's ARP request.
fn answering_on_wire(lan: &Lan) -> Option<String> {
    let out = lan
        .client
        .command("arping")
        .args(["-r", "-i", "eth0", "-c", "1", "-w", "1", VIP])
        .output()
        .ok()?;
    let mac = speaker_tests::netns::parse_mac(String::from_utf8_lossy(&out.stdout).trim()).ok()?;
    lan.front_by_mac(mac).map(|i| lan.fronts[i].name.clone())
}

/// Waits until exactly one node owns the VIP, per the record, every map and
/// the wire, and that node satisfies `ok`; returns it.
fn settled(
    lan: &Lan,
    agents: &[Option<Agent>],
    within: Duration,
    ok: impl Fn(&str) -> bool,
) -> String {
    let mut last = (None, Vec::new(), None);
    let done = wait_for(within, || {
        let h = holder(lan);
        let maps = answering_by_map(lan, agents);
        let wire = if h.is_some() && maps.len() == 1 {
            answering_on_wire(lan)
        } else {
            None
        };
        let good =
            h.as_deref().is_some_and(&ok) && maps == [h.clone().unwrap_or_default()] && wire == h;
        last = (h, maps, wire);
        good
    });
    let logs: String = agents
        .iter()
        .flatten()
        .map(|a| a.log())
        .collect::<Vec<_>>()
        .join("\n-----\n");
    assert!(
        done.is_some(),
        "not settled within {within:?}: record {:?}, maps {:?}, wire {:?}\n{logs}",
        last.0,
        last.1,
        last.2
    );
    last.0.unwrap_or_default()
}

fn index(lan: &Lan, name: &str) -> usize {
    lan.fronts
        .iter()
        .position(|f| f.name == name)
        .expect("a front node")
}

#[test]
fn ownership_moves_on_sigterm_and_on_sigkill_after_the_lease() {
    require_privileges();
    let lan = Lan::new(3, &[VIP]).expect("testbed");
    seed(&lan);
    let mut agents: Vec<Option<Agent>> = (0..3).map(|i| Some(start(&lan, i))).collect();
    let first = settled(&lan, &agents, Duration::from_secs(10), |_| true);

    // Graceful: the owner removes its entry, releases; a peer takes over.
    let i = index(&lan, &first);
    let mut a = agents[i].take().expect("agent");
    assert!(a.terminate().expect("stop").success(), "{}", a.log());
    let second = settled(&lan, &agents, Duration::from_secs(2), |h| h != first);

    // Crash: nobody releases; a peer takes over after the lease duration.
    let j = index(&lan, &second);
    let b = agents[j].take().expect("agent");
    b.signal(libc::SIGKILL);
    settled(&lan, &agents, Duration::from_secs(6), |h| {
        h != first && h != second
    });
    drop((a, b));
}

#[test]
fn eligibility_changes_move_ownership_never_to_an_ineligible_node() {
    require_privileges();
    let lan = Lan::new(3, &[VIP]).expect("testbed");
    seed(&lan);
    let agents: Vec<Option<Agent>> = (0..3).map(|i| Some(start(&lan, i))).collect();
    let first = settled(&lan, &agents, Duration::from_secs(10), |_| true);

    // The owner's endpoint turns unready (externalTrafficPolicy: Local).
    let i = index(&lan, &first);
    let mut ready = vec![true; 3];
    ready[i] = false;
    lan.cluster
        .replace(&ENDPOINT_SLICES, slice(&ready))
        .expect("slice");
    let second = settled(&lan, &agents, Duration::from_secs(3), |h| h != first);

    // The new owner's node is excluded from load balancers.
    let j = index(&lan, &second);
    let mut excluded = node(&second);
    excluded["metadata"]["labels"]["node.kubernetes.io/exclude-from-external-load-balancers"] =
        json!("true");
    lan.cluster.replace(&NODES, excluded).expect("node");
    let third = settled(&lan, &agents, Duration::from_secs(3), |h| {
        h != first && h != second
    });

    // And it stays with the one eligible node.
    let stayed = wait_for(Duration::from_secs(2), || {
        holder(&lan).as_deref() != Some(third.as_str())
    });
    assert!(stayed.is_none(), "ownership left the only eligible node");
    let _ = j;
}

#[test]
fn configuration_errors_become_events_and_harm_nothing_else() {
    require_privileges();
    let lan = Lan::new(3, &[VIP]).expect("testbed");
    seed(&lan);
    let c = &lan.cluster;
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
    let mut agents: Vec<Option<Agent>> = (0..3).map(|i| Some(start(&lan, i))).collect();
    // The VIP is served as if the broken objects were not there.
    settled(&lan, &agents, Duration::from_secs(10), |_| true);
    // Each problem is an Event on the object at fault.
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
    for a in agents.iter_mut().flatten() {
        assert!(a.running(), "an agent died:\n{}", a.log());
    }
}
