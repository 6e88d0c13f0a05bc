//! Single-table design: routing rules that send each item to one of several target tables, with
//! per-table column maps, key parsing, casts and transforms (`docs/design.md` §4).
//!
//! The rules are written in the config file (lists live in the file only):
//!
//! ```toml
//! [routing]
//! unmatched = "reject"                 # or "table": items no rule matches go to `catch_all_table`
//! # catch_all_table = "other_items"
//!
//! [[routing.rules]]
//! name = "users"
//! table = "users"
//! match = { pk_prefix = "USER#", sk_prefix = "PROFILE" }
//! rest_column = "profile"              # unmapped attributes, as a JSONB object
//! drop = ["GSI1PK"]                    # attributes dropped on purpose, by name
//! skip_expired_ttl = "expires_at"      # skip items whose TTL (epoch seconds) is before the export
//! columns = [
//!   { name = "dynamo_pk", from = "PK", type = "text" },
//!   { name = "dynamo_sk", from = "SK", type = "text" },
//!   { name = "id", from = "PK", type = "int8", regex = '^USER#(\d+)$' },
//!   { name = "email", from = "email", type = "text", transform = ["trim", "lowercase"], required = true },
//!   { name = "city", path = ["address", "city"], type = "text" },
//!   { name = "source", constant = "dynamodb", type = "text" },
//! ]
//! ```
//!
//! # Precedence
//! Rules are tried in the order they are written; the **first** rule whose every condition holds
//! takes the item. Conditions within one rule are ANDed: `pk_prefix` and `sk_prefix` (begins_with
//! on the partition and sort key attributes), `attribute` + `equals` (an attribute's S, N or BOOL
//! value as text), and `regex` + `regex_attribute` (default: the sort key). A rule with no
//! condition matches everything, so it belongs last. Items no rule takes go to rejects, or to the
//! catch-all table with `unmatched = "table"`.
//!
//! # Columns
//! A column takes its value from an attribute (`from = "status"`), from a path inside maps
//! (`from = "profile.address.city"`, split on dots; an attribute whose name holds a dot is named
//! with the list form, `path = ["a.b", "c"]`), from a regex capture over the value
//! (`regex = '^USER#(\d+)$'`, group 1), or is a constant (`constant = "x"`). Its `type` is one of
//! `text`, `int2`, `int4`, `int8`, `numeric`, `numeric(p,s)`, `float8`, `boolean`, `bytea`,
//! `jsonb`, `timestamptz` (with `time = "epoch_seconds" | "epoch_millis" | "iso8601"`, default:
//! seconds for numbers and ISO-8601 for strings), `text[]`, `numeric[]`, `bytea[]`. A value that does not
//! cast (or a `required` column whose value is missing) makes the item a reject naming the rule,
//! the column and the value; nothing is rounded (a `numeric(12,2)` column refuses `1.005`).
//! `transform` applies, in order: `trim`, `lowercase`, `hash` (SHA-256, hex) and `redact`
//! (the value becomes `[redacted]`), on text columns. `allowed = [...]` (text) and `min`/`max`
//! (integers) turn a value the table's CHECK constraint would refuse into a reject of its item,
//! instead of a failed chunk.
//!
//! Rules that write the same table must declare the same columns (names and types, in order) and
//! the same rest column; each rule keeps its own `transform`s, `allowed` values and bounds.
//!
//! Attributes a column takes whole (a one-segment `from`, with or without `regex`) leave the item;
//! every other attribute goes into the rule's `rest_column` (JSONB), unless named in `drop`.
//!
//! # Exactly once
//! Every rule must keep the item's DynamoDB key attributes whole, in columns without `regex`: those
//! columns carry the source identity under a unique constraint, which a retried chunk is checked
//! against (design.md §3).

use serde::{Deserialize, Serialize};

use super::{ColumnSpec, DdbType, NestedJson, OnTypeMismatch, PgType, TableSchema};
use crate::ident::is_valid_column_name;
use crate::{Error, Result};

/// `[routing]`: the rules and what happens to items none of them takes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Routing {
    /// Items no rule matches: `reject` (default) or `table`.
    #[serde(default)]
    pub unmatched: Unmatched,
    /// The table for unmatched items (`unmatched = "table"`): key columns named as the key
    /// attributes, everything else in `attrs` JSONB.
    #[serde(default)]
    pub catch_all_table: Option<String>,
    /// The rules, in precedence order.
    #[serde(default)]
    pub rules: Vec<Rule>,
}

/// What happens to an item that matches no rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unmatched {
    /// A reject with the reason "no routing rule matches".
    #[default]
    Reject,
    /// The catch-all table.
    Table,
}

/// One routing rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// The rule's name, used in messages.
    pub name: String,
    /// The target table.
    pub table: String,
    /// When the rule applies.
    #[serde(default, rename = "match")]
    pub when: Match,
    /// The table's columns.
    pub columns: Vec<Column>,
    /// The JSONB column for the attributes no column takes whole.
    #[serde(default = "default_rest")]
    pub rest_column: String,
    /// Attributes dropped on purpose, by name.
    #[serde(default)]
    pub drop: Vec<String>,
    /// Skip (count as filtered) items whose attribute, epoch seconds, is before the export time.
    #[serde(default)]
    pub skip_expired_ttl: Option<String>,
    /// Skip (count as filtered) items whose attribute equals this value.
    #[serde(default)]
    pub skip_when: Option<AttributeEquals>,
}

fn default_rest() -> String {
    "attrs".into()
}

/// A rule's conditions, ANDed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// The partition key begins with this.
    #[serde(default)]
    pub pk_prefix: Option<String>,
    /// The sort key begins with this.
    #[serde(default)]
    pub sk_prefix: Option<String>,
    /// This attribute…
    #[serde(default)]
    pub attribute: Option<String>,
    /// …has this value (S, N or BOOL, as text).
    #[serde(default)]
    pub equals: Option<String>,
    /// A regular expression the attribute `regex_attribute` must match.
    #[serde(default)]
    pub regex: Option<String>,
    /// The attribute `regex` applies to (default: the sort key, else the partition key).
    #[serde(default)]
    pub regex_attribute: Option<String>,
}

/// `{ attribute = "status", equals = "deleted" }`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeEquals {
    /// The attribute.
    pub attribute: String,
    /// Its value as text.
    pub equals: String,
}

/// One column of a routed table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Column {
    /// The column name.
    pub name: String,
    /// An attribute, or a dotted path inside maps.
    #[serde(default)]
    pub from: Option<String>,
    /// A path inside maps, one segment per element (for names that hold dots).
    #[serde(default)]
    pub path: Option<Vec<String>>,
    /// A constant value, as text cast to the column type.
    #[serde(default)]
    pub constant: Option<String>,
    /// The column type (`text`, `int8`, `numeric(12,2)`, …).
    #[serde(rename = "type")]
    pub type_name: String,
    /// A regex over the value; its first capture group is the column's value.
    #[serde(default)]
    pub regex: Option<String>,
    /// How `timestamptz` reads numbers and strings.
    #[serde(default)]
    pub time: Option<TimeFormat>,
    /// Transforms, in order.
    #[serde(default)]
    pub transform: Vec<Transform>,
    /// A missing or NULL value makes the item a reject.
    #[serde(default)]
    pub required: bool,
    /// The values a text column accepts (compared before transforms): another value makes the
    /// item a reject, as the table's `CHECK (… IN …)` would fail the whole chunk.
    #[serde(default)]
    pub allowed: Option<Vec<String>>,
    /// The smallest value an integer column accepts (a reject below it).
    #[serde(default)]
    pub min: Option<i64>,
    /// The largest value an integer column accepts (a reject above it).
    #[serde(default)]
    pub max: Option<i64>,
}

/// How a `timestamptz` column reads its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeFormat {
    /// A number of seconds since 1970-01-01 UTC (fractions kept to the microsecond).
    EpochSeconds,
    /// A number of milliseconds since 1970-01-01 UTC.
    EpochMillis,
    /// ISO-8601 / RFC 3339 text with an offset (`2026-01-15T10:00:00Z`).
    Iso8601,
}

/// A column transform.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transform {
    /// Strip leading and trailing whitespace.
    Trim,
    /// Lowercase.
    Lowercase,
    /// SHA-256 of the UTF-8 value, as 64 lowercase hex digits.
    Hash,
    /// Replace the value with `[redacted]`.
    Redact,
}

/// Parses a column type name.
pub fn parse_type(name: &str) -> Option<PgType> {
    let name = name.trim().to_ascii_lowercase();
    Some(match name.as_str() {
        "text" => PgType::Text,
        "int2" | "smallint" => PgType::Int2,
        "int4" | "integer" | "int" => PgType::Int4,
        "int8" | "bigint" => PgType::Int8,
        "numeric" | "decimal" => PgType::Numeric,
        "float8" | "double precision" => PgType::Float8,
        "boolean" | "bool" => PgType::Boolean,
        "bytea" => PgType::Bytea,
        "jsonb" => PgType::Jsonb,
        "timestamptz" => PgType::Timestamptz,
        "text[]" => PgType::TextArray,
        "numeric[]" => PgType::NumericArray,
        "bytea[]" => PgType::ByteaArray,
        other => {
            let inner = other
                .strip_prefix("numeric(")
                .or_else(|| other.strip_prefix("decimal("))?
                .strip_suffix(')')?;
            let (p, s) = inner.split_once(',').unwrap_or((inner, "0"));
            let (p, s): (u8, u8) = (p.trim().parse().ok()?, s.trim().parse().ok()?);
            if p == 0 || p > 38 || s > p {
                return None;
            }
            PgType::NumericScaled {
                precision: p,
                scale: s,
            }
        }
    })
}

impl Column {
    /// The path the value comes from (empty for a constant).
    pub fn source_path(&self) -> Vec<String> {
        match (&self.path, &self.from) {
            (Some(path), _) => path.clone(),
            (None, Some(from)) => from.split('.').map(str::to_string).collect(),
            (None, None) => Vec::new(),
        }
    }

    /// The attribute this column takes whole, if it does.
    pub fn whole_attribute(&self) -> Option<String> {
        match self.source_path().as_slice() {
            [one] => Some(one.clone()),
            _ => None,
        }
    }

    /// The column type.
    pub fn pg_type(&self) -> PgType {
        parse_type(&self.type_name).unwrap_or(PgType::Text)
    }
}

impl Routing {
    /// The `[routing]` section of a TOML text (the config file's own parser).
    pub fn from_toml(text: &str) -> Result<Routing> {
        #[derive(Deserialize)]
        struct File {
            #[serde(default)]
            routing: Routing,
        }
        // The `config` crate's TOML reading, as the settings file's (without depending on
        // `crate::config`, which depends on this module).
        config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize::<File>())
            .map(|file| file.routing)
            .map_err(|e| crate::Error::Config(e.to_string()))
    }

    /// Whether any rule is configured.
    pub fn is_enabled(&self) -> bool {
        !self.rules.is_empty()
    }

    /// Checks the rules against the run's key attributes, naming the rule and the key of the first
    /// problem.
    pub fn validate(&self, keys: &[String]) -> Result<()> {
        let error = |rule: &str, reason: String| {
            Err(Error::Config(format!("routing rule {rule:?}: {reason}")))
        };
        if keys.is_empty() {
            return Err(Error::Config(
                "routing needs the key attributes (mapping.key or --key)".into(),
            ));
        }
        if self.unmatched == Unmatched::Table && self.catch_all_table.is_none() {
            return Err(Error::Config(
                "routing.unmatched = \"table\" needs routing.catch_all_table".into(),
            ));
        }
        if let Some(catch_all) = &self.catch_all_table {
            if let Some(rule) = self.rules.iter().find(|r| &r.table == catch_all) {
                return Err(Error::Config(format!(
                    "routing.catch_all_table {catch_all:?} is also the table of rule {:?}: \
                     the catch-all table has its own shape (the key attributes and attrs), so \
                     name another table",
                    rule.name
                )));
            }
        }
        let mut names = std::collections::HashSet::new();
        for rule in &self.rules {
            if !names.insert(rule.name.as_str()) {
                return error(&rule.name, "the name is used twice".into());
            }
            if !is_valid_column_name(&rule.table) {
                return error(
                    &rule.name,
                    format!("table {:?} is not a usable name", rule.table),
                );
            }
            if let Some(pattern) = &rule.when.regex {
                if let Err(e) = regex_lite::Regex::new(pattern) {
                    return error(&rule.name, format!("match.regex {pattern:?}: {e}"));
                }
            }
            if rule.when.attribute.is_some() != rule.when.equals.is_some() {
                return error(
                    &rule.name,
                    "match.attribute and match.equals go together".into(),
                );
            }
            if rule.when.sk_prefix.is_some() && keys.len() < 2 {
                return error(&rule.name, "match.sk_prefix needs a sort key".into());
            }
            let mut columns = std::collections::HashSet::new();
            for column in &rule.columns {
                let col = |reason: String| {
                    error(&rule.name, format!("column {:?}: {reason}", column.name))
                };
                if !is_valid_column_name(&column.name) {
                    return col("not a usable column name (1 to 63 bytes)".into());
                }
                if !columns.insert(column.name.as_str()) || column.name == rule.rest_column {
                    return col("the name is used twice in the table".into());
                }
                let Some(pg_type) = parse_type(&column.type_name) else {
                    return col(format!(
                        "type {:?} is not one of text, int2, int4, int8, numeric, numeric(p,s), \
                         float8, boolean, bytea, jsonb, timestamptz, text[], numeric[], bytea[]",
                        column.type_name
                    ));
                };
                let sources = [
                    column.from.is_some(),
                    column.path.is_some(),
                    column.constant.is_some(),
                ]
                .iter()
                .filter(|s| **s)
                .count();
                if sources != 1 {
                    return col("give exactly one of from, path or constant".into());
                }
                if column
                    .path
                    .as_ref()
                    .is_some_and(|p| p.is_empty() || p.iter().any(String::is_empty))
                    || column
                        .from
                        .as_ref()
                        .is_some_and(|f| f.split('.').any(str::is_empty))
                {
                    return col("the path has an empty segment".into());
                }
                if let Some(pattern) = &column.regex {
                    match regex_lite::Regex::new(pattern) {
                        Ok(re) if re.captures_len() >= 2 => {}
                        Ok(_) => return col(format!("regex {pattern:?} has no capture group")),
                        Err(e) => return col(format!("regex {pattern:?}: {e}")),
                    }
                }
                if column.time.is_some() && pg_type != PgType::Timestamptz {
                    return col("time applies to timestamptz columns only".into());
                }
                if !column.transform.is_empty() && pg_type != PgType::Text {
                    return col("transforms apply to text columns only".into());
                }
                if column.allowed.is_some() && pg_type != PgType::Text {
                    return col("allowed applies to text columns only".into());
                }
                let integer = matches!(pg_type, PgType::Int2 | PgType::Int4 | PgType::Int8);
                if (column.min.is_some() || column.max.is_some()) && !integer {
                    return col("min and max apply to int2, int4 and int8 columns only".into());
                }
                if let (Some(min), Some(max)) = (column.min, column.max) {
                    if min > max {
                        return col(format!("min {min} is above max {max}"));
                    }
                }
            }
            if !is_valid_column_name(&rule.rest_column) {
                return error(
                    &rule.name,
                    format!("rest_column {:?} is not usable", rule.rest_column),
                );
            }
            for key in keys {
                let kept = rule.columns.iter().any(|c| {
                    c.regex.is_none()
                        && c.whole_attribute().as_deref() == Some(key.as_str())
                        && matches!(c.pg_type(), PgType::Text | PgType::Numeric | PgType::Bytea)
                });
                if !kept {
                    return error(
                        &rule.name,
                        format!(
                            "key attribute {key:?} must be kept whole in a text, numeric or bytea \
                             column without regex (the row's source identity, design.md §3)"
                        ),
                    );
                }
            }
            if rule.drop.iter().any(|d| keys.contains(d)) {
                return error(&rule.name, "a key attribute cannot be dropped".into());
            }
        }
        // Two rules writing one table must agree on its columns.
        for (i, a) in self.rules.iter().enumerate() {
            for b in &self.rules[i + 1..] {
                if a.table == b.table
                    && (a.rest_column != b.rest_column
                        || a.columns
                            .iter()
                            .map(|c| (&c.name, c.pg_type()))
                            .collect::<Vec<_>>()
                            != b.columns
                                .iter()
                                .map(|c| (&c.name, c.pg_type()))
                                .collect::<Vec<_>>())
                {
                    return error(
                        &b.name,
                        format!(
                            "table {:?} is also written by rule {:?} with other columns",
                            b.table, a.name
                        ),
                    );
                }
            }
        }
        Ok(())
    }

    /// The distinct target tables, in rule order (the catch-all last).
    pub fn tables(&self, keys: &[String]) -> Vec<TableSchema> {
        let mut tables: Vec<TableSchema> = Vec::new();
        for rule in &self.rules {
            if tables.iter().any(|t| t.table == rule.table) {
                continue;
            }
            let columns = rule
                .columns
                .iter()
                .map(|c| ColumnSpec {
                    name: c.name.clone(),
                    ddb_type: DdbType::S,
                    pg_type: c.pg_type(),
                    is_key: c.regex.is_none()
                        && c.whole_attribute().is_some_and(|a| keys.contains(&a)),
                })
                .collect();
            tables.push(TableSchema {
                table: rule.table.clone(),
                columns,
                overflow_column: rule.rest_column.clone(),
                nested_json: NestedJson::Plain,
                on_type_mismatch: OnTypeMismatch::Reject,
                numeric_limit: Default::default(),
                routing: None,
                provenance: true,
            });
        }
        if let (Unmatched::Table, Some(table)) = (self.unmatched, &self.catch_all_table) {
            if !tables.iter().any(|t| &t.table == table) {
                tables.push(TableSchema {
                    table: table.clone(),
                    columns: keys
                        .iter()
                        .map(|k| ColumnSpec {
                            name: k.clone(),
                            ddb_type: DdbType::S,
                            pg_type: PgType::Text,
                            is_key: true,
                        })
                        .collect(),
                    overflow_column: "attrs".into(),
                    nested_json: NestedJson::Plain,
                    on_type_mismatch: OnTypeMismatch::Reject,
                    numeric_limit: Default::default(),
                    routing: None,
                    provenance: true,
                });
            }
        }
        tables
    }
}

/// The constraint over a routed table's key columns (the rows' source identity).
pub const ROUTED_KEY: &str = "UNIQUE";

/// `CREATE TABLE IF NOT EXISTS` for a routed table: its columns, the rest column, and a UNIQUE
/// constraint over the key columns.
pub fn routed_table_sql(table: &TableSchema) -> String {
    table.create_table_sql_keyed_by(ROUTED_KEY)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> Routing {
        Routing::from_toml(toml).unwrap()
    }

    const USERS: &str = r#"
[routing]
[[routing.rules]]
name = "users"
table = "users"
match = { pk_prefix = "USER#", sk_prefix = "PROFILE" }
columns = [
  { name = "dynamo_pk", from = "PK", type = "text" },
  { name = "dynamo_sk", from = "SK", type = "text" },
  { name = "id", from = "PK", type = "int8", regex = '^USER#(\d+)$' },
  { name = "total", from = "total", type = "numeric(12,2)" },
]
"#;

    fn keys() -> Vec<String> {
        vec!["PK".into(), "SK".into()]
    }

    #[test]
    fn parses_types() {
        assert_eq!(parse_type("INT8"), Some(PgType::Int8));
        assert_eq!(
            parse_type("numeric(12, 2)"),
            Some(PgType::NumericScaled {
                precision: 12,
                scale: 2
            })
        );
        assert_eq!(parse_type("numeric(2,3)"), None);
        assert_eq!(parse_type("vector"), None);
        assert_eq!(parse_type("text[]"), Some(PgType::TextArray));
    }

    #[test]
    fn valid_rules_give_tables_with_unique_keys() {
        let routing = parse(USERS);
        routing.validate(&keys()).unwrap();
        let tables = routing.tables(&keys());
        assert_eq!(tables.len(), 1);
        let keys: Vec<&str> = tables[0].key_columns().map(|c| c.name.as_str()).collect();
        assert_eq!(keys, ["dynamo_pk", "dynamo_sk"]);
        assert_eq!(
            routed_table_sql(&tables[0]),
            "CREATE TABLE IF NOT EXISTS \"users\" (\"dynamo_pk\" TEXT NOT NULL, \"dynamo_sk\" TEXT NOT NULL, \
             \"id\" INT8, \"total\" NUMERIC(12,2), \"attrs\" JSONB, \"_ferry_chunk\" BIGINT, \
             UNIQUE (\"dynamo_pk\", \"dynamo_sk\"))"
        );
    }

    #[test]
    fn errors_name_the_rule_and_the_key() {
        let without_sk = USERS.replace(
            "  { name = \"dynamo_sk\", from = \"SK\", type = \"text\" },\n",
            "",
        );
        let err = parse(&without_sk)
            .validate(&keys())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("routing rule \"users\": key attribute \"SK\" must be kept"),
            "{err}"
        );
        let bad_type = USERS.replace("numeric(12,2)", "money");
        let err = parse(&bad_type).validate(&keys()).unwrap_err().to_string();
        assert!(err.contains("column \"total\": type \"money\""), "{err}");
        let bad_regex = USERS.replace(r"^USER#(\d+)$", r"^USER#\d+$");
        let err = parse(&bad_regex).validate(&keys()).unwrap_err().to_string();
        assert!(err.contains("has no capture group"), "{err}");
        let two_sources = USERS.replace(
            "{ name = \"total\", from = \"total\"",
            "{ name = \"total\", constant = \"1\", from = \"total\"",
        );
        let err = parse(&two_sources)
            .validate(&keys())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("exactly one of from, path or constant"),
            "{err}"
        );
    }

    #[test]
    fn a_catch_all_table_cannot_be_a_rules_table() {
        let mut routing = parse(USERS);
        routing.unmatched = Unmatched::Table;
        routing.catch_all_table = Some("users".into());
        let err = routing.validate(&keys()).unwrap_err().to_string();
        assert!(
            err.contains("catch_all_table \"users\" is also the table of rule \"users\""),
            "{err}"
        );
    }

    #[test]
    fn paths_split_on_dots_unless_listed() {
        let column = Column {
            name: "c".into(),
            from: Some("profile.address.city".into()),
            path: None,
            constant: None,
            type_name: "text".into(),
            regex: None,
            time: None,
            transform: vec![],
            required: false,
            allowed: None,
            min: None,
            max: None,
        };
        assert_eq!(column.source_path(), ["profile", "address", "city"]);
        assert_eq!(column.whole_attribute(), None);
        let dotted = Column {
            from: None,
            path: Some(vec!["a.b".into()]),
            ..column
        };
        assert_eq!(dotted.whole_attribute().as_deref(), Some("a.b"));
    }
}
