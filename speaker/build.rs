//! Embeds the responder object built by `cargo xtask build-ebpf` (the
//! testbed object is the test crate's, see tests/build.rs).

include!("../speaker-ebpf/embed.rs");

fn main() {
    println!("cargo:rerun-if-changed=../speaker-ebpf/embed.rs");
    embed("speaker-xdp");
}
