//! The origin story with real nginx, the kubelet's stand-in and the worker
//! (tests/src/story.rs): what users judge, HTTP requests answered, and the
//! demo that shows it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use speaker_tests::{
    kubelet::ReadinessProbe,
    require_privileges,
    story::{Options, Story},
    wait_for,
    worker::Request,
};

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The first request sent after `from` that a node other than `node`
/// answered.
fn answered_elsewhere(story: &Story, from: u64, node: &str) -> Option<Request> {
    story
        .worker
        .since(from)
        .into_iter()
        .find(|r| r.answer.as_ref().is_ok_and(|n| n != node))
}

/// nginx dies on the leader while the kubelet (default probe: every 10 s,
/// unready after 3 failures) still calls it ready: the agent's own probe
/// moves the VIP, and the worker's requests are answered again by another
/// front before the kubelet has marked anything.
#[test]
fn nginx_killed_on_the_leader_is_caught_before_the_kubelet_notices() {
    require_privileges();
    let mut story = Story::start(Options::default()).expect("story");
    wait_for(Duration::from_secs(5), || {
        story.worker.requests().iter().any(|r| r.answer.is_ok())
    })
    .expect("the worker is answered");
    let before = story.worker.requests();
    assert!(
        before.iter().all(|r| r.answer.as_deref() == Ok("front-0")),
        "front-0 answers every request: {:?}",
        before.iter().find(|r| r.answer.as_deref() != Ok("front-0"))
    );

    let t0 = now_ns();
    story.kill_nginx(0);
    let mut next = None;
    wait_for(Duration::from_secs(10), || {
        next = answered_elsewhere(&story, t0, "front-0");
        next.is_some()
    })
    .expect("another front answers the worker");
    assert!(
        story.endpoint_ready(0).expect("slice"),
        "the kubelet's stand-in had not marked front-0 unready yet"
    );
    assert!(
        story.readiness_marks().is_empty(),
        "{:?}",
        story.readiness_marks()
    );
    // Only the requests between the kill and the handover failed: one run.
    std::thread::sleep(Duration::from_secs(2));
    let outages = speaker_tests::worker::outages(&story.worker.since(t0));
    assert!(outages.len() <= 1, "{outages:?}");
    assert!(outages.iter().all(|o| !o.open), "{outages:?}");
}

/// With the local probe turned off for the Service (the annotation), the
/// kubelet decides, as with MetalLB: the VIP moves only once the kubelet's
/// stand-in has marked the endpoint unready, and the requests fail until
/// then. (The probe is shortened to 300 ms here.)
#[test]
fn with_the_probe_off_the_kubelet_decides() {
    require_privileges();
    let readiness = ReadinessProbe {
        period: Duration::from_millis(300),
        ..ReadinessProbe::default()
    };
    let mut story = Story::start(Options {
        readiness,
        endpoint_probe: false,
        ..Options::default()
    })
    .expect("story");

    let t0 = now_ns();
    story.kill_nginx(0);
    let mut next = None;
    wait_for(Duration::from_secs(10), || {
        next = answered_elsewhere(&story, t0, "front-0");
        next.is_some()
    })
    .expect("another front answers the worker");
    let marks = story.readiness_marks();
    let unready = marks
        .iter()
        .find(|(_, node, ready)| node == "front-0" && !ready)
        .map(|(t, _, _)| *t)
        .expect("the kubelet's stand-in marked front-0 unready");
    let moved = next.map(|r| r.sent).unwrap_or_default();
    assert!(unready < moved, "moved before the kubelet said so");
    // Failing until then: the requests in between were not answered.
    assert!(
        story
            .worker
            .since(t0)
            .iter()
            .filter(|r| r.sent > t0 + 100_000_000 && r.sent < unready)
            .all(|r| r.answer.is_err()),
        "requests to the dead nginx were answered"
    );

    // nginx back: the kubelet marks it ready again (successThreshold 1).
    story.restart_nginx(0).expect("nginx");
    wait_for(Duration::from_secs(5), || {
        story.endpoint_ready(0).unwrap_or(false)
    })
    .expect("ready again");
}

/// `cargo xtask demo` runs to its end, front-0 answering every request in
/// steady state and none failing through the 30 s control-plane outage or
/// the upgrade, and leaves no namespace, process or file behind.
#[test]
fn the_demo_plays_the_origin_story_and_leaves_nothing_behind() {
    require_privileges();
    let demo = std::process::Command::new(env!("CARGO_BIN_EXE_demo"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("demo starts");
    let made = format!("spk{}-", demo.id());
    let cluster = format!("speaker-cluster-{}-", demo.id());
    let out = demo.wait_with_output().expect("demo runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = |step: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("| {step}")))
            .unwrap_or_else(|| panic!("no row for step {step}:\n{text}"))
            .split('|')
            .map(str::trim)
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    // | step | requests | failed | longest gap | answered by |
    let steady = row("1.");
    assert_eq!(
        (steady[3].as_str(), steady[5].as_str()),
        ("0", "front-0"),
        "{text}"
    );
    let outage = row("5.");
    assert_eq!(outage[3], "0", "{text}");
    let upgrade = row("6.");
    assert_eq!(upgrade[3], "0", "{text}");
    for step in ["2.", "3.", "4."] {
        let r = row(step);
        assert!(r[5].contains("front-"), "{text}");
    }

    let namespaces = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip");
    let netns = String::from_utf8_lossy(&namespaces.stdout).to_string();
    let files = ["/etc/netns", "/tmp", "/sys/fs/bpf"]
        .iter()
        .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten())
        .map(|e| e.path().display().to_string())
        .filter(|p| p.contains(&made) || p.contains(&cluster));
    let left: Vec<String> = netns
        .lines()
        .filter(|l| l.starts_with(&made))
        .map(str::to_string)
        .chain(files)
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    let running = std::process::Command::new("pgrep")
        .args(["-f", &made])
        .output()
        .expect("pgrep");
    assert!(
        running.stdout.is_empty(),
        "still running: {}",
        String::from_utf8_lossy(&running.stdout)
    );
}
