//! Building the eBPF crate for `bpfel-unknown-none` with nightly.

use std::{path::PathBuf, process::Command};

use anyhow::Result;

use crate::{run, setup, target_dir, workspace_root};

const TARGET: &str = "bpfel-unknown-none";

/// Builds every program in `speaker-ebpf` and returns the folder holding the objects.
pub fn build() -> Result<PathBuf> {
    setup::ebpf_toolchain()?;
    let mut cmd = Command::new("cargo");
    cmd.current_dir(workspace_root())
        // Use rustup's proxy resolution for +nightly, not the outer cargo's toolchain.
        .env_remove("RUSTC")
        .env_remove("RUSTDOC")
        .env_remove("CARGO")
        .env_remove("RUSTUP_TOOLCHAIN")
        // BTF is what makes `bpftool map dump` print named fields and what aya
        // needs to load `#[btf_map]` definitions.
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            "-Cdebuginfo=2\x1f-Clink-arg=--btf",
        )
        .env("PATH", setup::path_with_cargo_bin())
        .args([
            "+nightly",
            "build",
            "--package",
            "speaker-ebpf",
            "--bins",
            "--release",
            "--target",
            TARGET,
            "-Z",
            "build-std=core",
        ]);
    run(&mut cmd)?;
    Ok(target_dir().join(TARGET).join("release"))
}
