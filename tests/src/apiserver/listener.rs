//! Listeners: each an OS-assigned port on 127.0.0.1 serving the same store,
//! that a test can close (cutting off every client that came through it)
//! and reopen on the same port.

use std::{
    convert::Infallible,
    io,
    net::{Ipv4Addr, SocketAddr, TcpListener as StdListener},
    sync::{Arc, Mutex, mpsc as std_mpsc},
    time::Duration,
};

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, runtime::Handle, sync::mpsc, sync::watch};

use super::{Shared, http, lock};

enum Command {
    /// Stop accepting and abort every connection; acknowledge when done.
    Close(std_mpsc::Sender<()>),
    /// Accept again on this socket.
    Open(StdListener),
}

/// A handle on one listener; clones refer to the same one.
#[derive(Clone)]
pub struct Listener {
    port: u16,
    commands: mpsc::UnboundedSender<Command>,
    /// Whether it is open; also serializes close and reopen.
    open: Arc<Mutex<bool>>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("port", &self.port)
            .finish()
    }
}

impl Listener {
    pub(crate) fn start(shared: Arc<Shared>, rt: &Handle) -> io::Result<Self> {
        let socket = bind(0)?;
        let port = socket.local_addr()?.port();
        let (commands, rx) = mpsc::unbounded_channel();
        rt.spawn(accept_loop(shared, socket, rx));
        Ok(Self {
            port,
            commands,
            open: Arc::new(Mutex::new(true)),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops accepting (connections are refused) and aborts every open
    /// connection and watch stream that came in through this listener.
    /// Done when this returns.
    pub fn close(&self) {
        let mut open = lock(&self.open);
        if !*open {
            return;
        }
        let (ack, done) = std_mpsc::channel();
        if self.commands.send(Command::Close(ack)).is_ok() {
            // The accept loop answers at once; the bound only guards against
            // a runtime that is shutting down.
            let _ = done.recv_timeout(Duration::from_secs(5));
        }
        *open = false;
    }

    /// Accepts again, on the same port.
    pub fn reopen(&self) -> io::Result<()> {
        let mut open = lock(&self.open);
        if *open {
            return Ok(());
        }
        let socket = bind(self.port)?;
        self.commands
            .send(Command::Open(socket))
            .map_err(|_| io::Error::other("the API server has stopped"))?;
        *open = true;
        Ok(())
    }
}

fn bind(port: u16) -> io::Result<StdListener> {
    // std sets SO_REUSEADDR, so the port can be bound again while closed
    // connections linger in TIME_WAIT.
    let socket = StdListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

async fn accept_loop(
    shared: Arc<Shared>,
    first: StdListener,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let mut next = Some(first);
    loop {
        // Closed: wait to be opened again.
        let Some(socket) = next.take() else {
            match commands.recv().await {
                Some(Command::Open(socket)) => next = Some(socket),
                Some(Command::Close(ack)) => {
                    let _ = ack.send(());
                }
                None => return,
            }
            continue;
        };
        let Ok(listener) = TcpListener::from_std(socket) else {
            continue;
        };
        // Every connection of this open period watches `abort`.
        let (abort, _) = watch::channel(false);
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    if let Ok((stream, _)) = accepted {
                        tokio::spawn(serve_connection(shared.clone(), stream, abort.subscribe()));
                    }
                }
                command = commands.recv() => match command {
                    Some(Command::Close(ack)) => {
                        abort.send_replace(true);
                        drop(listener);
                        let _ = ack.send(());
                        break;
                    }
                    Some(Command::Open(_)) => {}
                    None => return,
                },
            }
        }
    }
}

async fn serve_connection(
    shared: Arc<Shared>,
    stream: tokio::net::TcpStream,
    mut abort: watch::Receiver<bool>,
) {
    let service = service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(http::handle(shared, req).await) }
    });
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    // Dropping the connection closes the socket and ends its watch streams.
    tokio::select! {
        _ = conn => {}
        _ = abort.wait_for(|aborted| *aborted) => {}
    }
}
