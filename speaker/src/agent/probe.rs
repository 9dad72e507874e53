//! The local endpoint probe. With Kubernetes' default readiness probe a
//! dead nginx on the owner keeps the VIP for up to 30 s, every request
//! failing meanwhile. The agent connects to this node's ready endpoints of
//! each VIP it answers for (eligibility/probes.rs says which) every period;
//! once every one of a VIP's endpoints has failed `fail_after` times in a
//! row, this node is not eligible for it and hands it over gracefully. It
//! is eligible again once one endpoint has succeeded `recover_after` times
//! in a row, so a flapping endpoint does not move the VIP back and forth.
//!
//! It only ever removes eligibility: an endpoint the kubelet calls unready
//! is never probed back in. Errors of the probe itself (no route, no
//! socket) are neither failures nor successes, and so is every failure of
//! an endpoint never reached since it became a target (the path may be
//! what fails: a NetworkPolicy dropping the node's connections would
//! otherwise make every node give up every VIP).
//!
//! [`Health`] decides, without I/O; [`probe`] makes one connection.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    io::ErrorKind,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

/// What one connection attempt says about an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Connected.
    Up,
    /// Refused, reset or no answer in time: the endpoint is not serving.
    Down,
    /// The probe could not tell (no route, no socket): counts for nothing.
    Unknown,
}

/// The least a connection is given: a busy server whose SYN backlog is
/// full answers the client's retry after 1 s, and must not count failed.
/// (A refused or reset connection, nginx dead, is told at once.)
pub const MIN_TIMEOUT: Duration = Duration::from_secs(1);

/// Connects to `target`, giving up after `timeout`.
pub async fn probe(target: SocketAddr, timeout: Duration) -> Outcome {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(target)).await {
        Ok(Ok(_)) => Outcome::Up,
        Err(_) => Outcome::Down,
        Ok(Err(e)) => match e.kind() {
            ErrorKind::ConnectionRefused
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::TimedOut => Outcome::Down,
            _ => Outcome::Unknown,
        },
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Streak {
    ok: u32,
    failed: u32,
    /// Connected at least once since it became a target: until then a
    /// failure may be the probe's path (a NetworkPolicy dropping the
    /// node's connections), not the endpoint, and counts for nothing,
    /// or every node would give up every VIP.
    seen_up: bool,
}

/// Which VIPs this node's endpoints cannot serve.
#[derive(Debug)]
pub struct Health {
    fail_after: u32,
    recover_after: u32,
    targets: BTreeMap<IpAddr, BTreeSet<SocketAddr>>,
    streaks: HashMap<SocketAddr, Streak>,
    down: BTreeSet<IpAddr>,
}

impl Health {
    pub fn new(fail_after: u32, recover_after: u32) -> Self {
        Self {
            fail_after: fail_after.max(1),
            recover_after: recover_after.max(1),
            targets: BTreeMap::new(),
            streaks: HashMap::new(),
            down: BTreeSet::new(),
        }
    }

    /// What to probe now (from eligibility/probes.rs). A VIP that lost its
    /// targets (the kubelet took them out, say) is not held down by us.
    pub fn set_targets(&mut self, targets: BTreeMap<IpAddr, BTreeSet<SocketAddr>>) {
        let all: BTreeSet<SocketAddr> = targets.values().flatten().copied().collect();
        self.streaks.retain(|t, _| all.contains(t));
        self.down.retain(|vip| targets.contains_key(vip));
        self.targets = targets;
        // A VIP down over endpoints that changed is judged afresh.
        let vips: Vec<IpAddr> = self.down.iter().copied().collect();
        for vip in vips {
            self.judge(vip);
        }
    }

    /// The endpoints to probe: those of the VIPs we answer for (`owned`),
    /// and of those we set aside, to see them recover. What is not probed
    /// now starts afresh when it is again (a VIP won back is not handed
    /// over on failures from before).
    pub fn due(&mut self, owned: impl IntoIterator<Item = IpAddr>) -> BTreeSet<SocketAddr> {
        let vips: BTreeSet<IpAddr> = owned.into_iter().chain(self.down.iter().copied()).collect();
        let probe: BTreeSet<SocketAddr> = vips
            .iter()
            .filter_map(|v| self.targets.get(v))
            .flatten()
            .copied()
            .collect();
        self.streaks.retain(|t, _| probe.contains(t));
        probe
    }

    /// One probe's result; the VIPs whose health changed, with their new
    /// state (true: down).
    pub fn result(&mut self, target: SocketAddr, outcome: Outcome) -> Vec<(IpAddr, bool)> {
        if !self.targets.values().any(|t| t.contains(&target)) {
            return Vec::new();
        }
        let s = self.streaks.entry(target).or_default();
        match outcome {
            Outcome::Up => {
                *s = Streak {
                    ok: s.ok.saturating_add(1),
                    failed: 0,
                    seen_up: true,
                }
            }
            Outcome::Down if s.seen_up => {
                *s = Streak {
                    ok: 0,
                    failed: s.failed.saturating_add(1),
                    seen_up: true,
                }
            }
            Outcome::Down | Outcome::Unknown => return Vec::new(),
        }
        let vips: Vec<IpAddr> = self
            .targets
            .iter()
            .filter(|(_, t)| t.contains(&target))
            .map(|(v, _)| *v)
            .collect();
        let mut changed = Vec::new();
        for vip in vips {
            if self.judge(vip) {
                changed.push((vip, self.down.contains(&vip)));
            }
        }
        changed
    }

    pub fn down(&self) -> &BTreeSet<IpAddr> {
        &self.down
    }

    /// Updates `vip`'s state; true when it changed.
    fn judge(&mut self, vip: IpAddr) -> bool {
        let Some(targets) = self.targets.get(&vip) else {
            return self.down.remove(&vip);
        };
        let streak = |t: &SocketAddr| self.streaks.get(t).copied().unwrap_or_default();
        if self.down.contains(&vip) {
            let recovered = targets.iter().any(|t| streak(t).ok >= self.recover_after);
            recovered && self.down.remove(&vip)
        } else {
            let failed = targets.iter().all(|t| streak(t).failed >= self.fail_after);
            failed && self.down.insert(vip)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vip() -> IpAddr {
        "198.18.0.10".parse().expect("ip")
    }

    fn health(targets: &[&str]) -> Health {
        let mut h = Health::new(3, 5);
        let t = targets.iter().map(|t| t.parse().expect("addr")).collect();
        h.set_targets([(vip(), t)].into());
        h
    }

    fn run(h: &mut Health, target: &str, outcomes: &[Outcome]) -> Vec<(IpAddr, bool)> {
        let t = target.parse().expect("addr");
        outcomes.iter().flat_map(|o| h.result(t, *o)).collect()
    }

    use Outcome::{Down, Unknown, Up};

    #[test]
    fn an_endpoint_never_reached_is_not_counted_failed() {
        let mut h = health(&["10.0.0.1:80"]);
        assert!(run(&mut h, "10.0.0.1:80", &[Down, Down, Down, Down, Down]).is_empty());
        assert!(h.down().is_empty());
    }

    #[test]
    fn three_failures_in_a_row_set_the_vip_aside_and_five_successes_bring_it_back() {
        let mut h = health(&["10.0.0.1:80"]);
        assert!(run(&mut h, "10.0.0.1:80", &[Up, Down, Down, Up, Down, Down]).is_empty());
        assert_eq!(run(&mut h, "10.0.0.1:80", &[Down]), vec![(vip(), true)]);
        // Hysteresis: a success or four do not bring it back.
        assert!(run(&mut h, "10.0.0.1:80", &[Up, Up, Down, Up, Up, Up, Up]).is_empty());
        assert_eq!(run(&mut h, "10.0.0.1:80", &[Up]), vec![(vip(), false)]);
    }

    #[test]
    fn the_probes_own_errors_count_for_nothing() {
        let mut h = health(&["10.0.0.1:80"]);
        let out = run(
            &mut h,
            "10.0.0.1:80",
            &[Up, Unknown, Down, Unknown, Down, Unknown],
        );
        assert!(out.is_empty());
        assert!(h.down().is_empty());
    }

    #[test]
    fn one_serving_endpoint_keeps_the_vip() {
        let mut h = health(&["10.0.0.1:80", "10.0.0.2:80"]);
        run(&mut h, "10.0.0.1:80", &[Up, Down, Down, Down, Down]);
        assert!(h.down().is_empty());
        assert_eq!(
            run(&mut h, "10.0.0.2:80", &[Up, Down, Down, Down]),
            vec![(vip(), true)]
        );
    }

    #[test]
    fn endpoints_gone_from_the_slice_release_the_vip_and_only_owned_or_set_aside_are_probed() {
        let mut h = health(&["10.0.0.1:80"]);
        assert_eq!(h.due([vip()]).len(), 1);
        run(&mut h, "10.0.0.1:80", &[Up, Down, Down, Down]);
        // Set aside: still probed, to see it recover.
        assert_eq!(h.due([]).len(), 1);
        h.set_targets(BTreeMap::new());
        assert!(h.down().is_empty());
    }
}
