//! The draft a user starts a single-table migration from: a Ferry config with one routing rule
//! per entity ([`super::entities`]) and the DDL Ferry runs for it, one draft per target where the
//! types must differ (HeliosDB's NUMERIC is a 96-bit decimal).
//!
//! Each rule matches its entity's items exactly (`pk_prefix` and a regular expression built from
//! the sort key's pattern); rules are ordered most specific first, and items no rule takes go to a
//! catch-all table, so a run of the draft rejects no item for routing. Columns:
//! - the key attributes whole (`dynamo_<key>`), the rows' source identity;
//! - ids parsed from keys (`id`, `user_id` from `USER#<n>`) and from references, as `int8`, when
//!   every value has at most 18 digits (derived: `export-back` drops them);
//! - a typed column per attribute at least half of the entity's items hold with one type (a set or
//!   binary attribute however rare: only a column keeps its type), typed so that every value seen
//!   fits (`numeric(p,s)` from the numbers' digits; on HeliosDB an attribute
//!   a 96-bit decimal cannot hold stays in the rest column); names with a dot or non-ASCII
//!   characters stay in the rest column;
//! - everything else in the rest column `extra` (JSONB).
//!
//! Text stays text (no `timestamptz`): `export-back` gives a timestamp back in its own spelling,
//! not the item's. The draft is only as good as what was read: after a sample, a later value may
//! not fit (the header says so); after `--full`, every value read fits.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use ferry_shared::schema::routing::{routed_table_sql, Routing};
use ferry_shared::schema::DdbType;
use serde::Serialize;

use super::entities::{Entity, ForeignKey};
use super::profile::{Profile, Shape};

/// Share of an entity's items an attribute must be in to get a column.
const COLUMN_PRESENCE: f64 = 0.5;
/// Digits of the largest id `int8` holds in every case.
const INT8_DIGITS: usize = 18;
/// Digits HeliosDB's 96-bit decimal holds in every case.
const DECIMAL96_DIGITS: usize = 28;
/// PostgreSQL's NUMERIC precision limit in a type modifier.
const NUMERIC_PRECISION: usize = 1000;
/// The catch-all table of the draft.
pub const CATCH_ALL: &str = "unrouted_items";

/// The targets a draft is written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DraftTarget {
    /// PostgreSQL: arbitrary-precision NUMERIC.
    Postgres,
    /// HeliosDB: NUMERIC is a 96-bit decimal.
    Heliosdb,
}

/// One draft.
#[derive(Clone, Debug, Serialize)]
pub struct Draft {
    /// For which target.
    pub target: DraftTarget,
    /// The config file (TOML).
    pub config: String,
    /// The tables Ferry creates for it.
    pub ddl: String,
    /// What the draft could not keep exact, and why.
    pub notes: Vec<String>,
    /// Its tables (one per routing rule), as the config declares them.
    pub tables: Vec<DraftTable>,
}

/// One table of a draft.
#[derive(Clone, Debug, Serialize)]
pub struct DraftTable {
    /// The table.
    pub name: String,
    /// The entities its rule routes there.
    pub entities: Vec<String>,
    /// Items those entities had.
    pub items: u64,
    /// Its columns, the rest column aside.
    pub columns: Vec<DraftTableColumn>,
}

/// One column of a draft table.
#[derive(Clone, Debug, Serialize)]
pub struct DraftTableColumn {
    /// The column.
    pub name: String,
    /// Its SQL type.
    #[serde(rename = "type")]
    pub type_name: String,
    /// The attribute it comes from (and how, for an id parsed from a key).
    pub from: String,
}

/// A lower-case SQL name from `text`: letters, digits and `_`, starting with a letter.
fn sql_name(text: &str) -> String {
    let mut name: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        name.insert_str(0, "a_");
    }
    name.truncate(63);
    name
}

/// The literal text before a pattern's first variable part.
fn literal_prefix(pattern: &str) -> &str {
    let end = pattern.find(['<', '…']).unwrap_or(pattern.len());
    &pattern[..end]
}

/// A regular expression matching exactly the values of `pattern`; with `capture`, the one
/// `<n>` is a capture group. `None` for a cut pattern.
fn pattern_regex(pattern: &str, capture: bool) -> Option<String> {
    if pattern.ends_with('…') {
        return None;
    }
    let mut out = String::from("^");
    let mut rest = pattern;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("<n>") {
            out.push_str(if capture { r"(\d+)" } else { r"\d+" });
            rest = after;
        } else if let Some(after) = rest.strip_prefix("<id>") {
            out.push_str("[0-9A-Fa-f-]+");
            rest = after;
        } else {
            let c = rest.chars().next().expect("not empty");
            if c.is_ascii_alphanumeric() || c == '_' || c == '#' || c == ' ' {
                out.push(c);
            } else {
                out.push('\\');
                out.push(c);
            }
            rest = &rest[c.len_utf8()..];
        }
    }
    out.push('$');
    Some(out)
}

/// The id column parsed from values of `pattern`: `USER#<n>` gives `user_id`.
fn id_name(pattern: &str) -> String {
    let word = literal_prefix(pattern).trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    format!(
        "{}_id",
        sql_name(if word.is_empty() { "ref" } else { word })
    )
}

/// A TOML basic string.
fn toml_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One column of a rule, as written in the config.
struct DraftColumn {
    name: String,
    from: String,
    type_name: String,
    regex: Option<String>,
}

impl DraftColumn {
    fn toml(&self) -> String {
        let mut out = format!(
            "{{ name = {}, from = {}, type = {}",
            toml_string(&self.name),
            toml_string(&self.from),
            toml_string(&self.type_name)
        );
        if let Some(regex) = &self.regex {
            let _ = write!(out, ", regex = {}", toml_string(regex));
        }
        out.push_str(" }");
        out
    }
}

/// The column type every value of `shape` fits on `target`, if one does.
fn column_type(shape: &Shape, target: DraftTarget) -> Option<String> {
    if shape.types.len() != 1 {
        return None;
    }
    let numeric = || -> Option<String> {
        let precision = (shape.max_integer_digits + shape.max_scale).max(1);
        let fits = match target {
            DraftTarget::Postgres => precision <= NUMERIC_PRECISION,
            DraftTarget::Heliosdb => shape.beyond_decimal96 == 0 && precision <= DECIMAL96_DIGITS,
        };
        fits.then(|| format!("numeric({precision},{})", shape.max_scale))
    };
    match shape.types.keys().next()? {
        DdbType::S => Some("text".into()),
        DdbType::N => numeric(),
        DdbType::B => Some("bytea".into()),
        DdbType::Bool => Some("boolean".into()),
        DdbType::M | DdbType::L => Some("jsonb".into()),
        DdbType::Ss => Some("text[]".into()),
        DdbType::Ns => numeric().map(|_| "numeric[]".into()),
        DdbType::Bs => Some("bytea[]".into()),
        DdbType::Null => None,
    }
}

/// The rule for entities that share one match (most often one entity).
struct DraftRule {
    name: String,
    pk_prefix: Option<String>,
    regex: Option<String>,
    regex_attribute: Option<String>,
    entities: Vec<String>,
    items: u64,
    patterns: Vec<Vec<String>>,
    attributes: BTreeMap<String, Shape>,
    key_digits: Vec<usize>,
}

/// The drafts for PostgreSQL and HeliosDB.
pub fn drafts(
    profile: &Profile,
    entities: &[Entity],
    references: &[ForeignKey],
    keys: &[String],
    mode: &str,
) -> Vec<Draft> {
    [DraftTarget::Postgres, DraftTarget::Heliosdb]
        .into_iter()
        .map(|target| draft(profile, entities, references, keys, mode, target))
        .collect()
}

fn draft(
    profile: &Profile,
    entities: &[Entity],
    references: &[ForeignKey],
    keys: &[String],
    mode: &str,
    target: DraftTarget,
) -> Draft {
    let mut notes = Vec::new();
    // One rule per distinct match; entities sharing one are merged.
    let mut rules: Vec<DraftRule> = Vec::new();
    for entity in entities {
        if entity.key_patterns.iter().any(|p| p == "<other>") {
            continue;
        }
        let Some(group) = profile.groups.get(&entity.key_patterns) else {
            continue;
        };
        let pk = &entity.key_patterns[0];
        let prefix = literal_prefix(pk);
        let (regex, regex_attribute) = match (keys.len(), entity.key_patterns.get(1)) {
            (2, Some(sk)) => (pattern_regex(sk, false), None),
            _ => (pattern_regex(pk, false), Some(keys[0].clone())),
        };
        let pk_prefix = (!prefix.is_empty()).then(|| prefix.to_string());
        match rules
            .iter_mut()
            .find(|r| r.pk_prefix == pk_prefix && r.regex == regex)
        {
            Some(rule) => {
                rule.entities.push(entity.name.clone());
                rule.items += entity.items;
                rule.patterns.push(entity.key_patterns.clone());
                for (name, shape) in &group.attributes {
                    rule.attributes
                        .entry(name.clone())
                        .or_default()
                        .merge(shape);
                }
            }
            None => rules.push(DraftRule {
                name: sql_name(&entity.name),
                pk_prefix,
                regex,
                regex_attribute,
                entities: vec![entity.name.clone()],
                items: entity.items,
                patterns: vec![entity.key_patterns.clone()],
                attributes: group
                    .attributes
                    .iter()
                    .map(|(name, shape)| (name.clone(), shape.clone()))
                    .collect(),
                key_digits: group.key_digits.clone(),
            }),
        }
    }
    // Most specific first: a longer literal prefix, then an exact pattern.
    rules.sort_by(|a, b| {
        let len = |r: &DraftRule| r.pk_prefix.as_ref().map_or(0, String::len);
        len(b)
            .cmp(&len(a))
            .then_with(|| b.regex.is_some().cmp(&a.regex.is_some()))
            .then_with(|| b.items.cmp(&a.items))
    });
    let mut config = String::new();
    let _ = writeln!(
        config,
        "# Drafted by `ferry-coordinator assess` ({mode}) for {}: {} rules from the entities found in {} items.",
        match target {
            DraftTarget::Postgres => "PostgreSQL",
            DraftTarget::Heliosdb => "HeliosDB",
        },
        rules.len(),
        profile.items
    );
    if mode == "sample" {
        config.push_str(
            "# From a sample: a value not seen may not fit its column (assess --full checks every item).\n",
        );
    }
    config.push_str("# Review the names and types; ids parsed from keys are derived columns.\n");
    config.push_str("version = 1\n\n[mapping]\n");
    let _ = writeln!(
        config,
        "key = [{}]",
        keys.iter()
            .map(|k| toml_string(k))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        config,
        "\n[routing]\nunmatched = \"table\"\ncatch_all_table = {}",
        toml_string(CATCH_ALL)
    );
    let mut table_names = BTreeSet::new();
    let mut tables = Vec::new();
    for rule in &rules {
        let mut table = rule.name.clone();
        let mut n = 1;
        while !table_names.insert(table.clone()) || table == CATCH_ALL {
            n += 1;
            table = format!("{}_{n}", rule.name);
        }
        let mut columns: Vec<DraftColumn> = Vec::new();
        let mut taken: BTreeSet<String> = BTreeSet::new();
        for key in keys {
            let name = format!("dynamo_{}", sql_name(key));
            let type_name = match profile
                .attributes
                .get(key)
                .and_then(|a| a.types.keys().next().copied())
            {
                Some(DdbType::N) => "numeric",
                Some(DdbType::B) => "bytea",
                _ => "text",
            };
            taken.insert(name.clone());
            columns.push(DraftColumn {
                name,
                from: key.clone(),
                type_name: type_name.into(),
                regex: None,
            });
        }
        // Ids from keys, for an entity of its own pattern.
        if rule.patterns.len() == 1 {
            let patterns = &rule.patterns[0];
            let varying_sk = patterns
                .get(1)
                .is_some_and(|sk| sk.contains("<n>") || sk.contains("<id>"));
            for (index, (key, pattern)) in keys.iter().zip(patterns).enumerate() {
                if pattern.matches("<n>").count() != 1
                    || pattern.contains("<id>")
                    || rule.key_digits.get(index).is_none_or(|d| *d > INT8_DIGITS)
                {
                    continue;
                }
                let own = index == keys.len() - 1 || (index == 0 && !varying_sk);
                let name = if own {
                    "id".to_string()
                } else {
                    id_name(pattern)
                };
                if taken.insert(name.clone()) {
                    columns.push(DraftColumn {
                        name,
                        from: key.clone(),
                        type_name: "int8".into(),
                        regex: pattern_regex(pattern, true),
                    });
                }
            }
        }
        // Ids from references (every value follows the pattern).
        for reference in references {
            if !rule
                .entities
                .iter()
                .any(|e| reference.in_entities.contains(e))
                || reference.share < 1.0
                || reference.pattern.matches("<n>").count() != 1
                || reference.pattern.contains("<id>")
            {
                continue;
            }
            let longest = profile
                .attributes
                .get(&reference.attribute)
                .and_then(|a| a.string_chars)
                .map_or(usize::MAX, |r| r.max as usize);
            let literal = reference.pattern.replace("<n>", "").chars().count();
            if longest.saturating_sub(literal) > INT8_DIGITS {
                continue;
            }
            let name = id_name(&reference.pattern);
            if taken.insert(name.clone()) {
                columns.push(DraftColumn {
                    name,
                    from: reference.attribute.clone(),
                    type_name: "int8".into(),
                    regex: pattern_regex(&reference.pattern, true),
                });
            }
        }
        // A typed column per common attribute with one type.
        let mut attributes: Vec<(&String, &Shape)> = rule.attributes.iter().collect();
        attributes.sort_by(|a, b| b.1.items.cmp(&a.1.items).then_with(|| a.0.cmp(b.0)));
        for (attribute, shape) in attributes {
            // A set or binary value keeps its type only in a column of its own: the rest column's
            // plain JSON gives it back as a list or a string. So those get a column however rare.
            let typed_only_in_a_column = shape.types.len() == 1
                && shape
                    .types
                    .keys()
                    .all(|t| matches!(t, DdbType::B | DdbType::Ss | DdbType::Ns | DdbType::Bs));
            if (shape.items as f64) < COLUMN_PRESENCE * rule.items as f64 && !typed_only_in_a_column
            {
                continue;
            }
            if !attribute.is_ascii() || attribute.contains('.') {
                notes.push(format!(
                    "{table}: attribute {attribute:?} stays in the rest column (a dot or non-ASCII name)"
                ));
                continue;
            }
            let Some(type_name) = column_type(shape, target) else {
                if shape.types.len() > 1 {
                    notes.push(format!(
                        "{table}: attribute {attribute:?} takes {} types: it stays in the rest column",
                        shape.types.len()
                    ));
                } else if shape.types.contains_key(&DdbType::N) {
                    notes.push(format!(
                        "{table}: attribute {attribute:?} holds numbers this target's NUMERIC cannot hold exactly: it stays in the rest column as exact JSON text"
                    ));
                } else if shape.types.contains_key(&DdbType::Ns) {
                    notes.push(format!(
                        "{table}: attribute {attribute:?} holds number sets this target's NUMERIC cannot hold exactly: it stays in the rest column, where plain JSON gives a set back as a list (issue 28's sidecar)"
                    ));
                }
                continue;
            };
            if shape.nested_typed {
                notes.push(format!(
                    "{table}: attribute {attribute:?} holds sets or binary inside maps or lists: plain JSON gives them back as lists and strings (issue 28's sidecar)"
                ));
            }
            let mut name = sql_name(attribute);
            while taken.contains(&name) || name == "extra" {
                name.push('_');
            }
            taken.insert(name.clone());
            columns.push(DraftColumn {
                name,
                from: attribute.clone(),
                type_name,
                regex: None,
            });
        }
        let _ = writeln!(
            config,
            "\n# {} ({} items): {}",
            rule.entities.join(", "),
            rule.items,
            rule.patterns
                .iter()
                .map(|p| p.join(" / "))
                .collect::<Vec<_>>()
                .join("; ")
        );
        let _ = writeln!(config, "[[routing.rules]]");
        let _ = writeln!(config, "name = {}", toml_string(&table));
        let _ = writeln!(config, "table = {}", toml_string(&table));
        let mut conditions = Vec::new();
        if let Some(prefix) = &rule.pk_prefix {
            conditions.push(format!("pk_prefix = {}", toml_string(prefix)));
        }
        if let Some(regex) = &rule.regex {
            conditions.push(format!("regex = {}", toml_string(regex)));
        }
        if let Some(attribute) = &rule.regex_attribute {
            conditions.push(format!("regex_attribute = {}", toml_string(attribute)));
        }
        let _ = writeln!(config, "match = {{ {} }}", conditions.join(", "));
        let _ = writeln!(config, "rest_column = \"extra\"");
        let _ = writeln!(config, "columns = [");
        for column in &columns {
            let _ = writeln!(config, "  {},", column.toml());
        }
        let _ = writeln!(config, "]");
        tables.push(DraftTable {
            name: table.clone(),
            entities: rule.entities.clone(),
            items: rule.items,
            columns: columns
                .iter()
                .map(|c| DraftTableColumn {
                    name: c.name.clone(),
                    type_name: c.type_name.clone(),
                    from: match &c.regex {
                        Some(regex) => format!("{} (the digits of {regex})", c.from),
                        None => c.from.clone(),
                    },
                })
                .collect(),
        });
    }
    let ddl = match Routing::from_toml(&config).and_then(|routing| {
        routing.validate(keys)?;
        Ok(routing)
    }) {
        Ok(routing) => routing
            .tables(keys)
            .iter()
            .map(|table| format!("{};\n", routed_table_sql(table)))
            .collect(),
        Err(e) => {
            notes.push(format!("the draft does not validate: {e}"));
            String::new()
        }
    };
    Draft {
        target,
        config,
        ddl,
        notes,
        tables,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_become_exact_regexes() {
        assert_eq!(pattern_regex("ORDER#<n>", false).unwrap(), r"^ORDER#\d+$");
        assert_eq!(pattern_regex("USER#<n>", true).unwrap(), r"^USER#(\d+)$");
        assert_eq!(pattern_regex("PROFILE", false).unwrap(), "^PROFILE$");
        assert_eq!(
            pattern_regex("a.b+<id>", false).unwrap(),
            r"^a\.b\+[0-9A-Fa-f-]+$"
        );
        assert_eq!(pattern_regex("x…", false), None);
        let re =
            regex_lite::Regex::new(&pattern_regex("EMAIL#user<n>@example.com", false).unwrap())
                .unwrap();
        assert!(re.is_match("EMAIL#user12@example.com"));
        assert!(!re.is_match("EMAIL#user12@exampleXcom"));
    }

    #[test]
    fn a_rare_set_gets_a_column_and_a_rare_string_stays_in_the_rest() {
        let keys = vec!["PK".to_string(), "SK".to_string()];
        let mut profile = Profile::default();
        for i in 0..10 {
            let extra = match i {
                0 => r#","tags":{"SS":["a","b"]},"note":{"S":"x"}"#,
                _ => "",
            };
            let line = format!(
                r#"{{"Item":{{"PK":{{"S":"USER#{i}"}},"SK":{{"S":"ORDER#{i}"}},"total":{{"N":"1{i}.5"}}{extra}}}}}"#
            );
            let origin = super::super::profile::Origin {
                file: 0,
                line: i + 1,
            };
            profile.add_line(line.as_bytes(), origin, String::new, &keys);
        }
        let entities = super::super::entities::entities(&profile);
        let drafts = drafts(&profile, &entities, &[], &keys, "full");
        let postgres = &drafts[0];
        assert!(postgres.notes.is_empty(), "{:?}", postgres.notes);
        for column in [
            r#"{ name = "tags", from = "tags", type = "text[]" }"#,
            r#"{ name = "total", from = "total", type = "numeric(3,1)" }"#,
            r#"{ name = "user_id", from = "PK", type = "int8", regex = "^USER#(\\d+)$" }"#,
            r#"{ name = "id", from = "SK", type = "int8", regex = "^ORDER#(\\d+)$" }"#,
        ] {
            assert!(
                postgres.config.contains(column),
                "{column} in:\n{}",
                postgres.config
            );
        }
        assert!(!postgres.config.contains("\"note\""), "{}", postgres.config);
        assert!(postgres.ddl.contains("\"tags\" TEXT[]"), "{}", postgres.ddl);
    }

    #[test]
    fn names_are_sql_names() {
        assert_eq!(sql_name("Order Items"), "order_items");
        assert_eq!(sql_name("1st"), "a_1st");
        assert_eq!(literal_prefix("USER#<n>"), "USER#");
        assert_eq!(literal_prefix("PROFILE"), "PROFILE");
        assert_eq!(id_name("USER#<n>"), "user_id");
        assert_eq!(id_name("<n>"), "ref_id");
    }

    #[test]
    fn types_fit_every_value_seen_on_each_target() {
        let shape = |t: DdbType, digits: usize, scale: usize, beyond: u64| Shape {
            items: 1,
            types: [(t, 1)].into_iter().collect(),
            max_integer_digits: digits,
            max_scale: scale,
            beyond_decimal96: beyond,
            nested_typed: false,
        };
        let n = shape(DdbType::N, 4, 2, 0);
        assert_eq!(
            column_type(&n, DraftTarget::Postgres).unwrap(),
            "numeric(6,2)"
        );
        assert_eq!(
            column_type(&n, DraftTarget::Heliosdb).unwrap(),
            "numeric(6,2)"
        );
        let big = shape(DdbType::N, 30, 8, 3);
        assert_eq!(
            column_type(&big, DraftTarget::Postgres).unwrap(),
            "numeric(38,8)"
        );
        assert_eq!(column_type(&big, DraftTarget::Heliosdb), None);
        assert_eq!(
            column_type(&shape(DdbType::Ss, 0, 0, 0), DraftTarget::Postgres).unwrap(),
            "text[]"
        );
        let mut mixed = shape(DdbType::S, 0, 0, 0);
        mixed.types.insert(DdbType::N, 1);
        assert_eq!(column_type(&mixed, DraftTarget::Postgres), None);
    }
}
