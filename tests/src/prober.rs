//! Asks for a VIP on the LAN every 10 ms from a made-up sender, to time
//! who answers and when: the replies are flooded by the bridge to the
//! client's port, where a capture sees them, and the client's kernel
//! ignores them (they are not addressed to it).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Result;

use crate::{capture::Capture, frames::Arp, lan::Lan, topology::ipv4};

/// The made-up sender's MAC and address.
pub const PROBE_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x00, 0x00, 0xfe];
pub const PROBE_IP: [u8; 4] = [198, 18, 0, 250];
/// How often it asks.
pub const EVERY: Duration = Duration::from_millis(10);

/// Runs until dropped.
pub struct Prober {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Prober {
    pub fn start(lan: &Lan, vip: &str) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let ifindex = lan.client.ifindex("eth0")?;
        let mut req = Arp::request(PROBE_MAC, PROBE_IP, ipv4(vip));
        req.trailer = vec![0; 18];
        let frame = req.bytes();
        let flag = stop.clone();
        let thread = lan.client.spawn(move || {
            let Ok(sock) = speaker::announce::PacketSocket::open(ifindex) else {
                return;
            };
            while !flag.load(Ordering::Relaxed) {
                let _ = sock.send(&frame);
                std::thread::sleep(EVERY);
            }
        })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The replies to the prober for `vip` in a capture on the client's port,
/// after `from` (capture time, ns): (time, the MAC that answered).
pub fn replies(cap: Capture, vip: &str, from: u64) -> Result<Vec<(u64, [u8; 6])>> {
    Ok(cap
        .finish_timed()?
        .into_iter()
        .filter(|(t, _)| *t > from)
        .filter_map(|(t, f)| Arp::parse(&f).map(|a| (t, a)))
        .filter(|(_, a)| a.op == 2 && a.spa == ipv4(vip) && a.eth_dst == PROBE_MAC)
        .map(|(t, a)| (t, a.sha))
        .collect())
}

/// The longest time without a reply, less the probe interval (ms).
pub fn dark_ms(replies: &[(u64, [u8; 6])]) -> Option<f64> {
    let gap = replies.windows(2).map(|w| w[1].0 - w[0].0).max()?;
    Some((gap as f64 / 1e6 - EVERY.as_millis() as f64).max(0.0))
}
