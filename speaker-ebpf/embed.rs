// Shared by the build scripts that embed an object built by
// `cargo xtask build-ebpf` (speaker/build.rs, tests/build.rs), through
// `include!`: a build script cannot depend on a crate of this workspace
// without building it for the host first.

/// Copies `object` from SPEAKER_EBPF_DIR into OUT_DIR. Without that variable
/// (plain `cargo check`, clippy, rust-analyzer) an empty stand-in is
/// written, so those need neither nightly nor bpf-linker; what embeds a
/// stand-in refuses to load it.
fn embed(object: &str) {
    use std::{env, fs, path::PathBuf};
    println!("cargo:rerun-if-env-changed=SPEAKER_EBPF_DIR");
    let dst = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join(object);
    match env::var_os("SPEAKER_EBPF_DIR").map(PathBuf::from) {
        Some(dir) => {
            let src = dir.join(object);
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
