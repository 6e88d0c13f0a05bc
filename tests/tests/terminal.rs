//! `migrate` as a user sees it in a terminal: the command runs inside a real tmux session (a
//! pseudo-terminal of 160×48), and the test reads the screen with `tmux capture-pane` while the
//! load is held at a failpoint and once it has ended. Mid-run the screen holds one progress bar
//! with its ETA, no log line drawn through it and no per-shard line, and `status --watch` in a
//! second window at the same pause shows the same committed items and shards, as do the
//! `ferry_run_*` metrics both processes serve (`migrate --metrics-addr`, `status --watch
//! --metrics-addr`), scraped at that pause; at the end, the
//! report is short (one line for the clean shards). A second test holds a post-load step at a
//! failpoint and finds it named on the phase line that replaces the bar after the load. tmux is
//! installed by `scripts/test` (Debian's `tmux`); a missing tmux fails the test.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use ferry_tests::deploy::{http_get, parse_samples, sum_of};
use ferry_tests::gen::{generate_export, GenOptions, GeneratedExport};
use ferry_tests::harness::binary;
use ferry_tests::helios::HeliosServer;
use ferry_tests::pg::free_port;

/// A tmux server of the test's own (its own socket), killed when dropped.
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
        // One server per test: tests of this file run at once in one process.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(Tmux {
            socket: format!("ferry-test-{}-{n}", std::process::id()),
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

    /// The screen of `target` (a session or `session:window`), one string per row, trailing
    /// blanks cut.
    fn screen_of(&self, target: &str) -> anyhow::Result<Vec<String>> {
        Ok(self
            .run(&["capture-pane", "-p", "-t", target])?
            .lines()
            .map(|l| l.trim_end().to_string())
            .collect())
    }

    /// Starts `command` in the session "ferry" on a `cols`×`rows` terminal. The pane stays once
    /// the command ends, its last row `exit=<code>`, so its last screen can be read.
    fn session(&self, cols: u16, rows: u16, command: &str) -> anyhow::Result<()> {
        self.run(&[
            "new-session",
            "-d",
            "-s",
            "ferry",
            "-x",
            &cols.to_string(),
            "-y",
            &rows.to_string(),
            "sh",
            "-c",
            &format!("{command}; echo exit=$?; sleep 600"),
        ])?;
        Ok(())
    }

    /// The session's screen once its command has ended (within `limit` of `started`); `each`
    /// sees every screen read on the way.
    async fn until_exit(
        &self,
        started: Instant,
        limit: Duration,
        mut each: impl FnMut(&[String]),
    ) -> anyhow::Result<Vec<String>> {
        loop {
            let screen = self.screen_of("ferry")?;
            each(&screen);
            if screen.iter().any(|r| r.starts_with("exit=")) {
                return Ok(screen);
            }
            anyhow::ensure!(
                started.elapsed() < limit,
                "the run did not end:\n{}",
                screen.join("\n")
            );
            anyhow::ensure!(!self.pane_dead()?, "the pane died:\n{}", screen.join("\n"));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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

/// A generated export of `items` items in `files` files, under `dir`.
fn export_of(
    dir: &std::path::Path,
    seed: u64,
    items: u64,
    files: usize,
) -> anyhow::Result<GeneratedExport> {
    Ok(generate_export(
        &dir.join("export"),
        &GenOptions {
            seed,
            items,
            files,
            ..GenOptions::default()
        },
    )?)
}

/// Whether a screen row is the progress bar (its first row: the bar, the items, the ETA; the
/// rates and the shards follow on two rows of their own).
fn is_bar(row: &str) -> bool {
    row.contains(" items, ETA ")
}

/// The bar's committed items ("2,000" of "… 2,000/6,000 items, …").
fn bar_items(bar: &str) -> String {
    bar.split("/6,000 items")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .unwrap_or_default()
        .to_string()
}

/// Whether a screen row starts like a log line (its RFC 3339 timestamp).
fn is_log(row: &str) -> bool {
    row.len() > 20 && row.as_bytes()[4] == b'-' && row.contains('T') && row.contains('Z')
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_in_a_terminal_shows_one_bar_and_a_short_report() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let export = export_of(dir.path(), 290, 6_000, 12)?;
    let server = HeliosServer::start()?;
    let tmux = Tmux::new()?;
    // One loader, chunks of 250 lines, every chunk held 100 ms after its checkpoint; after its
    // eighth COMMIT it pauses 8 s: the ledger stands still while both screens are read.
    let migrate_metrics: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
    let status_metrics: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
    let command = format!(
        "env FERRY_FAILPOINTS=after_checkpoint=sleep100@1+,after_commit=sleep8000@8 FERRY_LOAD__CHUNK_LINES=250 {} migrate --export {} --target {} --key PK,SK --workers 1 --metrics-addr {migrate_metrics}",
        binary("ferry-coordinator").display(),
        export.root.display(),
        server.url()
    );
    tmux.session(160, 48, &command)?;

    // Mid-run: the bar is on screen.
    let started = Instant::now();
    let wait_for = |what: &str, target: &str, found: &dyn Fn(&[String]) -> bool| loop {
        let screen = tmux.screen_of(target)?;
        if found(&screen) {
            return Ok::<_, anyhow::Error>(screen);
        }
        anyhow::ensure!(
            !screen.iter().any(|r| r.starts_with("exit=")),
            "the run ended before {what}:\n{}",
            screen.join("\n")
        );
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(120),
            "no {what}:\n{}",
            screen.join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // The pause: the bar's item count unchanged for 1.5 s (it samples the ledger every second;
    // chunks commit every ~100 ms otherwise).
    let mut previous: Option<(String, Instant)> = None;
    let mid = loop {
        let screen = wait_for("a progress bar", "ferry", &|screen| {
            screen
                .iter()
                .any(|r| is_bar(r) && !r.contains(" 0/6,000 items,"))
        })?;
        let count = bar_items(screen.iter().find(|r| is_bar(r)).unwrap());
        match &previous {
            Some((same, since)) if *same == count => {
                if since.elapsed() >= Duration::from_millis(1500) {
                    break screen;
                }
            }
            _ => previous = Some((count, Instant::now())),
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let paused_at = previous.unwrap().0;
    let text = mid.join("\n");
    println!("the screen mid-run:\n{text}");
    let bars: Vec<&String> = mid.iter().filter(|r| is_bar(r)).collect();
    assert_eq!(bars.len(), 1, "one bar:\n{text}");
    let bar = bars[0].clone();
    assert!(!is_log(&bar), "a log line drawn through the bar:\n{text}");
    // The display's three rows are the last rows with text: log lines go above them.
    let last = mid.iter().rposition(|r| !r.is_empty()).unwrap();
    assert!(
        last >= 2 && is_bar(&mid[last - 2]),
        "the display is not at the bottom:\n{text}"
    );
    let (rates, shards_row) = (&mid[last - 1], &mid[last]);
    assert!(
        rates.starts_with("  ")
            && rates.contains(" items/s, ")
            && rates.contains(" rejected, ")
            && rates.ends_with(" spilled"),
        "{rates}"
    );
    assert!(shards_row.starts_with("  shards: "), "{shards_row}");
    // A whole number of items per second, no fraction.
    let rate = rates.trim_start().split(" items/s").next().unwrap();
    assert!(
        rate.chars().all(|c| c.is_ascii_digit() || c == ','),
        "rate {rate:?} in {rates}"
    );
    assert!(!text.contains("loading shard"), "per-shard lines:\n{text}");

    // `status --watch` at the same pause shows the same committed figures.
    let run_id = text
        .split("loading run=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no run id on screen:\n{text}"))
        .to_string();
    tmux.run(&[
        "new-window",
        "-d",
        "-t",
        "ferry",
        "-n",
        "status",
        "sh",
        "-c",
        &format!(
            "{} status --run-id {run_id} --target {} --watch --interval 1 --metrics-addr {status_metrics}; sleep 600",
            binary("ferry-coordinator").display(),
            server.url()
        ),
    ])?;
    let status = wait_for("status at the pause", "ferry:status", &|screen| {
        screen.iter().any(|r| r.starts_with("shards "))
    })?;
    let status_text = status.join("\n");
    println!("status --watch at the same pause:\n{status_text}");
    let plain = paused_at.replace(',', "");
    assert!(
        status_text.contains(&format!("items   {plain} of 6000 (")),
        "the bar says {paused_at}:\n{status_text}"
    );
    let shards = status
        .iter()
        .find(|r| r.starts_with("shards "))
        .unwrap()
        .split(": ")
        .nth(1)
        .unwrap()
        .to_string();
    // "3 done, 1 loading, 8 waiting, 0 failed" in both.
    let now = tmux.screen_of("ferry")?;
    let bar = now
        .iter()
        .find(|r| is_bar(r))
        .expect("the bar, still paused");
    assert_eq!(bar_items(bar), paused_at, "{bar}");
    assert!(
        now.iter().any(|r| r == &format!("  shards: {shards}")),
        "status says {shards:?}:\n{}",
        now.join("\n")
    );
    // The metrics of both processes, scraped at the same pause, say the same.
    let counts: Vec<(&str, String)> = shards
        .split(", ")
        .map(|part| {
            let (count, state) = part.split_once(' ').unwrap();
            (state, count.to_string())
        })
        .collect();
    for (who, addr) in [("migrate", migrate_metrics), ("status", status_metrics)] {
        let (code, text) = http_get(addr, "/metrics")?;
        assert_eq!(code, 200, "{who}: {text}");
        let samples = parse_samples(&text);
        assert_eq!(
            sum_of(&samples, "ferry_run_items_committed", &[]).to_string(),
            plain,
            "{who}'s metrics, the bar at {paused_at}:\n{text}"
        );
        for (state, count) in &counts {
            assert_eq!(
                sum_of(
                    &samples,
                    "ferry_run_shards",
                    &[&format!("state=\"{state}\"")]
                )
                .to_string(),
                *count,
                "{who}'s {state} shards, status says {shards:?}:\n{text}"
            );
        }
    }

    // The end: the report, short.
    let end = tmux
        .until_exit(started, Duration::from_secs(240), |_| {})
        .await?;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_steps_after_the_load_are_named_on_the_phase_line() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let export = export_of(dir.path(), 291, 600, 2)?;
    let config = dir.path().join("ferry.toml");
    std::fs::write(
        &config,
        "version = 1\n\
         [[post_load]]\nsql = 'CREATE INDEX IF NOT EXISTS app_sk ON \"AppTable\" (\"SK\")'\n\
         [[verify]]\nname = \"rows\"\nsql = 'SELECT count(*) FROM \"AppTable\"'\n",
    )?;
    let server = HeliosServer::start()?;
    let tmux = Tmux::new()?;
    // The post-load step waits 4 s once it is recorded as started: the phase line is on screen.
    let command = format!(
        "env FERRY_FAILPOINTS=post_load_step=sleep4000@1 {} migrate --export {} --target {} --key PK,SK --config {}",
        binary("ferry-coordinator").display(),
        export.root.display(),
        server.url(),
        config.display()
    );
    tmux.session(120, 40, &command)?;
    let started = Instant::now();
    let during = loop {
        let screen = tmux.screen_of("ferry")?;
        if screen
            .iter()
            .any(|r| r.contains("] post-load step 1 of 1: CREATE INDEX IF NOT EXISTS app_sk"))
        {
            break screen;
        }
        assert!(
            !screen.iter().any(|r| r.starts_with("exit="))
                && started.elapsed() < Duration::from_secs(60),
            "no post-load phase line:\n{}",
            screen.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let text = during.join("\n");
    println!("the screen during the post-load step:\n{text}");
    // The load's bar is gone; the phase line is the last row with text.
    assert!(!during.iter().any(|r| is_bar(r)), "{text}");
    let last = during.iter().rposition(|r| !r.is_empty()).unwrap();
    assert!(during[last].contains("] post-load step 1 of 1: "), "{text}");
    let end = tmux
        .until_exit(started, Duration::from_secs(120), |_| {})
        .await?;
    let text = end.join("\n");
    assert!(end.iter().any(|r| r == "exit=0"), "{text}");
    assert!(
        !text.contains("] post-load step"),
        "the phase line stayed:\n{text}"
    );
    assert!(text.contains("verify: rows ("), "{text}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_prints_only_the_result() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let export = export_of(dir.path(), 292, 1_000, 4)?;
    let server = HeliosServer::start()?;
    let tmux = Tmux::new()?;
    // Chunks of 100 lines held 150 ms each: the load takes over a second, long enough for a bar
    // to have been drawn if `-q` drew one.
    let command = format!(
        "env FERRY_FAILPOINTS=after_checkpoint=sleep150@1+ FERRY_LOAD__CHUNK_LINES=100 {} -q migrate --export {} --target {} --key PK,SK",
        binary("ferry-coordinator").display(),
        export.root.display(),
        server.url()
    );
    tmux.session(120, 40, &command)?;
    let started = Instant::now();
    let mut seen = Vec::new();
    let end = tmux
        .until_exit(started, Duration::from_secs(60), |screen| {
            seen.extend(screen.iter().filter(|r| !r.is_empty()).cloned())
        })
        .await?;
    let text = end.join("\n");
    assert!(end.iter().any(|r| r == "exit=0"), "{text}");
    assert!(
        !seen
            .iter()
            .any(|r| is_bar(r) || is_log(r) || r.contains("] plan: ")),
        "-q showed more than the result:\n{}",
        seen.join("\n")
    );
    let first = end.iter().position(|r| !r.is_empty()).unwrap();
    assert!(
        end[first].starts_with("run ") && end[first].contains("complete (verified)"),
        "{text}"
    );
    Ok(())
}
