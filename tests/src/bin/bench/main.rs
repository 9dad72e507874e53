//! `cargo xtask bench`: every benchmark of the project in one run, written
//! to BENCHMARKS.md. `--only xdp|failover|api` runs one part (and still
//! rewrites the file, with that part only).

mod api;
mod failover;
mod xdp;

use std::{fmt::Write as _, path::PathBuf};

use anyhow::{Context as _, Result};

fn main() -> Result<()> {
    // `cargo xtask bench -- --only failover` passes the `--` along.
    let mut args = std::env::args().skip(1).filter(|a| a != "--");
    let out_path = args
        .next()
        .map(PathBuf::from)
        .context("usage: bench <BENCHMARKS.md> [--only PART]")?;
    let only = match (args.next().as_deref(), args.next()) {
        (Some("--only"), Some(part)) => Some(part),
        _ => None,
    };
    speaker_tests::require_privileges();
    let mut md = String::new();
    writeln!(md, "# Benchmarks\n")?;
    writeln!(
        md,
        "Written by `cargo xtask bench`; rerun it to reproduce. Every figure comes from the same run.\n"
    )?;
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    writeln!(md, "Machine: {cpus} CPUs, kernel {}.\n", kernel.trim())?;
    let want = |part: &str| only.as_deref().is_none_or(|o| o == part);
    if want("xdp") {
        xdp::run(&mut md)?;
    }
    if want("failover") {
        failover::run(&mut md)?;
    }
    if want("api") {
        api::run(&mut md)?;
    }
    std::fs::write(&out_path, &md)
        .with_context(|| format!("cannot write {}", out_path.display()))?;
    print!("{md}");
    Ok(())
}

/// The value at quantile `q` of sorted samples.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}
