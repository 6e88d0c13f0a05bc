//! The `ferry-worker` binary's argument handling (no database needed).

use std::process::Command;

#[test]
fn the_target_is_required() {
    let output = Command::new(env!("CARGO_BIN_EXE_ferry-worker"))
        .env_remove("FERRY_TARGET__URL")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(text.contains("--target"), "{text}");
}

#[test]
fn an_unreachable_target_fails_with_a_message() {
    let output = Command::new(env!("CARGO_BIN_EXE_ferry-worker"))
        .args([
            "--target",
            "postgres://postgres@127.0.0.1:1/none",
            "--run-id",
            "r",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot connect to the target"));
}
