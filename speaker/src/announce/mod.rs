//! Telling the LAN that a VIP is here: gratuitous ARP bursts on takeover.

mod frames;
mod socket;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

pub use frames::{garp_reply, garp_request, unsolicited_na};
pub use socket::PacketSocket;

use crate::netdev::Link;

/// One round of announcements for `vip` on `link`: a gratuitous ARP
/// request and reply for IPv4, an unsolicited Neighbor Advertisement for
/// IPv6 (tagged on a VLAN link).
pub fn send(socket: &PacketSocket, link: &Link, vip: std::net::IpAddr) -> std::io::Result<()> {
    let (mac, vlan) = (link.iface.mac, link.vlan_id);
    let frames = match vip {
        std::net::IpAddr::V4(v4) => vec![garp_request(mac, v4, vlan), garp_reply(mac, v4, vlan)],
        std::net::IpAddr::V6(v6) => vec![unsolicited_na(mac, v6, vlan)],
    };
    frames.iter().try_for_each(|f| socket.send(f))
}

/// How many announcements to send and how far apart. The first goes out at
/// once, so caches update within a round trip; the repeats cover frames lost
/// while switches relearn the MAC after a link or ownership change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BurstSettings {
    pub count: u32,
    pub interval: Duration,
}

impl Default for BurstSettings {
    fn default() -> Self {
        Self {
            count: 5,
            interval: Duration::from_secs(1),
        }
    }
}

/// Where one announcement burst stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BurstState {
    /// `sent` rounds out so far; the next one is due at `next_at`.
    Sending { sent: u32, next_at: Instant },
    /// All rounds sent.
    Done,
}

/// Bursts per target, driven by the caller's clock so it can be tested
/// without waiting. `T` names what is announced (a VIP on an interface).
#[derive(Debug)]
pub struct Announcer<T: Ord + Clone> {
    settings: BurstSettings,
    bursts: BTreeMap<T, BurstState>,
}

impl<T: Ord + Clone> Announcer<T> {
    pub fn new(settings: BurstSettings) -> Self {
        Self {
            settings,
            bursts: BTreeMap::new(),
        }
    }

    /// Starts (or restarts) a burst for `target`, first round due now.
    pub fn start(&mut self, target: T, now: Instant) {
        let state = if self.settings.count == 0 {
            BurstState::Done
        } else {
            BurstState::Sending {
                sent: 0,
                next_at: now,
            }
        };
        self.bursts.insert(target, state);
    }

    /// One round for `target` now (defending it, RFC 5227 2.4), unless a
    /// burst is under way, which already does.
    pub fn once(&mut self, target: T, now: Instant) {
        let last = self.settings.count.saturating_sub(1);
        self.bursts.entry(target).or_insert(BurstState::Sending {
            sent: last,
            next_at: now,
        });
    }

    /// Stops announcing `target` (it is no longer ours).
    pub fn stop(&mut self, target: &T) {
        self.bursts.remove(target);
    }

    pub fn state(&self, target: &T) -> Option<BurstState> {
        self.bursts.get(target).copied()
    }

    /// The targets whose next round is due at `now`, advancing each burst.
    pub fn due(&mut self, now: Instant) -> Vec<T> {
        let mut out = Vec::new();
        for (target, state) in &mut self.bursts {
            if let BurstState::Sending { sent, next_at } = *state
                && next_at <= now
            {
                out.push(target.clone());
                let sent = sent + 1;
                *state = if sent >= self.settings.count.max(1) {
                    BurstState::Done
                } else {
                    BurstState::Sending {
                        sent,
                        next_at: now + self.settings.interval,
                    }
                };
            }
        }
        self.bursts.retain(|_, s| *s != BurstState::Done);
        out
    }

    /// When the next round is due, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.bursts
            .values()
            .filter_map(|s| match s {
                BurstState::Sending { next_at, .. } => Some(*next_at),
                BurstState::Done => None,
            })
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_sends_count_rounds_interval_apart() {
        let t0 = Instant::now();
        let mut a = Announcer::new(BurstSettings {
            count: 3,
            interval: Duration::from_millis(500),
        });
        a.start("vip", t0);
        assert_eq!(a.next_deadline(), Some(t0));
        assert_eq!(a.due(t0), vec!["vip"]);
        assert_eq!(a.due(t0 + Duration::from_millis(499)), Vec::<&str>::new());
        assert_eq!(a.due(t0 + Duration::from_millis(500)), vec!["vip"]);
        assert_eq!(a.due(t0 + Duration::from_millis(1000)), vec!["vip"]);
        assert_eq!(a.due(t0 + Duration::from_secs(10)), Vec::<&str>::new());
        assert_eq!(a.next_deadline(), None);
    }

    #[test]
    fn once_sends_one_round_and_leaves_a_burst_alone() {
        let t0 = Instant::now();
        let second = Duration::from_secs(1);
        for count in [0, 1, 5] {
            let mut a = Announcer::new(BurstSettings {
                count,
                interval: second,
            });
            a.once("vip", t0);
            assert_eq!(a.due(t0), vec!["vip"], "count {count}");
            assert_eq!(a.next_deadline(), None, "count {count}");
        }
        let mut a = Announcer::new(BurstSettings {
            count: 3,
            interval: second,
        });
        a.start("vip", t0);
        a.due(t0);
        a.once("vip", t0);
        assert_eq!(a.next_deadline(), Some(t0 + second), "the burst goes on");
    }

    #[test]
    fn stop_ends_a_burst_and_restart_begins_again() {
        let t0 = Instant::now();
        let mut a = Announcer::new(BurstSettings::default());
        a.start(1, t0);
        a.due(t0);
        a.stop(&1);
        assert_eq!(a.state(&1), None);
        a.start(1, t0);
        assert_eq!(
            a.state(&1),
            Some(BurstState::Sending {
                sent: 0,
                next_at: t0
            })
        );
    }

    #[test]
    fn zero_count_sends_nothing() {
        let t0 = Instant::now();
        let mut a = Announcer::new(BurstSettings {
            count: 0,
            interval: Duration::from_secs(1),
        });
        a.start(1, t0);
        assert!(a.due(t0).is_empty());
    }
}
