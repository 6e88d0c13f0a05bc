//! Schema inference: one pass over a sample of items, done once by the coordinator.
//!
//! The key attributes become the primary key, typed as declared (`pk:S`) or as sampled. Every other
//! attribute becomes a typed column when the sample shows it with one type (NULLs aside) in at least
//! `min_presence` of the items, and its name can be a column (1–63 bytes, not the overflow column,
//! not `_ferry…`, and one the target reads back: no dot on HeliosDB, see
//! [`ColumnNames::NoDot`]). Everything else goes to the JSONB overflow column. No attribute is
//! dropped. A key attribute must be a column: one whose name cannot be is refused, with the reason.
//! The sample is the first items of the first data files, so inference is deterministic.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use ferry_shared::config::{KeyAttribute, MappingSettings};
use ferry_shared::ident::{is_valid_column_name, ColumnNames};
use ferry_shared::manifest::ExportListing;
use ferry_shared::schema::{ColumnSpec, DdbType, NumericLimit, PgType, TableSchema};
use ferry_shared::store::ObjectStore;
use ferry_worker::decode::parse_item_fast;
use ferry_worker::item::AttrValue;
use ferry_worker::number::ParsedNumber;
use ferry_worker::source::{sample_lines, MAX_SAMPLE_BYTES};

use crate::{CoordinatorError, Result};

/// Data files read for the sample, at most.
const MAX_SAMPLED_FILES: usize = 64;

/// What the sample showed of one attribute.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttributeStats {
    /// Items holding the attribute (NULL included).
    pub present: u64,
    /// Items by type.
    pub types: BTreeMap<DdbType, u64>,
    /// Number values (N, or NS with an element) that a 96-bit decimal cannot hold exactly.
    pub beyond_decimal96: u64,
    /// The most digits after the point (trailing zeros aside) of a sampled N value.
    pub max_scale: usize,
    /// The most digits before the point of a sampled N value.
    pub max_integer_digits: usize,
}

impl AttributeStats {
    /// The `decimal128(38, s)` every sampled N value fits exactly, if one does.
    pub fn decimal128_scale(&self) -> Option<u8> {
        (self.max_integer_digits + self.max_scale <= 38).then_some(self.max_scale as u8)
    }
}

/// The sample's statistics.
#[derive(Clone, Debug, Default)]
pub struct SampleStats {
    /// Items parsed.
    pub items: u64,
    /// Lines that did not parse (they will be rejects at load time).
    pub bad_lines: u64,
    /// Per attribute.
    pub attributes: HashMap<String, AttributeStats>,
    /// Per item: its scalar (S, N, B) attributes, each value as a hash, to tell whether a key
    /// is unique in the sample and which would be.
    pub keyable: Vec<Vec<(String, u64)>>,
}

impl SampleStats {
    /// Adds one line.
    pub fn add_line(&mut self, line: &[u8]) {
        // DynamoDB JSON or Ion, as the loader reads them.
        let mut ion_json = String::new();
        let Ok(attributes) = parse_item_fast(line, &mut ion_json) else {
            self.bad_lines += 1;
            return;
        };
        self.items += 1;
        let hash = |text: &str| {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            text.hash(&mut hasher);
            hasher.finish()
        };
        let mut keyable: Vec<(String, u64)> = attributes
            .iter()
            .filter_map(|(name, value)| match value {
                AttrValue::S(v) | AttrValue::B(v) => Some((name.to_string(), hash(v))),
                // Numbers compare by value: 1.0 and 1 are one key.
                AttrValue::N(v) => {
                    let plain = ferry_worker::number::canonical_number(v)
                        .map(|c| c.into_owned())
                        .unwrap_or_else(|_| v.to_string());
                    let value = match plain.contains('.') {
                        true => plain.trim_end_matches('0').trim_end_matches('.'),
                        false => plain.as_str(),
                    };
                    Some((name.to_string(), hash(value)))
                }
                _ => None,
            })
            .collect();
        keyable.sort();
        self.keyable.push(keyable);
        for (name, value) in &attributes {
            let stats = self.attributes.entry(name.to_string()).or_default();
            stats.present += 1;
            *stats.types.entry(value.ddb_type()).or_default() += 1;
            let fits = |n: &str| {
                ParsedNumber::parse(n)
                    .map(|p| p.fits_decimal96())
                    .unwrap_or(true)
            };
            let beyond = match value {
                AttrValue::N(n) => !fits(n),
                AttrValue::Ns(items) => !items.iter().all(|n| fits(n)),
                _ => false,
            };
            stats.beyond_decimal96 += u64::from(beyond);
            if let AttrValue::N(n) = value {
                if let Ok(plain) = ferry_worker::number::canonical_number(n) {
                    let body = plain.trim_start_matches('-');
                    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
                    stats.max_scale = stats.max_scale.max(frac.trim_end_matches('0').len());
                    stats.max_integer_digits = stats
                        .max_integer_digits
                        .max(int.trim_start_matches('0').len());
                }
            }
        }
    }
}

/// Reads the sample from the export's first data files.
pub async fn sample_export(
    store: Arc<dyn ObjectStore>,
    listing: &ExportListing,
    sample_items: usize,
) -> Result<SampleStats> {
    let files: Vec<_> = listing
        .files
        .iter()
        .filter(|f| f.size > 0 && f.item_count != Some(0))
        .take(MAX_SAMPLED_FILES)
        .cloned()
        .collect();
    let mut stats = SampleStats::default();
    if files.is_empty() {
        return Ok(stats);
    }
    let per_file = sample_items.div_ceil(files.len()).max(1);
    for file in files {
        let stream = store.open(&file.key).await?;
        let raw = ferry_worker::source::blocking_reader(stream);
        let location = store.location(&file.key);
        let lines = match tokio::task::spawn_blocking(move || {
            sample_lines(raw, &location, per_file, MAX_SAMPLE_BYTES)
        })
        .await
        .map_err(|e| CoordinatorError::Invalid(format!("sampling task died: {e}")))?
        {
            Ok(lines) => lines,
            // The shard will fail with the same message when it is loaded; the sample goes on.
            Err(e) => {
                tracing::warn!(error = %e, "data file left out of the schema sample");
                continue;
            }
        };
        for line in &lines {
            stats.add_line(line);
        }
    }
    Ok(stats)
}

/// A Parquet run's schema: every non-key N column whose sampled values all fit one
/// `decimal128(38, s)` becomes `numeric(38, s)` (written as decimal128; a later value that does not
/// fit spills to the overflow column); the others stay exact decimal text.
pub fn parquet_schema(mut schema: TableSchema, stats: &SampleStats) -> TableSchema {
    for column in &mut schema.columns {
        if column.is_key || column.ddb_type != DdbType::N || column.pg_type != PgType::Numeric {
            continue;
        }
        if let Some(scale) = stats
            .attributes
            .get(&column.name)
            .and_then(AttributeStats::decimal128_scale)
        {
            column.pg_type = PgType::NumericScaled {
                precision: 38,
                scale,
            };
        }
    }
    schema
}

/// When the key attributes repeat in the sample, what to say before anything loads: how often,
/// and a key that is unique in the sample (the given key plus one attribute every sampled item
/// has), if there is one. `None` when the key is unique in the sample.
pub fn key_problem(stats: &SampleStats, keys: &[KeyAttribute]) -> Option<String> {
    use std::collections::HashSet;
    if keys.is_empty() {
        return None;
    }
    let value_of = |item: &Vec<(String, u64)>, name: &str| {
        item.binary_search_by(|(n, _)| n.as_str().cmp(name))
            .ok()
            .map(|at| item[at].1)
    };
    let tuples = |names: &[&str]| -> Vec<Vec<u64>> {
        stats
            .keyable
            .iter()
            .filter_map(|item| names.iter().map(|n| value_of(item, n)).collect())
            .collect()
    };
    let repeats = |names: &[&str]| {
        let all = tuples(names);
        let distinct: HashSet<&Vec<u64>> = all.iter().collect();
        (all.len() - distinct.len(), all.len())
    };
    let names: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
    let (repeated, sampled) = repeats(&names);
    if repeated == 0 {
        return None;
    }
    let given = names.join(",");
    // Candidates: attributes every sampled item holds as a scalar, sort-key names first.
    let mut candidates: Vec<&str> = stats
        .attributes
        .iter()
        .filter(|(name, a)| {
            !names.contains(&name.as_str())
                && a.present == stats.items
                && a.types.keys().all(|t| t.is_key_type())
        })
        .map(|(name, _)| name.as_str())
        .collect();
    let sort_key_like = |name: &str| {
        let lower = name.to_ascii_lowercase();
        !(lower == "sk" || lower.contains("sort") || lower.contains("range"))
    };
    candidates.sort_by_key(|name| (sort_key_like(name), name.to_string()));
    let unique = candidates.into_iter().find(|extra| {
        let mut with = names.clone();
        with.push(extra);
        repeats(&with).0 == 0
    });
    let advice = match unique {
        Some(extra) => format!(
            "{given},{extra} is unique in the sample: is the table's key {given},{extra}? Pass --key {given},{extra}"
        ),
        None => "no attribute added to it makes it unique in the sample: check the table's key \
                 attributes (DescribeTable's KeySchema)"
            .to_string(),
    };
    Some(format!(
        "the key ({given}) is not unique: {repeated} of {sampled} sampled items repeat another's \
         {given}, so every shard would fail on duplicate keys; {advice}"
    ))
}

/// Builds the table schema from the sample and the mapping settings.
pub fn infer_schema(
    table: &str,
    keys: &[KeyAttribute],
    mapping: &MappingSettings,
    stats: &SampleStats,
    numeric_limit: NumericLimit,
    column_names: ColumnNames,
) -> Result<TableSchema> {
    // On a target with a limited NUMERIC, a number attribute is a NUMERIC column only when every
    // sampled value fits exactly; a numeric key that does not fit is kept as exact TEXT.
    let limited = |name: &str| {
        numeric_limit == NumericLimit::Decimal96
            && stats
                .attributes
                .get(name)
                .is_some_and(|a| a.beyond_decimal96 > 0)
    };
    if keys.is_empty() {
        return Err(CoordinatorError::Invalid(
            "no key attributes: say which attributes form the primary key with --key pk[,sk] (or mapping.key)".into(),
        ));
    }
    let mut columns = Vec::new();
    for key in keys {
        if let Some(why) = column_names.refusal(&key.name) {
            return Err(CoordinatorError::Invalid(format!(
                "key attribute {:?} cannot be a column on this target: {why}",
                key.name
            )));
        }
        if !is_valid_column_name(&key.name) || key.name == mapping.overflow_column {
            return Err(CoordinatorError::Invalid(format!(
                "key attribute {:?} cannot be a column name",
                key.name
            )));
        }
        let sampled: Vec<DdbType> = stats
            .attributes
            .get(&key.name)
            .map(|s| {
                s.types
                    .keys()
                    .copied()
                    .filter(|t| *t != DdbType::Null)
                    .collect()
            })
            .unwrap_or_default();
        let ddb_type =
            match (key.ddb_type, sampled.as_slice()) {
                (Some(declared), _) => declared,
                (None, []) => DdbType::S,
                (None, [one]) if one.is_key_type() => *one,
                (None, found) => {
                    return Err(CoordinatorError::Invalid(format!(
                    "key attribute {:?} has types {} in the sample; declare its type (--key {}:S)",
                    key.name,
                    found.iter().map(|t| t.descriptor()).collect::<Vec<_>>().join(", "),
                    key.name
                )))
                }
            };
        if !ddb_type.is_key_type() {
            return Err(CoordinatorError::Invalid(format!(
                "key attribute {:?} cannot have type {ddb_type}",
                key.name
            )));
        }
        columns.push(ColumnSpec {
            name: key.name.clone(),
            ddb_type,
            pg_type: if ddb_type == DdbType::N && limited(&key.name) {
                PgType::Text
            } else {
                ddb_type.pg_type().expect("key types map")
            },
            is_key: true,
        });
    }
    let mut names: Vec<&String> = stats.attributes.keys().collect();
    names.sort();
    for name in names {
        if keys.iter().any(|k| &k.name == name)
            || !column_names.allows(name)
            || *name == mapping.overflow_column
            || name.starts_with("_ferry")
        {
            continue;
        }
        let attribute = &stats.attributes[name];
        let typed: Vec<(&DdbType, &u64)> = attribute
            .types
            .iter()
            .filter(|(t, _)| **t != DdbType::Null)
            .collect();
        let [(ddb_type, _)] = typed.as_slice() else {
            continue;
        };
        if (attribute.present as f64) < mapping.min_presence * stats.items as f64 {
            continue;
        }
        if limited(name) {
            continue;
        }
        columns.push(ColumnSpec {
            name: name.clone(),
            ddb_type: **ddb_type,
            pg_type: ddb_type.pg_type().expect("NULL filtered out"),
            is_key: false,
        });
    }
    Ok(TableSchema {
        routing: None,
        provenance: true,
        table: table.to_string(),
        columns,
        overflow_column: mapping.overflow_column.clone(),
        nested_json: mapping.nested_json,
        on_type_mismatch: mapping.on_type_mismatch,
        numeric_limit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_shared::config::Settings;

    fn stats(lines: &[&str]) -> SampleStats {
        let mut stats = SampleStats::default();
        for line in lines {
            stats.add_line(line.as_bytes());
        }
        stats
    }

    #[test]
    fn stable_attributes_become_columns_the_rest_overflow() {
        let mut mapping = Settings::default().mapping;
        mapping.min_presence = 0.5;
        let sample = stats(&[
            r#"{"Item":{"pk":{"S":"a"},"sk":{"N":"1"},"name":{"S":"x"},"score":{"N":"1"},"rare":{"S":"r"},"n":{"NULL":true}}}"#,
            r#"{"Item":{"pk":{"S":"b"},"sk":{"N":"2"},"name":{"S":"y"},"score":{"S":"high"},"n":{"N":"5"},"attrs":{"S":"clash"}}}"#,
            r#"{"Item":{"pk":{"S":"c"},"sk":{"N":"3"},"name":{"NULL":true},"_ferry_x":{"S":"1"}}}"#,
            "not json",
        ]);
        assert_eq!((sample.items, sample.bad_lines), (3, 1));
        let keys = KeyAttribute::parse_list("pk,sk").unwrap();
        let schema = infer_schema(
            "T",
            &keys,
            &mapping,
            &sample,
            NumericLimit::Unlimited,
            ColumnNames::Any,
        )
        .unwrap();
        let columns: Vec<(&str, DdbType, bool)> = schema
            .columns
            .iter()
            .map(|c| (c.name.as_str(), c.ddb_type, c.is_key))
            .collect();
        assert_eq!(
            columns,
            vec![
                ("pk", DdbType::S, true),
                ("sk", DdbType::N, true),
                ("n", DdbType::N, false),
                ("name", DdbType::S, false)
            ]
        );
    }

    #[test]
    fn parquet_decimals_only_where_every_sampled_value_fits() {
        let mapping = Settings::default().mapping;
        let sample = stats(&[
            r#"{"Item":{"pk":{"N":"1"},"price":{"N":"12.50"},"big":{"N":"12345678901234567890123456789012345678"},"tiny":{"N":"0.5"}}}"#,
            r#"{"Item":{"pk":{"N":"2"},"price":{"N":"-3.125"},"big":{"N":"0.1"},"tiny":{"N":"1E-130"}}}"#,
        ]);
        let schema = infer_schema(
            "T",
            &KeyAttribute::parse_list("pk").unwrap(),
            &mapping,
            &sample,
            NumericLimit::Unlimited,
            ColumnNames::Any,
        )
        .unwrap();
        let schema = parquet_schema(schema, &sample);
        let types: Vec<(&str, PgType)> = schema
            .columns
            .iter()
            .map(|c| (c.name.as_str(), c.pg_type))
            .collect();
        assert_eq!(
            types,
            vec![
                ("pk", PgType::Numeric),
                ("big", PgType::Numeric),
                (
                    "price",
                    PgType::NumericScaled {
                        precision: 38,
                        scale: 3
                    }
                ),
                ("tiny", PgType::Numeric),
            ]
        );
    }

    #[test]
    fn a_key_that_repeats_in_the_sample_is_named_with_the_one_that_does_not() {
        let sample = stats(&[
            r#"{"Item":{"pk":{"S":"u1"},"sk":{"S":"a"},"n":{"N":"1"}}}"#,
            r#"{"Item":{"pk":{"S":"u1"},"sk":{"S":"b"},"n":{"N":"1.0"}}}"#,
            r#"{"Item":{"pk":{"S":"u2"},"sk":{"S":"a"},"n":{"N":"10"}}}"#,
        ]);
        let keys = |spec: &str| KeyAttribute::parse_list(spec).unwrap();
        let problem = key_problem(&sample, &keys("pk")).unwrap();
        assert_eq!(
            problem,
            "the key (pk) is not unique: 1 of 3 sampled items repeat another's pk, so every shard \
             would fail on duplicate keys; pk,sk is unique in the sample: is the table's key \
             pk,sk? Pass --key pk,sk"
        );
        assert_eq!(key_problem(&sample, &keys("pk,sk")), None);
        // 1 and 1.0 are one number: pk,n repeats, and sk makes it unique.
        assert!(key_problem(&sample, &keys("pk,n"))
            .unwrap()
            .contains("Pass --key pk,n,sk"));
        assert!(key_problem(&sample, &keys("sk"))
            .unwrap()
            .contains("Pass --key sk,n"));
    }

    #[test]
    fn key_types_are_declared_or_sampled() {
        let mapping = Settings::default().mapping;
        let sample = stats(&[
            r#"{"Item":{"pk":{"N":"1"}}}"#,
            r#"{"Item":{"pk":{"S":"x"}}}"#,
        ]);
        let err = infer_schema(
            "T",
            &KeyAttribute::parse_list("pk").unwrap(),
            &mapping,
            &sample,
            NumericLimit::Unlimited,
            ColumnNames::Any,
        )
        .unwrap_err();
        assert!(err.to_string().contains("declare its type"), "{err}");
        let schema = infer_schema(
            "T",
            &KeyAttribute::parse_list("pk:S").unwrap(),
            &mapping,
            &sample,
            NumericLimit::Unlimited,
            ColumnNames::Any,
        )
        .unwrap();
        assert_eq!(schema.columns[0].ddb_type, DdbType::S);
        let empty = infer_schema(
            "T",
            &KeyAttribute::parse_list("pk").unwrap(),
            &mapping,
            &SampleStats::default(),
            NumericLimit::Unlimited,
            ColumnNames::Any,
        )
        .unwrap();
        assert_eq!(empty.columns.len(), 1);
        assert!(infer_schema(
            "T",
            &[],
            &mapping,
            &sample,
            NumericLimit::Unlimited,
            ColumnNames::Any
        )
        .is_err());
    }

    #[test]
    fn a_dotted_name_stays_in_the_overflow_where_the_target_cannot_read_it_back() {
        let mapping = Settings::default().mapping;
        let sample = stats(&[
            r#"{"Item":{"pk":{"S":"a"},"tax.rate":{"N":"0.2"},"tax rate":{"N":"0.1"}}}"#,
            r#"{"Item":{"pk":{"S":"b"},"tax.rate":{"N":"0.3"},"tax rate":{"N":"0.4"}}}"#,
        ]);
        let keys = KeyAttribute::parse_list("pk").unwrap();
        let names = |limit: ColumnNames| -> Vec<String> {
            infer_schema(
                "T",
                &keys,
                &mapping,
                &sample,
                NumericLimit::Unlimited,
                limit,
            )
            .unwrap()
            .columns
            .into_iter()
            .map(|c| c.name)
            .collect()
        };
        assert_eq!(names(ColumnNames::Any), ["pk", "tax rate", "tax.rate"]);
        assert_eq!(names(ColumnNames::NoDot), ["pk", "tax rate"]);
        // A key must be a column: a dotted one is refused there, saying why.
        let dotted = KeyAttribute::parse_list("tax.rate").unwrap();
        let err = infer_schema(
            "T",
            &dotted,
            &mapping,
            &sample,
            NumericLimit::Unlimited,
            ColumnNames::NoDot,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("\"tax.rate\"") && err.contains("dot"), "{err}");
        assert!(infer_schema(
            "T",
            &dotted,
            &mapping,
            &sample,
            NumericLimit::Unlimited,
            ColumnNames::Any
        )
        .is_ok());
    }
}
