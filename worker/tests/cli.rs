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

/// A database that stays unreachable after the retries is a reason outside the data: exit 1, so
/// an orchestrator retries the job.
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
    let text = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("cannot connect to the target"), "{text}");
}

/// A URL that does not parse cannot start: exit 2, naming the flag.
#[test]
fn a_malformed_target_url_cannot_start() {
    let output = Command::new(env!("CARGO_BIN_EXE_ferry-worker"))
        .args(["--target", "postgres://u@h:notaport/db", "--run-id", "r"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert!(
        text.contains("--target is not a usable database URL"),
        "{text}"
    );
}
