//! Bad input on the command line: a clear message and a non-zero exit,
//! before anything touches the kernel.

use std::process::Command;

use speaker_tests::{agent::speaker_bin, netns::Netns, require_privileges};

/// Runs `speaker ARGS` in `ns`; returns (exit code, stderr).
fn speaker(ns: &Netns, args: &[&str]) -> (Option<i32>, String) {
    let bin = speaker_bin();
    let out = ns
        .command(bin.to_str().expect("UTF-8 path"))
        .args(args)
        .output()
        .expect("run speaker");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ns_with_eth0() -> Netns {
    let ns = Netns::new("cli").expect("namespace");
    ns.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
    ])
    .expect("veth");
    ns
}
#[test]
fn configuration_errors_are_clear_and_fail() {
    require_privileges();
    let ns = ns_with_eth0();
    #[rustfmt::skip]
    let cases: &[(&[&str], &str)] = &[
        (&["static", "-i", "nosuch0", "--vip", "198.18.0.10"], "interface \"nosuch0\": no such interface in this network namespace"),
        (&["static", "-i", "bad/name", "--vip", "198.18.0.10"], "interface \"bad/name\": name is not valid"),
        (&["static", "-i", "lo", "--vip", "198.18.0.10"], "interface \"lo\": not an Ethernet device"),
        (&["static", "-i", "eth0", "--vip", "198.18.0.300"], "\"198.18.0.300\" is not an IPv4 or IPv6 address"),
        (&["static", "-i", "eth0", "--vip", "224.0.0.1"], "VIP 224.0.0.1: is a multicast address"),
        (&["static", "-i", "eth0", "--vip", "127.0.0.1"], "VIP 127.0.0.1: is a loopback address"),
        (&["static", "-i", "eth0", "--vip", "ff02::1"], "VIP ff02::1: is a multicast address"),
        (&["static", "-i", "eth0", "--vip", "::ffff:198.18.0.1"], "is an IPv4-mapped address"),
        (&["static", "-i", "eth0", "--vip", "198.18.0.10@nosuch0"], "interface \"nosuch0\": no such interface"),
        (&["static", "-i", "eth0:5000", "--vip", "198.18.0.10"], "interface \"eth0:5000\": a VLAN ID after ':' must be 1 to 4094"),
        (&["static", "--vip", "198.18.0.10"], "VIP 198.18.0.10: no link to answer on"),
        (&["static", "-i", "eth0", "--vip", "198.18.0.10", "--hold-time", "1s"], "--hold-time (1s) must be longer than --refresh-interval (1s)"),
        (&["static", "-i", "eth0", "--vip", "198.18.0.10", "--hold-time", "3 fortnights"], "unknown unit"),
        (&["static", "-i", "eth0"], "--vip <ADDR[@LINKS]>"),
        (&["static", "-i", "eth0", "--vip", "198.18.0.10", "--xdp-mode", "turbo"], "invalid value 'turbo' for '--xdp-mode"),
    ];
    for (args, message) in cases {
        let (code, stderr) = speaker(&ns, args);
        assert_eq!(code, Some(2), "{args:?} should exit 2; stderr: {stderr}");
        assert!(
            stderr.contains(message),
            "{args:?}: stderr lacks {message:?}:\n{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{args:?} panicked:\n{stderr}");
    }
    assert!(
        !ns.has_xdp("eth0").expect("ip link"),
        "a refused start attached XDP"
    );
}

#[test]
fn bpffs_outside_a_bpf_filesystem_is_refused() {
    require_privileges();
    let ns = ns_with_eth0();
    let (code, stderr) = speaker(
        &ns,
        &[
            "static",
            "-i",
            "eth0",
            "--vip",
            "198.18.0.10",
            "--bpffs",
            "/tmp/not-bpffs/speaker",
        ],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("is not on a bpf filesystem"), "{stderr}");
    assert!(!ns.has_xdp("eth0").expect("ip link"));
}

#[test]
fn help_documents_the_static_mode() {
    let out = Command::new(speaker_bin())
        .args(["static", "--help"])
        .output()
        .expect("run");
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--interface",
        "--vip",
        "--hold-time",
        "--bpffs",
        "--xdp-mode",
        "--garp-count",
    ] {
        assert!(help.contains(flag), "help lacks {flag}:\n{help}");
    }
}

/// Against an API server that lacks a resource (an older Kubernetes, CRDs
/// not applied): the remedy, at once, and nothing attached. A stand-in
/// only: a real cluster cannot be made to lack a resource for one test.
#[test]
fn a_missing_api_resource_is_named_with_its_remedy() {
    require_privileges();
    use speaker_tests::apiserver::{
        ApiServer, ENDPOINT_SLICES, Gvr, IP_ADDRESS_POOLS, L2_ADVERTISEMENTS, Options,
    };
    let ns = ns_with_eth0();
    let bpffs = format!("/sys/fs/bpf/{}", ns.name());
    #[rustfmt::skip]
    let agent: &[&str] = &["agent", "--node-name", "n1", "-i", "eth0", "--bpffs", &bpffs, "--metrics-addr", "127.0.0.1:7474"];
    let controller: &[&str] = &["controller", "--metrics-addr", "127.0.0.1:7473"];
    let crds = "the API server does not serve metallb.io/v1beta1";
    let cases: &[(Gvr, &[&str], &str)] = &[
        (
            ENDPOINT_SLICES,
            agent,
            "this speaker needs Kubernetes 1.21 or later",
        ),
        (
            IP_ADDRESS_POOLS,
            agent,
            "apply MetalLB's CRDs first (deploy/crds/",
        ),
        (L2_ADVERTISEMENTS, agent, crds),
        (
            IP_ADDRESS_POOLS,
            controller,
            "apply MetalLB's CRDs first (deploy/crds/",
        ),
    ];
    for (unserved, args, message) in cases {
        let server = ApiServer::start_with(Options {
            unserved: vec![*unserved],
            ..Options::default()
        });
        let listener = ns.enter(|| server.listener()).expect("listener");
        let kubeconfig = std::env::temp_dir().join(format!("{}.kubeconfig", ns.name()));
        server
            .write_kubeconfig(&listener, &kubeconfig)
            .expect("kubeconfig");
        let out = ns
            .command(speaker_bin().to_str().expect("UTF-8 path"))
            .args(*args)
            .env("KUBECONFIG", &kubeconfig)
            .output()
            .expect("run speaker");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains(message) && stderr.contains(unserved.resource),
            "{args:?} without {unserved:?}: stderr lacks {message:?}:\n{stderr}"
        );
        let _ = std::fs::remove_file(&kubeconfig);
    }
    assert!(
        !ns.has_xdp("eth0").expect("ip link"),
        "a refused start attached XDP"
    );
}
