//! Fault injection: delays, failed requests and held-back watch events,
//! each aimed at requests by method and path.

use std::time::{Duration, Instant};

/// Which requests a fault applies to: an optional method and an optional
/// substring of the request target (path and query, e.g.
/// `/apis/coordination.k8s.io/v1/namespaces/ns/leases/a` or `watch=true`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Match {
    method: Option<String>,
    path: Option<String>,
}

impl Match {
    /// Every request.
    pub fn any() -> Self {
        Self::default()
    }

    /// Requests whose path and query contain `substring`.
    pub fn path(substring: &str) -> Self {
        Self {
            method: None,
            path: Some(substring.to_string()),
        }
    }

    /// Narrows to one HTTP method (`GET`, `PUT`, ...).
    pub fn method(mut self, method: &str) -> Self {
        self.method = Some(method.to_ascii_uppercase());
        self
    }

    fn matches(&self, method: &str, target: &str) -> bool {
        self.method.as_deref().is_none_or(|m| m == method)
            && self.path.as_deref().is_none_or(|p| target.contains(p))
    }
}

#[derive(Debug, Default)]
pub struct Faults {
    delays: Vec<(Match, Duration)>,
    /// (which, how many are left, delay): for the next matching requests only.
    next_delays: Vec<(Match, u32, Duration)>,
    /// (which, how many are left, HTTP status)
    failures: Vec<(Match, u32, u16)>,
    stall_until: Option<Instant>,
}

impl Faults {
    pub fn add_delay(&mut self, m: Match, d: Duration) {
        self.delays.push((m, d));
    }

    pub fn add_next_delay(&mut self, m: Match, count: u32, d: Duration) {
        self.next_delays.push((m, count, d));
    }

    pub fn add_failures(&mut self, m: Match, count: u32, status: u16) {
        self.failures.push((m, count, status));
    }

    pub fn stall(&mut self, d: Duration) {
        self.stall_until = Some(Instant::now() + d);
    }

    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// The sum of the delays that match, using up one of each one-shot
    /// delay's count.
    pub fn delay(&mut self, method: &str, target: &str) -> Duration {
        let mut total: Duration = self
            .delays
            .iter()
            .filter(|(m, _)| m.matches(method, target))
            .map(|(_, d)| *d)
            .sum();
        for (m, left, d) in &mut self.next_delays {
            if *left > 0 && m.matches(method, target) {
                *left -= 1;
                total += *d;
            }
        }
        self.next_delays.retain(|(_, left, _)| *left > 0);
        total
    }

    /// The status to fail this request with, using up one of a rule's count.
    pub fn take_failure(&mut self, method: &str, target: &str) -> Option<u16> {
        let rule = self
            .failures
            .iter_mut()
            .find(|(m, left, _)| *left > 0 && m.matches(method, target))?;
        rule.1 -= 1;
        let status = rule.2;
        self.failures.retain(|(_, left, _)| *left > 0);
        Some(status)
    }

    /// Until when watch events are held back, if that is still ahead.
    pub fn stalled_until(&self) -> Option<Instant> {
        self.stall_until.filter(|t| *t > Instant::now())
    }
}
