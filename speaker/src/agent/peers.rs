//! The agents' channel on the LAN: the hold protocol's promises and fences
//! (see `election::hold`) as UDP datagrams between node addresses, each
//! authenticated with HMAC-SHA256 under a key all agents share (a Secret).
//!
//! A request names the asking process (`instance`); its answer names it
//! back, and a process takes only answers to itself, so a restarted agent
//! never counts a promise made to its predecessor. A replayed datagram can
//! only make a peer promise or fence again, which costs availability and
//! never safety: an owner counts a promise only for a round it sent.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use k8s_openapi::{
    ByteString, api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{Api, Client, api::PostParams};
use ring::hmac;
use serde::{Deserialize, Serialize};
use tokio::{net::UdpSocket, sync::mpsc};
use tracing::{debug, info};

use crate::{
    election::{Event, Mono},
    metrics::{self, Metrics},
};

/// The Secret holding the agents' shared key, in the agent's namespace.
pub const KEY_SECRET: &str = "speaker-peer-key";
const KEY_FIELD: &str = "key";
const TAG_LEN: usize = 32;
/// Largest datagram taken (names are at most 253 bytes each).
const MAX_DATAGRAM: usize = 2048;
/// How long a request's asker is remembered for its answer.
const ASKED_TTL: Duration = Duration::from_secs(10);

#[derive(Debug, Serialize, Deserialize)]
struct Wire {
    from: String,
    instance: String,
    /// On an answer: the instance that asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reply_to: Option<String>,
    msg: Msg,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Msg {
    AskHold {
        round: u64,
    },
    AnswerHold {
        round: u64,
        granted: bool,
    },
    AskFence {
        req: u64,
        owner: String,
        rv: Option<String>,
    },
    AnswerFence {
        req: u64,
        remaining_ns: u64,
    },
}

/// Which request an answer goes with: (asker, is a fence, round or req).
type Asked = HashMap<(String, bool, u64), (String, Instant)>;

pub struct Peers {
    socket: Arc<UdpSocket>,
    key: hmac::Key,
    node: String,
    instance: String,
    port: u16,
    /// Node name -> address, from the Node objects.
    addrs: HashMap<String, IpAddr>,
    asked: Arc<Mutex<Asked>>,
    metrics: Arc<Mutex<Metrics>>,
}

impl Peers {
    /// Binds `addr` and starts turning authenticated datagrams into
    /// election events on `events`.
    pub async fn start(
        addr: SocketAddr,
        key: &[u8],
        node: &str,
        instance: &str,
        events: mpsc::Sender<Event>,
        metrics: Arc<Mutex<Metrics>>,
    ) -> Result<Self> {
        let socket = Arc::new(
            UdpSocket::bind(addr)
                .await
                .with_context(|| format!("cannot bind the peer address {addr}"))?,
        );
        let peers = Self {
            socket,
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
            node: node.to_string(),
            instance: instance.to_string(),
            port: addr.port(),
            addrs: HashMap::new(),
            asked: Arc::default(),
            metrics,
        };
        peers.receive(events);
        info!(%addr, "talking to peers");
        Ok(peers)
    }

    /// Where each node is reached.
    pub fn set_addresses(&mut self, addrs: HashMap<String, IpAddr>) {
        self.addrs = addrs;
    }

    pub fn ask_hold(&self, round: u64, peers: &[String]) {
        for p in peers {
            self.send(p, None, Msg::AskHold { round });
        }
    }

    pub fn ask_fence(&self, req: u64, owner: &str, rv: Option<String>, peers: &[String]) {
        for p in peers {
            let msg = Msg::AskFence {
                req,
                owner: owner.to_string(),
                rv: rv.clone(),
            };
            self.send(p, None, msg);
        }
    }

    pub fn answer_hold(&self, to: &str, round: u64, granted: bool) {
        metrics::update(&self.metrics, |m| match granted {
            true => m.holds_granted += 1,
            false => m.holds_refused += 1,
        });
        if let Some(asker) = self.asker(to, false, round) {
            self.send(to, Some(asker), Msg::AnswerHold { round, granted });
        }
    }

    pub fn answer_fence(&self, to: &str, req: u64, remaining: Mono) {
        metrics::update(&self.metrics, |m| m.fences += 1);
        if let Some(asker) = self.asker(to, true, req) {
            let msg = Msg::AnswerFence {
                req,
                remaining_ns: remaining,
            };
            self.send(to, Some(asker), msg);
        }
    }

    fn asker(&self, to: &str, fence: bool, n: u64) -> Option<String> {
        let mut asked = self.asked.lock().ok()?;
        asked
            .remove(&(to.to_string(), fence, n))
            .map(|(instance, _)| instance)
    }

    fn send(&self, to: &str, reply_to: Option<String>, msg: Msg) {
        let Some(ip) = self.addrs.get(to) else {
            debug!(peer = to, "no address for this peer");
            return;
        };
        let wire = Wire {
            from: self.node.clone(),
            instance: self.instance.clone(),
            reply_to,
            msg,
        };
        let Ok(mut datagram) = serde_json::to_vec(&wire) else {
            return;
        };
        let tag = hmac::sign(&self.key, &datagram);
        datagram.extend_from_slice(tag.as_ref());
        // Best effort: a lost datagram is a promise not given, and the
        // next round asks again.
        if let Err(e) = self.socket.try_send_to(&datagram, (*ip, self.port).into()) {
            debug!(peer = to, error = %e, "cannot send to peer");
        }
    }

    fn receive(&self, events: mpsc::Sender<Event>) {
        let socket = self.socket.clone();
        let key = self.key.clone();
        let (node, instance) = (self.node.clone(), self.instance.clone());
        let asked = self.asked.clone();
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            loop {
                let n = match socket.recv_from(&mut buf).await {
                    Ok((n, _)) => n,
                    Err(e) => {
                        debug!(error = %e, "peer socket");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let Some(wire) = open(&key, &buf[..n]) else {
                    metrics::update(&metrics, |m| m.peer_rejected += 1);
                    continue;
                };
                if wire.from == node {
                    continue;
                }
                let Some(ev) = to_event(wire, &instance, &asked) else {
                    continue;
                };
                // A full queue drops the message, as the network may:
                // holds and fences are asked again.
                match events.try_send(ev) {
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        debug!("event queue full; a peer message was dropped");
                    }
                    Ok(()) => {}
                }
            }
        });
    }
}

/// The message in `datagram`, if its tag is right and it parses.
fn open(key: &hmac::Key, datagram: &[u8]) -> Option<Wire> {
    let split = datagram.len().checked_sub(TAG_LEN)?;
    let (body, tag) = datagram.split_at(split);
    hmac::verify(key, body, tag).ok()?;
    serde_json::from_slice(body).ok()
}

/// The election event a message means; answers to another process (our
/// predecessor, or a stranger) are dropped.
fn to_event(wire: Wire, instance: &str, asked: &Mutex<Asked>) -> Option<Event> {
    let remember = |fence: bool, n: u64| {
        if let Ok(mut asked) = asked.lock() {
            let now = Instant::now();
            asked.retain(|_, (_, at)| now.duration_since(*at) < ASKED_TTL);
            asked.insert((wire.from.clone(), fence, n), (wire.instance.clone(), now));
        }
    };
    let ours = wire.reply_to.as_deref() == Some(instance);
    Some(match wire.msg {
        Msg::AskHold { round } => {
            remember(false, round);
            Event::HoldAsked {
                from: wire.from,
                round,
            }
        }
        Msg::AskFence { req, owner, rv } => {
            remember(true, req);
            Event::FenceAsked {
                from: wire.from,
                req,
                owner,
                rv,
            }
        }
        Msg::AnswerHold { round, granted } if ours => Event::HoldAnswer {
            from: wire.from,
            round,
            granted,
        },
        Msg::AnswerFence { req, remaining_ns } if ours => Event::FenceAnswer {
            req,
            remaining: remaining_ns,
        },
        _ => return None,
    })
}

/// The agents' shared key: from `file` when given, else from the Secret
/// [`KEY_SECRET`] in `namespace`, which the first agent creates with a
/// random key.
pub async fn key(client: &Client, namespace: &str, file: Option<&Path>) -> Result<Vec<u8>> {
    if let Some(file) = file {
        let key = std::fs::read(file)
            .with_context(|| format!("cannot read the peer key {}", file.display()))?;
        anyhow::ensure!(
            key.len() >= 16,
            "the peer key {} is too short (at least 16 bytes)",
            file.display()
        );
        return Ok(key);
    }
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let context = || format!("cannot get or create the Secret {namespace}/{KEY_SECRET}");
    loop {
        if let Some(secret) = api.get_opt(KEY_SECRET).await.with_context(context)? {
            let key = secret
                .data
                .and_then(|mut d| d.remove(KEY_FIELD))
                .filter(|k| k.0.len() >= 16)
                .with_context(|| {
                    format!(
                        "Secret {namespace}/{KEY_SECRET} has no {KEY_FIELD:?} of 16 bytes or more"
                    )
                })?;
            return Ok(key.0);
        }
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(KEY_SECRET.to_string()),
                ..Default::default()
            },
            data: Some([(KEY_FIELD.to_string(), ByteString(random_key()?))].into()),
            ..Default::default()
        };
        match api.create(&PostParams::default(), &secret).await {
            // Another agent created it first: read theirs.
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            other => {
                other.with_context(context)?;
            }
        }
    }
}

fn random_key() -> Result<Vec<u8>> {
    let mut key = vec![0u8; 32];
    // SAFETY: getrandom(2) into a buffer of the length given.
    let n = unsafe { libc::getrandom(key.as_mut_ptr().cast(), key.len(), 0) };
    anyhow::ensure!(
        n == key.len() as isize,
        "cannot get random bytes for the peer key"
    );
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed(key: &hmac::Key, wire: &Wire) -> Vec<u8> {
        let mut d = serde_json::to_vec(wire).expect("json");
        let tag = hmac::sign(key, &d);
        d.extend_from_slice(tag.as_ref());
        d
    }

    #[test]
    fn only_datagrams_under_the_key_are_taken() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"0123456789abcdef");
        let other = hmac::Key::new(hmac::HMAC_SHA256, b"fedcba9876543210");
        let wire = Wire {
            from: "front-1".into(),
            instance: "i1".into(),
            reply_to: None,
            msg: Msg::AskHold { round: 3 },
        };
        let good = sealed(&key, &wire);
        assert!(open(&key, &good).is_some());
        assert!(open(&other, &good).is_none(), "another key");
        let mut flipped = good.clone();
        flipped[5] ^= 1;
        assert!(open(&key, &flipped).is_none(), "altered");
        assert!(open(&key, &good[..20]).is_none(), "truncated");
        assert!(open(&key, &[]).is_none());
    }

    #[test]
    fn answers_reach_only_the_process_that_asked() {
        let asked = Mutex::new(Asked::new());
        let answer = |reply_to: &str| Wire {
            from: "front-2".into(),
            instance: "i2".into(),
            reply_to: Some(reply_to.into()),
            msg: Msg::AnswerHold {
                round: 7,
                granted: true,
            },
        };
        assert!(to_event(answer("me"), "me", &asked).is_some());
        assert!(
            to_event(answer("my-predecessor"), "me", &asked).is_none(),
            "a promise to the process before us does not bind for us"
        );
    }
}
