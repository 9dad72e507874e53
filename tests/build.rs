//! Embeds the testbed object (`testbed_pass`, `testbed_swap_macs`) built by
//! `cargo xtask build-ebpf`, as speaker/build.rs embeds the responder.

include!("../speaker-ebpf/embed.rs");

fn main() {
    println!("cargo:rerun-if-changed=../speaker-ebpf/embed.rs");
    embed("testbed");
}
