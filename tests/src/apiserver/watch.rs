//! Watch streams: newline-terminated JSON events over a chunked response,
//! fed from the store's history and live changes, with bookmarks, timeouts
//! and the watch faults (drop, stall).

use std::{
    collections::VecDeque,
    convert::Infallible,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use hyper::body::{Bytes, Frame};
use serde_json::{Value, json};
use tokio::{
    sync::mpsc,
    time::{Instant, MissedTickBehavior},
};

use super::{
    Shared, lock,
    resources::ResourceKind,
    selector::Filter,
    store::{Change, EventType, WatchFrom},
};

/// What a watch request asked for.
pub struct WatchParams {
    pub ns: Option<String>,
    pub filter: Filter,
    pub from: WatchFrom,
    /// `sendInitialEvents=true`: a bookmark marks the end of the initial ADDED events.
    pub initial_events_end: bool,
    pub bookmarks: bool,
    pub timeout: Option<Duration>,
}

/// A response body fed by a channel, one watch event per chunk.
pub struct ChannelBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

/// Starts a watch on the current runtime; the stream ends when the body is
/// dropped (the client went away or its listener was closed).
pub fn start(shared: Arc<Shared>, res: &'static ResourceKind, params: WatchParams) -> ChannelBody {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(run(shared, res, params, tx));
    ChannelBody(rx)
}

async fn run(
    shared: Arc<Shared>,
    res: &'static ResourceKind,
    p: WatchParams,
    tx: mpsc::Sender<Bytes>,
) {
    let mut dropped = shared.drop_watches.subscribe();
    let start = lock(&shared.store).watch(res, p.ns.as_deref(), p.from);
    let start = match start {
        Ok(start) => start,
        Err(e) => {
            // As real API servers do: a 200 stream with one ERROR event.
            let _ = tx.send(line("ERROR", e.to_status())).await;
            return;
        }
    };
    let matches = |obj: &Value| {
        p.ns.as_deref()
            .is_none_or(|ns| obj["metadata"]["namespace"].as_str() == Some(ns))
            && p.filter.matches(obj)
    };

    let mut pending: VecDeque<Bytes> = start
        .initial
        .into_iter()
        .filter(|obj| matches(obj))
        .map(|obj| line("ADDED", obj))
        .collect();
    if p.initial_events_end {
        pending.push_back(line("BOOKMARK", bookmark(res, start.rv, true)));
    }
    pending.extend(start.replay.iter().filter_map(|c| translate(c, &matches)));

    // The newest version this stream has caught up with, for bookmarks.
    let mut seen = start.rv;
    let mut live = start.live;
    let deadline = p.timeout.map(|t| Instant::now() + t);
    let every = shared.bookmark_interval;
    let mut ticker = tokio::time::interval_at(Instant::now() + every, every);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);

    loop {
        let stalled = lock(&shared.faults).stalled_until().map(Instant::from_std);
        tokio::select! {
            biased;
            _ = dropped.changed() => break,
            _ = tx.closed() => break,
            _ = sleep_until(deadline) => break,
            // Wake up when the stall ends, to deliver what was held back.
            _ = sleep_until(stalled), if stalled.is_some() => {}
            permit = tx.reserve(), if stalled.is_none() && !pending.is_empty() => {
                let Ok(permit) = permit else { break };
                if let Some(event) = pending.pop_front() {
                    permit.send(event);
                }
            }
            change = live.recv() => {
                let Some(change) = change else { break };
                seen = change.rv;
                pending.extend(translate(&change, &matches));
            }
            _ = ticker.tick(), if p.bookmarks => {
                if stalled.is_none() && pending.is_empty() {
                    pending.push_back(line("BOOKMARK", bookmark(res, seen, false)));
                }
            }
        }
    }
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// The event a change makes for a watch with this filter. As in Kubernetes,
/// an object entering the selection is ADDED and one leaving it DELETED.
fn translate(change: &Change, matches: &impl Fn(&Value) -> bool) -> Option<Bytes> {
    let now = matches(&change.object);
    let event = match change.event {
        EventType::Added => now.then_some("ADDED")?,
        EventType::Deleted => now.then_some("DELETED")?,
        EventType::Modified => match (change.previous.as_ref().is_some_and(matches), now) {
            (true, true) => "MODIFIED",
            (false, true) => "ADDED",
            (true, false) => "DELETED",
            (false, false) => return None,
        },
    };
    Some(line(event, change.object.clone()))
}

/// A bookmark: only kind, apiVersion and the resourceVersion.
fn bookmark(res: &ResourceKind, rv: u64, initial_events_end: bool) -> Value {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_events_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"kind": res.kind, "apiVersion": res.gvr.api_version(), "metadata": meta})
}

fn line(event: &str, object: Value) -> Bytes {
    let mut bytes = json!({"type": event, "object": object})
        .to_string()
        .into_bytes();
    bytes.push(b'\n');
    Bytes::from(bytes)
}
