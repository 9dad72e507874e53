//! Named network namespaces that remove themselves on drop.

use std::{
    fs::File,
    os::{fd::AsRawFd, unix::process::CommandExt},
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Context as _, Result, bail};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A network namespace named `spk<pid>-<tag><n>`; `cargo xtask test` removes
/// any whose process is gone, should a test be killed before its drop runs.
pub struct Netns {
    name: String,
    fd: File,
}

impl Netns {
    pub fn new(tag: &str) -> Result<Self> {
        let name = format!(
            "spk{}-{tag}{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let fd = match File::open(format!("/run/netns/{name}")) {
            Ok(fd) => fd,
            Err(e) => {
                let _ = Command::new("ip").args(["netns", "del", &name]).output();
                return Err(e).context("cannot open the new namespace");
            }
        };
        let ns = Self { name, fd };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs inside this namespace. Only the network namespace
    /// changes (unlike `ip netns exec`, which also gives the child a private
    /// /sys and bpffs), so pins stay visible to bpftool.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        let fd = self.fd.as_raw_fd();
        // SAFETY: setns is async-signal-safe; fd stays open until exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd
    }

    /// Runs `ip ARGS` in this namespace.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        run(self.command("ip").args(args))
    }

    /// Runs `sysctl -w KEY=VALUE` in this namespace.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        run(self
            .command("sysctl")
            .args(["-q", "-w", &format!("{key}={value}")]))
        .map(drop)
    }

    /// Drops (`on`) or lets through again UDP to and from `port` in this
    /// namespace only (its own iptables).
    pub fn block_udp_port(&self, port: u16, on: bool) -> Result<()> {
        let op = if on { "-A" } else { "-D" };
        let port = port.to_string();
        for (chain, dir) in [
            ("INPUT", "--dport"),
            ("OUTPUT", "--dport"),
            ("INPUT", "--sport"),
        ] {
            run(self
                .command("iptables")
                .args([op, chain, "-p", "udp", dir, &port, "-j", "DROP"]))?;
        }
        Ok(())
    }

    /// Runs `f` on a thread that has entered this namespace.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let fd = self.fd.as_raw_fd();
        std::thread::scope(|s| {
            s.spawn(move || {
                // SAFETY: setns on a thread we own and end afterwards.
                if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
                    bail!("setns: {}", std::io::Error::last_os_error());
                }
                Ok(f())
            })
            .join()
            .map_err(|_| anyhow::anyhow!("thread in namespace panicked"))?
        })
    }

    /// Sends raw Ethernet frames out of `ifname` here (AF_PACKET).
    pub fn send_frames(&self, ifname: &str, frames: &[Vec<u8>]) -> Result<()> {
        let ifindex = self.ifindex(ifname)?;
        self.enter(|| -> Result<()> {
            let sock = speaker::announce::PacketSocket::open(ifindex)?;
            for f in frames {
                sock.send(f)?;
            }
            Ok(())
        })?
    }

    /// The IPv6 multicast groups `ifname` has joined here.
    pub fn ipv6_groups(&self, ifname: &str) -> Result<Vec<String>> {
        let out = self.ip(&["-6", "maddr", "show", "dev", ifname])?;
        Ok(out
            .lines()
            .filter_map(|l| l.trim().strip_prefix("inet6 "))
            .map(|g| g.split_whitespace().next().unwrap_or("").to_string())
            .collect())
    }

    /// Runs `f` on a new thread inside this namespace, in the background.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<std::thread::JoinHandle<T>> {
        let fd = self
            .fd
            .try_clone()
            .context("cannot duplicate the namespace fd")?;
        Ok(std::thread::spawn(move || {
            // SAFETY: setns on this new thread only.
            let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
            assert!(rc == 0, "setns: {}", std::io::Error::last_os_error());
            f()
        }))
    }

    /// The MAC address of `ifname` here.
    pub fn mac(&self, ifname: &str) -> Result<[u8; 6]> {
        let out = self.ip(&["-j", "link", "show", ifname])?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        let s = v[0]["address"]
            .as_str()
            .context("no address in `ip link` output")?;
        parse_mac(s)
    }

    pub fn ifindex(&self, ifname: &str) -> Result<u32> {
        let out = self.ip(&["-j", "link", "show", ifname])?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        v[0]["ifindex"]
            .as_u64()
            .map(|i| i as u32)
            .context("no ifindex in `ip link` output")
    }

    /// Whether an XDP program is attached to `ifname`.
    pub fn has_xdp(&self, ifname: &str) -> Result<bool> {
        Ok(self.xdp_mode(ifname)?.is_some())
    }

    /// The attach mode of the XDP program on `ifname` as iproute2 reports
    /// it (1 native, 2 generic, 3 offloaded), if one is attached.
    pub fn xdp_mode(&self, ifname: &str) -> Result<Option<u64>> {
        let out = self.ip(&["-j", "link", "show", ifname])?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        Ok(v[0]["xdp"]["mode"].as_u64())
    }

    /// The link-layer address in the kernel's neighbour entry for `addr`
    /// on `ifname`, if it has one.
    pub fn neighbour_mac(&self, ifname: &str, addr: &str) -> Option<[u8; 6]> {
        let out = self
            .ip(&["-j", "neigh", "show", addr, "dev", ifname])
            .ok()?;
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        parse_mac(v.as_array()?.first()?["lladdr"].as_str()?).ok()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace takes its interfaces (and veth peers) along.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let mut mac = [0u8; 6];
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        bail!("not a MAC address: {s:?}");
    }
    for (m, p) in mac.iter_mut().zip(parts) {
        *m = u8::from_str_radix(p, 16).with_context(|| format!("not a MAC address: {s:?}"))?;
    }
    Ok(mac)
}

/// Runs a command to completion; its stdout on success, an error naming the
/// command and its stderr otherwise.
pub fn run(cmd: &mut Command) -> Result<String> {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd
        .output()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!(
            "{cmd:?} failed ({status}): {}",
            String::from_utf8_lossy(&stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&stdout).trim().to_string())
}
