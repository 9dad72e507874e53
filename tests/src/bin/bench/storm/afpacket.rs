//! Responder (c): a stand-in of MetalLB's design written for this
//! benchmark, not MetalLB. MetalLB's speaker answers ARP in user space
//! through github.com/mdlayher/arp: a raw packet socket bound to ETH_P_ARP
//! on the interface, every ARP frame read with one recvfrom(2), each
//! request for an announced address answered with one sendto(2). This does
//! the same, in Rust, with none of Go's runtime or MetalLB's bookkeeping
//! (a locked map lookup per request, logging, metrics), so it is if
//! anything cheaper per request than MetalLB itself.

use std::{
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread::JoinHandle,
};

use anyhow::{Context as _, Result, anyhow};
use speaker_tests::netns::Netns;

use super::{cpu, flood::sockaddr_ll};

const ETH_P_ARP: u16 = 0x0806;

/// What the responder did, read when it stops.
#[derive(Clone, Copy, Default)]
pub struct Stats {
    pub answered: u64,
    /// Frames the kernel dropped because the socket's receive buffer was
    /// full (PACKET_STATISTICS), since the last read.
    pub socket_drops: u64,
}

/// The responder's thread; stopped on `stop` or drop.
pub struct Responder {
    /// The thread's id, for its CPU time.
    pub tid: i32,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<Stats>>>,
}

impl Responder {
    /// Starts answering ARP requests for `vip` with `mac` on `ifname` in
    /// `ns`, on a thread pinned to `cpu`; returns once the socket is bound.
    pub fn start(ns: &Netns, ifname: &str, vip: [u8; 4], mac: [u8; 6], cpu: usize) -> Result<Self> {
        let ifindex = ns.ifindex(ifname)?;
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let flag = stop.clone();
        let thread = ns.spawn(move || -> Result<Stats> {
            let sock = match open(ifindex).and_then(|s| cpu::place(0, cpu, cpu::TASK).map(|()| s)) {
                Ok(s) => {
                    let _ = ready_tx.send(Ok(cpu::gettid()));
                    s
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("{e:#}")));
                    return Err(e);
                }
            };
            serve(&sock, ifindex, vip, mac, &flag)
        })?;
        let mut responder = Self {
            tid: 0,
            stop,
            thread: Some(thread),
        };
        responder.tid = ready_rx
            .recv()
            .context("the responder's thread ended")?
            .map_err(|e| anyhow!("AF_PACKET responder: {e}"))?;
        Ok(responder)
    }

    /// Stops the thread; what it did.
    pub fn stop(mut self) -> Result<Stats> {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().context("already stopped")?;
        thread
            .join()
            .map_err(|_| anyhow!("the responder's thread panicked"))?
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn open(ifindex: u32) -> Result<OwnedFd> {
    // SAFETY: plain socket(2); the descriptor is owned at once.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW,
            i32::from(ETH_P_ARP.to_be()),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("packet socket");
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let addr = sockaddr_ll(ifindex, ETH_P_ARP, None);
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
    // Wakes the loop now and then to see whether it should stop; the
    // receive buffer stays at the system default, as MetalLB leaves it.
    let timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: 100_000,
    };
    // SAFETY: a timeval option of the right size.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const timeout).cast(),
            size_of::<libc::timeval>() as u32,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("SO_RCVTIMEO");
    }
    drops(&sock)?; // start counting from zero
    Ok(sock)
}

fn serve(
    sock: &OwnedFd,
    ifindex: u32,
    vip: [u8; 4],
    mac: [u8; 6],
    stop: &AtomicBool,
) -> Result<Stats> {
    let mut stats = Stats::default();
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: buf is writable for its length; no source address asked.
        let n = unsafe {
            libc::recvfrom(
                sock.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN | libc::EINTR) => continue,
                _ => return Err(e).context("recvfrom"),
            }
        }
        let Some((reply, to)) = reply(&buf[..n as usize], vip, mac) else {
            continue;
        };
        let addr = sockaddr_ll(ifindex, ETH_P_ARP, Some(to));
        // SAFETY: reply and addr are valid for the sizes given.
        let rc = unsafe {
            libc::sendto(
                sock.as_raw_fd(),
                reply.as_ptr().cast(),
                reply.len(),
                0,
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ENOBUFS) {
                return Err(e).context("sendto");
            }
        } else {
            stats.answered += 1;
        }
    }
    stats.socket_drops = drops(sock)?;
    Ok(stats)
}

/// The reply to an ARP request for `vip`, padded to Ethernet's minimum as
/// mdlayher/ethernet pads it, and whom to send it to; None for any other
/// frame.
fn reply(f: &[u8], vip: [u8; 4], mac: [u8; 6]) -> Option<([u8; 60], [u8; 6])> {
    let arp = f.get(14..42)?;
    // Ethernet/IPv4, hlen 6, plen 4, a request, for the VIP.
    if f[12..14] != [0x08, 0x06] || arp[..8] != [0, 1, 8, 0, 6, 4, 0, 1] || arp[24..28] != vip {
        return None;
    }
    let (sha, spa) = (&arp[8..14], &arp[14..18]);
    let mut r = [0u8; 60];
    r[0..6].copy_from_slice(sha);
    r[6..12].copy_from_slice(&mac);
    r[12..14].copy_from_slice(&[0x08, 0x06]);
    r[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 2]);
    r[22..28].copy_from_slice(&mac);
    r[28..32].copy_from_slice(&vip);
    r[32..38].copy_from_slice(sha);
    r[38..42].copy_from_slice(spa);
    let to = r[0..6].try_into().ok()?;
    Some((r, to))
}

/// Frames dropped for want of buffer space since the last call (reading
/// PACKET_STATISTICS resets it).
fn drops(sock: &OwnedFd) -> Result<u64> {
    let mut st = libc::tpacket_stats {
        tp_packets: 0,
        tp_drops: 0,
    };
    let mut len = size_of::<libc::tpacket_stats>() as u32;
    // SAFETY: st is writable for len bytes.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            (&raw mut st).cast(),
            &raw mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("PACKET_STATISTICS");
    }
    Ok(u64::from(st.tp_drops))
}
