//! Embeds the testbed object (`testbed_pass`, `testbed_swap_macs`) built by
//! `cargo xtask build-ebpf`, as speaker/build.rs embeds the responder: from
//! SPEAKER_EBPF_DIR, or an empty stand-in without it (plain `cargo check`,
//! clippy), which the tests then refuse to load.

use std::{env, fs, path::PathBuf};

const OBJECT: &str = "testbed";

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
