//! A real nginx (Debian's) on a front node, answering every request on
//! port 80 with the node's name, as the origin story's web server.

use std::{
    path::PathBuf,
    process::{Child, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use crate::netns::Netns;

/// The port nginx listens on (every address of the node, the VIPs on lo
/// included, as a Service's pods behind kube-proxy in IPVS mode).
pub const PORT: u16 = 80;

/// One nginx process (no master, so that killing it kills nginx); killed
/// on drop, its files removed.
pub struct Nginx {
    child: Child,
    dir: PathBuf,
}

impl Nginx {
    /// Starts nginx in `ns` answering `node`, and waits until it accepts
    /// connections on `addr`.
    pub fn start(ns: &Netns, node: &str, addr: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("{}-nginx", ns.name()));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let d = dir.display();
        let conf = format!(
            "pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen {PORT};
        listen [::]:{PORT};
        default_type text/plain;
        location / {{ return 200 \"{node}\\n\"; }}
    }}
}}
"
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf)?;
        let mut cmd = ns.command(nginx_bin());
        // SAFETY: prctl is async-signal-safe; nginx must not outlive us.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&path)
            .arg("-e")
            .arg(dir.join("error.log"))
            .args(["-g", "daemon off; master_process off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start nginx (cargo xtask setup installs it)")?;
        let mut nginx = Self { child, dir };
        let target: std::net::SocketAddr = format!("{addr}:{PORT}").parse()?;
        let up = crate::wait_for(Duration::from_secs(5), || {
            ns.enter(|| std::net::TcpStream::connect_timeout(&target, Duration::from_millis(200)))
                .is_ok_and(|c| c.is_ok())
        });
        if up.is_none() {
            let log = std::fs::read_to_string(nginx.dir.join("error.log")).unwrap_or_default();
            let status = nginx.child.try_wait()?;
            bail!("nginx in {} did not start ({status:?}):\n{log}", ns.name());
        }
        Ok(nginx)
    }
}

fn nginx_bin() -> &'static str {
    if std::path::Path::new("/usr/sbin/nginx").exists() {
        "/usr/sbin/nginx"
    } else {
        "nginx"
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
