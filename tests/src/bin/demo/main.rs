//! `cargo xtask demo`: the origin story, live (`origin.rs`);
//! `cargo xtask demo static`: `speaker static` step by step
//! (`walkthrough.rs`). Both run in network namespaces made for the demo
//! and remove everything they made, also on Ctrl-C or a failure.

mod origin;
mod walkthrough;

use std::{
    process::ExitCode,
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::{Result, bail};

fn main() -> ExitCode {
    speaker_tests::require_privileges();
    stop_on_signals();
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--").collect();
    let result = match args.first().map(String::as_str) {
        None | Some("origin") => origin::run(),
        Some("static") => walkthrough::run(),
        Some(other) => Err(anyhow::anyhow!(
            "no demo {other:?}: `demo` (the origin story) or `demo static`"
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Dropped on the way out: what the demo made is gone by now.
            eprintln!("demo: {e:#} (everything the demo made has been removed)");
            ExitCode::FAILURE
        }
    }
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// Ctrl-C or SIGTERM ends the demo at its next pause, through the same
/// clean-up as its end (the processes it started see Ctrl-C too).
fn stop_on_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

/// Fails once Ctrl-C or SIGTERM came, so that the demo unwinds and drops
/// (removes) what it made.
pub fn interrupted() -> Result<()> {
    if STOP.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}
