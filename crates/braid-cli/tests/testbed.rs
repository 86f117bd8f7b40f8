//! The network testbed (tools/testbed.sh): 3 tbf-shaped veth links between two namespaces,
//! goodput against single TCP connections, a blackholed link mid-transfer.
//!
//! Needs root; skips with a message otherwise, except under CI (CI=true), where it fails.

use std::process::Command;

#[test]
fn testbed_goodput_blackhole_and_restore() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let status = Command::new("bash")
        .arg(format!("{root}/tools/testbed.sh"))
        .arg(env!("CARGO_BIN_EXE_braid"))
        .current_dir(root)
        .status()
        .expect("bash");
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    match status.code() {
        Some(0) => {}
        Some(77) if !ci => eprintln!("SKIPPED: the testbed needs root (network namespaces)"),
        Some(77) => panic!("the testbed cannot run under CI (needs root, ip, tc, python3)"),
        other => panic!("testbed failed: {other:?}"),
    }
}
