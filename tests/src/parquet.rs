//! Reading Ferry's Parquet datasets back with an independent reader: pyarrow (PyPI, pinned,
//! installed into `~/.cache/ferry` by `scripts/install-pyarrow`). A script reads every file that a
//! table's `_manifest.json` lists (and checks the folder holds no other data file), and prints
//! each row as JSON with exact values (decimals as plain decimal text, binary as `\x…` hex); the
//! rows are then compared with the export's items by [`crate::compare`], like a database table.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use serde_json::{Map, Value};

use crate::compare::{text_value, TableColumn};

/// The pinned pyarrow version.
pub const PYARROW_VERSION: &str = "26.0.1";

/// The Python interpreter of pyarrow's virtualenv: `$FERRY_PYARROW_PYTHON`, the install cache.
pub fn pyarrow_python() -> anyhow::Result<PathBuf> {
    crate::tools::find_tool(
        "FERRY_PYARROW_PYTHON",
        &format!("pyarrow-{PYARROW_VERSION}/bin/python"),
        "ferry-pyarrow-python",
        "scripts/install-pyarrow",
    )
}

const READER: &str = r#"
import base64, decimal, json, os, sys
import pyarrow as pa, pyarrow.parquet as pq

root = sys.argv[1]
strict = len(sys.argv) < 3 or sys.argv[2] != "listed"
manifest = json.load(open(os.path.join(root, "_manifest.json")))
listed = sorted(os.path.basename(f["key"]) for f in manifest["files"])
present = sorted(n for n in os.listdir(root) if n.endswith(".parquet"))
if strict and listed != present:
    sys.exit(f"the folder's files {present} are not the manifest's {listed}")
missing = sorted(set(listed) - set(present))
if missing:
    sys.exit(f"the manifest lists files the folder does not hold: {missing}")
unlisted = sorted(set(present) - set(listed))

def value(v):
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, decimal.Decimal):
        return {"decimal": format(v, "f")}
    if isinstance(v, bytes):
        return "\\x" + v.hex()
    if isinstance(v, list):
        return [value(x) for x in v]
    return str(v)

files = []
rows = 0
for name in listed:
    path = os.path.join(root, name)
    meta = pq.read_metadata(path)
    codecs, stats = set(), True
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for c in range(group.num_columns):
            column = group.column(c)
            codecs.add(column.compression)
            stats = stats and column.is_stats_set
    table = pq.read_table(path)
    schema = table.schema
    files.append({"name": name, "rows": meta.num_rows, "row_groups": meta.num_row_groups,
                  "codecs": sorted(codecs), "statistics": stats,
                  "ferry_schema": json.loads(schema.metadata[b"ferry.schema"]),
                  "types": {f.name: str(f.type) for f in schema}})
    for row in table.to_pylist():
        print(json.dumps({"row": {k: value(v) for k, v in row.items()}}))
        rows += 1
print(json.dumps({"files": files, "manifest": manifest, "rows": rows, "unlisted": unlisted}))
"#;

/// One file as pyarrow saw it.
#[derive(Clone, Debug)]
pub struct FileInfo {
    /// The file's name.
    pub name: String,
    /// Rows.
    pub rows: u64,
    /// Row groups.
    pub row_groups: u64,
    /// Compression codecs of its column chunks.
    pub codecs: Vec<String>,
    /// Whether every column chunk has statistics.
    pub statistics: bool,
    /// Arrow types by column.
    pub types: Map<String, Value>,
}

/// A table's dataset as read back.
#[derive(Debug)]
pub struct Dataset {
    /// Columns typed as a database table would be (for [`crate::compare::compare`]).
    pub columns: Vec<TableColumn>,
    /// Rows in `to_jsonb` shape, without `_ferry_chunk` (checked present).
    pub rows: Vec<Map<String, Value>>,
    /// The files.
    pub files: Vec<FileInfo>,
    /// `_manifest.json`.
    pub manifest: Value,
    /// Files in the folder that the manifest does not list (only [`read_listed`] allows any).
    pub unlisted: Vec<String>,
}

/// Reads `<dir>` (one table's dataset folder) with pyarrow; its files must be exactly those
/// `_manifest.json` lists.
pub fn read_dataset(dir: &Path) -> anyhow::Result<Dataset> {
    read_with(dir, false)
}

/// Reads the files `<dir>`'s `_manifest.json` lists, and names the folder's other files
/// ([`Dataset::unlisted`]: a run still loading beside a finalized one has files in flight).
pub fn read_listed(dir: &Path) -> anyhow::Result<Dataset> {
    read_with(dir, true)
}

fn read_with(dir: &Path, listed_only: bool) -> anyhow::Result<Dataset> {
    let python = pyarrow_python()?;
    let script = tempfile::NamedTempFile::new()?;
    std::fs::write(script.path(), READER)?;
    let output = Command::new(&python)
        .arg(script.path())
        .arg(dir)
        .args(listed_only.then_some("listed"))
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    if !output.status.success() {
        bail!(
            "pyarrow could not read {}: {}",
            dir.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let text = String::from_utf8(output.stdout)?;
    let mut raw_rows = Vec::new();
    let mut summary = None;
    for line in text.lines() {
        let mut value: Map<String, Value> = serde_json::from_str(line)?;
        match value.remove("row") {
            Some(Value::Object(row)) => raw_rows.push(row),
            _ => summary = Some(value),
        }
    }
    let summary = summary.context("no summary line from the reader")?;
    let files: Vec<FileInfo> = summary["files"]
        .as_array()
        .context("files")?
        .iter()
        .map(|f| FileInfo {
            name: f["name"].as_str().unwrap_or_default().to_string(),
            rows: f["rows"].as_u64().unwrap_or(0),
            row_groups: f["row_groups"].as_u64().unwrap_or(0),
            codecs: f["codecs"]
                .as_array()
                .map(|c| {
                    c.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            statistics: f["statistics"].as_bool().unwrap_or(false),
            types: f["types"].as_object().cloned().unwrap_or_default(),
        })
        .collect();
    let schema = summary["files"][0]["ferry_schema"].clone();
    let mut columns: Vec<TableColumn> = schema["columns"]
        .as_array()
        .context("ferry.schema columns")?
        .iter()
        .map(|c| {
            let sql = c["sql_type"].as_str().unwrap_or_default();
            let (udt, decimal128_scale) = match sql {
                "TEXT" => ("text", None),
                "NUMERIC" => ("numeric", None),
                "BYTEA" => ("bytea", None),
                "BOOLEAN" => ("bool", None),
                "JSONB" => ("jsonb", None),
                "TEXT[]" => ("_text", None),
                "NUMERIC[]" => ("_numeric", None),
                "BYTEA[]" => ("_bytea", None),
                other => match other
                    .strip_prefix("NUMERIC(38,")
                    .and_then(|s| s.strip_suffix(')'))
                {
                    Some(scale) => ("numeric", scale.parse().ok()),
                    None => (other, None),
                },
            };
            TableColumn {
                name: c["name"].as_str().unwrap_or_default().to_string(),
                udt: udt.to_string(),
                decimal96: false,
                decimal128_scale,
            }
        })
        .collect();
    let overflow = schema["overflow_column"]["name"]
        .as_str()
        .context("overflow column")?
        .to_string();
    columns.push(TableColumn {
        name: overflow,
        udt: "jsonb".into(),
        decimal96: false,
        decimal128_scale: None,
    });
    let mut rows = Vec::with_capacity(raw_rows.len());
    for mut raw in raw_rows {
        match raw.remove(ferry_shared::schema::PROVENANCE_COLUMN) {
            Some(Value::Number(_)) => {}
            other => bail!("a row has no provenance: {other:?}"),
        }
        let mut row = Map::new();
        for column in &columns {
            let value = match raw.remove(&column.name) {
                None | Some(Value::Null) => Value::Null,
                Some(Value::Object(d)) if d.contains_key("decimal") => {
                    serde_json::from_str(d["decimal"].as_str().unwrap_or("x"))?
                }
                Some(Value::String(text)) => match column.udt.as_str() {
                    "numeric" | "jsonb" => text_value(&column.udt, &text)?,
                    _ => Value::String(text),
                },
                Some(Value::Array(items)) if column.udt == "_numeric" => Value::Array(
                    items
                        .iter()
                        .map(|n| serde_json::from_str(n.as_str().unwrap_or("x")))
                        .collect::<Result<_, _>>()?,
                ),
                Some(other) => other,
            };
            row.insert(column.name.clone(), value);
        }
        anyhow::ensure!(raw.is_empty(), "columns the schema does not list: {raw:?}");
        rows.push(row);
    }
    Ok(Dataset {
        columns,
        rows,
        files,
        manifest: summary["manifest"].clone(),
        unlisted: summary["unlisted"]
            .as_array()
            .map(|names| {
                names
                    .iter()
                    .filter_map(|n| n.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
    })
}
