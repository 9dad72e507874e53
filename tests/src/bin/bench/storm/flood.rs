//! The storm's generator: one frame sent over and over from a packet
//! socket, in batches of `sendmmsg`, paced to a rate.
//!
//! A sender of our own rather than Debian's trafgen: it counts exactly
//! what the kernel took from it in each step, and it runs on a thread of
//! the benchmark pinned to the generator's CPU.

use std::{
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

/// Frames handed to the kernel per `sendmmsg` at most: small enough that a
/// burst to catch up after a preemption fits veth's 256-frame ring.
const BATCH: usize = 32;

pub struct Flood {
    sock: OwnedFd,
    frame: Vec<u8>,
}

/// What one run of the generator did.
#[derive(Clone, Copy, Default)]
pub struct Sent {
    /// Frames the kernel accepted.
    pub sent: u64,
    /// Frames it refused (counted as lost: a real LAN would have carried
    /// them).
    pub refused: u64,
    pub elapsed: Duration,
}

impl Flood {
    /// A packet socket on `ifindex` that sends `frame`. Must be called on a
    /// thread inside the generator's namespace.
    pub fn open(ifindex: u32, frame: Vec<u8>) -> Result<Self> {
        // SAFETY: plain socket(2); the descriptor is owned at once.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("packet socket");
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        // Protocol 0: this socket sends only and is never handed a frame.
        let addr = sockaddr_ll(ifindex, 0, None);
        // SAFETY: addr is a valid sockaddr_ll of the size given.
        let rc = unsafe {
            libc::bind(
                sock.as_raw_fd(),
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error()).context("bind the packet socket");
        }
        // Straight to the driver, as trafgen does: the generator should cost
        // as little as it can, and veth has no queue anyway.
        let one: libc::c_int = 1;
        // SAFETY: an int option of the right size.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_QDISC_BYPASS,
                (&raw const one).cast(),
                size_of::<libc::c_int>() as u32,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error()).context("PACKET_QDISC_BYPASS");
        }
        Ok(Self { sock, frame })
    }

    /// Sends for `duration` at `rate` frames per second (0: as fast as it
    /// can). Behind schedule (preempted), it catches up in batches.
    pub fn run(&self, rate: u64, duration: Duration) -> Result<Sent> {
        let mut iov = libc::iovec {
            iov_base: self.frame.as_ptr().cast_mut().cast(),
            iov_len: self.frame.len(),
        };
        // SAFETY: all-zero is a valid mmsghdr; each points at the one iovec,
        // which the kernel only reads.
        let mut msgs: Vec<libc::mmsghdr> = (0..BATCH)
            .map(|_| {
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_iov = &raw mut iov;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        let mut out = Sent::default();
        let start = Instant::now();
        loop {
            let elapsed = start.elapsed();
            if elapsed >= duration {
                out.elapsed = elapsed;
                return Ok(out);
            }
            let done = out.sent + out.refused;
            let due = if rate == 0 {
                done + BATCH as u64
            } else {
                (rate as f64 * elapsed.as_secs_f64()) as u64
            };
            if due <= done {
                std::thread::sleep(Duration::from_micros(20));
                continue;
            }
            let n = (due - done).min(BATCH as u64) as usize;
            // SAFETY: msgs holds n valid headers pointing at live memory.
            let k =
                unsafe { libc::sendmmsg(self.sock.as_raw_fd(), msgs.as_mut_ptr(), n as u32, 0) };
            if k < 0 {
                let e = std::io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::ENOBUFS | libc::EAGAIN) => out.refused += n as u64,
                    Some(libc::EINTR) => {}
                    _ => bail!("sendmmsg: {e}"),
                }
                continue;
            }
            out.sent += k as u64;
            // The rest of a partly sent batch failed on the first one left.
            out.refused += (n - k as usize) as u64;
        }
    }
}

/// A link-layer address for bind(2) or sendto(2).
pub fn sockaddr_ll(ifindex: u32, protocol: u16, dst: Option<[u8; 6]>) -> libc::sockaddr_ll {
    // SAFETY: all-zero is a valid sockaddr_ll.
    let mut a: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    a.sll_family = libc::AF_PACKET as u16;
    a.sll_protocol = protocol.to_be();
    a.sll_ifindex = ifindex as i32;
    if let Some(mac) = dst {
        a.sll_halen = 6;
        a.sll_addr[..6].copy_from_slice(&mac);
    }
    a
}
