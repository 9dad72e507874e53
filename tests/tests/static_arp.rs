//! `speaker static` on a real veth link between two namespaces: a real
//! Linux client resolves the VIP, captures show the wire, and stopping the
//! agent in each way leaves the network as it should.

use std::time::Duration;

use speaker_tests::{
    agent::Agent,
    bpftool,
    capture::Capture,
    frames::Arp,
    netns::Netns,
    require_privileges,
    topology::{CLIENT_IP, NODE_IP, Pair, VIP, ipv4},
    wait_for,
};

const OTHER_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x00, 0x00, 0x99];

fn start(pair: &Pair, extra: &[&str]) -> Agent {
    let mut args = vec!["static", "--interface", "eth0", "--vip", VIP];
    args.extend(extra);
    let mut agent = Agent::start(&pair.node, &args).expect("start speaker");
    agent.wait_ready(&pair.node, "eth0").expect("speaker ready");
    agent
}

/// `arping -c N` from the client: the MACs that answered.
fn arping(client: &Netns, target: &str, count: u32) -> Vec<[u8; 6]> {
    let out = client
        .command("arping")
        .args([
            "-r",
            "-i",
            "eth0",
            "-c",
            &count.to_string(),
            // 200 ms apart, so every request fits well within the deadline.
            "-W",
            "0.2",
            "-w",
            "2",
            target,
        ])
        .output()
        .expect("run arping");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| speaker_tests::netns::parse_mac(l.trim()).ok())
        .collect()
}

fn ping(client: &Netns, target: &str) -> bool {
    client
        .command("ping")
        .args(["-c", "1", "-W", "2", target])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn client_kernel_and_arping_resolve_the_vip_exactly() {
    require_privileges();
    let pair = Pair::new().expect("topology");
    let agent = start(&pair, &[]);
    let cap = Capture::start(&pair.client, "eth0", "arp").expect("capture");

    // The client's own kernel resolves the VIP, and traffic flows.
    assert!(
        ping(&pair.client, VIP),
        "client cannot reach the VIP:\n{}",
        agent.log()
    );
    let mac = pair
        .client
        .neighbour_mac("eth0", VIP)
        .expect("client has a neighbour entry for the VIP");
    assert_eq!(
        mac, pair.node_mac,
        "client resolved the VIP to the wrong MAC"
    );

    // arping gets every request answered, by the node's MAC.
    assert_eq!(arping(&pair.client, VIP, 3), vec![pair.node_mac; 3]);

    // On the wire: every reply for the VIP is exactly what Linux would send.
    let frames = cap.finish().expect("capture");
    let replies: Vec<Arp> = frames
        .iter()
        .filter_map(|f| Arp::parse(f))
        .filter(|a| a.op == 2 && a.spa == ipv4(VIP) && a.eth_dst == pair.client_mac)
        .collect();
    assert!(
        replies.len() >= 4,
        "expected >= 4 replies, captured {}",
        replies.len()
    );
    for r in &replies {
        assert_eq!(r.eth_src, pair.node_mac);
        assert_eq!(r.ether_type, 0x0806);
        assert_eq!((r.htype, r.ptype, r.hlen, r.plen), (1, 0x0800, 6, 4));
        assert_eq!(r.sha, pair.node_mac);
        assert_eq!(r.tha, pair.client_mac);
        assert_eq!(r.tpa, ipv4(CLIENT_IP));
    }
    let counters = bpftool::counters(&agent.bpffs).expect("bpftool counters");
    assert!(counters["arp_reply"] >= 4, "{counters:?}");
}

#[test]
fn node_own_address_is_still_answered_by_its_kernel() {
    require_privileges();
    let pair = Pair::new().expect("topology");
    let agent = start(&pair, &[]);
    assert_eq!(arping(&pair.client, NODE_IP, 2), vec![pair.node_mac; 2]);
    assert!(ping(&pair.client, NODE_IP));
    let counters = bpftool::counters(&agent.bpffs).expect("bpftool counters");
    assert!(
        counters["pass_not_vip"] >= 2,
        "the node's address must be passed: {counters:?}"
    );
    assert_eq!(counters["arp_reply"], 0, "{counters:?}");
}

#[test]
fn stale_client_entry_follows_gratuitous_arp_within_a_second() {
    require_privileges();
    let pair = Pair::new().expect("topology");
    let other = speaker::netdev::fmt_mac(&OTHER_MAC);
    pair.client
        .ip(&[
            "neigh", "replace", VIP, "lladdr", &other, "dev", "eth0", "nud", "stale",
        ])
        .expect("seed a stale entry");
    let cap = Capture::start(&pair.client, "eth0", "arp").expect("capture");
    let agent = start(&pair, &[]);
    let took = wait_for(Duration::from_secs(1), || {
        pair.client.neighbour_mac("eth0", VIP) == Some(pair.node_mac)
    });
    assert!(
        took.is_some(),
        "client entry did not switch within 1 s:\n{}",
        agent.log()
    );

    let frames = cap.finish().expect("capture");
    let arps: Vec<Arp> = frames.iter().filter_map(|f| Arp::parse(f)).collect();
    // The client switched on the announcement alone: it never asked.
    assert!(
        !arps.iter().any(|a| a.op == 1 && a.sha == pair.client_mac),
        "client re-resolved instead of learning from the gratuitous ARP"
    );
    // Both gratuitous forms Linux accepts, broadcast, sender = target = VIP.
    let req = arps
        .iter()
        .find(|a| a.op == 1 && a.sha == pair.node_mac)
        .expect("gratuitous request");
    let rep = arps
        .iter()
        .find(|a| a.op == 2 && a.sha == pair.node_mac && a.eth_dst == [0xff; 6])
        .expect("gratuitous reply");
    for g in [req, rep] {
        assert_eq!(g.eth_dst, [0xff; 6]);
        assert_eq!(g.eth_src, pair.node_mac);
        assert_eq!((g.spa, g.tpa), (ipv4(VIP), ipv4(VIP)));
        assert_eq!(g.trailer.len(), 18, "padded to the Ethernet minimum");
    }
    assert_eq!(req.tha, [0; 6]);
    assert_eq!(
        rep.tha, pair.node_mac,
        "a reply counts as gratuitous only with tha = sha"
    );
}

#[test]
fn frozen_agent_stops_being_answered_after_hold_time() {
    require_privileges();
    let pair = Pair::new().expect("topology");
    let agent = start(&pair, &["--hold-time", "1s", "--refresh-interval", "250ms"]);
    assert_eq!(arping(&pair.client, VIP, 1), vec![pair.node_mac]);

    agent.signal(libc::SIGSTOP);
    std::thread::sleep(Duration::from_millis(1300));
    assert!(
        arping(&pair.client, VIP, 2).is_empty(),
        "still answered while frozen"
    );
    let counters = bpftool::counters(&agent.bpffs).expect("bpftool counters");
    assert!(counters["pass_expired"] >= 2, "{counters:?}");

    // Resumed, it refreshes and answers again.
    agent.signal(libc::SIGCONT);
    let back = wait_for(Duration::from_secs(2), || {
        arping(&pair.client, VIP, 1) == vec![pair.node_mac]
    });
    assert!(
        back.is_some(),
        "not answered after SIGCONT:\n{}",
        agent.log()
    );
}

#[test]
fn sigterm_leaves_nothing_attached_or_pinned() {
    require_privileges();
    let pair = Pair::new().expect("topology");
    let mut agent = start(&pair, &[]);
    assert_eq!(arping(&pair.client, VIP, 1), vec![pair.node_mac]);
    let status = agent.terminate().expect("stop");
    assert!(status.success(), "exit status {status}:\n{}", agent.log());
    assert!(
        !pair.node.has_xdp("eth0").expect("ip link"),
        "XDP still attached"
    );
    assert!(
        !agent.bpffs.exists(),
        "pins left at {}",
        agent.bpffs.display()
    );
    assert!(
        arping(&pair.client, VIP, 2).is_empty(),
        "VIP still answered"
    );
}

#[test]
fn foreign_claim_on_the_vip_is_recorded_as_a_conflict() {
    require_privileges();
    let pair = Pair::new().expect("topology");
    let agent = start(&pair, &[]);
    // The client announces the VIP as its own (unsolicited ARP).
    let out = pair
        .client
        .command("arping")
        .args(["-q", "-U", "-c", "2", "-S", VIP, "-i", "eth0", VIP])
        .output()
        .expect("arping -U");
    assert!(out.status.code().is_some(), "arping did not run");
    let found = wait_for(Duration::from_secs(2), || {
        bpftool::conflicts(&agent.bpffs)
            .unwrap_or_default()
            .iter()
            .any(|(addr, n, mac)| *addr == ipv4(VIP) && *n >= 1 && *mac == pair.client_mac)
    });
    assert!(
        found.is_some(),
        "no conflict recorded: {:?}",
        bpftool::conflicts(&agent.bpffs)
    );
    // The claim is passed, never answered.
    let counters = bpftool::counters(&agent.bpffs).expect("bpftool counters");
    assert!(counters["conflict"] >= 1, "{counters:?}");
}

/// `speaker inspect` in the node's namespace: its JSON and its table.
fn inspect(pair: &Pair, args: &[&str]) -> (Option<i32>, String, String) {
    let bin = speaker_tests::agent::speaker_bin();
    let out = pair
        .node
        .command(bin.to_str().expect("UTF-8 path"))
        .arg("inspect")
        .args(args)
        .output()
        .expect("run speaker inspect");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn inspect_shows_each_vip_its_link_mac_expiry_conflicts_and_verdicts() {
    require_privileges();
    let pair = Pair::new().expect("topology");
    let agent = start(&pair, &["--hold-time", "3s"]);
    let bpffs = agent.bpffs.to_str().expect("UTF-8").to_string();
    assert_eq!(arping(&pair.client, VIP, 1), [pair.node_mac]);
    // A foreign claim, to be shown as a conflict.
    let _ = pair
        .client
        .command("arping")
        .args(["-q", "-U", "-c", "1", "-S", VIP, "-i", "eth0", VIP])
        .output();

    let mac = |m: [u8; 6]| {
        m.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    let json = || {
        let (code, out, err) = inspect(&pair, &["--bpffs", &bpffs, "--json"]);
        assert_eq!(code, Some(0), "{err}");
        serde_json::from_str::<serde_json::Value>(&out).expect("JSON")
    };
    wait_for(Duration::from_secs(2), || {
        json()["vips"][0]["conflicts"].as_u64() >= Some(1)
    })
    .expect("the claim shown as a conflict");
    let report = json();
    let vip = &report["vips"][0];
    assert_eq!(report["vips"].as_array().map(Vec::len), Some(1), "{report}");
    assert_eq!(vip["vip"], VIP);
    assert_eq!(vip["link"], "eth0");
    assert_eq!(vip["vlan"], 0);
    assert_eq!(vip["mac"], mac(pair.node_mac));
    assert_eq!(vip["live"], true);
    let left = vip["expires_in_ms"].as_i64().unwrap_or(0);
    assert!(0 < left && left <= 3000, "{report}");
    // The arping above, counted by the data plane.
    assert!(vip["requests"].as_u64() >= Some(1), "{report}");
    assert!(vip["answered"].as_u64() >= Some(1), "{report}");
    assert_eq!(vip["last_claimant"], mac(pair.client_mac));
    assert!(
        report["verdicts"]["arp_reply"].as_u64() >= Some(1),
        "{report}"
    );
    assert!(
        report["verdicts"]["conflict"].as_u64() >= Some(1),
        "{report}"
    );

    let (code, table, _) = inspect(&pair, &["--bpffs", &bpffs]);
    assert_eq!(code, Some(0));
    let row = table
        .lines()
        .find(|l| l.starts_with(VIP))
        .unwrap_or_default();
    assert!(
        row.contains("eth0")
            && row.contains(&mac(pair.node_mac))
            && row.contains(&mac(pair.client_mac)),
        "{table}"
    );

    let (code, _, err) = inspect(&pair, &["--bpffs", "/sys/fs/bpf/speaker-nothing-here"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("no speaker maps pinned in /sys/fs/bpf/speaker-nothing-here"),
        "{err}"
    );
    drop(agent);
}

#[test]
fn json_logs_are_one_object_per_line() {
    require_privileges();
    let pair = Pair::new().expect("topology");
    let mut agent = start(&pair, &["--log-format", "json", "--log-level", "debug"]);
    assert_eq!(arping(&pair.client, VIP, 1), [pair.node_mac]);
    assert!(agent.terminate().expect("stop").success());
    let log = agent.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["level"] == "INFO" && l["fields"]["message"] == "answering"),
        "{log}"
    );
    assert!(
        lines.iter().any(|l| l["level"] == "DEBUG"),
        "--log-level debug: {log}"
    );
}
