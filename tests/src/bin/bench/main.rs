//! `cargo xtask bench`: every benchmark of the project in one run, written
//! to BENCHMARKS.md. `--only xdp|failover|http|api|controller|scale|storm` runs one part
//! and replaces only that part of the file.

mod api;
mod controller;
mod failover;
mod http;
mod scale;
mod storm;
mod xdp;

use std::{fmt::Write as _, path::PathBuf};

use anyhow::{Context as _, Result};

/// The parts, in the order the file shows them.
const PARTS: [&str; 7] = [
    "xdp",
    "failover",
    "http",
    "api",
    "controller",
    "scale",
    "storm",
];
/// Opens each part in the file, so a part rerun alone replaces only its own.
const MARK: &str = "<!-- bench part: ";

fn main() -> Result<()> {
    // `cargo xtask bench -- --only failover` passes the `--` along.
    let mut args = std::env::args().skip(1).filter(|a| a != "--");
    let out_path = args
        .next()
        .map(PathBuf::from)
        .context("usage: bench <BENCHMARKS.md> [--only PART]")?;
    let only = match (args.next().as_deref(), args.next()) {
        (Some("--only"), Some(part)) if PARTS.contains(&part.as_str()) => Some(part),
        (Some("--only"), Some(part)) => anyhow::bail!("no part {part:?}; parts: {PARTS:?}"),
        _ => None,
    };
    speaker_tests::require_privileges();
    let old = std::fs::read_to_string(&out_path).unwrap_or_default();
    let mut md = String::new();
    writeln!(md, "# Benchmarks\n")?;
    writeln!(
        md,
        "Written by `cargo xtask bench`; rerun it to reproduce. The figures of each part come from one run of it.\n"
    )?;
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    writeln!(md, "Machine: {cpus} CPUs, kernel {}.\n", kernel.trim())?;
    for part in PARTS {
        if only.as_deref().is_some_and(|o| o != part) {
            md.push_str(old_part(&old, part));
            continue;
        }
        let mut text = format!("{MARK}{part} -->\n");
        match part {
            "xdp" => xdp::run(&mut text)?,
            "failover" => failover::run(&mut text)?,
            "http" => http::run(&mut text)?,
            "api" => api::run(&mut text)?,
            "scale" => scale::run(&mut text)?,
            "storm" => storm::run(&mut text)?,
            _ => controller::run(&mut text)?,
        }
        md.push_str(&text);
    }
    std::fs::write(&out_path, &md)
        .with_context(|| format!("cannot write {}", out_path.display()))?;
    print!("{md}");
    Ok(())
}

/// A part as an earlier run wrote it (empty if it has none).
fn old_part<'a>(old: &'a str, part: &str) -> &'a str {
    let mark = format!("{MARK}{part} -->");
    let Some(start) = old.find(&mark) else {
        return "";
    };
    let rest = &old[start + mark.len()..];
    let end = rest
        .find(MARK)
        .map_or(old.len(), |i| start + mark.len() + i);
    &old[start..end]
}

/// The value at quantile `q` of sorted samples.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}
