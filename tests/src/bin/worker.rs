//! The origin story's worker: a client that resolves a name as any
//! program does (getaddrinfo, so /etc/hosts) and sends `GET /` to it
//! every period, each request on a new connection and in its own thread,
//! so a request that hangs does not delay the next. One line per request
//! on stdout, in the order they finish:
//!
//! ```text
//! <sent, Unix ns> <took, µs> ok <body>
//! <sent, Unix ns> <took, µs> fail <why>
//! ```
//!
//! usage: worker NAME PORT PERIOD_MS TIMEOUT_MS

use std::{
    io::{Read as _, Write as _},
    net::{TcpStream, ToSocketAddrs as _},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(name), Some(Ok(port)), Some(Ok(period)), Some(Ok(timeout))) = (
        args.first().cloned(),
        args.get(1).map(|a| a.parse::<u16>()),
        args.get(2).map(|a| a.parse::<u64>()),
        args.get(3).map(|a| a.parse::<u64>()),
    ) else {
        eprintln!("usage: worker NAME PORT PERIOD_MS TIMEOUT_MS");
        std::process::exit(2);
    };
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let period = Duration::from_millis(period.max(1));
    let timeout = Duration::from_millis(timeout.max(1));
    let mut next = Instant::now();
    loop {
        let sent = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let (name, out) = (name.clone(), out.clone());
        std::thread::spawn(move || {
            let start = Instant::now();
            let line = match request(&name, port, timeout) {
                Ok(body) => format!("ok {}", body.trim()),
                Err(e) => format!("fail {e}"),
            };
            let took = start.elapsed().as_micros();
            let mut out = out
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // The reader is gone: so is the point of going on.
            if writeln!(out, "{sent} {took} {line}")
                .and_then(|()| out.flush())
                .is_err()
            {
                std::process::exit(0);
            }
        });
        next += period;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
}

/// One `GET /` on a new connection, all of it within `timeout`; the body
/// of a 200 answer.
fn request(name: &str, port: u16, timeout: Duration) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    let addr = (name, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {name}: {e}"))?
        .next()
        .ok_or_else(|| format!("{name} has no address"))?;
    let mut conn =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
    let left = deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
        .ok_or("timed out")?;
    conn.set_read_timeout(Some(left))
        .map_err(|e| e.to_string())?;
    conn.set_write_timeout(Some(left))
        .map_err(|e| e.to_string())?;
    conn.write_all(
        format!("GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .map_err(|e| format!("send: {e}"))?;
    let mut reply = String::new();
    conn.read_to_string(&mut reply)
        .map_err(|e| format!("receive: {e}"))?;
    let (head, body) = reply.split_once("\r\n\r\n").ok_or("no complete answer")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(head.lines().next().unwrap_or_default().to_string());
    }
    Ok(body.to_string())
}
