//! The real `speaker` binary, run inside a namespace.

use std::{
    path::PathBuf,
    process::{Child, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::netns::Netns;

/// The speaker binary: `SPEAKER_BIN`, or `speaker` next to the test's own
/// target folder (`cargo xtask test` builds it first).
pub fn speaker_bin() -> PathBuf {
    built("SPEAKER_BIN", "speaker")
}

/// A binary of the workspace: `$env`, or `name` in the target folder of
/// the running program (target/<profile>/deps/<test> or
/// target/<profile>/<bin>).
pub fn built(env: &str, name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join(name)
}

/// A running agent; killed on drop if still running.
pub struct Agent {
    child: Child,
    log: PathBuf,
    pub bpffs: PathBuf,
}

impl Agent {
    /// Starts `speaker ARGS --bpffs <unique dir>` in `ns`.
    pub fn start(ns: &Netns, args: &[&str]) -> Result<Self> {
        Self::start_with_env(ns, args, &[])
    }

    /// As [`Agent::start`], with extra environment (e.g. KUBECONFIG).
    pub fn start_with_env(
        ns: &Netns,
        args: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Result<Self> {
        let bpffs = PathBuf::from(format!("/sys/fs/bpf/{}", ns.name()));
        Self::start_in(ns, args, env, bpffs)
    }

    /// As [`Agent::start_with_env`], with the bpffs folder `bpffs`.
    pub fn start_in(
        ns: &Netns,
        args: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
        bpffs: PathBuf,
    ) -> Result<Self> {
        Self::start_bin(&speaker_bin(), ns, args, env, bpffs)
    }

    /// As [`Agent::start_in`], running the speaker binary `bin` instead of
    /// the workspace's (another build of it, to compare with).
    pub fn start_bin(
        bin: &std::path::Path,
        ns: &Netns,
        args: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
        bpffs: PathBuf,
    ) -> Result<Self> {
        let args: Vec<&str> = args
            .iter()
            .copied()
            .chain([
                "--bpffs",
                bpffs.to_str().context("bpffs path is not UTF-8")?,
            ])
            .collect();
        Self::spawn(bin, ns, &args, env, bpffs.clone())
    }

    /// `speaker controller ARGS` in `ns` (no data plane, so no bpffs).
    pub fn start_controller(
        ns: &Netns,
        args: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Result<Self> {
        let args: Vec<&str> = ["controller"]
            .into_iter()
            .chain(args.iter().copied())
            .collect();
        let none = PathBuf::from(format!("/nonexistent/{}", ns.name()));
        Self::spawn(&speaker_bin(), ns, &args, env, none)
    }

    fn spawn(
        bin: &std::path::Path,
        ns: &Netns,
        args: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
        bpffs: PathBuf,
    ) -> Result<Self> {
        let log = std::env::temp_dir().join(format!("{}-speaker.log", ns.name()));
        let log_file = std::fs::File::create(&log)?;
        let mut cmd = ns.command(bin.to_str().context("binary path is not UTF-8")?);
        // SAFETY: prctl is async-signal-safe. An agent must not outlive the
        // test or tool that started it, however that ends.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .args(args)
            .env(
                "RUST_LOG",
                "debug,kube=info,hyper=info,tower=info,rustls=info",
            )
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        Ok(Self { child, log, bpffs })
    }

    /// Waits until the program is attached to `ifname` and the maps are
    /// pinned, or fails with the agent's log.
    pub fn wait_ready(&mut self, ns: &Netns, ifname: &str) -> Result<()> {
        self.wait_ready_within(ns, ifname, Duration::from_secs(10))
    }

    /// As [`Agent::wait_ready`], for up to `within` (a start that first
    /// reads a large cluster takes longer).
    pub fn wait_ready_within(&mut self, ns: &Netns, ifname: &str, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!("speaker exited early ({status}):\n{}", self.log());
            }
            // A predecessor's data plane, left for a restart, is ours once
            // its VERSION is gone (adopted or cleared).
            let left = std::fs::symlink_metadata(self.bpffs.join("VERSION")).is_ok();
            if ns.has_xdp(ifname)? && self.bpffs.join("VIPS").exists() && !left {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("speaker did not attach within {within:?}:\n{}", self.log())
    }

    /// Waits up to `within` for the process to exit; its status.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident and peak resident memory in MiB (VmRSS, VmHWM).
    pub fn memory(&self) -> anyhow::Result<(f64, f64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let mib = |key: &str| {
            status
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
                .map_or(f64::NAN, |kib| kib / 1024.0)
        };
        Ok((mib("VmRSS:"), mib("VmHWM:")))
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Sends SIGTERM and waits (up to 10 s) for the exit status.
    pub fn terminate(&mut self) -> Result<ExitStatus> {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait()? {
                return Ok(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!(
            "speaker did not stop within 10 s of SIGTERM:\n{}",
            self.log()
        )
    }

    /// Leaves the pins (and the program attached through them) when this
    /// is dropped: a successor on the node adopts them.
    pub fn leave_pins(&mut self) {
        self.bpffs = PathBuf::new();
    }

    /// The agent's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            // SIGCONT first, in case a test left it stopped.
            self.signal(libc::SIGCONT);
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(&self.log);
        // A killed agent cannot unpin; its pins are removed here.
        if !self.bpffs.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.bpffs);
        }
    }
}
