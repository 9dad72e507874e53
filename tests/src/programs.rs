//! Loading the responder for BPF_PROG_TEST_RUN, and the testbed's helper
//! programs.

use anyhow::{Context as _, Result};
use aya::{
    Ebpf,
    programs::{TestRun, TestRunOptions, Xdp, XdpMode},
};

use crate::netns::Netns;

/// Test and benchmark programs (`testbed_pass`, `testbed_swap_macs`),
/// embedded here so that the agent binary does not carry them (build.rs).
/// Empty when built without `cargo xtask`.
pub static TESTBED: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/testbed"));

/// `testbed_pass` attached in native mode to `ifname` in `ns`, detached on
/// drop. On veth, XDP_TX frames reach the peer only when the peer has an
/// XDP program, so every veth end facing a responder gets this.
pub struct PassProgram {
    _ebpf: Ebpf,
}

impl PassProgram {
    pub fn attach(ns: &Netns, ifname: &str) -> Result<Self> {
        let ebpf = ns.enter(|| -> Result<Ebpf> {
            let mut ebpf = Ebpf::load(TESTBED)
                .context("cannot load the testbed object (built by `cargo xtask build-ebpf`)")?;
            let prog: &mut Xdp = ebpf
                .program_mut("testbed_pass")
                .context("testbed_pass missing")?
                .try_into()?;
            prog.load()?;
            prog.attach(ifname, XdpMode::Driver)
                .with_context(|| format!("cannot attach testbed_pass to {ifname}"))?;
            Ok(ebpf)
        })??;
        Ok(Self { _ebpf: ebpf })
    }
}

/// One BPF_PROG_TEST_RUN of an XDP program.
pub struct Run {
    pub action: u32,
    pub frame: Vec<u8>,
    pub duration_ns: u64,
}

/// The `struct xdp_md` context the kernel accepts as ctx_in: data at 0,
/// data_end = frame length, the ingress interface given.
fn xdp_md(len: usize, ifindex: u32) -> [u8; 24] {
    let mut ctx = [0u8; 24];
    ctx[4..8].copy_from_slice(&(len as u32).to_ne_bytes());
    ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
    ctx
}

/// Runs `prog` on `frame` as if it arrived on `ifindex` (which must exist in
/// the calling thread's network namespace; 1, loopback, always does).
pub fn test_run(prog: &Xdp, frame: &[u8], ifindex: u32, repeat: u32) -> Result<Run> {
    let mut out = vec![0u8; frame.len() + 256];
    let ctx = xdp_md(frame.len(), ifindex);
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.data_out = Some(&mut out);
    opts.ctx_in = Some(&ctx);
    opts.repeat = repeat;
    let r = prog.test_run(opts)?;
    out.truncate(r.data_size_out as usize);
    Ok(Run {
        action: r.return_value,
        frame: out,
        duration_ns: r.duration.as_nanos() as u64,
    })
}

/// The testbed object loaded with both helper programs ready to run.
pub fn load_testbed() -> Result<Ebpf> {
    let mut ebpf = Ebpf::load(TESTBED)
        .context("cannot load the testbed object (built by `cargo xtask build-ebpf`)")?;
    for name in ["testbed_pass", "testbed_swap_macs"] {
        let prog: &mut Xdp = ebpf
            .program_mut(name)
            .with_context(|| format!("{name} missing"))?
            .try_into()?;
        prog.load()?;
    }
    Ok(ebpf)
}
