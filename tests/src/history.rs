//! A table's history as DynamoDB exports it, for the catch-up tests: `tests/history/make_history.py`
//! (run with the Python of the moto install, whose boto3 types the items) writes a full export at
//! T0, three incremental windows, the same first window exported again, a window overlapping it,
//! and a full export of the final state (the oracle the caught-up tables must equal).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

/// The routing of the catch-up tests: users (their email UNIQUE), orders and archived orders (an
/// order moves between them when its status changes), every order's user as a foreign key that
/// cascades deletes.
pub const ROUTED_CONFIG: &str = r#"
version = 1
[load]
max_rejects = 0
[mapping]
key = ["PK", "SK"]
[routing]
unmatched = "reject"

[[routing.rules]]
name = "users"
table = "users"
match = { pk_prefix = "USER#", sk_prefix = "PROFILE" }
rest_column = "profile"
columns = [
  { name = "id", from = "PK", type = "int4", regex = '^USER#(\d+)$' },
  { name = "dynamo_pk", from = "PK", type = "text" },
  { name = "dynamo_sk", from = "SK", type = "text" },
  { name = "name", from = "name", type = "text", required = true },
  { name = "email", from = "email", type = "text", required = true },
  { name = "status", from = "status", type = "text" },
  { name = "tags", from = "tags", type = "text[]" },
  { name = "avatar", from = "avatar", type = "bytea" },
]

[[routing.rules]]
name = "archived orders"
table = "archived_orders"
match = { pk_prefix = "USER#", sk_prefix = "ORDER#", attribute = "status", equals = "archived" }
rest_column = "extra"
columns = [
  { name = "dynamo_pk", from = "PK", type = "text" },
  { name = "dynamo_sk", from = "SK", type = "text" },
  { name = "user_id", from = "PK", type = "int4", regex = '^USER#(\d+)$' },
  { name = "total", from = "total", type = "numeric(12,2)", required = true },
]

[[routing.rules]]
name = "orders"
table = "orders"
match = { pk_prefix = "USER#", sk_prefix = "ORDER#" }
rest_column = "extra"
columns = [
  { name = "dynamo_pk", from = "PK", type = "text" },
  { name = "dynamo_sk", from = "SK", type = "text" },
  { name = "user_id", from = "PK", type = "int4", regex = '^USER#(\d+)$' },
  { name = "total", from = "total", type = "numeric(12,2)", required = true },
  { name = "status", from = "status", type = "text", required = true },
  { name = "items", from = "items", type = "jsonb" },
]

[[setup]]
sql = """
CREATE TABLE IF NOT EXISTS users (
    id INT4 PRIMARY KEY,
    dynamo_pk TEXT NOT NULL,
    dynamo_sk TEXT NOT NULL,
    name TEXT NOT NULL,
    email TEXT UNIQUE NOT NULL,
    status TEXT,
    tags TEXT[],
    avatar BYTEA,
    profile JSONB,
    UNIQUE (dynamo_pk, dynamo_sk)
)"""

[[post_load]]
sql = "ALTER TABLE orders ADD CONSTRAINT orders_user_id_fkey FOREIGN KEY (user_id) REFERENCES users(id) ON DELETE CASCADE"
"#;

/// The tables of [`ROUTED_CONFIG`].
pub const ROUTED_TABLES: &[&str] = &["users", "archived_orders", "orders"];

/// A generated history.
#[derive(Debug)]
pub struct History {
    /// The folder holding everything.
    pub root: PathBuf,
    /// What the generator did (`history.json`).
    pub stats: serde_json::Value,
}

/// The Python of the moto install (boto3 comes with moto).
pub fn python() -> anyhow::Result<PathBuf> {
    let moto = crate::moto::moto_binary()?;
    let python = moto
        .parent()
        .map(|bin| bin.join("python"))
        .filter(|p| p.is_file())
        .with_context(|| format!("no python beside {}", moto.display()))?;
    Ok(python)
}

impl History {
    /// Writes a history of `users` users (and their orders) under `root`.
    pub fn generate(root: &Path, users: usize, seed: u64) -> anyhow::Result<History> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("history/make_history.py");
        let output = Command::new(python()?)
            .arg(&script)
            .arg(root)
            .args(["--users", &users.to_string(), "--seed", &seed.to_string()])
            .output()
            .context("running make_history.py")?;
        anyhow::ensure!(
            output.status.success(),
            "make_history.py failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stats = serde_json::from_slice(&std::fs::read(root.join("history.json"))?)?;
        Ok(History {
            root: root.to_path_buf(),
            stats,
        })
    }

    /// The full export at T0 (a folder holding it).
    pub fn full(&self) -> PathBuf {
        self.root.join("full")
    }

    /// The full export of the final state.
    pub fn final_state(&self) -> PathBuf {
        self.root.join("final")
    }

    /// The export folder (`…/AWSDynamoDB/<id>`) of the final state.
    pub fn final_export_dir(&self) -> PathBuf {
        self.root.join("final/AWSDynamoDB").join(
            self.stats["final"]["export_id"]
                .as_str()
                .unwrap_or_default(),
        )
    }

    /// The prefix holding the three windows (and their shared data folder).
    pub fn windows(&self) -> PathBuf {
        self.root.join("cdc")
    }

    /// Window `n` (1-based) alone: its `…/AWSDynamoDB/<ExportId>` folder.
    pub fn window(&self, n: usize) -> PathBuf {
        self.root.join("cdc/AWSDynamoDB").join(self.window_id(n))
    }

    /// Window `n`'s export id.
    pub fn window_id(&self, n: usize) -> String {
        self.stats["windows"][n - 1]["export_id"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Window 1 exported again under another id.
    pub fn window_again(&self) -> PathBuf {
        self.root.join("cdc-again")
    }

    /// A window overlapping window 1.
    pub fn window_overlapping(&self) -> PathBuf {
        self.root.join("cdc-overlap")
    }
}

/// Every row of `table` as text (through the simple protocol, the same way on both targets),
/// without Ferry's provenance column, ordered by its text.
pub async fn table_text(
    client: &tokio_postgres::Client,
    table: &str,
) -> anyhow::Result<Vec<Vec<(String, Option<String>)>>> {
    let mut rows = Vec::new();
    for message in client
        .simple_query(&format!("SELECT * FROM \"{table}\""))
        .await?
    {
        if let tokio_postgres::SimpleQueryMessage::Row(row) = message {
            let mut values = Vec::new();
            for (i, column) in row.columns().iter().enumerate() {
                if column.name() == ferry_shared::schema::PROVENANCE_COLUMN {
                    continue;
                }
                values.push((column.name().to_string(), row.get(i).map(str::to_string)));
            }
            rows.push(values);
        }
    }
    rows.sort();
    Ok(rows)
}

/// Writes the Ion export of the JSON export in `export_dir` under `out_root`; returns its folder.
pub fn to_ion(export_dir: &Path, out_root: &Path) -> anyhow::Result<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("history/to_ion.py");
    let output = Command::new(python()?)
        .arg(script)
        .arg(export_dir)
        .arg(out_root)
        .output()
        .context("running to_ion.py")?;
    anyhow::ensure!(
        output.status.success(),
        "to_ion.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(PathBuf::from(String::from_utf8(output.stdout)?.trim()))
}
