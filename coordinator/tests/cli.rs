//! The `ferry-coordinator` binary's argument handling and exit codes (no database needed).

use std::process::Command;

fn coordinator() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ferry-coordinator"))
}

#[test]
fn help_lists_the_commands() {
    let output = coordinator().arg("--help").output().unwrap();
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    for command in [
        "migrate", "plan", "queue", "submit", "status", "finalize", "verify", "probe",
    ] {
        assert!(text.contains(command), "{text}");
    }
}

#[test]
fn a_probe_needs_a_target_and_a_sane_connection_count() {
    let output = coordinator()
        .arg("probe")
        .env_remove("FERRY_TARGET__URL")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(text.contains("no target database"), "{text}");
    let output = coordinator()
        .args([
            "probe",
            "--target",
            "postgres://postgres@127.0.0.1:1/x",
            "--max-connections",
            "0",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(
        text.contains("--max-connections must be between 1 and 64"),
        "{text}"
    );
}

#[test]
fn a_missing_export_exits_2_naming_the_path() {
    let output = coordinator()
        .args([
            "migrate",
            "--export",
            "/nonexistent/ferry-export",
            "--target",
            "postgres://postgres@127.0.0.1:1/x",
            "--key",
            "PK",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(text.contains("/nonexistent/ferry-export"), "{text}");
}

#[test]
fn no_target_and_no_heliosdb_binary_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let output = coordinator()
        .args(["migrate", "--export", "."])
        .env_remove("FERRY_TARGET__URL")
        .env_remove("FERRY_HELIOSDB_BIN")
        .env("HOME", dir.path())
        .env("PATH", dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(
        text.contains("no heliosdb-nano binary") && text.contains("scripts/install-heliosdb"),
        "{text}"
    );
}

#[test]
fn a_bad_config_file_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ferry.toml");
    std::fs::write(&config, "[load]\nchunk_size = 5\n").unwrap();
    let output = coordinator()
        .args([
            "migrate",
            "--export",
            ".",
            "--target",
            "postgres://x@127.0.0.1:1/x",
            "--config",
        ])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("chunk_size"));
}
