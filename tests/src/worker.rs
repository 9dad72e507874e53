//! The worker of the origin story, as the tests see it: `src/bin/worker.rs`
//! run in the client's namespace through `ip netns exec`, so that it
//! resolves the application's name from that namespace's own /etc/hosts
//! (/etc/netns/<ns>/hosts), and its requests read back as they finish.

use std::{
    io::{BufRead as _, BufReader},
    os::unix::process::CommandExt as _,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context as _, Result};

use crate::netns::Netns;

/// How long one request may take before it counts as failed.
pub const TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Clone, Debug)]
pub struct Request {
    /// When it was sent (Unix ns).
    pub sent: u64,
    pub took: Duration,
    /// The body of the answer (the node's name), or why there was none.
    pub answer: Result<String, String>,
}

/// The worker process; killed on drop, with its hosts file.
pub struct Worker {
    child: Child,
    hosts: PathBuf,
    pub period: Duration,
    seen: Arc<Mutex<Vec<Request>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Worker {
    /// Resolves `name` to `ip` in `ns` and sends `GET http://name:port/`
    /// every `period`.
    pub fn start(ns: &Netns, name: &str, ip: &str, port: u16, period: Duration) -> Result<Self> {
        let hosts = PathBuf::from("/etc/netns").join(ns.name());
        std::fs::create_dir_all(&hosts)
            .with_context(|| format!("cannot create {}", hosts.display()))?;
        std::fs::write(
            hosts.join("hosts"),
            format!("127.0.0.1 localhost\n{ip} {name}\n"),
        )?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns.name()])
            .arg(worker_bin())
            .args([
                name,
                &port.to_string(),
                &period.as_millis().to_string(),
                &TIMEOUT.as_millis().to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        // SAFETY: prctl is async-signal-safe. The worker must not outlive
        // us, whatever way we end.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&hosts);
                return Err(e).context("cannot start the worker");
            }
        };
        let seen = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().context("no stdout")?;
        let log = seen.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(r) = parse(&line) {
                    crate::apiserver::lock(&log).push(r);
                }
            }
        });
        Ok(Self {
            child,
            hosts,
            period,
            seen,
            reader: Some(reader),
        })
    }

    /// Every request finished so far, in the order they were sent.
    pub fn requests(&self) -> Vec<Request> {
        let mut all = crate::apiserver::lock(&self.seen).clone();
        all.sort_by_key(|r| r.sent);
        all
    }

    /// The requests sent from `from` (Unix ns) on that have finished.
    pub fn since(&self, from: u64) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.sent >= from)
            .collect()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let _ = std::fs::remove_dir_all(&self.hosts);
    }
}

/// The worker binary: `WORKER_BIN`, or `worker` beside the running program
/// (built with it: `cargo build -p speaker-tests --bins`).
pub fn worker_bin() -> PathBuf {
    crate::agent::built("WORKER_BIN", "worker")
}

fn parse(line: &str) -> Option<Request> {
    let mut parts = line.splitn(4, ' ');
    let sent = parts.next()?.parse().ok()?;
    let took = Duration::from_micros(parts.next()?.parse().ok()?);
    let rest = parts.next()?;
    let text = parts.next().unwrap_or_default().to_string();
    let answer = match rest {
        "ok" => Ok(text),
        _ => Err(text),
    };
    Some(Request { sent, took, answer })
}

/// A run of failed requests: from the first failed one to the first
/// successful one sent after it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Outage {
    /// When the first failed request was sent (Unix ns).
    pub from: u64,
    pub lasted: Duration,
    pub failed: usize,
    /// No successful request came after it (yet).
    pub open: bool,
}

/// The runs of failed requests among `requests` (in the order sent).
pub fn outages(requests: &[Request]) -> Vec<Outage> {
    let mut out: Vec<Outage> = Vec::new();
    let mut current: Option<Outage> = None;
    for r in requests {
        match (&r.answer, current.as_mut()) {
            (Err(_), Some(o)) => o.failed += 1,
            (Err(_), None) => {
                current = Some(Outage {
                    from: r.sent,
                    lasted: Duration::ZERO,
                    failed: 1,
                    open: true,
                })
            }
            (Ok(_), Some(o)) => {
                o.lasted = Duration::from_nanos(r.sent.saturating_sub(o.from));
                o.open = false;
                out.extend(current.take());
            }
            (Ok(_), None) => {}
        }
    }
    if let (Some(mut o), Some(last)) = (current, requests.last()) {
        o.lasted = Duration::from_nanos(last.sent.saturating_sub(o.from));
        out.push(o);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(sent: u64, ok: bool) -> Request {
        Request {
            sent,
            took: Duration::ZERO,
            answer: if ok {
                Ok("front-0".into())
            } else {
                Err("connect".into())
            },
        }
    }

    #[test]
    fn an_outage_runs_from_the_first_failed_request_to_the_next_answered() {
        let reqs: Vec<Request> = [
            (0, true),
            (50, false),
            (100, false),
            (150, true),
            (200, false),
        ]
        .iter()
        .map(|&(t, ok)| req(t * 1_000_000, ok))
        .collect();
        let o = outages(&reqs);
        assert_eq!(o.len(), 2);
        assert_eq!(
            (o[0].from, o[0].lasted, o[0].failed, o[0].open),
            (50_000_000, Duration::from_millis(100), 2, false)
        );
        assert_eq!((o[1].failed, o[1].open), (1, true));
    }

    #[test]
    fn lines_read_back() {
        let r = parse("1700000000000000000 1234 ok front-1").expect("parsed");
        assert_eq!(
            (r.sent, r.took, r.answer),
            (
                1_700_000_000_000_000_000,
                Duration::from_micros(1234),
                Ok("front-1".into())
            )
        );
        let r = parse("5 6 fail connect: Connection refused (os error 111)").expect("parsed");
        assert_eq!(
            r.answer,
            Err("connect: Connection refused (os error 111)".into())
        );
        assert!(parse("garbage").is_none());
    }
}
