//! The OCI image `cargo xtask image` builds (`cargo xtask test` builds it
//! first): a valid OCI image whose configuration says how to run it, whose
//! blobs match their digests, and whose root filesystem alone (no shell,
//! nothing of the host) runs `speaker --version` and `speaker static`
//! answering ARP in a test namespace.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use serde_json::Value;
use speaker_tests::{
    agent::speaker_bin,
    require_privileges,
    topology::{Pair, VIP},
    wait_for,
};

const BINARY: &str = "/usr/local/bin/speaker";

fn version() -> String {
    let out = Command::new(speaker_bin())
        .arg("--version")
        .output()
        .expect("speaker");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.trim().trim_start_matches("speaker ").to_string()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A folder removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    let path = layout.join("blobs/sha256").join(hex);
    let sum = run(Command::new("sha256sum").arg(&path));
    assert!(sum.starts_with(hex), "{digest} does not match its content");
    std::fs::read(path).expect("blob")
}

#[test]
fn the_image_is_valid_oci_and_its_root_filesystem_alone_answers_arp() {
    require_privileges();
    let version = version();
    let archive = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../target/image/speaker-{version}.oci.tar"));
    assert!(
        archive.exists(),
        "{} is missing: `cargo xtask image` builds it (`cargo xtask test` does first)",
        archive.display()
    );
    let scratch =
        Scratch(std::env::temp_dir().join(format!("speaker-image-{}", std::process::id())));
    let layout = scratch.0.join("oci");
    std::fs::create_dir_all(&layout).expect("scratch");
    run(Command::new("tar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(&layout));

    // index -> manifest -> config, each checked against its digest.
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).expect("index"))
            .expect("index.json");
    let entry = &index["manifests"][0];
    assert_eq!(
        entry["annotations"]["org.opencontainers.image.ref.name"],
        version
    );
    assert_eq!(
        entry["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    let manifest: Value =
        serde_json::from_slice(&blob(&layout, entry["digest"].as_str().expect("digest")))
            .expect("manifest");
    let config: Value = serde_json::from_slice(&blob(
        &layout,
        manifest["config"]["digest"]
            .as_str()
            .expect("config digest"),
    ))
    .expect("config");
    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["config"]["Entrypoint"], serde_json::json!([BINARY]));
    assert_eq!(config["config"]["User"], "0:0");
    assert_eq!(
        config["config"]["Labels"]["org.opencontainers.image.version"],
        version
    );
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 1);
    blob(&layout, layers[0]["digest"].as_str().expect("layer digest"));

    // The root filesystem: the binary and its libraries, no shell.
    let bundle = scratch.0.join("bundle");
    let image = format!("{}:{version}", layout.display());
    run(Command::new("umoci")
        .args(["unpack", "--image", &image])
        .arg(&bundle));
    let rootfs = bundle.join("rootfs");
    assert!(rootfs.join(BINARY.trim_start_matches('/')).exists());
    assert!(!rootfs.join("bin/sh").exists(), "a shell in the image");
    let printed = run(Command::new("chroot")
        .arg(&rootfs)
        .args([BINARY, "--version"]));
    assert_eq!(printed.trim(), format!("speaker {version}"));

    // `speaker static` from it, in a private mount namespace (its bpffs
    // goes with it), answers ARP for a client in the test namespace.
    std::fs::create_dir_all(rootfs.join("sys/fs/bpf")).expect("mount point");
    let pair = Pair::new().expect("topology");
    let agent = pair
        .node
        .command("unshare")
        .args(["--mount", "--propagation", "private", "chroot"])
        .arg(&rootfs)
        .args([BINARY, "static", "--interface", "eth0", "--vip", VIP])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the image's speaker");
    let answer = || {
        let out = pair
            .client
            .command("arping")
            .args(["-r", "-i", "eth0", "-c", "1", "-w", "1", VIP])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        speaker_tests::netns::parse_mac(text.trim()).ok()
    };
    let mut answered = None;
    wait_for(Duration::from_secs(5), || {
        answered = answer();
        answered.is_some()
    });
    // SAFETY: kill(2) on our child.
    unsafe { libc::kill(agent.id() as libc::pid_t, libc::SIGTERM) };
    let out = agent.wait_with_output().expect("stopped");
    assert_eq!(
        answered,
        Some(pair.node_mac),
        "no ARP answer from the image's speaker:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
