//! The HTTP listener behind `/metrics`, `/healthz` and `/readyz`. It must
//! outlive whatever clients do, the agent's being on the host network,
//! reachable from the LAN: a connection that sends nothing is closed after
//! a few seconds; one peer gets at most [`PER_PEER`] connections at once;
//! when [`MAX_CONNECTIONS`] are open, the oldest makes way for the new one
//! (so a crowd of idle connections cannot keep the kubelet's probe out);
//! and a failed accept (out of file descriptors, say) is waited out, never
//! the end of the listener.

use std::{
    collections::{HashMap, VecDeque},
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context as _, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    Request, Response, StatusCode, body::Incoming, server::conn::http1, service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::{TcpListener, TcpStream},
    task::{AbortHandle, Id, JoinSet},
};
use tracing::warn;

use super::Page;

const MAX_CONNECTIONS: usize = 64;
/// Connections one address may hold at once.
const PER_PEER: usize = 4;
/// A request's headers must arrive within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// No connection lives longer (a scrape takes milliseconds).
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// After a failed accept, before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves the endpoints on `addr` until the process ends.
pub async fn serve<T: Page>(addr: SocketAddr, page: Arc<Mutex<T>>) -> Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for metrics"))?;
    tokio::spawn(async move {
        let mut open = Open::default();
        let mut failing = false;
        loop {
            let (conn, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    if !failing {
                        warn!(error = %e, "cannot accept a metrics connection; retrying");
                    }
                    failing = true;
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            failing = false;
            open.reap();
            // Over its peer's share: closed at once, its descriptor freed.
            if open.of(peer.ip()) >= PER_PEER {
                continue;
            }
            open.make_room();
            open.spawn(peer.ip(), handle(conn, page.clone()));
        }
    });
    Ok(())
}

/// One connection, served until it ends or times out.
async fn handle<T: Page>(conn: TcpStream, page: Arc<Mutex<T>>) {
    let service = service_fn(move |req| {
        let reply = respond(&req, &page);
        async move { Ok::<_, Infallible>(reply) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(conn), service);
    let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
}

/// The connections being served: by peer, and oldest first.
#[derive(Default)]
struct Open {
    tasks: JoinSet<()>,
    peers: HashMap<Id, IpAddr>,
    per_peer: HashMap<IpAddr, usize>,
    order: VecDeque<AbortHandle>,
}

impl Open {
    fn of(&self, peer: IpAddr) -> usize {
        self.per_peer.get(&peer).copied().unwrap_or(0)
    }

    fn spawn(&mut self, peer: IpAddr, conn: impl Future<Output = ()> + Send + 'static) {
        let task = self.tasks.spawn(conn);
        self.peers.insert(task.id(), peer);
        *self.per_peer.entry(peer).or_default() += 1;
        self.order.push_back(task);
    }

    /// Forgets the connections that ended.
    fn reap(&mut self) {
        while let Some(done) = self.tasks.try_join_next_with_id() {
            let id = match done {
                Ok((id, ())) => id,
                Err(e) => e.id(),
            };
            self.count_out(id);
        }
        self.order.retain(|t| !t.is_finished());
    }

    /// At the cap, ends the oldest connections (their tasks finish at
    /// their next await and are reaped later).
    fn make_room(&mut self) {
        while self.order.len() >= MAX_CONNECTIONS {
            let Some(oldest) = self.order.pop_front() else {
                return;
            };
            oldest.abort();
            self.count_out(oldest.id());
        }
    }

    fn count_out(&mut self, id: Id) {
        let Some(peer) = self.peers.remove(&id) else {
            return;
        };
        if let Some(n) = self.per_peer.get_mut(&peer) {
            *n -= 1;
            if *n == 0 {
                self.per_peer.remove(&peer);
            }
        }
    }
}

fn respond<T: Page>(req: &Request<Incoming>, page: &Mutex<T>) -> Response<Full<Bytes>> {
    const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    const TEXT: &str = "text/plain; charset=utf-8";
    let page = page.lock();
    let (status, body, kind) = match (req.uri().path(), page) {
        ("/metrics", Ok(m)) => (StatusCode::OK, m.render(), OPENMETRICS),
        ("/metrics", Err(_)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "figures unavailable\n".into(),
            TEXT,
        ),
        ("/healthz", _) => (StatusCode::OK, "ok\n".into(), TEXT),
        ("/readyz", Ok(m)) if m.ready() => (StatusCode::OK, "ready\n".into(), TEXT),
        ("/readyz", _) => (StatusCode::SERVICE_UNAVAILABLE, "not ready\n".into(), TEXT),
        _ => (StatusCode::NOT_FOUND, "not found\n".into(), TEXT),
    };
    let mut reply = Response::new(Full::new(Bytes::from(body)));
    *reply.status_mut() = status;
    reply.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(kind),
    );
    reply
}
