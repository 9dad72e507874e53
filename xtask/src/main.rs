//! Project automation: `cargo xtask <command>`.
//!
//! Every command installs what it needs when it is missing, so that a fresh
//! machine needs nothing done by hand (see `setup`).

mod ebpf;
mod image;
mod setup;

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context as _, Result, bail};

const USAGE: &str = "\
usage: cargo xtask <command> [-- extra args]

commands:
  setup        install the eBPF toolchain (rust-src, bpf-linker) and the Debian tools the tests use
  build-ebpf   build the XDP programs (installs the toolchain when missing)
  build        build-ebpf, then the speaker binary (release) with the object embedded
  image        build, then its OCI image: target/image/speaker-<version>.oci.tar
  demo         build, then play the origin story in throw-away network namespaces
               (`demo static`: speaker static answering ARP, step by step)
  test         build, then run the whole test suite (needs root, bpffs, network namespaces)
  bench        build, then run the benchmarks and write BENCHMARKS.md
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        eprint!("{USAGE}");
        return ExitCode::from(2);
    };
    let result = match cmd.as_str() {
        "setup" => setup::all(),
        "build-ebpf" => ebpf::build().map(drop),
        "build" => build().map(drop),
        "image" => image(),
        "demo" => demo(rest),
        "test" => test(rest),
        "bench" => bench(rest),
        "-h" | "--help" | "help" => {
            print!("{USAGE}");
            Ok(())
        }
        other => {
            eprint!("unknown command {other:?}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Runs a command to completion, failing with the command line on a non-zero exit.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// A `cargo` command for host crates, with the eBPF objects visible to the build scripts
/// of speaker (the responder) and speaker-tests (the testbed programs).
fn cargo(ebpf_dir: &Path) -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root())
        .env("SPEAKER_EBPF_DIR", ebpf_dir);
    cmd
}

/// The release binary, with the XDP object embedded; returns its path.
fn build() -> Result<PathBuf> {
    let dir = ebpf::build()?;
    run(cargo(&dir).args(["build", "--release", "--package", "speaker"]))?;
    let binary = target_dir().join("release/speaker");
    println!("built {}", binary.display());
    Ok(binary)
}

fn image() -> Result<()> {
    setup::debian_packages()?;
    let archive = image::build(&build()?)?;
    println!("built {}", archive.display());
    Ok(())
}

fn demo(extra: &[String]) -> Result<()> {
    setup::all()?;
    let dir = ebpf::build()?;
    run(cargo(&dir).args(["build", "--package", "speaker"]))?;
    // The worker the demo starts is a binary of its own.
    run(cargo(&dir).args(["build", "--package", "speaker-tests", "--bins"]))?;
    run(cargo(&dir)
        .args([
            "run",
            "--quiet",
            "--package",
            "speaker-tests",
            "--bin",
            "demo",
            "--",
        ])
        .args(extra))
}

fn test(extra: &[String]) -> Result<()> {
    setup::all()?;
    // tests/tests/image.rs checks the image the release binary goes in.
    image::build(&build()?)?;
    let dir = ebpf::build()?;
    // Integration tests start the real agent binary, so build it first.
    run(cargo(&dir).args(["build", "--package", "speaker"]))?;
    let result = run_tests(
        cargo(&dir)
            .args([
                "test",
                "--workspace",
                "--exclude",
                "speaker-ebpf",
                "--no-fail-fast",
            ])
            .args(extra),
    );
    // Interrupted tests cannot run their own clean-up; whatever they left is removed here.
    setup::remove_leftover_namespaces();
    result
}

/// Runs `cargo test`, echoing its output, and closes with the totals over
/// every test binary on one line.
fn run_tests(cmd: &mut Command) -> Result<()> {
    use std::io::{BufRead as _, BufReader};
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    let (mut passed, mut failed) = (0u64, 0u64);
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines() {
            let line = line?;
            println!("{line}");
            let Some(rest) = line.strip_prefix("test result: ") else {
                continue;
            };
            for part in rest.split(['.', ';']) {
                let mut words = part.split_whitespace();
                if let (Some(n), Some(what)) = (words.next(), words.next()) {
                    let n: u64 = n.parse().unwrap_or(0);
                    match what {
                        "passed" => passed += n,
                        "failed" => failed += n,
                        _ => {}
                    }
                }
            }
        }
    }
    let status = child.wait()?;
    println!("tests: {passed} passed, {failed} failed");
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn bench(extra: &[String]) -> Result<()> {
    setup::all()?;
    let dir = ebpf::build()?;
    run(cargo(&dir).args(["build", "--release", "--package", "speaker"]))?;
    run(cargo(&dir).args(["build", "--release", "--package", "speaker-tests", "--bins"]))?;
    run(cargo(&dir)
        .args([
            "run",
            "--release",
            "--quiet",
            "--package",
            "speaker-tests",
            "--bin",
            "bench",
            "--",
        ])
        .arg(workspace_root().join("BENCHMARKS.md"))
        .args(extra))
}
