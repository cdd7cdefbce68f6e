//! Impairs the loopback link of the private network namespace a test runs in
//! (`netns::enter_netns`): a capacity cap with `tc tbf` (both directions of a call share it,
//! as they share `lo`) and random UDP loss with nftables. This kernel has no `netem`.
//! Shared by the test suites (and the benchmark) through `#[path]`.

#![allow(dead_code)]

use std::process::Command;

fn run(program: &str, args: &[&str]) {
    let output = Command::new(program).args(args).output().unwrap_or_else(|e| {
        panic!("cannot run `{program}` (scripts/install-deps.sh installs it): {e}")
    });
    assert!(
        output.status.success(),
        "`{program} {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Caps `lo` at `kbit` kbit/s (`tc tbf`, a 16 kbit burst, packets queued up to 300 ms),
/// replacing any cap. `lo`'s MTU becomes 1500, an Internet path's: tbf drops every packet
/// larger than its burst, and with loopback's 64 KiB MTU a DTLS handshake datagram (an RSA
/// certificate, 2 to 3 KB) never passed, so a call could not start on the shaped link.
pub fn cap_kbit(kbit: u32) {
    cap_dev_kbit("lo", kbit);
}

/// [`cap_kbit`] of another device: the veth pair some benchmark anchors talk over (their
/// sockets are bound to it, so their packets leave through it, not through `lo`).
pub fn cap_dev_kbit(dev: &str, kbit: u32) {
    run("ip", &["link", "set", dev, "mtu", "1500"]);
    let rate = format!("{kbit}kbit");
    run(
        "tc",
        &[
            "qdisc", "replace", "dev", dev, "root", "tbf", "rate", &rate, "burst", "16kbit",
            "latency", "300ms",
        ],
    );
}

/// Removes the cap.
pub fn uncap() {
    let _ = Command::new("tc").args(["qdisc", "del", "dev", "lo", "root"]).output();
}

/// Drops `percent` % of UDP packets at random on every hop through `lo` (nftables), replacing
/// any loss rule.
pub fn lose_udp_percent(percent: u32) {
    add_loss_rule(percent, &[]);
}

/// [`lose_udp_percent`] sparing RTCP (a multiplexed packet whose second byte, its packet
/// type, is 200 to 206; SRTCP leaves it in the clear): media and retransmissions are lost,
/// key frame requests get through. For a test that asserts a request *arrives*: at 60 %
/// loss of everything, all of a burst's few requests were sometimes lost on the way, and the
/// sender's next key frame (a size change) made asking again needless.
pub fn lose_media_percent(percent: u32) {
    add_loss_rule(percent, &["@th,72,8", "!=", "200-206"]);
}

fn add_loss_rule(percent: u32, spared: &[&str]) {
    no_loss();
    run("nft", &["add", "table", "inet", "wilddog_loss"]);
    run(
        "nft",
        &[
            "add",
            "chain",
            "inet",
            "wilddog_loss",
            "input",
            "{ type filter hook input priority 0; }",
        ],
    );
    let bound = percent.to_string();
    let mut rule = vec!["add", "rule", "inet", "wilddog_loss", "input", "meta", "l4proto", "udp"];
    rule.extend_from_slice(spared);
    rule.extend_from_slice(&["numgen", "random", "mod", "100", "<", &bound, "drop"]);
    run("nft", &rule);
}

/// Removes the loss rule.
pub fn no_loss() {
    let _ = Command::new("nft").args(["delete", "table", "inet", "wilddog_loss"]).output();
}

/// Also drops every RTP packet of the payload types `pts` (SRTP leaves the header in the
/// clear: the second byte holds the payload type after the marker bit), on top of the loss
/// rule [`lose_udp_percent`] set up: e.g. every retransmission (RTX), for a test of what
/// repairs a loss when retransmissions cannot.
pub fn drop_payload_types(pts: &[u8]) {
    let set = format!("{{ {} }}", pts.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", "));
    run(
        "nft",
        &[
            "add",
            "rule",
            "inet",
            "wilddog_loss",
            "input",
            "meta",
            "l4proto",
            "udp",
            "@th,73,7",
            &set,
            "drop",
        ],
    );
}
