//! Types and names shared by the XDP program (`speaker-ebpf`) and the agent
//! (`speaker`). Everything here is `no_std` and `#[repr(C)]` with explicit
//! padding, so both sides of the kernel boundary agree on every byte.

#![no_std]

pub mod maps;
pub mod wire;
