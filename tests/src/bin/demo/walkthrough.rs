//! `cargo xtask demo static`: `speaker static` answering ARP for a VIP
//! from XDP, step by step, in two network namespaces made for the demo.

use std::{
    io::Read,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result};
use speaker_tests::{
    agent::Agent,
    netns::{self, Netns},
    topology::{CLIENT_IP, NODE_IP, Pair, VIP},
};

fn step(title: &str) -> Result<()> {
    crate::interrupted()?;
    println!("\n=== {title}");
    Ok(())
}

fn show(ns: &Netns, argv: &[&str]) -> Result<()> {
    println!("$ {}", argv.join(" "));
    let out = ns.command(argv[0]).args(&argv[1..]).output()?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    print!("{}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

fn bpftool(args: &[&str]) -> Result<()> {
    println!("$ bpftool {}", args.join(" "));
    println!("{}", netns::run(Command::new("bpftool").args(args))?);
    Ok(())
}

pub fn run() -> Result<()> {
    let pair = Pair::new()?;
    println!(
        "Two network namespaces on one veth link:\n  node   {} ({NODE_IP}), VIP {VIP} accepted on lo with strict ARP, as kube-proxy IPVS does\n  client {} ({CLIENT_IP})",
        pair.node.name(),
        pair.client.name()
    );

    step("Start the agent on the node")?;
    let args = [
        "static",
        "--interface",
        "eth0",
        "--vip",
        VIP,
        "--hold-time",
        "2s",
        "--refresh-interval",
        "500ms",
    ];
    println!(
        "$ speaker {} --bpffs /sys/fs/bpf/{}",
        args.join(" "),
        pair.node.name()
    );
    let mut agent = Agent::start(&pair.node, &args)?;
    agent.wait_ready(&pair.node, "eth0")?;
    show(&pair.node, &["ip", "link", "show", "eth0"])?;

    step("The client asks who has the VIP; XDP answers from the node's NIC")?;
    let mut tcpdump = pair
        .client
        .command("tcpdump")
        .args([
            "-l", "-n", "-e", "-i", "eth0", "-c", "2", "arp", "and", "host", VIP,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("tcpdump")?;
    std::thread::sleep(Duration::from_millis(500));
    show(&pair.client, &["arping", "-c", "1", "-i", "eth0", VIP])?;
    let mut captured = String::new();
    if let Some(mut out) = tcpdump.stdout.take() {
        let _ = tcpdump.wait();
        out.read_to_string(&mut captured)?;
    }
    println!("captured on the client:\n{captured}");

    step("The client's own kernel resolves it and talks to the VIP")?;
    show(&pair.client, &["ping", "-c", "1", "-W", "2", VIP])?;
    show(&pair.client, &["ip", "neigh", "show", VIP])?;

    step("Inspect with bpftool")?;
    let pins = agent.bpffs.display().to_string();
    bpftool(&["map", "dump", "pinned", &format!("{pins}/VIPS")])?;
    println!("(expires_ns is CLOCK_BOOTTIME: the agent pushes it forward every 500 ms)");
    let counters = speaker_tests::bpftool::counters(&agent.bpffs)?;
    println!(
        "counters (summed over CPUs, non-zero): {:?}",
        counters.iter().filter(|(_, v)| **v > 0).collect::<Vec<_>>()
    );

    step(
        "Freeze the agent (SIGSTOP): after the 2 s hold time the kernel stops answering by itself",
    )?;
    agent.signal(libc::SIGSTOP);
    std::thread::sleep(Duration::from_millis(2300));
    show(
        &pair.client,
        &["arping", "-c", "1", "-w", "1", "-i", "eth0", VIP],
    )?;
    agent.signal(libc::SIGCONT);
    std::thread::sleep(Duration::from_millis(700));
    println!("resumed (SIGCONT): the agent refreshes and re-announces");
    show(&pair.client, &["arping", "-c", "1", "-i", "eth0", VIP])?;

    step("Stop the agent (SIGTERM): VIPs removed, XDP detached, pins removed")?;
    let status = agent.terminate()?;
    println!("speaker exited: {status}");
    show(&pair.node, &["ip", "link", "show", "eth0"])?;
    println!("pins left: {}", agent.bpffs.exists());

    step("Removing the namespaces")?;
    drop(agent);
    drop(pair);
    println!("done");
    Ok(())
}
