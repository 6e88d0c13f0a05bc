//! Value-by-value comparison of a loaded table with its source export, written independently of
//! the worker's code: the source is read with `serde_json::Value`, the table with
//! `to_jsonb(row)`, and numbers are compared by exact decimal value from their text.
//!
//! For each source item the comparison finds its row by the key attributes, then checks every
//! attribute: an attribute whose type matches its column's must be in the column (and a NULL must
//! be SQL NULL *and* `null` in the overflow column); any other attribute must be in the overflow
//! column as plain JSON. A row holding anything the item does not, a missing row or an extra row
//! is a difference.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::path::Path;

use anyhow::{bail, Context};
use base64::Engine;
use serde_json::{Map, Value};

/// Source items by key (the JSON text of the key attributes' typed values).
pub type SourceItems = BTreeMap<String, Map<String, Value>>;

/// Reads every `{"Item":…}` line of every `.json.gz` file under `dir` (lines that are not valid
/// items are skipped: they are the ones the loader must reject).
pub fn read_source_items(dir: &Path, keys: &[&str]) -> anyhow::Result<SourceItems> {
    let mut items = SourceItems::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(folder) = stack.pop() {
        for entry in std::fs::read_dir(&folder)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if !path.to_string_lossy().ends_with(".json.gz") {
                continue;
            }
            let file = std::fs::File::open(&path)?;
            if file.metadata()?.len() == 0 {
                continue;
            }
            let reader = BufReader::new(flate2::read::MultiGzDecoder::new(file));
            for line in reader.split(b'\n') {
                let line = line.with_context(|| format!("reading {}", path.display()))?;
                let Ok(Value::Object(mut top)) = serde_json::from_slice::<Value>(&line) else {
                    continue;
                };
                let Some(Value::Object(item)) = top.remove("Item") else {
                    continue;
                };
                let Some(key) = key_of_source(&item, keys) else {
                    continue;
                };
                if items.insert(key.clone(), item).is_some() {
                    bail!("the source holds key {key} twice");
                }
            }
        }
    }
    Ok(items)
}

fn key_of_source(item: &Map<String, Value>, keys: &[&str]) -> Option<String> {
    let mut parts = Vec::new();
    for key in keys {
        let Value::Object(typed) = item.get(*key)? else {
            return None;
        };
        let (descriptor, value) = typed.iter().next()?;
        let text = match (descriptor.as_str(), value) {
            ("S", Value::String(s)) => s.clone(),
            ("N", Value::String(n)) => norm_number(n)?,
            ("B", Value::String(b)) => b.clone(),
            _ => return None,
        };
        parts.push(text);
    }
    serde_json::to_string(&parts).ok()
}

/// Exact decimal value of number text as `digits` and `exponent` (no f64): `-1.50E2` → `-15e1`.
pub fn norm_number(text: &str) -> Option<String> {
    let (negative, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(at) => (&body[..at], body[at + 1..].parse::<i64>().ok()?),
        None => (body, 0),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if !(int_part.chars().chain(frac_part.chars())).all(|c| c.is_ascii_digit())
        || mantissa.is_empty()
    {
        return None;
    }
    let digits = format!("{int_part}{frac_part}");
    let mut exponent = exponent - frac_part.len() as i64;
    let trimmed = digits.trim_start_matches('0');
    if trimmed.is_empty() {
        return Some("0".into());
    }
    let mut significant = trimmed.to_string();
    while significant.ends_with('0') {
        significant.pop();
        exponent += 1;
    }
    Some(format!(
        "{}{significant}e{exponent}",
        if negative { "-" } else { "" }
    ))
}

/// JSON equality with numbers compared by exact value.
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            norm_number(&x.to_string()) == norm_number(&y.to_string())
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

fn number_value(text: &str) -> anyhow::Result<Value> {
    serde_json::from_str::<Value>(text).with_context(|| format!("number {text:?} is not JSON"))
}

/// The plain-JSON projection of a typed DynamoDB value (what the overflow column and nested
/// values hold by default).
pub fn plain(typed: &Value) -> anyhow::Result<Value> {
    let Value::Object(map) = typed else {
        bail!("typed value is not an object: {typed}")
    };
    let Some((descriptor, value)) = map.iter().next() else {
        bail!("empty typed value")
    };
    let strings = |v: &Value| -> anyhow::Result<Vec<String>> {
        v.as_array()
            .context("set is not an array")?
            .iter()
            .map(|s| s.as_str().map(str::to_string).context("set element"))
            .collect()
    };
    Ok(match descriptor.as_str() {
        "S" | "B" => value.clone(),
        "N" => number_value(value.as_str().context("N is not a string")?)?,
        "BOOL" => value.clone(),
        "NULL" => Value::Null,
        "M" => Value::Object(
            value
                .as_object()
                .context("M is not an object")?
                .iter()
                .map(|(k, v)| Ok((k.clone(), plain(v)?)))
                .collect::<anyhow::Result<_>>()?,
        ),
        "L" => Value::Array(
            value
                .as_array()
                .context("L is not an array")?
                .iter()
                .map(plain)
                .collect::<anyhow::Result<_>>()?,
        ),
        "SS" | "BS" => Value::Array(strings(value)?.into_iter().map(Value::String).collect()),
        "NS" => Value::Array(
            strings(value)?
                .iter()
                .map(|n| number_value(n))
                .collect::<anyhow::Result<_>>()?,
        ),
        other => bail!("unknown descriptor {other}"),
    })
}

fn hex_to_base64(text: &str) -> anyhow::Result<String> {
    let hex = text
        .strip_prefix("\\x")
        .context("bytea text does not start with \\x")?;
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
        .collect::<Result<_, _>>()?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// A table column and the DynamoDB type it holds, from `information_schema`.
#[derive(Clone, Debug)]
pub struct TableColumn {
    /// Column name.
    pub name: String,
    /// `udt_name`.
    pub udt: String,
    /// The target's NUMERIC is a 96-bit decimal (HeliosDB): numbers it cannot hold exactly are
    /// expected in the overflow column instead.
    pub decimal96: bool,
    /// A Parquet `decimal128(38, s)` column: numbers it cannot hold exactly are expected in the
    /// overflow column instead.
    pub decimal128_scale: Option<u8>,
}

impl TableColumn {
    fn holds(&self, typed: &Value) -> bool {
        let Some((descriptor, value)) = typed.as_object().and_then(|m| m.iter().next()) else {
            return false;
        };
        let type_fits = matches!(
            (self.udt.as_str(), descriptor.as_str()),
            ("text", "S")
                | ("numeric", "N")
                | ("bytea", "B")
                | ("bool", "BOOL")
                | ("jsonb", "M")
                | ("jsonb", "L")
                | ("_text", "SS")
                | ("_numeric", "NS")
                | ("_bytea", "BS")
        );
        let numbers_fit = !self.decimal96
            || match value {
                Value::String(n) if descriptor == "N" => fits_decimal96(n),
                Value::Array(items) if descriptor == "NS" => {
                    items.iter().all(|n| n.as_str().is_some_and(fits_decimal96))
                }
                _ => true,
            };
        let decimal_fits = match (self.decimal128_scale, value) {
            (Some(scale), Value::String(n)) if descriptor == "N" => fits_decimal128(n, scale),
            _ => true,
        };
        type_fits && numbers_fit && decimal_fits
    }

    /// The column's JSON (from `to_jsonb(row)`) in the form the source value is compared in.
    fn comparable(&self, value: &Value) -> anyhow::Result<Value> {
        Ok(match self.udt.as_str() {
            "bytea" => Value::String(hex_to_base64(value.as_str().context("bytea")?)?),
            "_bytea" => Value::Array(
                value
                    .as_array()
                    .context("bytea[]")?
                    .iter()
                    .map(|v| Ok(Value::String(hex_to_base64(v.as_str().context("bytea")?)?)))
                    .collect::<anyhow::Result<_>>()?,
            ),
            _ => value.clone(),
        })
    }
}

/// Whether decimal text fits `decimal128(38, scale)` exactly (trailing zeros aside).
pub fn fits_decimal128(text: &str, scale: u8) -> bool {
    let Some(norm) = norm_number(text) else {
        return false;
    };
    let (digits, exponent) = norm
        .trim_start_matches('-')
        .split_once('e')
        .unwrap_or(("0", "0"));
    let exponent: i64 = exponent.parse().unwrap_or(0);
    let frac = (-exponent).max(0);
    let int_digits = (digits.len() as i64 + exponent).max(0);
    frac <= i64::from(scale) && int_digits + i64::from(scale) <= 38
}

/// Whether plain decimal text fits a 96-bit decimal exactly: at most 28 fraction digits and
/// digits (as an integer) below 2^96.
pub fn fits_decimal96(text: &str) -> bool {
    let body = text.trim_start_matches('-');
    let (int_part, frac) = body.split_once('.').unwrap_or((body, ""));
    let digits = format!("{int_part}{frac}");
    let digits = digits.trim_start_matches('0');
    const LIMIT: &str = "79228162514264337593543950336";
    frac.len() <= 28
        && (digits.len() < LIMIT.len() || (digits.len() == LIMIT.len() && digits < LIMIT))
}

/// Ferry's provenance column: every loaded row must carry one; it is not compared with the source.
const PROVENANCE: &str = "_ferry_chunk";

/// Removes the provenance from a row read with `to_jsonb`, failing when the row has none.
fn take_provenance(row: &mut Map<String, Value>) -> anyhow::Result<()> {
    match row.remove(PROVENANCE) {
        Some(Value::Number(_)) => Ok(()),
        other => bail!("a row has no {PROVENANCE} (found {other:?}): {row:?}"),
    }
}

/// Reads the table: its columns and every row as `to_jsonb`; Ferry's provenance column is checked
/// present and left out.
pub async fn read_table(
    client: &tokio_postgres::Client,
    table: &str,
) -> anyhow::Result<(Vec<TableColumn>, Vec<Map<String, Value>>)> {
    let columns = client
        .query(
            "SELECT column_name::text, udt_name::text FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
            &[&table],
        )
        .await?
        .iter()
        .map(|r| TableColumn { name: r.get(0), udt: r.get(1), decimal96: false, decimal128_scale: None })
        .filter(|c: &TableColumn| c.name != PROVENANCE)
        .collect();
    let sql = format!(
        "SELECT to_jsonb(t)::text FROM \"{}\" t",
        table.replace('"', "\"\"")
    );
    let mut rows = Vec::new();
    for message in client.simple_query(&sql).await? {
        if let tokio_postgres::SimpleQueryMessage::Row(row) = message {
            let text = row.get(0).context("null row")?;
            let Value::Object(mut map) = serde_json::from_str(text)? else {
                bail!("row is not an object")
            };
            take_provenance(&mut map)?;
            rows.push(map);
        }
    }
    Ok((columns, rows))
}

/// Reads the table through the simple query protocol (every value in PostgreSQL text format),
/// typed by the run's schema from the ledger, into the same shape as `to_jsonb(row)`. For servers
/// without `to_jsonb` (HeliosDB).
pub async fn read_table_text(
    client: &tokio_postgres::Client,
    run_id: &str,
) -> anyhow::Result<(String, Vec<TableColumn>, Vec<Map<String, Value>>)> {
    let mut schema_json = None;
    for message in client
        .simple_query(&format!(
            "SELECT schema_json FROM ferry.runs WHERE run_id = '{}'",
            run_id.replace('\'', "''")
        ))
        .await?
    {
        if let tokio_postgres::SimpleQueryMessage::Row(row) = message {
            schema_json = row.get(0).map(str::to_string);
        }
    }
    let schema: ferry_shared::schema::TableSchema = serde_json::from_str(
        &schema_json.with_context(|| format!("run {run_id} not in the ledger"))?,
    )?;
    let mut columns: Vec<TableColumn> = schema
        .columns
        .iter()
        .map(|c| TableColumn {
            name: c.name.clone(),
            udt: c.pg_type.udt_name().to_string(),
            decimal96: schema.numeric_limit == ferry_shared::schema::NumericLimit::Decimal96,
            decimal128_scale: None,
        })
        .collect();
    columns.push(TableColumn {
        name: schema.overflow_column.clone(),
        udt: "jsonb".into(),
        decimal96: false,
        decimal128_scale: None,
    });
    let mut list: Vec<String> = columns
        .iter()
        .map(|c| format!("\"{}\"", c.name.replace('"', "\"\"")))
        .collect();
    list.push(format!("\"{PROVENANCE}\""));
    let sql = format!(
        "SELECT {} FROM \"{}\"",
        list.join(", "),
        schema.table.replace('"', "\"\"")
    );
    let mut rows = Vec::new();
    for message in client.simple_query(&sql).await? {
        if let tokio_postgres::SimpleQueryMessage::Row(row) = message {
            let mut map = Map::new();
            for (i, column) in columns.iter().enumerate() {
                let value = match row.get(i) {
                    None => Value::Null,
                    Some(text) => text_value(&column.udt, text)
                        .with_context(|| format!("column {} value {text:?}", column.name))?,
                };
                map.insert(column.name.clone(), value);
            }
            if row.get(columns.len()).is_none() {
                bail!("a row of {} has no {PROVENANCE}", schema.table);
            }
            rows.push(map);
        }
    }
    Ok((schema.table, columns, rows))
}

/// A value in PostgreSQL text format, as `to_jsonb` would give it.
pub fn text_value(udt: &str, text: &str) -> anyhow::Result<Value> {
    Ok(match udt {
        "text" | "bytea" => Value::String(text.to_string()),
        "numeric" => number_value(text)?,
        "bool" => Value::Bool(matches!(text, "t" | "true" | "TRUE" | "True")),
        "jsonb" => serde_json::from_str(text)?,
        "_text" | "_bytea" => Value::Array(
            parse_array_literal(text)?
                .into_iter()
                .map(Value::String)
                .collect(),
        ),
        "_numeric" => Value::Array(
            parse_array_literal(text)?
                .iter()
                .map(|n| number_value(n))
                .collect::<anyhow::Result<_>>()?,
        ),
        other => bail!("unexpected column type {other}"),
    })
}

/// Parses a one-dimensional array literal (`{a,"b c","x\"y"}`).
pub fn parse_array_literal(text: &str) -> anyhow::Result<Vec<String>> {
    let inner = text
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .with_context(|| format!("not an array literal: {text}"))?;
    let mut items = Vec::new();
    let mut chars = inner.chars().peekable();
    while chars.peek().is_some() {
        let mut item = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => item.push(chars.next().context("dangling escape")?),
                    Some('"') => break,
                    Some(c) => item.push(c),
                    None => bail!("unterminated element in {text}"),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                item.push(c);
                chars.next();
            }
        }
        items.push(item);
        match chars.next() {
            Some(',') | None => {}
            Some(c) => bail!("unexpected {c:?} in {text}"),
        }
    }
    Ok(items)
}

/// Compares the table with the source items; returns every difference (empty: identical).
pub fn compare(
    source: &SourceItems,
    keys: &[&str],
    columns: &[TableColumn],
    overflow: &str,
    rows: &[Map<String, Value>],
) -> Vec<String> {
    let mut diffs = Vec::new();
    let by_name: HashMap<&str, &TableColumn> =
        columns.iter().map(|c| (c.name.as_str(), c)).collect();
    let mut seen = BTreeMap::new();
    for row in rows {
        let key_parts: Vec<String> = keys
            .iter()
            .map(
                |k| match (row.get(*k), by_name.get(k).map(|c| c.udt.as_str())) {
                    (Some(Value::Number(n)), _) => norm_number(&n.to_string()).unwrap_or_default(),
                    (Some(Value::String(s)), Some("bytea")) => hex_to_base64(s).unwrap_or_default(),
                    (Some(Value::String(s)), _) => s.clone(),
                    (other, _) => format!("{other:?}"),
                },
            )
            .collect();
        let key = serde_json::to_string(&key_parts).unwrap_or_default();
        if seen.insert(key.clone(), row).is_some() {
            diffs.push(format!("key {key} is loaded twice"));
        }
    }
    for (key, item) in source {
        let Some(row) = seen.remove(key) else {
            diffs.push(format!("key {key} is missing from the table"));
            continue;
        };
        let overflow_map = match row.get(overflow) {
            Some(Value::Object(map)) => map.clone(),
            Some(Value::Null) | None => Map::new(),
            Some(other) => {
                diffs.push(format!(
                    "key {key}: overflow column is not an object: {other}"
                ));
                Map::new()
            }
        };
        let mut overflow_used = 0;
        for (name, typed) in item {
            let descriptor = typed
                .as_object()
                .and_then(|m| m.keys().next())
                .map(String::as_str)
                .unwrap_or("");
            let column = by_name.get(name.as_str()).filter(|c| c.name != overflow);
            let expected_plain = match plain(typed) {
                Ok(v) => v,
                Err(e) => {
                    diffs.push(format!("key {key}: source attribute {name:?}: {e}"));
                    continue;
                }
            };
            match column {
                Some(column) if column.holds(typed) => {
                    let actual = row.get(name.as_str()).cloned().unwrap_or(Value::Null);
                    let actual = match column.comparable(&actual) {
                        Ok(v) => v,
                        Err(e) => {
                            diffs.push(format!("key {key}: column {name:?}: {e}"));
                            continue;
                        }
                    };
                    if !json_eq(&expected_plain, &actual) {
                        diffs.push(format!("key {key}: column {name:?} is {actual}, the source has {expected_plain}"));
                    }
                }
                Some(column) if descriptor == "NULL" => {
                    overflow_used += 1;
                    if row.get(column.name.as_str()) != Some(&Value::Null) {
                        diffs.push(format!("key {key}: column {name:?} should be NULL"));
                    }
                    if overflow_map.get(name.as_str()) != Some(&Value::Null) {
                        diffs.push(format!(
                            "key {key}: overflow should record {name:?} as null"
                        ));
                    }
                }
                _ => {
                    overflow_used += 1;
                    if let Some(column) = column {
                        if row.get(column.name.as_str()) != Some(&Value::Null) {
                            diffs.push(format!("key {key}: column {name:?} should be NULL (value of another type is in overflow)"));
                        }
                    }
                    match overflow_map.get(name.as_str()) {
                        Some(actual) if json_eq(&expected_plain, actual) => {}
                        Some(actual) => diffs.push(format!("key {key}: overflow {name:?} is {actual}, the source has {expected_plain}")),
                        None => diffs.push(format!("key {key}: attribute {name:?} is lost (not in its column nor in overflow)")),
                    }
                }
            }
        }
        if overflow_map.len() != overflow_used {
            diffs.push(format!(
                "key {key}: overflow holds {} entries, the source accounts for {overflow_used}",
                overflow_map.len()
            ));
        }
        let non_null_columns = columns
            .iter()
            .filter(|c| {
                c.name != overflow && row.get(c.name.as_str()).is_some_and(|v| !v.is_null())
            })
            .count();
        let expected_non_null = item
            .iter()
            .filter(|(name, typed)| {
                by_name
                    .get(name.as_str())
                    .is_some_and(|c| c.name != overflow && c.holds(typed))
            })
            .count();
        if non_null_columns != expected_non_null {
            diffs.push(format!("key {key}: {non_null_columns} non-null columns, the source fills {expected_non_null}"));
        }
    }
    for key in seen.keys() {
        diffs.push(format!("key {key} is in the table but not in the source"));
    }
    diffs
}

/// Typed DynamoDB values equal: numbers by exact value, sets as sets.
pub fn typed_eq(a: &Value, b: &Value) -> bool {
    let (Some((da, va)), Some((db, vb))) = (
        a.as_object().and_then(|m| m.iter().next()),
        b.as_object().and_then(|m| m.iter().next()),
    ) else {
        return false;
    };
    if da != db {
        return false;
    }
    let set = |v: &Value, number: bool| -> BTreeSet<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_str())
            .map(|s| {
                if number {
                    norm_number(s).unwrap_or_default()
                } else {
                    s.to_string()
                }
            })
            .collect()
    };
    match da.as_str() {
        "N" => norm_number(va.as_str().unwrap_or("x")) == norm_number(vb.as_str().unwrap_or("y")),
        "SS" | "BS" => set(va, false) == set(vb, false),
        "NS" => set(va, true) == set(vb, true),
        "M" => item_eq(va.as_object().unwrap(), vb.as_object().unwrap()),
        "L" => {
            let (x, y) = (va.as_array().unwrap(), vb.as_array().unwrap());
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| typed_eq(p, q))
        }
        _ => va == vb,
    }
}

pub fn item_eq(a: &Map<String, Value>, b: &Map<String, Value>) -> bool {
    a.len() == b.len()
        && a.iter()
            .all(|(k, v)| b.get(k).is_some_and(|w| typed_eq(v, w)))
}

/// Every difference between the expected and the exported items.
pub fn differences(expected: &SourceItems, exported: &SourceItems) -> Vec<String> {
    let mut out = Vec::new();
    for (key, item) in expected {
        match exported.get(key) {
            None => out.push(format!("{key} is missing")),
            Some(got) if !item_eq(item, got) => out.push(format!(
                "{key}: expected {}\n  exported {}",
                Value::Object(item.clone()),
                Value::Object(got.clone())
            )),
            _ => {}
        }
    }
    for key in exported.keys().filter(|k| !expected.contains_key(*k)) {
        out.push(format!("{key} was not in the export"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal96_limits() {
        assert!(fits_decimal96("79228162514264337593543950335"));
        assert!(!fits_decimal96("79228162514264337593543950336"));
        assert!(!fits_decimal96("-123456.000000000000000000000000000001"));
        assert!(fits_decimal96("-0.5"));
    }

    #[test]
    fn array_literals_parse() {
        assert_eq!(parse_array_literal("{}").unwrap(), Vec::<String>::new());
        assert_eq!(
            parse_array_literal("{a,\"b c\",\"x\\\"y\\\\z\",\"\"}").unwrap(),
            vec!["a", "b c", "x\"y\\z", ""]
        );
        assert_eq!(parse_array_literal("{1.5,2}").unwrap(), vec!["1.5", "2"]);
        assert!(parse_array_literal("a,b").is_err());
    }

    #[test]
    fn numbers_compare_by_exact_value() {
        assert_eq!(norm_number("150"), norm_number("1.5E2"));
        assert_eq!(norm_number("1.50"), norm_number("1.5"));
        assert_eq!(norm_number("-0"), norm_number("0.000"));
        assert_ne!(
            norm_number("12345678901234567890123456789012345678"),
            norm_number("12345678901234567890123456789012345679")
        );
        assert_ne!(norm_number("-0.5"), norm_number("0.5"));
        assert_eq!(norm_number("abc"), None);
    }
}
