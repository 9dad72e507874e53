//! `cargo xtask image`: the OCI image of `speaker`, built without a daemon
//! or a registry. It holds the release binary (the XDP object is inside)
//! and the shared libraries it links, nothing else: no shell, no package
//! manager. umoci assembles it; the result is an `oci-archive`,
//! `target/image/speaker-<version>.oci.tar`, which `skopeo copy
//! oci-archive:...` pushes and `ctr images import` loads.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::{run, target_dir};

/// Where the binary goes in the image.
const BINARY: &str = "/usr/local/bin/speaker";

/// Builds the image around `binary`; returns the archive's path.
pub fn build(binary: &Path) -> Result<PathBuf> {
    let version = version(binary)?;
    let out = target_dir().join("image");
    let layout = out.join("oci");
    let bundle = out.join("bundle");
    for dir in [&layout, &bundle] {
        if dir.exists() {
            fs::remove_dir_all(dir).with_context(|| format!("cannot remove {}", dir.display()))?;
        }
    }
    fs::create_dir_all(&out)?;
    let image = format!("{}:{version}", layout.display());
    run(Command::new("umoci")
        .args(["init", "--layout"])
        .arg(&layout))?;
    run(Command::new("umoci").args(["new", "--image", &image]))?;
    run(Command::new("umoci")
        .args(["unpack", "--image", &image])
        .arg(&bundle))?;
    let rootfs = bundle.join("rootfs");
    install(binary, &rootfs.join(BINARY.trim_start_matches('/')))?;
    for lib in shared_libraries(binary)? {
        install(&lib, &rootfs.join(lib.strip_prefix("/").unwrap_or(&lib)))?;
    }
    run(Command::new("umoci")
        .args(["repack", "--image", &image])
        .arg(&bundle))?;
    let label = |k: &str, v: &str| format!("--config.label=org.opencontainers.image.{k}={v}");
    run(Command::new("umoci").args([
        "config",
        "--image",
        &image,
        "--os=linux",
        "--architecture=amd64",
        &format!("--config.entrypoint={BINARY}"),
        "--config.user=0:0",
        "--config.workingdir=/",
        &label("title", "speaker"),
        &label("version", &version),
        &label(
            "description",
            "XDP-accelerated Layer 2 announcer for bare-metal Kubernetes",
        ),
        &label("licenses", "Apache-2.0"),
    ]))?;
    run(Command::new("umoci").args(["gc", "--layout"]).arg(&layout))?;
    fs::remove_dir_all(&bundle)?;
    let archive = out.join(format!("speaker-{version}.oci.tar"));
    run(Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&archive)
        .arg("."))?;
    Ok(archive)
}

/// The version `binary --version` prints (`speaker 0.1.0`).
fn version(binary: &Path) -> Result<String> {
    let out = Command::new(binary)
        .arg("--version")
        .output()
        .with_context(|| format!("cannot run {}", binary.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text.split_whitespace().collect::<Vec<_>>().as_slice() {
        ["speaker", v] => Ok((*v).to_string()),
        _ => bail!("unexpected `speaker --version` output {text:?}"),
    }
}

/// The shared objects `binary` loads (ldd), the dynamic loader included.
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("cannot run ldd")?;
    if !out.status.success() {
        bail!(
            "ldd {}: {}",
            binary.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` or
    // `/lib64/ld-linux-x86-64.so.2 (0x...)`; the vDSO has no file.
    Ok(text
        .lines()
        .filter_map(|l| {
            let path = l.split("=>").last()?.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

/// Copies `from` (following symlinks) to `to`, creating its folder.
fn install(from: &Path, to: &Path) -> Result<()> {
    if let Some(dir) = to.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::copy(from, to)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    Ok(())
}
