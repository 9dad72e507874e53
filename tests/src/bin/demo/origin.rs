//! `cargo xtask demo`: the origin story, live. Three front nodes each with
//! a real nginx, the worker asking `app.example.com` every 50 ms, and the
//! faults users meet, one after another; a line per second shows who
//! answered each request, and a table at the end what each fault cost.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result};
use speaker_tests::{
    story::{self, HOST, POOL, SERVICE, Story, VIP},
    worker::{self, Request},
};

const SECOND: u64 = 1_000_000_000;

pub fn run() -> Result<()> {
    println!("The origin story, in network namespaces on this machine (all removed at the end):");
    println!(
        "  front-0..2   nginx answering with its node's name, `speaker agent`, and the kubelet's"
    );
    println!("               stand-in (readiness probe every 10 s, unready after 3 failures)");
    println!("  worker       GET http://{HOST}/ every 50 ms, each within 1 s");
    println!("  the Kubernetes API stand-in, `speaker controller`");
    println!(
        "  IPAddressPool front: {POOL}; L2Advertisement front: nodes labelled node-role: front"
    );
    println!("Starting...");
    // As inside Kubernetes: a SIGTERM without the node leaving is a restart.
    let mut story = Story::start(story::Options {
        keep_on_sigterm: true,
        ..story::Options::default()
    })?;
    let ips = story.scenario.service_ips(0);
    println!(
        "Service {SERVICE} (type LoadBalancer): the controller gave it {}; {HOST} resolves to {VIP} on the worker.",
        ips.join(", ")
    );
    println!(
        "\nEach line is one second; each mark one request: the front that answered it (0, 1, 2) or x (failed)."
    );

    let mut t = Timeline::new();
    let mut steps = Vec::new();

    let owner = |s: &Story| s.owner().context("nobody owns the VIP");
    steps.push(
        t.step("1. Steady state: front-0 answers every request", |t| {
            t.run_for(&story, Duration::from_secs(5))
        })?,
    );

    let leader = owner(&story)?;
    let title = format!(
        "2. nginx on the leader ({leader}) killed: its agent's probe (every 200 ms) hands over; the kubelet's takes 20-30 s"
    );
    steps.push(t.step(&title, |t| {
        let i = story.index(&leader);
        story.kill_nginx(i);
        t.note(format!("nginx on {leader} killed"));
        t.run_for(&story, Duration::from_secs(6))?;
        if story.endpoint_ready(i)? {
            t.note(format!(
                "{leader}'s endpoint is still ready in its EndpointSlice: the kubelet has not noticed yet"
            ));
        }
        story.restart_nginx(i)?;
        t.note(format!("nginx on {leader} back"));
        t.run_for(&story, Duration::from_secs(3))
    })?);

    let leader = owner(&story)?;
    let title = format!(
        "3. The leader node ({leader}) dies (agent and nginx killed, link down): taken over once its lease lapses (2 s)"
    );
    steps.push(t.step(&title, |t| {
        let i = story.index(&leader);
        story.kill_node(i)?;
        t.note(format!("{leader} died"));
        t.run_for(&story, Duration::from_secs(6))?;
        story.revive_node(i)?;
        t.note(format!("{leader} back (link up, nginx, agent)"));
        t.run_for(&story, Duration::from_secs(3))
    })?);

    let leader = owner(&story)?;
    let title = format!(
        "4. The leader ({leader}) cut off from the API: it hands over before its lease lapses"
    );
    steps.push(t.step(&title, |t| {
        let i = story.index(&leader);
        story.api_reachable(i, false)?;
        t.note(format!("{leader} cut off from the API"));
        t.run_for(&story, Duration::from_secs(6))?;
        story.api_reachable(i, true)?;
        t.note(format!("{leader} reaches the API again"));
        t.run_for(&story, Duration::from_secs(3))
    })?);

    steps.push(t.step(
        "5. The whole control plane down for 30 s: the owner keeps answering on its peers' promises",
        |t| {
            story.control_plane(false)?;
            t.note("the API is down");
            t.run_for(&story, Duration::from_secs(30))?;
            story.control_plane(true)?;
            t.note("the API is back");
            t.run_for(&story, Duration::from_secs(3))
        },
    )?);

    steps.push(t.step(
        "6. An upgrade: every front's agent restarted in turn; each successor adopts its VIPs, nothing moves",
        |t| {
            for i in 0..3 {
                story.restart_agent_in_place(i)?;
                t.note(format!("front-{i}'s agent restarted"));
                t.run_for(&story, Duration::from_secs(2))?;
            }
            t.run_for(&story, Duration::from_secs(1))
        },
    )?);
    t.finish(&story)?;

    let requests = story.worker.requests();
    println!("\n| step | requests | failed | longest gap | answered by |");
    println!("|---|---:|---:|---:|---|");
    for (title, from, to) in &steps {
        let in_step: Vec<Request> = requests
            .iter()
            .filter(|r| (*from..*to).contains(&r.sent))
            .cloned()
            .collect();
        let failed = in_step.iter().filter(|r| r.answer.is_err()).count();
        let gap = worker::outages(&in_step)
            .iter()
            .map(|o| o.lasted)
            .max()
            .unwrap_or_default();
        let mut by: Vec<&str> = Vec::new();
        for r in &in_step {
            if let Ok(node) = &r.answer
                && by.last() != Some(&node.as_str())
            {
                by.push(node);
            }
        }
        let short = title.split(':').next().unwrap_or(title);
        println!(
            "| {short} | {} | {failed} | {} ms | {} |",
            in_step.len(),
            gap.as_millis(),
            by.join(", then ")
        );
    }
    println!("\nRemoving the namespaces, processes and files the demo made.");
    drop(story);
    println!("done");
    Ok(())
}

/// Prints the worker's requests a second at a time, with what happened
/// in that second, once every request sent in it has finished.
struct Timeline {
    start: u64,
    printed: u64,
    events: Vec<(u64, String)>,
    answering: Option<String>,
}

impl Timeline {
    fn new() -> Self {
        let start = now_ns();
        Self {
            start,
            printed: start,
            events: Vec::new(),
            answering: None,
        }
    }

    /// Runs one step; returns its title and when it began and ended.
    fn step(
        &mut self,
        title: &str,
        body: impl FnOnce(&mut Self) -> Result<()>,
    ) -> Result<(String, u64, u64)> {
        crate::interrupted()?;
        let from = now_ns();
        self.events.push((from, format!("== {title}")));
        body(self)?;
        Ok((title.to_string(), from, now_ns()))
    }

    fn note(&mut self, what: impl Into<String>) {
        self.events.push((now_ns(), what.into()));
    }

    fn run_for(&mut self, story: &Story, d: Duration) -> Result<()> {
        let until = Instant::now() + d;
        while Instant::now() < until {
            crate::interrupted()?;
            std::thread::sleep(Duration::from_millis(100));
            self.print(story, now_ns());
        }
        Ok(())
    }

    /// Prints what is left, once the last requests have finished.
    fn finish(&mut self, story: &Story) -> Result<()> {
        let end = now_ns();
        std::thread::sleep(worker::TIMEOUT + Duration::from_millis(300));
        self.print(story, end + SECOND + lag());
        Ok(())
    }

    /// Prints every whole second that ended at least [`lag`] before `now`.
    fn print(&mut self, story: &Story, now: u64) {
        let requests = story.worker.since(self.printed);
        let mut events = self.events.clone();
        events.extend(story.readiness_marks().into_iter().map(|(t, node, ready)| {
            let what = if ready { "ready" } else { "unready" };
            (t, format!("the kubelet marked {node}'s endpoint {what}"))
        }));
        events.sort();
        while self.printed + SECOND + lag() <= now {
            let (a, b) = (self.printed, self.printed + SECOND);
            let mut line = String::new();
            for r in requests.iter().filter(|r| (a..b).contains(&r.sent)) {
                match &r.answer {
                    Ok(node) => {
                        line.push(node.chars().last().unwrap_or('?'));
                        if self.answering.as_ref() != Some(node) {
                            events.push((r.sent, format!("{node} answers")));
                            self.answering = Some(node.clone());
                        }
                    }
                    Err(_) => line.push('x'),
                }
            }
            events.sort();
            for (when, what) in events.iter().filter(|(t, _)| (a..b).contains(t)) {
                if what.starts_with("==") {
                    println!("\n{what}");
                } else {
                    println!("        {:>6.2} s  {what}", self.secs(*when));
                }
            }
            println!("  {:>4.0} s  {line}", self.secs(a));
            self.printed = b;
        }
    }

    fn secs(&self, t: u64) -> f64 {
        t.saturating_sub(self.start) as f64 / 1e9
    }
}

/// A second is printed once its last request has finished or timed out.
fn lag() -> u64 {
    worker::TIMEOUT.as_nanos() as u64 + 200_000_000
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
