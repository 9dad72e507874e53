//! Installs what the build and the tests need when it is missing.
//!
//! Follows the verified recipe in `../shared/TOOLCHAIN.md`: nightly with
//! `rust-src`, and bpf-linker 0.13 linked against nightly's own libLLVM.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::run;

const BPF_LINKER_VERSION: &str = "0.13.0";
const BPF_LINKER_LLVM_FEATURE: &str = "llvm-22";

/// Debian packages the tests, the demo and the benchmarks use, with a binary each provides.
const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    ("iproute2", "ip"),
    ("bpftool", "bpftool"),
    ("arping", "arping"),
    ("tcpdump", "tcpdump"),
    ("ndisc6", "ndisc6"),
    ("ethtool", "ethtool"),
    ("iputils-ping", "ping"),
    ("procps", "sysctl"),
    // `kubectl kustomize deploy/` in tests/tests/deploy.rs.
    ("kubernetes-client", "kubectl"),
    // The OCI image (cargo xtask image), built without a daemon.
    ("umoci", "umoci"),
    // The front nodes' web server in the demo, the origin tests and the HTTP benchmark.
    ("nginx", "nginx"),
];

pub fn all() -> Result<()> {
    ebpf_toolchain()?;
    debian_packages()
}

fn home() -> Result<PathBuf> {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .context("HOME is not set")
}

fn cargo_bin() -> Result<PathBuf> {
    Ok(match std::env::var_os("CARGO_HOME") {
        Some(h) => PathBuf::from(h),
        None => home()?.join(".cargo"),
    }
    .join("bin"))
}

/// PATH with cargo's bin folder first, so a just-installed bpf-linker is found.
pub fn path_with_cargo_bin() -> OsString {
    let mut paths: Vec<PathBuf> = cargo_bin().into_iter().collect();
    if let Some(p) = std::env::var_os("PATH") {
        paths.extend(std::env::split_paths(&p));
    }
    std::env::join_paths(paths).unwrap_or_default()
}

fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub fn ebpf_toolchain() -> Result<()> {
    let rustup = || {
        let mut c = Command::new("rustup");
        c.env_remove("RUSTUP_TOOLCHAIN");
        c
    };
    if !succeeds(rustup().args(["run", "nightly", "rustc", "--version"])) {
        eprintln!("xtask: installing the nightly toolchain");
        run(rustup().args(["toolchain", "install", "nightly", "--profile", "minimal"]))?;
    }
    let installed =
        output(rustup().args(["component", "list", "--installed", "--toolchain", "nightly"]))?;
    if !installed.lines().any(|l| l.starts_with("rust-src")) {
        eprintln!("xtask: adding rust-src to nightly (about a minute)");
        run(rustup().args(["component", "add", "rust-src", "--toolchain", "nightly"]))?;
    }
    // Cheap, and mends a bpf-linker whose library links went missing.
    let prefix = link_nightly_llvm(&rustup)?;
    let linker = cargo_bin()?.join("bpf-linker");
    if !succeeds(Command::new(&linker).arg("--version")) {
        install_bpf_linker(&prefix)?;
    }
    if !succeeds(Command::new(&linker).arg("--version")) {
        bail!("{} was installed but does not run", linker.display());
    }
    Ok(())
}

/// bpf-linker must link the same LLVM major as rustc; Debian has none that
/// fits, but nightly ships its own libLLVM. This makes a prefix holding it
/// under both names that matter: `libLLVM.so` for the build, and the
/// library's own soname, which the installed binary looks up through its
/// runpath (that prefix) at every start.
fn link_nightly_llvm(rustup: &dyn Fn() -> Command) -> Result<PathBuf> {
    let sysroot = PathBuf::from(output(
        rustup().args(["run", "nightly", "rustc", "--print", "sysroot"]),
    )?);
    let libllvm = std::fs::read_dir(sysroot.join("lib"))
        .with_context(|| format!("cannot read {}/lib", sysroot.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so") || n.starts_with("libLLVM-"))
        })
        .context("nightly's sysroot has no libLLVM shared library")?;
    let prefix = home()?.join(".cache/rust-llvm");
    let lib = prefix.join("lib");
    std::fs::create_dir_all(&lib).with_context(|| format!("cannot create {}", lib.display()))?;
    let soname = libllvm
        .file_name()
        .context("libLLVM path has no file name")?;
    for name in [std::ffi::OsStr::new("libLLVM.so"), soname] {
        let link = lib.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&libllvm, &link)
            .with_context(|| format!("cannot link {} to {}", link.display(), libllvm.display()))?;
    }
    Ok(prefix)
}

fn install_bpf_linker(prefix: &std::path::Path) -> Result<()> {
    eprintln!("xtask: installing bpf-linker {BPF_LINKER_VERSION} (about 3 minutes)");
    run(Command::new("cargo")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC")
        .env("LLVM_PREFIX", prefix)
        .args([
            "install",
            "bpf-linker",
            "--locked",
            "--version",
            BPF_LINKER_VERSION,
            "--no-default-features",
            "--features",
            BPF_LINKER_LLVM_FEATURE,
        ]))
}

fn have(bin: &str) -> bool {
    // Daemons such as nginx live in /usr/sbin, which a user's PATH may lack.
    Path::new("/usr/sbin").join(bin).exists()
        || succeeds(Command::new("sh").args(["-c", &format!("command -v {bin}")]))
}

pub fn debian_packages() -> Result<()> {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .filter(|(_, bin)| !have(bin))
        .map(|(pkg, _)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing Debian packages: {}", missing.join(" "));
    if !have("apt-get") {
        bail!(
            "missing tools ({}) and no apt-get to install them",
            missing.join(" ")
        );
    }
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    // Installing nginx must not start it on the host: the tests run their
    // own, inside their namespaces. policy-rc.d is Debian's way to say so.
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let ours = !policy.exists() && std::fs::write(policy, "#!/bin/sh\nexit 101\n").is_ok();
    if ours {
        use std::os::unix::fs::PermissionsExt as _;
        let _ = std::fs::set_permissions(policy, std::fs::Permissions::from_mode(0o755));
    }
    let installed = run(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing));
    if ours {
        let _ = std::fs::remove_file(policy);
    }
    installed
}

/// Removes network namespaces left by test processes that no longer exist,
/// their name resolution files (tests/src/worker.rs) and their pins. Test
/// namespaces are named `spk<pid>-...` (see tests/src/netns.rs).
pub fn remove_leftover_namespaces() {
    if let Ok(list) = output(Command::new("ip").args(["netns", "list"])) {
        for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
            if left_by_a_dead_test(name) {
                eprintln!("xtask: removing leftover network namespace {name}");
                let _ = succeeds(Command::new("ip").args(["netns", "del", name]));
            }
        }
    }
    // Their name resolution, and their pins (a test's agent that stopped
    // for a restart leaves them for a successor).
    for dir in ["/etc/netns", "/sys/fs/bpf"] {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if left_by_a_dead_test(&entry.file_name().to_string_lossy()) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

fn left_by_a_dead_test(name: &str) -> bool {
    name.strip_prefix("spk")
        .and_then(|r| r.split('-').next())
        .and_then(|p| p.parse::<u32>().ok())
        .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
}
