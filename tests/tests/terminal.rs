//! `migrate` as a user sees it in a terminal: the command runs inside a real tmux session (a
//! pseudo-terminal of 160×48), and the test reads the screen with `tmux capture-pane` while the
//! load is held at a failpoint and once it has ended. Mid-run the screen holds one progress bar
//! with its ETA, no log line drawn through it and no per-shard line; at the end, the report is
//! short (one line for the clean shards). tmux is installed by `scripts/test` (Debian's `tmux`);
//! a missing tmux fails the test.

use std::process::Command;
use std::time::{Duration, Instant};

use ferry_tests::gen::{generate_export, GenOptions};
use ferry_tests::harness::binary;
use ferry_tests::helios::HeliosServer;

/// A tmux server of this test's own (its own socket), killed when dropped.
struct Tmux {
    socket: String,
    tmux: std::path::PathBuf,
}

impl Tmux {
    fn new() -> anyhow::Result<Tmux> {
        let tmux = ferry_tests::tools::find_tool(
            "FERRY_TMUX_BIN",
            "tmux/bin/tmux",
            "tmux",
            "scripts/test (it installs Debian's tmux)",
        )?;
        Ok(Tmux {
            socket: format!("ferry-test-{}", std::process::id()),
            tmux,
        })
    }

    fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = Command::new(&self.tmux)
            .args(["-L", &self.socket])
            .args(args)
            .output()?;
        anyhow::ensure!(
            output.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8_lossy(&output.stdout).to_string())
    }

    /// The screen's text, one string per row, trailing blanks cut.
    fn screen(&self) -> anyhow::Result<Vec<String>> {
        Ok(self
            .run(&["capture-pane", "-p", "-t", "ferry"])?
            .lines()
            .map(|l| l.trim_end().to_string())
            .collect())
    }

    fn pane_dead(&self) -> anyhow::Result<bool> {
        Ok(self
            .run(&["display-message", "-p", "-t", "ferry", "#{pane_dead}"])?
            .trim()
            == "1")
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new(&self.tmux)
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

/// Whether a screen row is the progress bar.
fn is_bar(row: &str) -> bool {
    row.contains(" items, ") && row.contains("ETA")
}

/// Whether a screen row starts like a log line (its RFC 3339 timestamp).
fn is_log(row: &str) -> bool {
    row.len() > 20 && row.as_bytes()[4] == b'-' && row.contains('T') && row.contains('Z')
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_in_a_terminal_shows_one_bar_and_a_short_report() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let export = generate_export(
        &dir.path().join("export"),
        &GenOptions {
            seed: 290,
            items: 6_000,
            files: 12,
            ..GenOptions::default()
        },
    )?;
    let server = HeliosServer::start()?;
    let tmux = Tmux::new()?;
    // Each chunk held 300 ms after its checkpoint, in chunks of 250 lines: about ten seconds of
    // load, long enough to read the screen mid-run.
    let command = format!(
        "env FERRY_FAILPOINTS=after_checkpoint=sleep300@1+ FERRY_LOAD__CHUNK_LINES=250 {} migrate --export {} --target {} --key PK,SK --workers 2",
        binary("ferry-coordinator").display(),
        export.root.display(),
        server.url()
    );
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "ferry",
        "-x",
        "160",
        "-y",
        "48",
        "sh",
        "-c",
        // The pane stays once the command ends, so its last screen can be read.
        &format!("{command}; echo exit=$?; sleep 600"),
    ])?;

    // Mid-run: the bar is on screen.
    let started = Instant::now();
    let mid = loop {
        let screen = tmux.screen()?;
        if screen
            .iter()
            .any(|r| is_bar(r) && !r.contains(" 0 items/s"))
        {
            break screen;
        }
        assert!(
            !screen.iter().any(|r| r.starts_with("exit=")),
            "the run ended before the bar was seen:\n{}",
            screen.join("\n")
        );
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no progress bar:\n{}",
            screen.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let text = mid.join("\n");
    println!("the screen mid-run:\n{text}");
    let bars: Vec<&String> = mid.iter().filter(|r| is_bar(r)).collect();
    assert_eq!(bars.len(), 1, "one bar:\n{text}");
    let bar = bars[0];
    assert!(!is_log(bar), "a log line drawn through the bar:\n{text}");
    assert!(bar.contains("ETA "), "{bar}");
    assert!(
        bar.contains("/6,000 items,") || bar.contains("/6000 items,"),
        "{bar}"
    );
    assert!(
        bar.contains("items/s,") && bar.contains("rejected"),
        "{bar}"
    );
    // A whole number of items per second, no fraction.
    let rate = bar
        .split(" items/s")
        .next()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap();
    assert!(
        rate.chars().all(|c| c.is_ascii_digit() || c == ','),
        "rate {rate:?} in {bar}"
    );
    assert!(!text.contains("loading shard"), "per-shard lines:\n{text}");
    // The bar is the last row with text: log lines go above it.
    let last = mid.iter().rposition(|r| !r.is_empty()).unwrap();
    assert!(is_bar(&mid[last]), "the bar is not the last row:\n{text}");

    // The end: the report, short.
    let end = loop {
        let screen = tmux.screen()?;
        if screen.iter().any(|r| r.starts_with("exit=")) {
            break screen;
        }
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "the run did not end:\n{}",
            screen.join("\n")
        );
        assert!(!tmux.pane_dead()?, "the pane died:\n{}", screen.join("\n"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let text = end.join("\n");
    println!("the screen at the end:\n{text}");
    assert!(end.iter().any(|r| r == "exit=0"), "{text}");
    assert!(!end.iter().any(|r| is_bar(r)), "the bar stayed:\n{text}");
    let report_from = end
        .iter()
        .position(|r| r.starts_with("run ") && r.contains("complete (verified)"))
        .unwrap_or_else(|| panic!("no report:\n{text}"));
    let exit_row = end.iter().position(|r| r.starts_with("exit=")).unwrap();
    let report = &end[report_from..exit_row];
    assert!(
        report
            .iter()
            .any(|r| r.contains("shards reconciled with nothing to look at (6000 items)")),
        "{text}"
    );
    assert!(report.len() <= 10, "a long report:\n{text}");
    assert!(!text.contains("loading shard"), "{text}");
    Ok(())
}
