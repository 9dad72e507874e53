//! The origin scenario on real wires: three front nodes on one L2 segment
//! with the agent, a client, one VIP. What users judge us by: exactly one
//! node answers; on every kind of failure another takes over and the
//! client's kernel follows without asking; never two answer at once.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use speaker_tests::{
    apiserver::{LEASES, Match},
    capture::Capture,
    frames::Arp,
    require_privileges,
    scenario::{Scenario, TcpServer},
    topology::ipv4,
    wait_for,
};

const VIP: &str = "198.18.0.10";

fn running(vips: &[&str]) -> Scenario {
    require_privileges();
    let mut s = Scenario::new(3, vips).expect("testbed");
    s.start_all().expect("agents");
    s
}

/// Pings the VIP from the client's kernel; its neighbour entry's MAC.
fn client_resolves(s: &Scenario) -> Option<[u8; 6]> {
    let c = &s.lan.client;
    let ok = c
        .command("ping")
        .args(["-c", "1", "-W", "2", VIP])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(ok, "the client cannot reach the VIP");
    c.neighbour_mac("eth0", VIP)
}

fn mac_of(s: &Scenario, name: &str) -> [u8; 6] {
    s.lan.fronts[s.index(name)].mac
}

#[test]
fn one_front_node_answers_and_the_client_kernel_learns_its_mac() {
    let s = running(&[VIP]);
    let owner = s.settled(VIP, Duration::from_secs(10), |_| true);
    assert_eq!(client_resolves(&s), Some(mac_of(&s, &owner)));
}

#[test]
fn after_sigkill_the_gratuitous_arp_moves_the_client_without_it_asking() {
    let mut s = running(&[VIP]);
    let first = s.settled(VIP, Duration::from_secs(10), |_| true);
    assert_eq!(
        client_resolves(&s),
        Some(mac_of(&s, &first)),
        "entry REACHABLE on the first owner"
    );

    let cap = Capture::start(&s.lan.client, "eth0", "arp").expect("capture");
    let a = s.take(&first).expect("agent");
    a.signal(libc::SIGKILL);
    let moved = wait_for(Duration::from_secs(6), || {
        let mac = s.lan.client.neighbour_mac("eth0", VIP);
        mac.is_some_and(|m| m != mac_of(&s, &first))
    });
    assert!(
        moved.is_some(),
        "the client's entry still names the dead node"
    );
    // Until then the client sent no request of its own for the VIP.
    let asked = cap
        .finish()
        .expect("capture")
        .iter()
        .filter_map(|f| Arp::parse(f))
        .any(|a| a.op == 1 && a.eth_src == s.lan.client_mac && a.tpa == ipv4(VIP));
    assert!(
        !asked,
        "the client re-resolved instead of following the gratuitous ARP"
    );
    let entry = s.lan.client.neighbour_mac("eth0", VIP);
    let second = s.settled(VIP, Duration::from_secs(3), |h| h != first);
    assert_eq!(
        entry,
        Some(mac_of(&s, &second)),
        "the entry names the new owner"
    );
}

#[test]
fn carrier_loss_on_the_owner_moves_the_vip() {
    let s = running(&[VIP]);
    let first = s.settled(VIP, Duration::from_secs(10), |_| true);
    // Unplug the owner: its bridge port goes down, its eth0 loses carrier.
    s.lan
        .lan
        .ip(&["link", "set", &format!("p{}", s.index(&first)), "down"])
        .expect("unplug");
    s.settled(VIP, Duration::from_secs(2), |h| h != first);
}

#[test]
fn a_node_cut_off_from_the_api_goes_silent_before_another_answers() {
    // Its peers reach the API, so they refuse it every promise.
    owner_cut_off_hands_over(false);
}

/// Cut off from the API and from its peers, the owner gets no promise:
/// it goes silent at its expiry, and only then does another node answer.
#[test]
fn an_owner_cut_off_from_the_api_and_its_peers_goes_silent_then_is_taken_over() {
    owner_cut_off_hands_over(true);
}

/// Cuts the owner off from the API (and from its peers when `lan`), the
/// client asking every 20 ms and everything on its port captured: the
/// owner falls silent at its expiry, then another node answers, never
/// both at once, never a third.
fn owner_cut_off_hands_over(lan: bool) {
    let s = running(&[VIP]);
    let first = s.settled(VIP, Duration::from_secs(10), |_| true);
    let cap = Capture::start(&s.lan.lan, "pc", "arp").expect("capture");
    let mut prober = s.arp_probe(VIP, 400).expect("arping");
    std::thread::sleep(Duration::from_millis(500));
    let i = s.index(&first);
    if lan {
        s.lan.fronts[i]
            .ns
            .block_udp_port(7475, true)
            .expect("iptables");
    }
    let cut_at = now_ns();
    s.lan
        .cluster
        .node_listener(i)
        .expect("stand-in listener")
        .close();
    let second = s.settled(VIP, Duration::from_secs(6), |h| h != first);
    std::thread::sleep(Duration::from_millis(300));
    let _ = prober.kill();
    let _ = prober.wait();

    let replies = vip_replies(&s, cap);
    let (last_old, first_new) = handover(&replies, mac_of(&s, &first), mac_of(&s, &second));
    assert!(
        last_old < first_new,
        "overlap: the old owner answered {} ms after the new one started",
        (last_old - first_new) / 1_000_000
    );
    // At its expiry: the renew deadline (1.5 s) after its last renewal.
    assert!(
        last_old < cut_at + 1_600_000_000,
        "the cut-off owner kept answering {} ms after the cut",
        (last_old - cut_at) / 1_000_000
    );
}

#[test]
fn a_returning_node_does_not_take_the_vip_back() {
    let mut s = running(&[VIP]);
    let first = s.settled(VIP, Duration::from_secs(10), |_| true);
    s.take(&first).expect("agent").signal(libc::SIGKILL);
    let second = s.settled(VIP, Duration::from_secs(6), |h| h != first);
    s.start(s.index(&first)).expect("restart");
    let stolen = wait_for(Duration::from_secs(4), || {
        s.holder(VIP).as_deref() != Some(second.as_str())
    });
    assert!(stolen.is_none(), "the returning node took the VIP back");
    s.settled(VIP, Duration::from_secs(2), |h| h == second);
}

#[test]
fn three_vips_spread_over_the_three_nodes_on_first_assignment() {
    let vips = ["198.18.0.10", "198.18.0.11", "198.18.0.12"];
    let s = running(&vips);
    let mut owners: Vec<String> = vips
        .iter()
        .map(|v| s.settled(v, Duration::from_secs(10), |_| true))
        .collect();
    owners.sort();
    owners.dedup();
    assert_eq!(owners.len(), 3, "owners: {owners:?}");
}

#[test]
fn one_node_lease_renewal_delayed_1_2_s_costs_nothing_on_the_wire() {
    let s = running(&[VIP]);
    let owner = s.settled(VIP, Duration::from_secs(10), |_| true);
    let record = s.record(VIP);
    let cap = Capture::start(&s.lan.lan, "pc", "arp").expect("capture");
    let mut prober = s.arp_probe(VIP, 150).expect("arping");
    std::thread::sleep(Duration::from_millis(500));
    let lease = speaker::k8s::leases::node_lease_name(&owner);
    s.lan.cluster.require_stand_in().delay_next(
        Match::path(&format!("/leases/{lease}")).method("PUT"),
        1,
        Duration::from_millis(1200),
    );
    let _ = prober.wait();
    let replies = vip_replies(&s, cap);

    assert_answered_throughout(&replies, mac_of(&s, &owner));
    assert_eq!(s.record(VIP), record, "the ownership record was written");
}

/// The whole control plane gone for a minute (every listener of the
/// stand-in closed): the owner keeps answering on its peers' promises, no
/// gap and one MAC throughout, and when the API returns nothing moves.
#[test]
fn a_minute_without_the_api_costs_nothing_on_the_wire() {
    let s = running(&[VIP]);
    let owner = s.settled(VIP, Duration::from_secs(10), |_| true);
    let record = s.record(VIP);
    let cap = Capture::start(&s.lan.lan, "pc", "arp").expect("capture");
    // 20 ms apart for the minute and a few seconds either side.
    let mut prober = s.arp_probe(VIP, 3300).expect("arping");
    std::thread::sleep(Duration::from_millis(1000));
    api_outage(&s, Duration::from_secs(60));
    let _ = prober.wait();
    let replies = vip_replies(&s, cap);

    assert_answered_throughout(&replies, mac_of(&s, &owner));
    assert!(
        replies.len() > 3000,
        "only {} of 3300 probes answered",
        replies.len()
    );
    assert_eq!(s.record(VIP), record, "the ownership record was written");
    assert!(
        s.metrics(&owner).contains("speaker_holds_ended_total 1"),
        "the hold did not end once"
    );
}

/// nginx dies on the owner while its endpoint is still ready in the
/// EndpointSlice (the kubelet's probe has not noticed: up to 30 s at its
/// defaults): the owner's local endpoint probe hands the VIP over to a
/// front whose endpoint serves, and it stays there once nginx is back.
#[test]
fn a_dead_endpoint_on_the_owner_moves_the_vip_before_the_kubelet_notices() {
    require_privileges();
    let mut s = Scenario::new(3, &[VIP]).expect("testbed");
    let mut servers = s.serve_endpoints().expect("servers");
    s.start_all().expect("agents");
    let first = s.settled(VIP, Duration::from_secs(10), |_| true);

    servers[s.index(&first)] = None;
    let second = s.settled(VIP, Duration::from_secs(5), |h| h != first);
    assert!(
        s.metrics(&first)
            .contains("speaker_endpoint_probe_handovers_total 1"),
        "not handed over by the probe"
    );

    // nginx back on the first owner: nothing moves (ownership is sticky).
    servers[s.index(&first)] = Some(TcpServer::start(&s.lan, s.index(&first)).expect("server"));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(s.holder(VIP).as_deref(), Some(second.as_str()));
}

/// An upgrade as the DaemonSet rolls it: each front's agent stopped
/// (SIGTERM) and started again, one after another. Every owner hands over
/// gracefully: the VIP stays answered, by one node at a time.
#[test]
fn a_rolling_restart_of_every_front_keeps_the_vip_answered() {
    let mut s = running(&[VIP]);
    s.settled(VIP, Duration::from_secs(10), |_| true);
    let cap = Capture::start(&s.lan.lan, "pc", "arp").expect("capture");
    let mut prober = s.arp_probe(VIP, 2000).expect("arping");
    std::thread::sleep(Duration::from_millis(500));
    for i in 0..s.lan.fronts.len() {
        let name = s.lan.fronts[i].name.clone();
        let mut a = s.take(&name).expect("agent");
        assert!(a.terminate().expect("stop").success(), "{}", a.log());
        s.start(i).expect("restart");
        // The DaemonSet moves on once the new pod is ready.
        std::thread::sleep(Duration::from_secs(2));
    }
    let _ = prober.kill();
    let _ = prober.wait();
    let replies = vip_replies(&s, cap);

    let gap = replies
        .windows(2)
        .map(|w| w[1].0 - w[0].0)
        .max()
        .expect("replies");
    assert!(gap < 100_000_000, "a {} ms gap", gap / 1_000_000);
    // Two nodes answering at once would alternate; each handover is one
    // change of MAC, and at most one per restart.
    let changes = replies.windows(2).filter(|w| w[0].1 != w[1].1).count();
    assert!(changes <= 3, "the answering MAC changed {changes} times");
}

/// The agents' watches back off while the API is away; the owner names
/// as witnesses only peers whose leases it saw renewed, so unless the
/// lease watch is back soon after the API, a second outage finds no
/// witness named and the owner goes silent at its expiry.
#[test]
fn a_second_outage_soon_after_the_first_costs_nothing_either() {
    let s = running(&[VIP]);
    let owner = s.settled(VIP, Duration::from_secs(10), |_| true);
    let cap = Capture::start(&s.lan.lan, "pc", "arp").expect("capture");
    let mut prober = s.arp_probe(VIP, 1100).expect("arping");
    std::thread::sleep(Duration::from_millis(1000));
    api_outage(&s, Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(3));
    api_outage(&s, Duration::from_secs(5));
    let _ = prober.wait();
    let replies = vip_replies(&s, cap);

    assert_answered_throughout(&replies, mac_of(&s, &owner));
    assert!(
        s.metrics(&owner).contains("speaker_holds_ended_total 2"),
        "the owner did not hold through both outages"
    );
}

/// Every API listener closed for `lasts`, then bound again inside its
/// front's namespace.
fn api_outage(s: &Scenario, lasts: Duration) {
    let listeners: Vec<_> = (0..s.lan.fronts.len())
        .map(|i| s.lan.cluster.node_listener(i).expect("stand-in listener"))
        .collect();
    listeners.iter().for_each(|l| l.close());
    std::thread::sleep(lasts);
    for (i, l) in listeners.iter().enumerate() {
        s.lan.fronts[i]
            .ns
            .enter(|| l.reopen())
            .expect("enter")
            .expect("reopen");
    }
}

#[test]
fn an_owner_paused_during_its_burst_sends_nothing_after_the_new_owner_answers() {
    let mut s = running(&[VIP]);
    let first = s.settled(VIP, Duration::from_secs(10), |_| true);
    let mut a = s.take(&first).expect("agent");
    assert!(a.terminate().expect("stop").success(), "{}", a.log());
    // A takeover: its gratuitous ARP burst runs for the next seconds.
    let second = s.settled(VIP, Duration::from_secs(2), |h| h != first);
    let cap = Capture::start(&s.lan.lan, "pc", "arp").expect("capture");
    let mut prober = s.arp_probe(VIP, 350).expect("arping");
    std::thread::sleep(Duration::from_secs(1));
    let b = s.take(&second).expect("agent");
    b.signal(libc::SIGSTOP);
    let third = s.settled(VIP, Duration::from_secs(4), |h| h != first && h != second);
    std::thread::sleep(Duration::from_millis(1500));
    b.signal(libc::SIGCONT);
    std::thread::sleep(Duration::from_secs(1));
    let _ = prober.kill();
    let _ = prober.wait();

    let frames: Vec<(u64, Arp)> = cap
        .finish_timed()
        .expect("capture")
        .into_iter()
        .filter_map(|(t, f)| Arp::parse(&f).map(|a| (t, a)))
        .collect();
    let (old, new) = (mac_of(&s, &second), mac_of(&s, &third));
    let first_new = frames
        .iter()
        .filter(|(_, a)| a.op == 2 && a.sha == new && a.spa == ipv4(VIP))
        .map(|(t, _)| *t)
        .min()
        .expect("the new owner answered");
    let late = frames
        .iter()
        .filter(|(t, a)| *t > first_new && a.sha == old)
        .count();
    assert_eq!(
        late, 0,
        "the paused owner sent {late} ARP frames after the new owner answered"
    );
    drop((a, b));
}

#[test]
fn a_new_mac_on_the_owners_interface_is_answered_and_announced() {
    let s = running(&[VIP]);
    let owner = s.settled(VIP, Duration::from_secs(10), |_| true);
    assert_eq!(client_resolves(&s), Some(mac_of(&s, &owner)));
    let new_mac = [0x02, 0x5e, 0, 0, 0, 0x42];
    s.lan.fronts[s.index(&owner)]
        .ns
        .ip(&["link", "set", "dev", "eth0", "address", "02:5e:00:00:00:42"])
        .expect("new MAC");
    // The owner's gratuitous ARP moves the client's entry, unasked.
    let moved = wait_for(Duration::from_secs(3), || {
        s.lan.client.neighbour_mac("eth0", VIP) == Some(new_mac)
    });
    assert!(
        moved.is_some(),
        "the client's entry still names the old MAC"
    );
    assert_eq!(client_resolves(&s), Some(new_mac));
    assert_eq!(s.holder(VIP), Some(owner), "ownership moved");
}

#[test]
fn a_record_rolled_back_never_makes_two_nodes_answer() {
    let mut s = running(&[VIP]);
    let first = s.settled(VIP, Duration::from_secs(10), |_| true);
    let name = speaker::k8s::leases::vip_lease_name(VIP.parse().expect("VIP"));
    let c = &s.lan.cluster;
    let mut old = c.get(&LEASES, &name).expect("get").expect("record");
    // A handover, and the first owner back: the record's history now has
    // an older holder to go back to.
    let i = s.index(&first);
    let mut a = s.take(&first).expect("agent");
    assert!(a.terminate().expect("stop").success(), "{}", a.log());
    let second = s.settled(VIP, Duration::from_secs(3), |h| h != first);
    s.start(i).expect("restart");

    let cap = Capture::start(&s.lan.lan, "pc", "arp").expect("capture");
    let mut prober = s.arp_probe(VIP, 200).expect("arping");
    std::thread::sleep(Duration::from_millis(500));
    // The store goes back to the first owner's record (a restore).
    old["metadata"]
        .as_object_mut()
        .expect("metadata")
        .remove("resourceVersion");
    s.lan.cluster.replace(&LEASES, old).expect("roll back");
    let _ = prober.wait();
    let replies = vip_replies(&s, cap);

    let (was, now) = (mac_of(&s, &first), mac_of(&s, &second));
    assert!(
        replies.iter().all(|(_, m)| *m == now),
        "another node answered: {} replies from the restored holder",
        replies.iter().filter(|(_, m)| *m == was).count()
    );
    let (holder, term, _) = s.record(VIP).expect("record");
    assert_eq!(holder.as_deref(), Some(second.as_str()), "the VIP moved");
    assert!(term > 2, "not claimed back above every term seen ({term})");
}

/// Who answered, when: replies for the VIP to the client in a capture, by
/// sender MAC.
fn vip_replies(s: &Scenario, cap: Capture) -> Vec<(u64, [u8; 6])> {
    cap.finish_timed()
        .expect("capture")
        .into_iter()
        .filter_map(|(t, f)| Arp::parse(&f).map(|a| (t, a)))
        .filter(|(_, a)| a.op == 2 && a.spa == ipv4(VIP) && a.eth_dst == s.lan.client_mac)
        .map(|(t, a)| (t, a.sha))
        .collect()
}

/// Asserts that only `mac` answered, with no gap: probes go out every
/// 20 ms, and a lapse costs at least a record write and a reply or more.
fn assert_answered_throughout(replies: &[(u64, [u8; 6])], mac: [u8; 6]) {
    assert!(
        replies.iter().all(|(_, m)| *m == mac),
        "another node answered"
    );
    let gap = replies
        .windows(2)
        .map(|w| w[1].0 - w[0].0)
        .max()
        .expect("replies");
    assert!(
        gap < 100_000_000,
        "a {} ms gap in the answers",
        gap / 1_000_000
    );
}

/// When the `old` owner last answered and the `new` one first did;
/// asserts that no third node answered.
fn handover(replies: &[(u64, [u8; 6])], old: [u8; 6], new: [u8; 6]) -> (u64, u64) {
    assert!(
        replies.iter().all(|(_, m)| *m == old || *m == new),
        "a third node answered"
    );
    let times = |mac: [u8; 6]| {
        replies
            .iter()
            .filter(move |(_, m)| *m == mac)
            .map(|(t, _)| *t)
    };
    let (Some(last_old), Some(first_new)) = (times(old).max(), times(new).min()) else {
        panic!("no answers from one of the two");
    };
    (last_old, first_new)
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The story end to end: the user's pool is a CIDR (the story's
/// 192.168.122.100/24, here a block of the test LAN), the Service asks for
/// nothing; the controller gives it the pool's first usable address (not
/// the network address), the agents announce it, the client reaches it;
/// deleted, the address is released and no longer answered.
#[test]
fn the_controller_gives_the_story_service_an_address_the_agents_announce_until_it_is_deleted() {
    require_privileges();
    let vip = "198.18.0.9";
    let mut s = Scenario::story(3, "198.18.0.8/29", &[vip]).expect("testbed");
    s.start_all().expect("agents");
    let controller = s.start_controller().expect("controller");
    let given = wait_for(Duration::from_secs(10), || s.service_ips(0) == [vip]);
    assert!(
        given.is_some(),
        "status shows {:?}, expected [{vip}]\n{}",
        s.service_ips(0),
        controller.log()
    );
    let owner = s.settled(vip, Duration::from_secs(10), |_| true);
    let c = &s.lan.client;
    let reached = c
        .command("ping")
        .args(["-c", "1", "-W", "2", vip])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(reached, "the client cannot reach {vip}");
    assert_eq!(c.neighbour_mac("eth0", vip), Some(mac_of(&s, &owner)));
    // MetalLB's gauge, so its dashboards and alerts work (refreshed each
    // second).
    let ns = s.lan.cluster.namespace().to_string();
    let line = format!(
        "metallb_speaker_announced{{ip=\"{vip}\",node=\"{owner}\",protocol=\"layer2\",\
         service=\"{ns}/nginx-0\"}} 1.0"
    );
    let shown = wait_for(Duration::from_secs(3), || {
        s.metrics(&owner).lines().any(|l| l == line)
    });
    assert!(shown.is_some(), "{line} not in\n{}", s.metrics(&owner));
    // The client's ARP for it, counted and answered by the data plane; the
    // takeover's gratuitous rounds (a metric refreshed each second).
    let value = |name: &str| {
        let prefix = format!("{name}{{ip=\"{vip}\"}} ");
        s.metrics(&owner)
            .lines()
            .find_map(|l| l.strip_prefix(&prefix)?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let counted = wait_for(Duration::from_secs(3), || {
        value("metallb_layer2_requests_received") >= 1.0
            && value("metallb_layer2_responses_sent") >= 1.0
            && value("metallb_layer2_gratuitous_sent") >= 1.0
    });
    assert!(counted.is_some(), "{}", s.metrics(&owner));

    s.delete_service(0).expect("delete");
    let released = wait_for(Duration::from_secs(10), || {
        s.answering_by_map(vip).is_empty() && s.answering_on_wire(vip).is_none()
    });
    assert!(
        released.is_some(),
        "{vip} still answered by {:?} after its Service was deleted",
        s.answering_by_map(vip)
    );
    drop(controller);
}

/// Another host on the LAN claims the VIP (ARP with the VIP as sender):
/// the owner says so on the Service, counts it, and defends the VIP with
/// one gratuitous round, at most every 10 s however often it is claimed.
#[test]
fn a_claim_on_the_vip_is_an_event_a_count_and_one_defence_per_10_s() {
    use speaker_tests::apiserver::EVENTS_V1;
    let s = running(&[VIP]);
    let owner = s.settled(VIP, Duration::from_secs(10), |_| true);
    let owner_mac = mac_of(&s, &owner);
    // The takeover's own burst (5 rounds, 1 s apart) is over first.
    std::thread::sleep(Duration::from_millis(4500));
    let cap = Capture::start(&s.lan.client, "eth0", "arp").expect("capture");
    let claim = || {
        let out = s
            .lan
            .client
            .command("arping")
            .args(["-q", "-U", "-c", "1", "-S", VIP, "-i", "eth0", VIP])
            .output();
        assert!(out.is_ok_and(|o| o.status.code().is_some()), "arping");
    };
    claim();
    std::thread::sleep(Duration::from_millis(2000));
    claim();
    std::thread::sleep(Duration::from_millis(2000));
    let defences = cap
        .finish()
        .expect("capture")
        .iter()
        .filter_map(|f| Arp::parse(f))
        .filter(|a| a.sha == owner_mac && a.spa == ipv4(VIP) && a.tpa == ipv4(VIP))
        .count();
    // One round: a gratuitous request and a gratuitous reply.
    assert_eq!(defences, 2, "gratuitous frames from the owner");

    let ns = s.lan.cluster.namespace().to_string();
    let client_mac = s
        .lan
        .client_mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    let events: Vec<serde_json::Value> = s
        .lan
        .cluster
        .list_in(&EVENTS_V1, &ns)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e["reason"] == "AddressConflict")
        .collect();
    assert_eq!(events.len(), 1, "{events:#?}");
    let note = events[0]["note"].as_str().unwrap_or_default();
    assert!(
        note.contains(&client_mac) && note.contains(VIP) && note.contains(&owner),
        "{note}"
    );
    assert_eq!(events[0]["regarding"]["name"], "nginx-0");
    let counted = s.metrics(&owner).lines().any(|l| {
        l.strip_prefix(&format!("speaker_vip_conflicts_total{{ip=\"{VIP}\"}} "))
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n >= 2)
    });
    assert!(counted, "{}", s.metrics(&owner));
    s.assert_agents_granted();
}
