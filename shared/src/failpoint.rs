//! Failure points compiled into every Ferry binary, for crash tests that exercise the build users run.
//!
//! `FERRY_FAILPOINTS` holds a comma-separated list of `name=action[@n[+]]`:
//! - `action` is `exit` (the process exits at once with code [`EXIT_CODE`], as a crash would:
//!   open transactions die with the connection), `error` (the step returns an error), or
//!   `sleep<ms>` (the calling thread stops for that long, as under a slow server, with the
//!   chunk's transaction open: it widens the windows the fleet tests race in), or `panic` (the
//!   calling thread panics, as a bug would);
//! - `@n` fires on the n-th time the point is reached in this process (default: the first), and
//!   `@n+` on the n-th and every later time.
//!
//! The points a shard load passes, in order, are listed in [`POINTS`].
//! Without the variable every check is one relaxed atomic load.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The exit code of a process stopped by an `exit` failpoint.
pub const EXIT_CODE: i32 = 86;

/// Every failpoint name, in the order a chunk passes them.
pub const POINTS: &[&str] = &[
    "decode_line",      // a line is about to be parsed (on a decoding thread)
    "after_read",       // a block of lines was read and decoded, before it is sent
    "after_copy",       // the chunk's COPY finished, before the checkpoint update
    "after_checkpoint", // the checkpoint update ran, before COMMIT
    "after_commit",     // COMMIT returned, before the next chunk (or the queue ack)
    // `export-back`: its snapshot taken and its attempt recorded, before any table is read.
    "export_back_after_snapshot",
    // `finalize`: a post-load step recorded as started, before it runs.
    "post_load_step",
    // `finalize`: a key built after the load added and marked built, before its COMMIT.
    "key_built",
];

#[derive(Debug)]
struct Point {
    action: Action,
    fire_on: u64,
    and_later: bool,
    hits: AtomicU64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Exit,
    Error,
    Sleep(u64),
    Panic,
}

fn registry() -> &'static HashMap<String, Point> {
    static REGISTRY: OnceLock<HashMap<String, Point>> = OnceLock::new();
    REGISTRY.get_or_init(|| parse(&std::env::var("FERRY_FAILPOINTS").unwrap_or_default()))
}

fn parse(spec: &str) -> HashMap<String, Point> {
    let mut points = HashMap::new();
    for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((name, rest)) = entry.split_once('=') else {
            eprintln!("ferry: ignoring malformed failpoint {entry:?} (expected name=action[@n])");
            continue;
        };
        let (action, fire_on, and_later) = match rest.split_once('@') {
            Some((action, n)) => match n.strip_suffix('+') {
                Some(n) => (action, n.parse().unwrap_or(1), true),
                None => (action, n.parse().unwrap_or(1), false),
            },
            None => (rest, 1, false),
        };
        let sleep = action
            .strip_prefix("sleep")
            .and_then(|ms| ms.parse::<u64>().ok());
        let action = match (action, sleep) {
            (_, Some(ms)) => Action::Sleep(ms),
            ("exit", _) => Action::Exit,
            ("error", _) => Action::Error,
            ("panic", _) => Action::Panic,
            (other, _) => {
                eprintln!("ferry: ignoring failpoint {name:?} with unknown action {other:?}");
                continue;
            }
        };
        if !POINTS.contains(&name) {
            eprintln!("ferry: failpoint {name:?} is not a known point ({POINTS:?})");
        }
        points.insert(
            name.to_string(),
            Point {
                action,
                fire_on,
                and_later,
                hits: AtomicU64::new(0),
            },
        );
    }
    points
}

/// An `error` failpoint fired.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failpoint {0} fired")]
pub struct FailpointError(pub &'static str);

/// Passes the failpoint `name`: exits the process or returns an error when it is switched on and due.
pub fn hit(name: &'static str) -> Result<(), FailpointError> {
    let registry = registry();
    if registry.is_empty() {
        return Ok(());
    }
    let Some(point) = registry.get(name) else {
        return Ok(());
    };
    let count = point.hits.fetch_add(1, Ordering::SeqCst) + 1;
    if count != point.fire_on && !(point.and_later && count > point.fire_on) {
        return Ok(());
    }
    match point.action {
        Action::Exit => {
            eprintln!("ferry: failpoint {name} fired (hit {count}): exiting");
            std::process::exit(EXIT_CODE);
        }
        Action::Error => Err(FailpointError(name)),
        Action::Sleep(ms) => {
            let sleep = || std::thread::sleep(std::time::Duration::from_millis(ms));
            // On a worker of a multi-threaded runtime the sleep hands the worker's other tasks to
            // the rest of the runtime first: a held chunk must stall its own loader, not the
            // progress display or a heartbeat queued behind it on the same thread.
            match tokio::runtime::Handle::try_current() {
                Ok(handle)
                    if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread =>
                {
                    tokio::task::block_in_place(sleep)
                }
                _ => sleep(),
            }
            Ok(())
        }
        Action::Panic => panic!("failpoint {name} fired (hit {count}): panicking"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_actions_and_counts() {
        let points =
            parse("after_copy=exit@3, after_commit=error,bogus, x=explode, after_read=sleep250@2+");
        assert_eq!(points.len(), 3);
        assert_eq!(points["after_read"].action, Action::Sleep(250));
        assert_eq!(points["after_read"].fire_on, 2);
        assert!(points["after_read"].and_later);
        assert!(!points["after_copy"].and_later);
        assert_eq!(points["after_copy"].action, Action::Exit);
        assert_eq!(points["after_copy"].fire_on, 3);
        assert_eq!(points["after_commit"].action, Action::Error);
        assert_eq!(points["after_commit"].fire_on, 1);
    }
}
