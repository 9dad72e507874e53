//! Packet capture with tcpdump inside a namespace, read back from pcap.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use crate::netns::Netns;

/// A running tcpdump writing to a pcap file; stopped on `finish` or drop.
pub struct Capture {
    child: Child,
    path: PathBuf,
}

impl Capture {
    /// Starts capturing on `ifname` in `ns` with a BPF `filter` and returns
    /// once tcpdump is listening.
    pub fn start(ns: &Netns, ifname: &str, filter: &str) -> Result<Self> {
        let path = std::env::temp_dir().join(format!("{}-{ifname}.pcap", ns.name()));
        let mut child = ns
            .command("tcpdump")
            .args(["-i", ifname, "-n", "-U", "--immediate-mode", "-w"])
            .arg(&path)
            .args((!filter.is_empty()).then_some(filter))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start tcpdump")?;
        // tcpdump says "listening on IF" once its socket is bound.
        let stderr = child.stderr.take().context("no stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        loop {
            match lines.next() {
                Some(Ok(l)) if l.contains("listening on") => break,
                Some(Ok(_)) => {}
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    bail!("tcpdump on {ifname} did not start");
                }
            }
        }
        // Keep draining stderr so tcpdump never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        Ok(Self { child, path })
    }

    /// Stops tcpdump and returns the frames it captured.
    pub fn finish(self) -> Result<Vec<Vec<u8>>> {
        Ok(self.finish_timed()?.into_iter().map(|(_, f)| f).collect())
    }

    /// Stops tcpdump and returns the frames with their capture times
    /// (nanoseconds since the Unix epoch, CLOCK_REALTIME).
    pub fn finish_timed(mut self) -> Result<Vec<(u64, Vec<u8>)>> {
        // Give frames in flight a moment to be written, then stop politely
        // so the file is flushed.
        std::thread::sleep(Duration::from_millis(100));
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
        let data = std::fs::read(&self.path).context("cannot read the capture")?;
        parse_pcap(&data)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The frames of a classic pcap file (either byte order, µs or ns stamps),
/// with their timestamps in nanoseconds.
pub fn parse_pcap(data: &[u8]) -> Result<Vec<(u64, Vec<u8>)>> {
    if data.len() < 24 {
        bail!("pcap file too short ({} bytes)", data.len());
    }
    let magic = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
    let (le, nanos) = match magic {
        0xa1b2_c3d4 => (true, false),
        0xa1b2_3c4d => (true, true),
        0xd4c3_b2a1 => (false, false),
        0x4d3c_b2a1 => (false, true),
        _ => bail!("not a pcap file"),
    };
    let u32_at = |i: usize| {
        let b = [data[i], data[i + 1], data[i + 2], data[i + 3]];
        if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    let mut frames = Vec::new();
    let mut at = 24;
    while at + 16 <= data.len() {
        let caplen = u32_at(at + 8) as usize;
        let start = at + 16;
        if start + caplen > data.len() {
            break; // a record cut short by the stop
        }
        let (sec, frac) = (u64::from(u32_at(at)), u64::from(u32_at(at + 4)));
        let ts = sec * 1_000_000_000 + if nanos { frac } else { frac * 1000 };
        frames.push((ts, data[start..start + caplen].to_vec()));
        at = start + caplen;
    }
    Ok(frames)
}
