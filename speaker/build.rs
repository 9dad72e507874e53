//! Embeds the eBPF objects built by `cargo xtask build-ebpf`.
//!
//! xtask passes their folder in SPEAKER_EBPF_DIR. Without it (plain `cargo
//! check`, clippy, rust-analyzer) empty stand-ins are embedded, so those
//! need neither nightly nor bpf-linker; such a binary refuses to start.

use std::{env, fs, path::PathBuf};

const OBJECTS: [&str; 2] = ["speaker-xdp", "testbed"];

fn main() {
    println!("cargo:rerun-if-env-changed=SPEAKER_EBPF_DIR");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let dir = env::var_os("SPEAKER_EBPF_DIR").map(PathBuf::from);
    for name in OBJECTS {
        let dst = out.join(name);
        match &dir {
            Some(dir) => {
                let src = dir.join(name);
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
}
