//! The HTTP listener behind `/metrics`, `/healthz` and `/readyz`. It must
//! outlive whatever clients do: a connection that sends nothing is closed
//! after a few seconds, at most [`MAX_CONNECTIONS`] are served at once
//! (more are closed at once), and a failed accept (out of file
//! descriptors, say) is waited out, never the end of the listener.

use std::{
    convert::Infallible,
    net::SocketAddr,
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
use tokio::{net::TcpListener, sync::Semaphore};
use tracing::warn;

use super::Page;

const MAX_CONNECTIONS: usize = 32;
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
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        let mut failing = false;
        loop {
            let conn = match listener.accept().await {
                Ok((conn, _)) => conn,
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
            // Over the cap: closed at once, its descriptor freed.
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                continue;
            };
            let page = page.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let reply = respond(&req, &page);
                    async move { Ok::<_, Infallible>(reply) }
                });
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(conn), service);
                let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
                drop(permit);
            });
        }
    });
    Ok(())
}

fn respond<T: Page>(req: &Request<Incoming>, page: &Mutex<T>) -> Response<Full<Bytes>> {
    let page = page.lock();
    let (status, body) = match (req.uri().path(), page) {
        ("/metrics", Ok(m)) => (StatusCode::OK, m.render()),
        ("/healthz", _) => (StatusCode::OK, "ok\n".into()),
        ("/readyz", Ok(m)) if m.ready() => (StatusCode::OK, "ready\n".into()),
        ("/readyz", _) => (StatusCode::SERVICE_UNAVAILABLE, "not ready\n".into()),
        _ => (StatusCode::NOT_FOUND, "not found\n".into()),
    };
    let mut reply = Response::new(Full::new(Bytes::from(body)));
    *reply.status_mut() = status;
    reply.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
    );
    reply
}
