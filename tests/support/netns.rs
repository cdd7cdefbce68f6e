//! Runs a test inside a private network namespace with only loopback up, so that the real
//! WebRTC calls it makes can send packets nowhere but 127.0.0.0/8. Shared by the test suites
//! of several crates through `#[path]`.

use std::process::Command;

/// Environment variable set in the re-executed test process inside the namespace.
pub const IN_NETNS: &str = "WILDDOG_IN_NETNS";

/// Makes the calling test run inside `unshare --net` with `lo` up.
///
/// Outside the namespace, re-executes this test binary for `test_name` alone inside one,
/// checks that it passed (panicking with its output otherwise) and returns `false`: the
/// caller returns at once. Inside, returns `true`: the caller runs its body. A machine where
/// the namespace cannot be made (not root, no `unshare`) fails the test, saying why.
pub fn enter_netns(test_name: &str) -> bool {
    if std::env::var_os(IN_NETNS).is_some() {
        return true;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let output = Command::new("unshare")
        .args(["--net", "sh", "-c", "ip link set lo up && exec \"$@\"", "sh"])
        .arg(&exe)
        .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env(IN_NETNS, "1")
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run `unshare --net` (util-linux) for a private network namespace: {e}")
        });
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Show what the inner run printed (timings, events), as if it ran here.
    print!("{stdout}");
    eprint!("{stderr}");
    if stderr.contains("unshare failed") || stderr.contains("unshare: ") {
        panic!(
            "cannot create a private network namespace (`unshare --net` needs root or CAP_SYS_ADMIN); \
             these tests send real WebRTC traffic and must run isolated on loopback: {stderr}"
        );
    }
    assert!(
        output.status.success(),
        "test `{test_name}` failed inside the network namespace ({})",
        output.status
    );
    assert!(
        stdout.contains("test result: ok. 1 passed"),
        "test `{test_name}` did not run inside the network namespace (wrong name?)"
    );
    false
}
