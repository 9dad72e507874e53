//! Embeds the responder object built by `cargo xtask build-ebpf` (the
//! testbed object is the test crate's, see tests/build.rs).
//!
//! xtask passes its folder in SPEAKER_EBPF_DIR. Without it (plain `cargo
//! check`, clippy, rust-analyzer) an empty stand-in is embedded, so those
//! need neither nightly nor bpf-linker; such a binary refuses to start.

use std::{env, fs, path::PathBuf};

const OBJECT: &str = "speaker-xdp";

fn main() {
    println!("cargo:rerun-if-env-changed=SPEAKER_EBPF_DIR");
    let dst = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join(OBJECT);
    match env::var_os("SPEAKER_EBPF_DIR").map(PathBuf::from) {
        Some(dir) => {
            let src = dir.join(OBJECT);
            println!("cargo:rerun-if-changed={}", src.display());
            if let Err(e) = fs::copy(&src, &dst) {
                panic!(
                    "cannot copy {}: {e} (run `cargo xtask build-ebpf`)",
                    src.display()
                );
            }
        }
        None => fs::write(&dst, b"").expect("cannot write to OUT_DIR"),
    }
}
