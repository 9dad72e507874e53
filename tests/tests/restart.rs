//! Restarts that move nothing: an agent stopped for a restart (`--on-sigterm
//! keep`) leaves its VIPs answered by the kernel, and its successor on the
//! node adopts the pinned program, maps and VIPs without a new term, an
//! announcement or an Event. A successor that never comes lets the VIPs go
//! at their expiry, and a second agent on a host is refused.

use std::{
    io::{Read as _, Write as _},
    time::Duration,
};

use speaker_tests::{
    apiserver::{EVENTS, EVENTS_V1},
    capture::Capture,
    frames::Arp,
    require_privileges,
    scenario::Scenario,
    story::{self, Options, Story},
    topology::ipv4,
    wait_for,
};

const VIP: &str = story::VIP;

/// Now, as capture timestamps count (Unix ns).
fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Who answered the client, when; and the times of gratuitous ARPs for
/// the VIP.
fn replies(s: &Scenario, cap: Capture) -> (Vec<(u64, [u8; 6])>, Vec<u64>) {
    let arps: Vec<(u64, Arp)> = cap
        .finish_timed()
        .expect("capture")
        .into_iter()
        .filter_map(|(t, f)| Arp::parse(&f).map(|a| (t, a)))
        .collect();
    let answers = arps
        .iter()
        .filter(|(_, a)| a.op == 2 && a.spa == ipv4(VIP) && a.eth_dst == s.lan.client_mac)
        .map(|(t, a)| (*t, a.sha))
        .collect();
    let gratuitous = arps
        .iter()
        .filter(|(_, a)| a.spa == ipv4(VIP) && a.tpa == ipv4(VIP))
        .map(|(t, _)| *t)
        .collect();
    (answers, gratuitous)
}

fn largest_gap(replies: &[(u64, [u8; 6])]) -> u64 {
    replies
        .windows(2)
        .map(|w| w[1].0 - w[0].0)
        .max()
        .unwrap_or(u64::MAX)
}

/// Events in the test's namespace and about cluster-scoped objects.
fn events(s: &Scenario) -> usize {
    let c = &s.lan.cluster;
    [&EVENTS, &EVENTS_V1]
        .iter()
        .flat_map(|gvr| [c.list(gvr), c.list_in(gvr, "default")])
        .map(|l| l.map_or(0, |e| e.len()))
        .sum()
}

/// One GET on an open keep-alive connection; the body.
fn get(conn: &mut std::net::TcpStream) -> String {
    conn.write_all(b"GET / HTTP/1.1\r\nHost: app.example.com\r\n\r\n")
        .expect("send");
    let mut buf = [0u8; 1024];
    let n = conn.read(&mut buf).expect("answer");
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text.rsplit("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// The owner's agent restarted in place while the client holds a
/// keep-alive connection and asks for the VIP every 20 ms: every request
/// answered by the same MAC, the connection still works, the record is
/// not written, no Event, no announcement; the successor says it adopted.
#[test]
fn a_restart_in_place_moves_nothing() {
    require_privileges();
    let mut story = Story::start(Options {
        keep_on_sigterm: true,
        ..Options::default()
    })
    .expect("story");
    let s = &story.scenario;
    let owner = s.settled(VIP, Duration::from_secs(10), |_| true);
    let i = story.index(&owner);
    let mac = s.lan.fronts[i].mac;
    let mut conn = s
        .lan
        .client
        .enter(|| std::net::TcpStream::connect((VIP, 80)))
        .expect("netns")
        .expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    assert_eq!(get(&mut conn), owner);
    let record = s.record(VIP).expect("record");
    let events_before = events(s);
    let cap = Capture::start(&s.lan.lan, "pc", "arp").expect("capture");
    let mut prober = s.arp_probe(VIP, 300).expect("arping");
    std::thread::sleep(Duration::from_millis(300));

    // (The first owner's own burst of announcements may still be going.)
    let restarted = now_ns();
    story.restart_agent_in_place(i).expect("restart");
    std::thread::sleep(Duration::from_secs(4));
    let _ = prober.kill();
    let _ = prober.wait();
    let s = &story.scenario;
    let log = s.agents[i].as_ref().map(|a| a.log()).unwrap_or_default();
    let (answered, gratuitous) = replies(s, cap);
    assert!(
        answered.iter().all(|(_, m)| *m == mac),
        "another node answered:\n{log}"
    );
    let again = gratuitous.iter().filter(|t| **t > restarted).count();
    assert_eq!(again, 0, "announced again:\n{log}");
    let gap = largest_gap(&answered);
    assert!(gap < 100_000_000, "a {} ms gap:\n{log}", gap / 1_000_000);
    assert_eq!(get(&mut conn), owner, "the connection broke");
    assert_eq!(s.record(VIP), Some(record), "the record was written");
    assert_eq!(events(s), events_before, "an Event was posted");
    assert!(
        s.metrics(&owner).contains("speaker_adopted_vips_total 1"),
        "{}",
        s.metrics(&owner)
    );
    // Still the owner after the restart window, renewing as its own.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(s.settled(VIP, Duration::from_secs(3), |_| true), owner);
}

/// Stopped for a restart with no successor: the VIP stays answered until
/// the restart hold runs out, goes silent, and another node takes it over
/// as after a crash; never two at once.
#[test]
fn without_a_successor_the_vip_goes_at_its_expiry() {
    require_privileges();
    let mut s = Scenario::new(3, &[VIP]).expect("testbed");
    s.agent_args = ["--on-sigterm", "keep", "--restart-hold", "3s"]
        .map(String::from)
        .to_vec();
    s.start_all().expect("agents");
    let owner = s.settled(VIP, Duration::from_secs(10), |_| true);
    let mac = s.lan.fronts[s.index(&owner)].mac;
    let cap = Capture::start(&s.lan.lan, "pc", "arp").expect("capture");
    let mut prober = s.arp_probe(VIP, 500).expect("arping");
    std::thread::sleep(Duration::from_millis(300));
    let mut agent = s.take(&owner).expect("agent");
    let stopped = std::time::Instant::now();
    assert!(
        agent.terminate().expect("stop").success(),
        "{}",
        agent.log()
    );
    // Its pins stay until `agent` is dropped at the end (no successor).
    let other = s.settled(VIP, Duration::from_secs(10), |h| h != owner);
    let took = stopped.elapsed();
    let _ = prober.kill();
    let _ = prober.wait();
    let (answered, _) = replies(&s, cap);
    let last_old = answered
        .iter()
        .filter(|(_, m)| *m == mac)
        .map(|(t, _)| *t)
        .max();
    let first_new = answered.iter().find(|(_, m)| *m != mac).map(|(t, _)| *t);
    let (Some(last_old), Some(first_new)) = (last_old, first_new) else {
        panic!("no handover on the wire: {answered:?}");
    };
    assert!(
        last_old < first_new,
        "both answered: {other} began before {owner} ended"
    );
    // Kept answering for the restart hold (less the stop), not a lease.
    assert!(took > Duration::from_secs(3), "taken over after {took:?}");
    drop(agent);
}

/// A second agent on a host (its bpffs folder locked by the first) is
/// refused before it touches anything; the first goes on answering.
#[test]
fn a_second_agent_on_a_host_is_refused() {
    require_privileges();
    let mut s = Scenario::new(1, &[VIP]).expect("testbed");
    s.start_all().expect("agent");
    s.settled(VIP, Duration::from_secs(10), |_| true);
    let mut second = s.spawn_as(0, "front-0").expect("spawn");
    let status = second.wait_exit(Duration::from_secs(10)).expect("refused");
    assert!(!status.success());
    assert!(
        second.log().contains("another agent on this host"),
        "{}",
        second.log()
    );
    second.leave_pins();
    drop(second);
    s.settled(VIP, Duration::from_secs(3), |h| h == "front-0");
}

/// A successor finding pins of another layout (an upgrade that changed
/// the maps) reloads cleanly: the VIP is answered again, by a new term.
#[test]
fn a_layout_change_reloads_cleanly() {
    require_privileges();
    let mut s = Scenario::new(1, &[VIP]).expect("testbed");
    s.agent_args = ["--on-sigterm", "keep"].map(String::from).to_vec();
    s.start_all().expect("agent");
    s.settled(VIP, Duration::from_secs(10), |_| true);
    let (_, term, _) = s.record(VIP).expect("record");
    let mut agent = s.take("front-0").expect("agent");
    assert!(agent.terminate().expect("stop").success());
    let version = agent.bpffs.join(speaker::dataplane::VERSION_PIN);
    assert!(
        std::fs::symlink_metadata(&version).is_ok(),
        "no VERSION left"
    );
    // The same instance, another layout.
    let left = std::fs::read_link(&version).expect("VERSION");
    let left = left.to_string_lossy();
    let (_, instance) = left.rsplit_once(" instance=").expect("instance");
    std::fs::remove_file(&version).expect("remove");
    let other = format!("layout-0 VIPS:1/1/1 instance={instance}");
    std::os::unix::fs::symlink(other, &version).expect("VERSION");
    agent.leave_pins();
    drop(agent);
    s.start(0).expect("successor");
    s.settled(VIP, Duration::from_secs(10), |h| h == "front-0");
    let (_, after, _) = s.record(VIP).expect("record");
    let log = s.agents[0].as_ref().map(|a| a.log()).unwrap_or_default();
    assert!(
        after > term,
        "not reclaimed: term {term} then {after}\n{log}"
    );
    assert!(
        s.metrics("front-0")
            .contains("speaker_adopted_vips_total 0")
    );
}

/// A rolling restart of every front, one after another, as a DaemonSet
/// update does: the worker's requests never fail and the VIP never moves.
#[test]
fn a_rolling_restart_in_place_fails_no_request() {
    require_privileges();
    let mut story = Story::start(Options {
        keep_on_sigterm: true,
        ..Options::default()
    })
    .expect("story");
    let owner = story.owner().expect("owner");
    let from = story.worker.requests().last().map_or(0, |r| r.sent);
    for i in 0..3 {
        story.restart_agent_in_place(i).expect("restart");
        std::thread::sleep(Duration::from_secs(2));
    }
    std::thread::sleep(Duration::from_secs(2));
    let requests = story.worker.since(from);
    let failed: Vec<_> = requests.iter().filter(|r| r.answer.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} failed: {:?}",
        failed.len(),
        requests.len(),
        failed.first()
    );
    assert!(
        wait_for(Duration::from_secs(1), || story.owner().as_deref()
            == Some(owner.as_str()))
        .is_some()
    );
}
