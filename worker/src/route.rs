//! Single-table design on the worker: routing each item of a block to one of several tables, the
//! column maps, casts and filters of its rule, then the column transforms on the resulting Arrow
//! batches (the rules are in [`ferry_shared::schema::routing`], with their precedence).
//!
//! A block (one rayon task, like plain decoding) becomes one Arrow [`RecordBatch`] per target
//! table. Per item: parse, pick the first matching rule, apply its filters (an expired TTL, an
//! attribute value: the item is counted as filtered, never silently dropped), then take every
//! column's value from its attribute, map path, regex capture or constant and cast it to the
//! column type; attributes no column takes whole, and the rule does not drop by name, go into the
//! rule's JSONB rest column. A value that does not cast makes the item a reject whose reason names
//! the rule, the column and the value. Numbers are cast from their exact decimal text; a
//! `numeric(p,s)` column refuses a value it would round.
//!
//! Transforms (`trim`, `lowercase`, `hash`, `redact`) then run column by column on the batches'
//! string arrays, the columns of a batch in parallel on rayon.

use std::borrow::Cow;
use std::sync::Arc;

use arrow_array::builder::StringBuilder;
use arrow_array::cast::AsArray;
use arrow_array::{ArrayRef, RecordBatch, StringArray};
use arrow_schema::SchemaRef;
use ferry_shared::schema::routing::{Column, Routing, Rule, TimeFormat, Transform, Unmatched};
use ferry_shared::schema::{NestedJson, NumericLimit, PgType, TableSchema};
use rayon::prelude::*;
use regex_lite::Regex;
use sha2::Digest;

use crate::convert::{
    cast, check_numeric, digits_i64, epoch_micros, plain_i64, scalar_text, CastSpec, Cell,
    ColumnBuilder,
};
use crate::decode::{arrow_schema, parse_item, RawBlock, Reject, RejectKind};
use crate::item::{AttrValue, Attributes};
use crate::json::{check_text, write_object};
use crate::scan::{
    attr_scalar, member_at, member_plain, same_bytes, scalar_at, set_at, starts_with, AttrRef,
    Bail, Desc, ItemScan, JsonAt, NameIndex,
};

/// A compiled regex. The shapes key parsing uses, `^literal(\d+)$` and `^literal\d+$`, are
/// matched directly (exactly as regex-lite matches them: `\d` is an ASCII digit, `$` the end of
/// the text), with no automaton; every other pattern goes through regex-lite.
#[derive(Debug)]
enum KeyRegex {
    Prefix {
        pattern: String,
        prefix: String,
        group: bool,
    },
    General(Regex),
}

impl KeyRegex {
    fn new(pattern: &str) -> Result<KeyRegex, String> {
        if let Some((prefix, group)) = Self::prefix_shape(pattern) {
            return Ok(KeyRegex::Prefix {
                pattern: pattern.to_string(),
                prefix,
                group,
            });
        }
        Regex::new(pattern)
            .map(KeyRegex::General)
            .map_err(|e| format!("regex {pattern:?}: {e}"))
    }

    /// `^literal(\d+)$` → (literal, true), `^literal\d+$` → (literal, false).
    fn prefix_shape(pattern: &str) -> Option<(String, bool)> {
        let body = pattern.strip_prefix('^')?.strip_suffix('$')?;
        let (literal, group) = match body.strip_suffix(r"(\d+)") {
            Some(literal) => (literal, true),
            None => (body.strip_suffix(r"\d+")?, false),
        };
        let mut prefix = String::new();
        let mut chars = literal.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(e) if e.is_ascii_punctuation() => prefix.push(e),
                    _ => return None,
                },
                '.' | '+' | '*' | '?' | '(' | ')' | '|' | '[' | ']' | '{' | '}' | '^' | '$' => {
                    return None
                }
                c => prefix.push(c),
            }
        }
        Some((prefix, group))
    }

    fn digits_after<'t>(prefix: &str, text: &'t str) -> Option<&'t str> {
        let rest = starts_with(text, prefix).then(|| &text[prefix.len()..])?;
        (!rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit())).then_some(rest)
    }

    fn is_match(&self, text: &str) -> bool {
        match self {
            KeyRegex::Prefix { prefix, .. } => Self::digits_after(prefix, text).is_some(),
            KeyRegex::General(regex) => regex.is_match(text),
        }
    }

    /// The text of group 1, when the pattern matches and has one.
    fn capture<'t>(&self, text: &'t str) -> Option<&'t str> {
        match self {
            KeyRegex::Prefix { prefix, group, .. } => {
                Self::digits_after(prefix, text).filter(|_| *group)
            }
            KeyRegex::General(regex) => regex.captures(text)?.get(1).map(|m| m.as_str()),
        }
    }

    /// [`plain_i64`] of [`Self::capture`], reading the digits of a prefix pattern once.
    #[inline]
    fn capture_i64(&self, text: &str) -> Option<i64> {
        match self {
            KeyRegex::Prefix {
                prefix,
                group: true,
                ..
            } => {
                let digits = starts_with(text, prefix).then(|| &text.as_bytes()[prefix.len()..])?;
                digits_i64(digits)
            }
            _ => self.capture(text).and_then(plain_i64),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            KeyRegex::Prefix { pattern, .. } => pattern,
            KeyRegex::General(regex) => regex.as_str(),
        }
    }
}

/// A compiled column.
#[derive(Debug)]
struct RoutedColumn {
    spec: Column,
    path: Vec<String>,
    cast: CastSpec,
    regex: Option<KeyRegex>,
    /// Whether the column has `allowed` values or `min`/`max` bounds ([`check_bounds`]).
    bounded: bool,
}

/// A compiled rule.
#[derive(Debug)]
struct CompiledRule {
    rule: Rule,
    table: usize,
    regex: Option<KeyRegex>,
    columns: Vec<RoutedColumn>,
    /// Attributes the columns take whole, and the dropped ones: not in the rest column (a few
    /// names: a linear scan beats hashing).
    consumed: Vec<String>,
    /// Per column, the id in [`Router::names`] of its source's first attribute (`None` for a
    /// constant).
    column_ids: Vec<Option<usize>>,
    /// Per id of [`Router::names`], whether the attribute is consumed (scanned path).
    consumed_ids: Vec<bool>,
    /// The ids in [`Router::names`] of what the rule's match and filters read: the `match`
    /// attribute, the regex's attribute (with its name), the `skip_when` attribute and the TTL
    /// attribute.
    when_id: Option<usize>,
    regex_target: Option<(String, usize)>,
    skip_when_id: Option<usize>,
    ttl_id: Option<usize>,
}

/// The routing of a run, compiled once per worker.
#[derive(Debug)]
pub struct Router {
    keys: Vec<String>,
    rules: Vec<CompiledRule>,
    tables: Vec<TableSchema>,
    arrow: Vec<SchemaRef>,
    /// Per table: the rules writing it (indexes into `rules`), each with its transforms per
    /// column (rules sharing a table agree on its columns, not on their transforms).
    table_rules: Vec<Vec<usize>>,
    catch_all: Option<usize>,
    /// The export time in microseconds since 1970, for TTL filters.
    export_time_micros: Option<i64>,
    /// Every attribute name the routing reads (keys, matches, filters, columns, drops), by id:
    /// the scanned path looks each attribute of a line up once here, instead of comparing names.
    names: NameIndex,
    /// Per id of [`Self::names`], whether it is a key attribute.
    key_ids: Vec<bool>,
    /// The id in [`Self::names`] of each key attribute, in the order of [`Self::keys`].
    key_name_ids: Vec<usize>,
    /// The ids in [`Self::names`] of the attributes a rule's match or filter reads: the scanned
    /// path reads these from the line where it holds them as they are, and parses these only
    /// otherwise (columns read theirs from the scan).
    rule_ids: Vec<usize>,
}

/// One block, routed.
#[derive(Debug)]
pub struct RoutedBlock {
    /// One batch per table of [`Router::tables`] (empty batches included).
    pub batches: Vec<RecordBatch>,
    /// Per table, the line number of each row of its batch.
    pub line_numbers: Vec<Vec<u64>>,
    /// Rows over all tables.
    pub rows: u64,
    /// Lines that could not be loaded.
    pub rejects: Vec<Reject>,
    /// Items skipped by a rule's filter.
    pub filtered: u64,
    /// The line number of each item a filter skipped.
    pub filtered_lines: Vec<u64>,
}

impl Router {
    /// Compiles `routing` for the key attributes `keys`; `export_time` is the manifest's
    /// `exportTime` (RFC 3339), needed by TTL filters; `numeric_limit` is what the target's
    /// NUMERIC holds (a number that does not fit is a reject, never rounded by the server).
    pub fn new(
        routing: &Routing,
        keys: &[String],
        export_time: Option<&str>,
        numeric_limit: NumericLimit,
    ) -> Result<Router, String> {
        routing.validate(keys).map_err(|e| e.to_string())?;
        let tables = routing.tables(keys);
        let index_of = |name: &str| tables.iter().position(|t| t.table == name);
        let mut rules: Vec<CompiledRule> = Vec::new();
        // Names the routing reads, by id; the key attributes first.
        let mut referenced: Vec<String> = Vec::new();
        for key in keys {
            intern(&mut referenced, key);
        }
        for rule in &routing.rules {
            let columns = rule
                .columns
                .iter()
                .map(|c| RoutedColumn {
                    spec: c.clone(),
                    path: c.source_path(),
                    cast: CastSpec {
                        pg_type: c.pg_type(),
                        time: c.time,
                        nested_json: NestedJson::Plain,
                        numeric_limit,
                    },
                    regex: c
                        .regex
                        .as_deref()
                        .map(|r| KeyRegex::new(r).expect("validated")),
                    bounded: c.allowed.is_some() || c.min.is_some() || c.max.is_some(),
                })
                .collect();
            let mut consumed: Vec<String> = rule
                .columns
                .iter()
                .filter_map(Column::whole_attribute)
                .collect();
            consumed.extend(rule.drop.iter().cloned());
            consumed.sort();
            consumed.dedup();
            let column_ids = rule
                .columns
                .iter()
                .map(|c| match c.constant {
                    Some(_) => None,
                    None => c.source_path().first().map(|f| intern(&mut referenced, f)),
                })
                .collect();
            for name in &consumed {
                intern(&mut referenced, name);
            }
            let regex_target = rule.when.regex.as_ref().map(|_| {
                rule.when
                    .regex_attribute
                    .as_deref()
                    .or(keys.get(1).map(String::as_str))
                    .or(keys.first().map(String::as_str))
                    .unwrap_or_default()
            });
            let regex_target =
                regex_target.map(|name| (name.to_string(), intern(&mut referenced, name)));
            let mut id_of = |name: Option<&str>| name.map(|n| intern(&mut referenced, n));
            let when_id = id_of(rule.when.attribute.as_deref());
            let skip_when_id = id_of(rule.skip_when.as_ref().map(|c| c.attribute.as_str()));
            let ttl_id = id_of(rule.skip_expired_ttl.as_deref());
            rules.push(CompiledRule {
                column_ids,
                consumed_ids: Vec::new(),
                when_id,
                regex_target,
                skip_when_id,
                ttl_id,
                table: index_of(&rule.table).expect("every rule's table is listed"),
                regex: rule
                    .when
                    .regex
                    .as_deref()
                    .map(|r| KeyRegex::new(r).expect("validated")),
                rule: rule.clone(),
                columns,
                consumed,
            });
        }
        let export_time_micros = export_time
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.timestamp_micros());
        if export_time_micros.is_none() {
            if let Some(rule) = routing.rules.iter().find(|r| r.skip_expired_ttl.is_some()) {
                return Err(format!(
                    "routing rule {:?}: skip_expired_ttl needs the export time, and the manifest has none",
                    rule.name
                ));
            }
        }
        let catch_all = match (routing.unmatched, &routing.catch_all_table) {
            (Unmatched::Table, Some(table)) => index_of(table),
            _ => None,
        };
        let table_rules = (0..tables.len())
            .map(|t| {
                rules
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.table == t)
                    .map(|(i, _)| i)
                    .collect()
            })
            .collect();
        for rule in &mut rules {
            rule.consumed_ids = referenced
                .iter()
                .map(|name| rule.consumed.contains(name))
                .collect();
        }
        let key_ids = referenced.iter().map(|name| keys.contains(name)).collect();
        let read_by_rules: Vec<&str> = routing
            .rules
            .iter()
            .flat_map(|rule| {
                [
                    rule.when.attribute.as_deref(),
                    rule.when.regex_attribute.as_deref(),
                    rule.skip_when.as_ref().map(|c| c.attribute.as_str()),
                    rule.skip_expired_ttl.as_deref(),
                ]
            })
            .flatten()
            .chain(keys.iter().map(String::as_str))
            .collect();
        let rule_ids = (0..referenced.len())
            .filter(|&id| read_by_rules.contains(&referenced[id].as_str()))
            .collect();
        let key_name_ids = keys.iter().map(|k| intern(&mut referenced, k)).collect();
        Ok(Router {
            names: NameIndex::new(referenced.iter().map(|n| n.as_bytes())),
            key_name_ids,
            key_ids,
            rule_ids,
            keys: keys.to_vec(),
            table_rules,
            arrow: tables.iter().map(arrow_schema).collect(),
            tables,
            rules,
            catch_all,
            export_time_micros,
        })
    }

    /// The target tables, in the order of [`RoutedBlock::batches`].
    pub fn tables(&self) -> &[TableSchema] {
        &self.tables
    }

    /// The first rule (by precedence) that takes `attributes`, if any.
    fn rule_for(
        &self,
        attributes: &[(Cow<'_, str>, AttrValue<'_>)],
    ) -> Option<(usize, &CompiledRule)> {
        self.pick_rule(&Parsed(attributes))
    }

    /// The first rule (by precedence) that takes an item, if any, reading its attributes'
    /// texts from `item`.
    #[inline(always)]
    fn pick_rule<'v>(&self, item: &impl AttributeTexts<'v>) -> Option<(usize, &CompiledRule)> {
        let text_of = |name: &str, id: usize| item.text_of(name, id);
        let key = |k: usize| {
            self.keys
                .get(k)
                .and_then(|name| text_of(name, self.key_name_ids[k]))
        };
        let pk = key(0);
        let sk = key(1);
        self.rules.iter().enumerate().find(|(_, compiled)| {
            let when = &compiled.rule.when;
            let prefix_ok = |prefix: &Option<String>, value: &Option<Cow<'_, str>>| match prefix {
                None => true,
                Some(p) => value.as_ref().is_some_and(|v| starts_with(v, p)),
            };
            if !prefix_ok(&when.pk_prefix, &pk) || !prefix_ok(&when.sk_prefix, &sk) {
                return false;
            }
            if let (Some(attribute), Some(equals), Some(id)) =
                (&when.attribute, &when.equals, compiled.when_id)
            {
                if text_of(attribute, id).as_deref() != Some(equals.as_str()) {
                    return false;
                }
            }
            if let (Some(regex), Some((target, id))) = (&compiled.regex, &compiled.regex_target) {
                if !text_of(target, *id).is_some_and(|v| regex.is_match(&v)) {
                    return false;
                }
            }
            true
        })
    }

    /// Routes every line of `block`: the scanner ([`crate::scan::ItemScan`]) reads each line it
    /// can, the reference parser ([`parse_item`]) the others, so rows, filters and rejects are the
    /// reference's.
    pub fn route(&self, block: &RawBlock) -> RoutedBlock {
        self.route_counting(block).0
    }

    /// [`Self::route`], also returning how many lines went to the reference parser.
    pub fn route_counting(&self, block: &RawBlock) -> (RoutedBlock, usize) {
        let mut out = self.output(block.lines.len());
        let whole = simdutf8::basic::from_utf8(&block.data).ok();
        let mut scan = ItemScan::default();
        // The JSON of the block's Ion lines, transcoded before the loop: the scan buffers borrow
        // every line's text for the whole block.
        let mut ion_json = String::new();
        let ion_ranges: Vec<Option<(usize, usize)>> = block
            .lines
            .iter()
            .map(|line| {
                let text = match whole {
                    Some(whole) => whole.get(line.start..line.end),
                    None => simdutf8::basic::from_utf8(block.line(line)).ok(),
                }?;
                if !crate::ion::is_ion_line(text.as_bytes()) {
                    return None;
                }
                let start = ion_json.len();
                crate::ion_scan::ion_to_json(text, &mut ion_json).ok()?;
                Some((start, ion_json.len()))
            })
            .collect();
        let mut buffers = ScanBuffers::default();
        let mut bailed = 0;
        for (line, ion) in block.lines.iter().zip(&ion_ranges) {
            let _ = ferry_shared::failpoint::hit("decode_line");
            let raw = block.line(line);
            let text = match whole {
                Some(whole) => whole.get(line.start..line.end),
                None => simdutf8::basic::from_utf8(raw).ok(),
            }
            .and_then(|text| match ion {
                Some((start, end)) => Some(&ion_json[*start..*end]),
                None if crate::ion::is_ion_line(text.as_bytes()) => None,
                None => Some(text),
            });
            if let Some(text) = text {
                if scan.scan(text, &self.names).is_ok()
                    && self
                        .route_scanned(&mut out, line.line_no, text, &scan, &mut buffers)
                        .is_ok()
                {
                    continue;
                }
            }
            bailed += 1;
            self.route_one(&mut out, line.line_no, raw, parse_item(raw));
        }
        (self.finish(out), bailed)
    }

    /// Routes every line of `block` with the reference parser only: what the scanner is checked
    /// against, and measured against in `ferry-bench`.
    pub fn route_reference(&self, block: &RawBlock) -> RoutedBlock {
        self.route_items(block.lines.iter().map(|line| {
            let raw = block.line(line);
            (line.line_no, raw, parse_item(raw))
        }))
    }

    /// Routes items already parsed: `(line number, raw line, item or why it is malformed)`.
    /// Incremental exports route their `NewImage`s through here.
    pub fn route_items<'b>(
        &self,
        items: impl Iterator<Item = (u64, &'b [u8], Result<Attributes<'b>, String>)>,
    ) -> RoutedBlock {
        let mut out = self.output(0);
        for (line_no, raw, parsed) in items {
            self.route_one(&mut out, line_no, raw, parsed);
        }
        self.finish(out)
    }

    /// A block's output; its builders sized for `rows` spread over the tables.
    fn output(&self, rows: usize) -> RouteOutput {
        let share = rows / self.tables.len().max(1);
        RouteOutput {
            tables: self
                .tables
                .iter()
                .map(|t| TableOutput {
                    columns: t
                        .columns
                        .iter()
                        .map(|c| ColumnBuilder::new(c.pg_type, share))
                        .collect(),
                    rest: StringBuilder::new(),
                    rule_of_row: Vec::new(),
                    line_numbers: Vec::new(),
                })
                .collect(),
            rejects: Vec::new(),
            filtered: 0,
            filtered_lines: Vec::new(),
        }
    }

    /// One parsed item: its row in its table, its filter, or its reject.
    fn route_one(
        &self,
        out: &mut RouteOutput,
        line_no: u64,
        raw: &[u8],
        parsed: Result<Attributes<'_>, String>,
    ) {
        let reject = |kind: RejectKind, reason: String| Reject {
            line_no,
            kind,
            reason,
            raw: raw.to_vec(),
        };
        let attributes = match parsed {
            Ok(attributes) => attributes,
            Err(e) => {
                out.rejects.push(reject(
                    RejectKind::Malformed,
                    format!("malformed line: {e}"),
                ));
                return;
            }
        };
        // Cells of the row, appended to the columns only once all of them cast.
        let mut cells: Vec<Cell<'_>> = Vec::new();
        let converted = match self.rule_for(&attributes) {
            Some((index, rule)) => match self.skip(rule, &attributes) {
                Ok(true) => {
                    out.filtered += 1;
                    out.filtered_lines.push(line_no);
                    return;
                }
                Ok(false) => self
                    .convert(rule, &attributes, &mut cells)
                    .map(|rest| (rule.table, Some(index), rest))
                    .map_err(|reason| (RejectKind::Cast, reason)),
                Err(reason) => Err((RejectKind::Cast, reason)),
            },
            None => match self.catch_all {
                Some(table) => self
                    .catch_all_row(&attributes, &mut cells)
                    .map(|rest| (table, None, rest))
                    .map_err(|reason| (RejectKind::Key, reason)),
                None => Err((
                    RejectKind::NoRule,
                    format!(
                        "no routing rule matches the item ({})",
                        self.describe_keys(&attributes)
                    ),
                )),
            },
        };
        match converted {
            Ok((table, rule, rest)) => {
                let output = &mut out.tables[table];
                for (builder, cell) in output.columns.iter_mut().zip(cells) {
                    builder.append(cell);
                }
                output.rest.append_option(rest);
                output.rule_of_row.push(rule.unwrap_or(usize::MAX));
                output.line_numbers.push(line_no);
            }
            Err((kind, reason)) => out.rejects.push(reject(kind, reason)),
        }
    }

    /// One scanned item, routed as [`Self::route_one`] routes it; a bail (any reject, and what
    /// the fast path does not take) leaves `out` untouched for the reference parser.
    fn route_scanned<'b>(
        &self,
        out: &mut RouteOutput,
        line_no: u64,
        text: &'b str,
        scan: &ItemScan,
        buffers: &mut ScanBuffers<'b>,
    ) -> Result<(), Bail> {
        // A line's values point into it, and into its JSON, with 32-bit offsets.
        if text.len() > MAX_SCANNED || scan.json.len() > MAX_SCANNED {
            return Err(Bail);
        }
        let ScanBuffers {
            shallow,
            vals,
            owned,
            rest,
            taken,
        } = buffers;
        // Which attribute each name of the routing is (`found`, by name id; the scan looked each
        // name up once).
        let found = &scan.found;
        // Whether an attribute rules and filters read is not a string or number the line holds
        // as it is (an escaped string, a number to canonicalize, a boolean): then they read the
        // attributes as the reference parser gives them (`shallow`), else straight from the line.
        let odd = self.rule_ids.iter().any(|&id| {
            scan.attrs.get(found[id]).is_some_and(|attr| {
                matches!(
                    (attr.desc, attr.json),
                    (Desc::S | Desc::N, JsonAt::Written(..)) | (Desc::Bool, _)
                )
            })
        });
        shallow.clear();
        if odd {
            self.shallow_attributes(text, scan, found, shallow)?;
        }
        vals.clear();
        owned.clear();
        rest.clear();
        let plain = Plain { text, scan };
        let picked = if odd {
            self.rule_for(shallow)
        } else {
            self.pick_rule(&plain)
        };
        let (table, rule, has_rest) = match picked {
            Some((index, rule)) => {
                let skipped = if odd {
                    self.skip(rule, shallow).map_err(|_| Bail)?
                } else {
                    self.skip_scanned(rule, text, scan, found)?
                };
                if skipped {
                    out.filtered += 1;
                    out.filtered_lines.push(line_no);
                    return Ok(());
                }
                for ((column, spec), id) in rule
                    .columns
                    .iter()
                    .zip(&self.tables[rule.table].columns)
                    .zip(&rule.column_ids)
                {
                    let attr = id.map(|id| found[id]).filter(|&i| i != usize::MAX);
                    let val = self.scanned_val(column, text, scan, attr, owned)?;
                    if matches!(val, Val::Null) && (column.spec.required || spec.is_key) {
                        return Err(Bail);
                    }
                    if column.bounded && !val.within_bounds(&column.spec, text, scan, owned) {
                        return Err(Bail);
                    }
                    vals.push(val);
                }
                let has_rest = write_rest(rest, taken, text, scan, |attr| {
                    !rule
                        .consumed_ids
                        .get(attr.id)
                        .is_some_and(|&consumed| consumed)
                });
                (rule.table, Some(index), has_rest)
            }
            None => {
                let table = self.catch_all.ok_or(Bail)?;
                for (key, &id) in self.keys.iter().zip(&self.key_name_ids) {
                    let value = if odd {
                        attribute(shallow, key).and_then(scalar_text)
                    } else {
                        plain.text_of(key, id)
                    };
                    let value = value.ok_or(Bail)?;
                    check_text(&value).map_err(|_| Bail)?;
                    vals.push(Val::Owned(owned.len()));
                    owned.push(Cell::Text(Cow::Owned(value.into_owned())));
                }
                write_rest(rest, taken, text, scan, |attr| {
                    !self.key_ids.get(attr.id).is_some_and(|&key| key)
                });
                (table, None, true)
            }
        };
        let output = &mut out.tables[table];
        for (builder, val) in output.columns.iter_mut().zip(vals.iter()) {
            match (builder, *val) {
                (ColumnBuilder::Utf8(b), Val::Line(start, end)) => {
                    b.append_value(&text[start as usize..end as usize])
                }
                (ColumnBuilder::Utf8(b), Val::Json(start, end)) => {
                    b.append_value(&scan.json[start as usize..end as usize])
                }
                (ColumnBuilder::I16(b), Val::I16(v)) => b.append_value(v),
                (ColumnBuilder::I32(b), Val::I32(v)) => b.append_value(v),
                (ColumnBuilder::I64(b), Val::I64(v)) => b.append_value(v),
                (ColumnBuilder::Micros(b), Val::Micros(v)) => b.append_value(v),
                (builder, Val::Owned(i)) => builder.append_ref(&owned[i]),
                // NULL (each value is of its column's type).
                (builder, _) => builder.append_nulls(1),
            }
        }
        if has_rest {
            output.rest.append_value(rest.as_str());
        } else {
            output.rest.append_null();
        }
        output.rule_of_row.push(rule.unwrap_or(usize::MAX));
        output.line_numbers.push(line_no);
        Ok(())
    }

    /// The attributes rules and filters read, as the reference parser gives them (maps, lists
    /// and sets left empty: rules and filters read scalars only), into `shallow`.
    fn shallow_attributes<'b>(
        &self,
        text: &'b str,
        scan: &ItemScan,
        found: &[usize],
        shallow: &mut Vec<(Cow<'b, str>, AttrValue<'b>)>,
    ) -> Result<(), Bail> {
        for &id in &self.rule_ids {
            let Some(attr) = scan.attrs.get(found[id]) else {
                continue;
            };
            let value = match attr_scalar(text, attr)? {
                Some(value) => value,
                None => match attr.desc {
                    Desc::M => AttrValue::M(Vec::new()),
                    Desc::L => AttrValue::L(Vec::new()),
                    Desc::Ss => AttrValue::Ss(Vec::new()),
                    Desc::Ns => AttrValue::Ns(Vec::new()),
                    _ => AttrValue::Bs(Vec::new()),
                },
            };
            shallow.push((Cow::Borrowed(&text[attr.name.0..attr.name.1]), value));
        }
        Ok(())
    }

    /// [`Self::skip`] of a scanned line whose attributes rules read are plain (see
    /// [`Self::route_scanned`]); anything the reference would refuse bails.
    fn skip_scanned(
        &self,
        rule: &CompiledRule,
        text: &str,
        scan: &ItemScan,
        found: &[usize],
    ) -> Result<bool, Bail> {
        let attr = |id: Option<usize>| id.and_then(|id| scan.attrs.get(found[id]));
        if let (Some(condition), Some(id)) = (&rule.rule.skip_when, rule.skip_when_id) {
            let value = Plain { text, scan }.text_of(&condition.attribute, id);
            if value.as_deref() == Some(condition.equals.as_str()) {
                return Ok(true);
            }
        }
        if let (Some(attr), Some(export)) = (attr(rule.ttl_id), self.export_time_micros) {
            return match (attr.desc, attr.json) {
                (Desc::Null, _) => Ok(false),
                (Desc::N, JsonAt::Line(start, end)) => {
                    let expires = epoch_micros(&text[start..end], 1_000_000).map_err(|_| Bail)?;
                    Ok(expires < export)
                }
                _ => Err(Bail),
            };
        }
        Ok(false)
    }

    /// [`Self::scanned_cell`] as a [`Val`]: the common cases (a whole attribute, or a member of
    /// a map attribute, whose text the scan found as it is: a string without escapes, a canonical
    /// number, the JSON of a map or list) point into the line or the scan's JSON; the rest go
    /// through [`Self::scanned_cell`], their cells kept in `owned`.
    #[inline(always)]
    fn scanned_val(
        &self,
        column: &RoutedColumn,
        text: &str,
        scan: &ItemScan,
        index: Option<usize>,
        owned: &mut Vec<Cell<'static>>,
    ) -> Result<Val, Bail> {
        let Some(i) = index else {
            // NULL, unless a constant.
            if column.spec.constant.is_some() || column.path.is_empty() {
                return Ok(hold(self.scanned_cell(column, text, scan, index)?, owned));
            }
            return Ok(Val::Null);
        };
        let attr = &scan.attrs[i];
        // The value's type and where its plain JSON is in the line: the attribute itself, or
        // the member of a map attribute a two-step path names (a string or canonical number the
        // line holds as it is; anything else takes the general path).
        let (desc, json, whole) = match column.path.len() {
            _ if column.spec.constant.is_some() => (attr.desc, None, false),
            1 => (attr.desc, Some(attr.json), true),
            2 if attr.desc == Desc::M => match member_plain(text, attr.body, &column.path[1])? {
                Some((desc, start, end)) => (desc, Some(JsonAt::Line(start, end)), false),
                None => (attr.desc, None, false),
            },
            _ => (attr.desc, None, false),
        };
        let pg_type = column.cast.pg_type;
        match (desc, json, &column.regex) {
            (Desc::S, Some(JsonAt::Line(start, end)), regex) => {
                // Without escapes, the text itself; it holds no NUL (the scan refuses raw
                // control characters).
                let string = &text[start + 1..end - 1];
                match (regex, pg_type) {
                    (None, PgType::Text) => return Ok(Val::line(start + 1, end - 1)),
                    (Some(regex), PgType::Int2 | PgType::Int4 | PgType::Int8) => {
                        if let Some(val) =
                            regex.capture_i64(string).and_then(|n| int_val(pg_type, n))
                        {
                            return Ok(val);
                        }
                    }
                    (None, PgType::Timestamptz)
                        if !matches!(
                            column.cast.time,
                            Some(TimeFormat::EpochSeconds | TimeFormat::EpochMillis)
                        ) =>
                    {
                        if let Ok(time) = chrono::DateTime::parse_from_rfc3339(string.trim()) {
                            return Ok(Val::Micros(time.timestamp_micros()));
                        }
                    }
                    _ => {}
                }
            }
            // A canonical number: its text is the value's exact decimal text.
            (Desc::N, Some(JsonAt::Line(start, end)), None) => {
                let number = &text[start..end];
                match pg_type {
                    PgType::Text => return Ok(Val::line(start, end)),
                    PgType::Numeric | PgType::NumericScaled { .. }
                        if check_numeric(number, pg_type, column.cast.numeric_limit).is_ok() =>
                    {
                        return Ok(Val::line(start, end));
                    }
                    PgType::Int2 | PgType::Int4 | PgType::Int8 => {
                        if let Some(val) = plain_i64(number).and_then(|n| int_val(pg_type, n)) {
                            return Ok(val);
                        }
                    }
                    PgType::Timestamptz => {
                        let per_unit = match column.cast.time {
                            Some(TimeFormat::EpochMillis) => 1_000,
                            _ => 1_000_000,
                        };
                        if let Ok(micros) = epoch_micros(number, per_unit) {
                            return Ok(Val::Micros(micros));
                        }
                    }
                    _ => {}
                }
            }
            (Desc::M | Desc::L, Some(json), None)
                if whole && matches!(pg_type, PgType::Jsonb | PgType::Text) =>
            {
                return Ok(match json {
                    JsonAt::Line(start, end) => Val::line(start, end),
                    JsonAt::Written(start, end) => Val::Json(start as u32, end as u32),
                });
            }
            _ => {}
        }
        Ok(hold(self.scanned_cell(column, text, scan, index)?, owned))
    }

    /// A column's cell for a scanned item, as [`column_value`] gives it for the parsed item.
    /// `index` is the scanned attribute the column's source starts at, if the item has it.
    #[inline(never)]
    fn scanned_cell<'c>(
        &self,
        column: &RoutedColumn,
        text: &'c str,
        scan: &'c ItemScan,
        index: Option<usize>,
    ) -> Result<Cell<'c>, Bail> {
        if column.spec.constant.is_some() {
            return column_value(column, &[]).map_err(|_| Bail);
        }
        let Some((_, inner)) = column.path.split_first() else {
            return Err(Bail);
        };
        let Some(index) = index else {
            return Ok(Cell::Null);
        };
        let attr = &scan.attrs[index];
        if inner.is_empty() {
            return match attr.desc {
                Desc::M | Desc::L | Desc::Ss | Desc::Ns | Desc::Bs => {
                    if column.regex.is_some() {
                        return Err(Bail);
                    }
                    match (column.cast.pg_type, attr.desc) {
                        (PgType::Jsonb | PgType::Text, _) => {
                            Ok(Cell::Text(Cow::Borrowed(scan.json_of(text, index))))
                        }
                        (_, Desc::Ss | Desc::Ns | Desc::Bs) => {
                            let value = set_at(text, attr.body, attr.desc)?;
                            value_cell(column, &value).map_err(|_| Bail)
                        }
                        _ => Err(Bail),
                    }
                }
                _ => {
                    let value = attr_scalar(text, attr)?.ok_or(Bail)?;
                    value_cell(column, &value).map_err(|_| Bail)
                }
            };
        }
        // A path into maps: each step a member of the map before it.
        if attr.desc != Desc::M {
            return Ok(Cell::Null);
        }
        let mut body = attr.body;
        for (step, segment) in inner.iter().enumerate() {
            let Some((desc, at)) = member_at(text, body, segment)? else {
                return Ok(Cell::Null);
            };
            if step + 1 < inner.len() {
                if desc != Desc::M {
                    return Ok(Cell::Null);
                }
                body = at;
                continue;
            }
            return match scalar_at(text, at, desc)? {
                Some(value) => value_cell(column, &value).map_err(|_| Bail),
                None => Err(Bail),
            };
        }
        Err(Bail)
    }

    /// Whether an item's key alone decides its table: every rule matches on the key attributes
    /// only (prefixes, or a regex over a key attribute). Then an item can never move between
    /// tables, and a key's rows can only be in its own table.
    pub fn routes_by_key(&self) -> bool {
        self.rules.iter().all(|r| {
            let when = &r.rule.when;
            when.attribute.is_none()
                && when.equals.is_none()
                && when
                    .regex_attribute
                    .as_ref()
                    .is_none_or(|a| self.keys.contains(a))
        })
    }

    /// Refuses routing whose rows an incremental export cannot find again by key: a key column
    /// with transforms (its stored value is not the key's), or of a type other than text.
    pub fn check_for_changes(&self) -> Result<(), String> {
        for rule in &self.rules {
            let table = &self.tables[rule.table];
            for (column, spec) in rule.columns.iter().zip(&table.columns) {
                if !spec.is_key {
                    continue;
                }
                if !column.spec.transform.is_empty() {
                    return Err(format!(
                        "routing rule {:?}: key column {:?} has transforms, so its rows cannot be found by their DynamoDB key: incremental exports cannot be applied to it",
                        rule.rule.name, column.spec.name
                    ));
                }
                if spec.pg_type != ferry_shared::schema::PgType::Text {
                    return Err(format!(
                        "routing rule {:?}: key column {:?} is {}; incremental exports apply to text key columns",
                        rule.rule.name,
                        column.spec.name,
                        spec.pg_type.sql()
                    ));
                }
            }
        }
        Ok(())
    }

    /// The tables an item whose key attributes are `keys` can have a row in, each with the row's
    /// key values there: the key's own table when keys decide tables ([`Self::routes_by_key`];
    /// none when no rule and no catch-all takes the key), otherwise every table.
    pub fn key_homes(
        &self,
        keys: &[(Cow<'_, str>, AttrValue<'_>)],
    ) -> Result<Vec<(usize, crate::convert::Key)>, String> {
        let tables: Vec<usize> = if self.routes_by_key() {
            match self.rule_for(keys) {
                Some((_, rule)) => vec![rule.table],
                None => self.catch_all.into_iter().collect(),
            }
        } else {
            (0..self.tables.len()).collect()
        };
        tables
            .into_iter()
            .map(|table| Ok((table, self.key_in_table(table, keys)?)))
            .collect()
    }

    /// The key values a row of `table` holds for the key attributes `keys`.
    fn key_in_table(
        &self,
        table: usize,
        keys: &[(Cow<'_, str>, AttrValue<'_>)],
    ) -> Result<crate::convert::Key, String> {
        let schema = &self.tables[table];
        let sources: Vec<String> = match self.table_rules[table].first() {
            Some(&rule) => self.rules[rule]
                .columns
                .iter()
                .zip(&schema.columns)
                .filter(|(_, spec)| spec.is_key)
                .map(|(column, _)| column.spec.whole_attribute().unwrap_or_default())
                .collect(),
            // The catch-all table: the key attributes under their own names.
            None => self.keys.clone(),
        };
        sources
            .iter()
            .map(|source| {
                let value = attribute(keys, source)
                    .ok_or_else(|| format!("the change record's Keys lack {source:?}"))?;
                let text = scalar_text(value).ok_or_else(|| {
                    format!(
                        "key attribute {source:?} is {}, not a string or number",
                        value.ddb_type()
                    )
                })?;
                check_text(&text).map_err(|e| format!("key attribute {source:?}: {}", e.reason))?;
                Ok(crate::convert::KeyValue::Text(text.into_owned()))
            })
            .collect()
    }

    fn describe_keys(&self, attributes: &[(Cow<'_, str>, AttrValue<'_>)]) -> String {
        self.keys
            .iter()
            .map(|k| {
                let value = attribute(attributes, k)
                    .and_then(scalar_text)
                    .unwrap_or(Cow::Borrowed("(missing)"));
                format!("{k}={value:?}")
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Whether a rule's filter skips the item.
    fn skip(
        &self,
        rule: &CompiledRule,
        attributes: &[(Cow<'_, str>, AttrValue<'_>)],
    ) -> Result<bool, String> {
        if let Some(condition) = &rule.rule.skip_when {
            if attribute(attributes, &condition.attribute)
                .and_then(scalar_text)
                .as_deref()
                == Some(condition.equals.as_str())
            {
                return Ok(true);
            }
        }
        if let (Some(ttl), Some(export)) = (&rule.rule.skip_expired_ttl, self.export_time_micros) {
            match attribute(attributes, ttl) {
                None | Some(AttrValue::Null) => {}
                Some(AttrValue::N(n)) => {
                    let expires = epoch_micros(n, 1_000_000).map_err(|e| {
                        format!(
                            "routing rule {:?}: TTL attribute {ttl:?}: {e}",
                            rule.rule.name
                        )
                    })?;
                    return Ok(expires < export);
                }
                Some(other) => {
                    return Err(format!(
                    "routing rule {:?}: TTL attribute {ttl:?} is {}, not a number of epoch seconds",
                    rule.rule.name,
                    other.ddb_type()
                ))
                }
            }
        }
        Ok(false)
    }

    /// One item's cells (into `cells`, cleared first) and rest JSON under `rule`.
    fn convert<'b>(
        &self,
        rule: &CompiledRule,
        attributes: &[(Cow<'b, str>, AttrValue<'b>)],
        cells: &mut Vec<Cell<'b>>,
    ) -> Result<Option<String>, String> {
        cells.clear();
        for (i, (name, _)) in attributes.iter().enumerate() {
            check_text(name).map_err(|e| format!("attribute name {name:?}: {}", e.reason))?;
            if attributes[..i].iter().any(|(earlier, _)| earlier == name) {
                return Err(format!("attribute {name:?} appears twice"));
            }
        }
        for (column, spec) in rule.columns.iter().zip(&self.tables[rule.table].columns) {
            let context = |reason: String| {
                format!(
                    "routing rule {:?}, column {:?}: {reason}",
                    rule.rule.name, column.spec.name
                )
            };
            let cell = column_value(column, attributes).map_err(context)?;
            if cell == Cell::Null && (column.spec.required || spec.is_key) {
                let what = if spec.is_key {
                    "a key column"
                } else {
                    "required"
                };
                return Err(context(format!(
                    "{what}, but {} is missing or NULL",
                    describe_source(&column.spec)
                )));
            }
            check_bounds(&column.spec, &cell).map_err(context)?;
            cells.push(cell);
        }
        let rest: Vec<(&str, &AttrValue<'_>)> = attributes
            .iter()
            .filter(|(name, _)| !rule.consumed.iter().any(|c| c == name))
            .map(|(name, value)| (name.as_ref(), value))
            .collect();
        if rest.is_empty() {
            return Ok(None);
        }
        let mut json = String::new();
        write_object(&mut json, rest, NestedJson::Plain).map_err(|e| e.describe())?;
        Ok(Some(json))
    }

    /// The catch-all table's row: the key attributes as text, everything else in `attrs`.
    fn catch_all_row<'b>(
        &self,
        attributes: &[(Cow<'b, str>, AttrValue<'b>)],
        cells: &mut Vec<Cell<'b>>,
    ) -> Result<Option<String>, String> {
        cells.clear();
        for key in &self.keys {
            let value = attribute(attributes, key)
                .and_then(scalar_text)
                .ok_or_else(|| format!("key attribute {key:?} is missing"))?;
            check_text(&value).map_err(|e| e.reason)?;
            cells.push(Cell::Text(Cow::Owned(value.into_owned())));
        }
        let rest: Vec<(&str, &AttrValue<'_>)> = attributes
            .iter()
            .filter(|(name, _)| !self.keys.iter().any(|k| k == name))
            .map(|(name, value)| (name.as_ref(), value))
            .collect();
        let mut json = String::new();
        write_object(&mut json, rest, NestedJson::Plain).map_err(|e| e.describe())?;
        Ok(Some(json))
    }

    fn finish(&self, out: RouteOutput) -> RoutedBlock {
        let rows = out
            .tables
            .iter()
            .map(|o| o.rule_of_row.len())
            .sum::<usize>() as u64;
        let mut line_numbers = Vec::with_capacity(out.tables.len());
        let batches = out
            .tables
            .into_iter()
            .enumerate()
            .map(|(t, mut output)| {
                line_numbers.push(std::mem::take(&mut output.line_numbers));
                self.build_batch(t, output)
            })
            .collect();
        RoutedBlock {
            batches,
            line_numbers,
            rows,
            rejects: out.rejects,
            filtered: out.filtered,
            filtered_lines: out.filtered_lines,
        }
    }

    fn build_batch(&self, table: usize, output: TableOutput) -> RecordBatch {
        let TableOutput {
            columns,
            mut rest,
            rule_of_row,
            ..
        } = output;
        let rules = &self.table_rules[table];
        let mut arrays: Vec<ArrayRef> = columns
            .into_par_iter()
            .enumerate()
            .map(|(c, builder)| {
                let array = builder.finish();
                // Each rule's own transforms for this column (the catch-all table has none).
                let by_rule: Vec<(usize, &[Transform])> = rules
                    .iter()
                    .map(|&r| (r, self.rules[r].columns[c].spec.transform.as_slice()))
                    .collect();
                apply_rule_transforms(array, &by_rule, &rule_of_row)
            })
            .collect();
        arrays.push(Arc::new(rest.finish()));
        RecordBatch::try_new(self.arrow[table].clone(), arrays)
            .expect("routed arrays follow the table's arrow schema")
    }
}

/// A block's rows while they are routed.
struct RouteOutput {
    tables: Vec<TableOutput>,
    rejects: Vec<Reject>,
    filtered: u64,
    filtered_lines: Vec<u64>,
}

/// Writes `{"name":json,…}` of the scanned attributes `keep` takes (by index), sorted by name
/// (as [`write_object`] does); whether any was taken. `taken` is a reused buffer.
fn write_rest(
    rest: &mut String,
    taken: &mut Vec<usize>,
    text: &str,
    scan: &ItemScan,
    keep: impl Fn(&AttrRef) -> bool,
) -> bool {
    let name = |i: usize| &text[scan.attrs[i].name.0..scan.attrs[i].name.1];
    taken.clear();
    taken.extend((0..scan.attrs.len()).filter(|&i| keep(&scan.attrs[i])));
    taken.sort_unstable_by(|&a, &b| name(a).as_bytes().cmp(name(b).as_bytes()));
    rest.push('{');
    for (n, &index) in taken.iter().enumerate() {
        if n > 0 {
            rest.push(',');
        }
        rest.push('"');
        rest.push_str(name(index));
        rest.push_str("\":");
        rest.push_str(scan.json_of(text, index));
    }
    rest.push('}');
    !taken.is_empty()
}

/// Buffers of the scanned path, reused from line to line of a block.
#[derive(Default)]
struct ScanBuffers<'b> {
    shallow: Vec<(Cow<'b, str>, AttrValue<'b>)>,
    /// The row's values.
    vals: Vec<Val>,
    /// The row's cells that [`Val`] cannot point to.
    owned: Vec<Cell<'static>>,
    rest: String,
    taken: Vec<usize>,
}

/// The id of `name` in `names`, added if new.
fn intern(names: &mut Vec<String>, name: &str) -> usize {
    match names.iter().position(|n| n == name) {
        Some(id) => id,
        None => {
            names.push(name.to_string());
            names.len() - 1
        }
    }
}

/// One table's share of a block while it is routed.
struct TableOutput {
    columns: Vec<ColumnBuilder>,
    rest: StringBuilder,
    /// The rule (index into the router's rules) of each row; `usize::MAX` for the catch-all.
    rule_of_row: Vec<usize>,
    /// The line number of each row.
    line_numbers: Vec<u64>,
}

/// Applies to each row of a string array the transforms of the rule that wrote it.
fn apply_rule_transforms(
    array: ArrayRef,
    by_rule: &[(usize, &[Transform])],
    rule_of_row: &[usize],
) -> ArrayRef {
    match by_rule {
        [] => array,
        [(_, first), rest @ ..] if rest.iter().all(|(_, t)| t == first) => {
            apply_transforms(array, first)
        }
        _ => {
            let Some(strings) = array.as_string_opt::<i32>() else {
                return array;
            };
            let out: StringArray = strings
                .iter()
                .zip(rule_of_row)
                .map(|(value, rule)| {
                    let transforms = by_rule
                        .iter()
                        .find(|(r, _)| r == rule)
                        .map(|(_, t)| *t)
                        .unwrap_or(&[]);
                    value.map(|v| transform_text(v, transforms))
                })
                .collect();
            Arc::new(out)
        }
    }
}

/// A column's `allowed` values and `min`/`max` bounds.
fn check_bounds(spec: &Column, cell: &Cell<'_>) -> Result<(), String> {
    if let (Some(allowed), Cell::Text(text)) = (&spec.allowed, cell) {
        if !allowed
            .iter()
            .any(|a| same_bytes(a.as_bytes(), text.as_bytes()))
        {
            return Err(format!(
                "{text:?} is not one of the allowed values {allowed:?}"
            ));
        }
    }
    let number = match cell {
        Cell::I16(n) => i64::from(*n),
        Cell::I32(n) => i64::from(*n),
        Cell::I64(n) => *n,
        _ => return Ok(()),
    };
    if spec.min.is_some_and(|min| number < min) || spec.max.is_some_and(|max| number > max) {
        let bound = |b: Option<i64>| b.map(|b| b.to_string()).unwrap_or_else(|| "…".into());
        return Err(format!(
            "{number} is outside {}..={}",
            bound(spec.min),
            bound(spec.max)
        ));
    }
    Ok(())
}

fn describe_source(column: &Column) -> String {
    match (&column.constant, column.source_path().as_slice()) {
        (Some(_), _) => "the constant".into(),
        (None, [one]) => format!("attribute {one:?}"),
        (None, path) => format!("path {:?}", path.join(".")),
    }
}

/// The value named `name` among an item's attributes (or a map's entries).
fn attribute<'v, 'a>(
    attributes: &'v [(Cow<'a, str>, AttrValue<'a>)],
    name: &str,
) -> Option<&'v AttrValue<'a>> {
    attributes
        .iter()
        .find(|(n, _)| same_bytes(n.as_bytes(), name.as_bytes()))
        .map(|(_, v)| v)
}

/// Follows `path` through maps; `None` when a segment is missing.
fn lookup<'v, 'a>(
    attributes: &'v [(Cow<'a, str>, AttrValue<'a>)],
    path: &[String],
) -> Option<&'v AttrValue<'a>> {
    let (first, rest) = path.split_first()?;
    let mut value = attribute(attributes, first)?;
    for segment in rest {
        let AttrValue::M(entries) = value else {
            return None;
        };
        value = attribute(entries, segment)?;
    }
    Some(value)
}

/// A column's cell for one item.
fn column_value<'b>(
    column: &RoutedColumn,
    attributes: &[(Cow<'b, str>, AttrValue<'b>)],
) -> Result<Cell<'b>, String> {
    let constant;
    let value = match &column.spec.constant {
        Some(text) => {
            constant = AttrValue::S(Cow::Owned(text.clone()));
            &constant
        }
        None => match lookup(attributes, &column.path) {
            Some(value) => value,
            None => return Ok(Cell::Null),
        },
    };
    value_cell(column, value)
}

/// A column's cell from the value its source names: NULL, the value cast, or its regex capture
/// cast.
fn value_cell<'b>(column: &RoutedColumn, value: &AttrValue<'b>) -> Result<Cell<'b>, String> {
    if let AttrValue::Null = value {
        return Ok(Cell::Null);
    }
    match &column.regex {
        None => cast(value, &column.cast).map_err(|e| e.to_string()),
        Some(regex) => {
            let text = scalar_text(value).ok_or_else(|| {
                format!("a regex needs a string or number, not {}", value.ddb_type())
            })?;
            let captured = regex
                .capture(&text)
                .ok_or_else(|| format!("{text:?} does not match {:?}", regex.as_str()))?;
            // Cast from the capture in place; only a text result is copied out of it.
            let cell = cast(&AttrValue::S(Cow::Borrowed(captured)), &column.cast)
                .map_err(|e| e.to_string())?;
            Ok(owned(cell))
        }
    }
}

/// An integer as a value of an integer column type; `None` where it does not fit (the full cast
/// then says why).
#[inline(always)]
fn int_val(pg_type: PgType, n: i64) -> Option<Val> {
    match pg_type {
        PgType::Int2 => i16::try_from(n).ok().map(Val::I16),
        PgType::Int4 => i32::try_from(n).ok().map(Val::I32),
        PgType::Int8 => Some(Val::I64(n)),
        _ => None,
    }
}

/// The longest line (and JSON of one line) the scanned path routes; longer ones take the
/// reference parser.
const MAX_SCANNED: usize = u32::MAX as usize;

/// One cell of a scanned line's row (see [`Router::route_scanned`]): where its value is, or the
/// value itself. Copied, never dropped, and borrowing nothing, so a line's values need no buffer
/// of borrowed cells (and none of their drop glue).
#[derive(Clone, Copy, Debug)]
enum Val {
    Null,
    /// `start..end` of the line (lines and their JSON are below 4 GiB: see
    /// [`Router::route_scanned`]).
    Line(u32, u32),
    /// `start..end` of the scan's JSON ([`ItemScan::json`]).
    Json(u32, u32),
    I16(i16),
    I32(i32),
    I64(i64),
    Micros(i64),
    /// Any other cell: its index in the line's owned cells.
    Owned(usize),
}

impl Val {
    /// Whether the value passes its column's `allowed` values and `min`/`max` bounds, as
    /// [`check_bounds`] checks its cell.
    #[inline(always)]
    fn within_bounds(
        self,
        spec: &Column,
        text: &str,
        scan: &ItemScan,
        owned: &[Cell<'static>],
    ) -> bool {
        let allowed = |value: &str| {
            spec.allowed.as_ref().is_none_or(|allowed| {
                allowed
                    .iter()
                    .any(|a| same_bytes(a.as_bytes(), value.as_bytes()))
            })
        };
        let number = match self {
            Val::Line(start, end) => return allowed(&text[start as usize..end as usize]),
            Val::Json(start, end) => return allowed(&scan.json[start as usize..end as usize]),
            Val::I16(n) => i64::from(n),
            Val::I32(n) => i64::from(n),
            Val::I64(n) => n,
            Val::Owned(i) => return check_bounds(spec, &owned[i]).is_ok(),
            Val::Null | Val::Micros(_) => return true,
        };
        !(spec.min.is_some_and(|min| number < min) || spec.max.is_some_and(|max| number > max))
    }

    #[inline(always)]
    fn line(start: usize, end: usize) -> Val {
        Val::Line(start as u32, end as u32)
    }
}

/// An item's attributes as rules read them.
trait AttributeTexts<'v> {
    /// The text ([`scalar_text`]) of the attribute `name`, whose id in [`Router::names`] is `id`.
    fn text_of(&self, name: &str, id: usize) -> Option<Cow<'v, str>>;
}

/// Parsed attributes.
struct Parsed<'a, 'b>(&'a [(Cow<'b, str>, AttrValue<'b>)]);

impl<'a, 'b> AttributeTexts<'a> for Parsed<'a, 'b> {
    fn text_of(&self, name: &str, _: usize) -> Option<Cow<'a, str>> {
        attribute(self.0, name).and_then(scalar_text)
    }
}

/// A scanned line whose attributes rules read the line holds as they are (strings without
/// escapes, canonical numbers; see [`Router::route_scanned`]).
struct Plain<'t, 's> {
    text: &'t str,
    scan: &'s ItemScan,
}

impl<'t> AttributeTexts<'t> for Plain<'t, '_> {
    #[inline(always)]
    fn text_of(&self, _: &str, id: usize) -> Option<Cow<'t, str>> {
        let attr = self.scan.attrs.get(self.scan.found[id])?;
        let text = self.text;
        match (attr.desc, attr.json) {
            (Desc::S, JsonAt::Line(start, end)) => Some(Cow::Borrowed(&text[start + 1..end - 1])),
            (Desc::N, JsonAt::Line(start, end)) => Some(Cow::Borrowed(&text[start..end])),
            _ => None,
        }
    }
}

/// A cell of the general path as a [`Val`], kept in `owned` unless it is NULL or a number.
fn hold(cell: Cell<'_>, owned: &mut Vec<Cell<'static>>) -> Val {
    match cell {
        Cell::Null => Val::Null,
        Cell::I16(v) => Val::I16(v),
        Cell::I32(v) => Val::I32(v),
        Cell::I64(v) => Val::I64(v),
        Cell::Micros(v) => Val::Micros(v),
        other => {
            owned.push(self::owned(other));
            Val::Owned(owned.len() - 1)
        }
    }
}

/// A cell that borrows nothing.
fn owned(cell: Cell<'_>) -> Cell<'static> {
    match cell {
        Cell::Null => Cell::Null,
        Cell::Text(text) => Cell::Text(Cow::Owned(text.into_owned())),
        Cell::I16(v) => Cell::I16(v),
        Cell::I32(v) => Cell::I32(v),
        Cell::I64(v) => Cell::I64(v),
        Cell::F64(v) => Cell::F64(v),
        Cell::Bool(v) => Cell::Bool(v),
        Cell::Bytes(v) => Cell::Bytes(v),
        Cell::Micros(v) => Cell::Micros(v),
        Cell::TextList(items) => Cell::TextList(
            items
                .into_iter()
                .map(|t| Cow::Owned(t.into_owned()))
                .collect(),
        ),
        Cell::BytesList(items) => Cell::BytesList(items),
    }
}

/// Applies text transforms, in order, to a string array (other arrays pass through).
pub fn apply_transforms(array: ArrayRef, transforms: &[Transform]) -> ArrayRef {
    if transforms.is_empty() {
        return array;
    }
    let Some(strings) = array.as_string_opt::<i32>() else {
        return array;
    };
    let mut out =
        StringBuilder::with_capacity(arrow_array::Array::len(strings), strings.value_data().len());
    let mut scratch = String::new();
    for value in strings.iter() {
        match value {
            Some(value) => out.append_value(transform_into(value, transforms, &mut scratch)),
            None => out.append_null(),
        }
    }
    Arc::new(out.finish())
}

/// One value through `transforms`, in order.
fn transform_text(value: &str, transforms: &[Transform]) -> String {
    let mut scratch = String::new();
    transform_into(value, transforms, &mut scratch).to_string()
}

/// One value through `transforms`, in order: a slice of `value` itself where the transforms
/// only trim it, else the result in `scratch` (reused from value to value: a column's values cost
/// no allocation each, except a non-ASCII lowercase and a hash).
fn transform_into<'v>(
    value: &'v str,
    transforms: &[Transform],
    scratch: &'v mut String,
) -> &'v str {
    /// Where the value being transformed is.
    #[derive(Clone, Copy)]
    enum At {
        Value(usize, usize),
        Scratch(usize, usize),
        Redacted,
    }
    const REDACTED: &str = "[redacted]";
    let mut at = At::Value(0, value.len());
    for transform in transforms {
        let (text, base) = match at {
            At::Value(start, end) => (&value[start..end], start),
            At::Scratch(start, end) => (&scratch[start..end], start),
            At::Redacted => (REDACTED, 0),
        };
        at = match transform {
            Transform::Trim => {
                let trimmed = text.trim_start();
                let start = base + (text.len() - trimmed.len());
                let end = start + trimmed.trim_end().len();
                match at {
                    At::Value(..) => At::Value(start, end),
                    At::Scratch(..) => At::Scratch(start, end),
                    At::Redacted => At::Redacted,
                }
            }
            Transform::Lowercase
                if text.is_ascii() && !text.bytes().any(|b| b.is_ascii_uppercase()) =>
            {
                at
            }
            Transform::Lowercase if text.is_ascii() => match at {
                At::Value(start, end) => {
                    scratch.clear();
                    scratch.push_str(&value[start..end]);
                    scratch.make_ascii_lowercase();
                    At::Scratch(0, scratch.len())
                }
                At::Scratch(start, end) => {
                    scratch[start..end].make_ascii_lowercase();
                    at
                }
                At::Redacted => at,
            },
            Transform::Lowercase => {
                let lower = text.to_lowercase();
                *scratch = lower;
                At::Scratch(0, scratch.len())
            }
            Transform::Hash => {
                let hash = sha256_hex(text.as_bytes());
                *scratch = hash;
                At::Scratch(0, scratch.len())
            }
            Transform::Redact => At::Redacted,
        };
    }
    match at {
        At::Value(start, end) => &value[start..end],
        At::Scratch(start, end) => &scratch[start..end],
        At::Redacted => REDACTED,
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let digest = sha2::Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for byte in digest.iter() {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::tests::block;
    use arrow_array::types::{Int16Type, Int64Type, TimestampMicrosecondType};
    use arrow_array::Array;
    use ferry_shared::schema::NumericLimit;

    fn routing(toml: &str) -> Routing {
        Routing::from_toml(toml).expect("valid routing")
    }

    fn keys() -> Vec<String> {
        vec!["PK".into(), "SK".into()]
    }

    const RULES: &str = r#"
[routing]
[[routing.rules]]
name = "orders"
table = "orders"
match = { pk_prefix = "USER#", sk_prefix = "ORDER#" }
rest_column = "extra"
drop = ["GSI1PK"]
skip_when = { attribute = "status", equals = "deleted" }
skip_expired_ttl = "ttl"
columns = [
  { name = "pk", from = "PK", type = "text" },
  { name = "sk", from = "SK", type = "text" },
  { name = "user_id", from = "PK", type = "int8", regex = '^USER#(\d+)$' },
  { name = "total", from = "total", type = "numeric(12,2)", required = true },
  { name = "qty", from = "qty", type = "int2", min = 1, max = 99 },
  { name = "city", path = ["ship.to", "city"], type = "text", transform = ["trim", "lowercase"] },
  { name = "placed", from = "placed", type = "timestamptz" },
  { name = "placed_ms", from = "placed_ms", type = "timestamptz", time = "epoch_millis" },
  { name = "source", constant = "dynamodb", type = "text" },
]
[[routing.rules]]
name = "gift orders"
table = "gifts"
match = { pk_prefix = "USER#", attribute = "kind", equals = "gift" }
columns = [
  { name = "pk", from = "PK", type = "text" },
  { name = "sk", from = "SK", type = "text" },
]
[[routing.rules]]
name = "by regex"
table = "reviews"
match = { regex = '^REVIEW#\d+$' }
columns = [
  { name = "pk", from = "PK", type = "text" },
  { name = "sk", from = "SK", type = "text" },
  { name = "email_hash", from = "email", type = "text", transform = ["trim", "lowercase", "hash"] },
  { name = "body", from = "body", type = "text", transform = ["redact"] },
]
"#;

    fn router() -> Router {
        Router::new(
            &routing(RULES),
            &keys(),
            Some("2026-01-01T00:00:00Z"),
            NumericLimit::Unlimited,
        )
        .unwrap()
    }

    fn order(sk: &str, extra: &str) -> String {
        format!(
            r#"{{"Item":{{"PK":{{"S":"USER#42"}},"SK":{{"S":"{sk}"}},"total":{{"N":"99.50"}}{extra}}}}}"#
        )
    }

    #[test]
    fn the_first_matching_rule_wins() {
        let router = router();
        // Matches both "orders" (prefixes) and "gift orders" (attribute): the first rule takes it.
        let both = order("ORDER#1", r#","kind":{"S":"gift"}"#);
        // Only the second rule matches (SK is not an order).
        let gift = r#"{"Item":{"PK":{"S":"USER#42"},"SK":{"S":"WISH#1"},"kind":{"S":"gift"}}}"#;
        let review = r#"{"Item":{"PK":{"S":"PRODUCT#1"},"SK":{"S":"REVIEW#7"}}}"#;
        let nothing = r#"{"Item":{"PK":{"S":"PRODUCT#1"},"SK":{"S":"METADATA"}}}"#;
        let routed = router.route(&block(&[&both, gift, review, nothing]));
        let rows: Vec<usize> = routed.batches.iter().map(RecordBatch::num_rows).collect();
        assert_eq!(rows, [1, 1, 1]);
        assert_eq!(routed.rows, 3);
        assert_eq!(routed.rejects.len(), 1);
        assert_eq!(routed.rejects[0].line_no, 4);
        assert_eq!(
            routed.rejects[0].reason,
            "no routing rule matches the item (PK=\"PRODUCT#1\", SK=\"METADATA\")"
        );
        let extra = routed.batches[0].column(9).as_string::<i32>();
        assert_eq!(extra.value(0), r#"{"kind":"gift"}"#);
    }

    #[test]
    fn columns_come_from_attributes_paths_regexes_and_constants() {
        let line = order(
            "ORDER#1",
            r#","qty":{"N":"3"},"GSI1PK":{"S":"x"},"ship.to":{"M":{"city":{"S":"  Paris "}}},"placed":{"S":"2026-01-15T10:00:00.5+01:00"},"placed_ms":{"N":"1700000000123"}"#,
        );
        let routed = router().route(&block(&[&line]));
        assert!(routed.rejects.is_empty(), "{:?}", routed.rejects);
        let batch = &routed.batches[0];
        assert_eq!(batch.column(0).as_string::<i32>().value(0), "USER#42");
        assert_eq!(batch.column(2).as_primitive::<Int64Type>().value(0), 42);
        assert_eq!(batch.column(3).as_string::<i32>().value(0), "99.50");
        assert_eq!(batch.column(4).as_primitive::<Int16Type>().value(0), 3);
        assert_eq!(batch.column(5).as_string::<i32>().value(0), "paris");
        assert_eq!(
            batch
                .column(6)
                .as_primitive::<TimestampMicrosecondType>()
                .value(0),
            1_768_467_600_500_000
        );
        assert_eq!(
            batch
                .column(7)
                .as_primitive::<TimestampMicrosecondType>()
                .value(0),
            1_700_000_000_123_000
        );
        assert_eq!(batch.column(8).as_string::<i32>().value(0), "dynamodb");
        // The map with a dotted name was only read from: it stays in the rest column; GSI1PK is
        // dropped by name; the attributes taken whole are gone.
        assert_eq!(
            batch.column(9).as_string::<i32>().value(0),
            r#"{"ship.to":{"city":"  Paris "}}"#
        );
    }

    #[test]
    fn casts_that_would_lose_data_are_rejects() {
        let router = router();
        let lines = [
            order("ORDER#1", "").replace("99.50", "1.005"),
            order("ORDER#2", r#","qty":{"N":"40000"}"#),
            order("ORDER#3", r#","qty":{"N":"1.5"}"#),
            order("ORDER#4", "").replace(r#","total":{"N":"99.50"}"#, ""),
            order("ORDER#5", r#","placed":{"S":"yesterday"}"#),
            order("ORDER#6", "").replace("USER#42", "USER#abc"),
            order("ORDER#7", r#","qty":{"N":"0"}"#),
        ];
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let routed = router.route(&block(&refs));
        assert_eq!(routed.rows, 0);
        let reasons: Vec<&str> = routed.rejects.iter().map(|r| r.reason.as_str()).collect();
        assert_eq!(reasons.len(), 7, "{reasons:#?}");
        assert!(
            reasons[0].contains("column \"total\": 1.005 has more than 2 digits after the point"),
            "{}",
            reasons[0]
        );
        assert!(
            reasons[1].contains("column \"qty\": 40000 does not fit INT2"),
            "{}",
            reasons[1]
        );
        assert!(
            reasons[2].contains("1.5 is not an integer"),
            "{}",
            reasons[2]
        );
        assert!(
            reasons[3].contains("column \"total\": required, but attribute \"total\" is missing"),
            "{}",
            reasons[3]
        );
        assert!(
            reasons[4].contains("\"yesterday\" is not an ISO-8601 time"),
            "{}",
            reasons[4]
        );
        assert!(
            reasons[5].contains("column \"user_id\": \"USER#abc\" does not match"),
            "{}",
            reasons[5]
        );
        assert!(
            reasons[6].contains("column \"qty\": 0 is outside 1..=99"),
            "{}",
            reasons[6]
        );
        assert!(reasons
            .iter()
            .all(|r| r.starts_with("routing rule \"orders\"")));
    }

    #[test]
    fn filters_count_items_instead_of_loading_them() {
        let router = router();
        let expired = order("ORDER#1", r#","ttl":{"N":"1700000000"}"#);
        let alive = order("ORDER#2", r#","ttl":{"N":"1900000000"}"#);
        let deleted = order("ORDER#3", r#","status":{"S":"deleted"}"#);
        let routed = router.route(&block(&[&expired, &alive, &deleted]));
        assert_eq!(routed.filtered, 2);
        assert_eq!(routed.rows, 1);
        assert_eq!(
            routed.batches[0].column(1).as_string::<i32>().value(0),
            "ORDER#2"
        );
    }

    #[test]
    fn transforms_trim_lowercase_hash_and_redact() {
        let line = r#"{"Item":{"PK":{"S":"PRODUCT#1"},"SK":{"S":"REVIEW#7"},"email":{"S":" Alice@Example.COM "},"body":{"S":"secret"}}}"#;
        let routed = router().route(&block(&[line]));
        let batch = &routed.batches[2];
        // sha256("alice@example.com")
        assert_eq!(
            batch.column(2).as_string::<i32>().value(0),
            "ff8d9819fc0e12bf0d24892e45987e249a28dce836a85cad60e28eaaa8c6d976"
        );
        assert_eq!(batch.column(3).as_string::<i32>().value(0), "[redacted]");
        let array: ArrayRef = Arc::new(StringArray::from(vec![Some("  A b "), None]));
        let out = apply_transforms(array, &[Transform::Trim, Transform::Lowercase]);
        let out = out.as_string::<i32>();
        assert_eq!(out.value(0), "a b");
        assert!(out.is_null(1));
    }

    /// Every chain of up to three transforms gives, value by value and in one column, what
    /// applying each in turn to an owned string gives (`str::trim`, `str::to_lowercase`, SHA-256,
    /// `[redacted]`), on ASCII, non-ASCII and Unicode whitespace.
    #[test]
    fn transform_chains_give_what_each_transform_gives_in_turn() {
        fn one_by_one(value: &str, transforms: &[Transform]) -> String {
            let mut text = value.to_string();
            for transform in transforms {
                text = match transform {
                    Transform::Trim => text.trim().to_string(),
                    Transform::Lowercase => text.to_lowercase(),
                    Transform::Hash => sha256_hex(text.as_bytes()),
                    Transform::Redact => "[redacted]".to_string(),
                };
            }
            text
        }
        let values = [
            "",
            "   ",
            "plain",
            "  Alice@Example.COM ",
            "\u{a0}ÀBÇ Straße\u{2003}",
            "İ then ΣΑΣ",
            "\tTab\n",
            "MiXeD 123 ",
        ];
        let all = [
            Transform::Trim,
            Transform::Lowercase,
            Transform::Hash,
            Transform::Redact,
        ];
        // Every chain of length 0 to 3: 1 + 4 + 16 + 64.
        let mut chains: Vec<Vec<Transform>> = vec![vec![]];
        let mut last: Vec<Vec<Transform>> = vec![vec![]];
        for _ in 0..3 {
            last = last
                .iter()
                .flat_map(|chain| {
                    all.iter().map(move |t| {
                        let mut next = chain.clone();
                        next.push(*t);
                        next
                    })
                })
                .collect();
            chains.extend(last.iter().cloned());
        }
        assert_eq!(chains.len(), 85);
        let array: ArrayRef = Arc::new(StringArray::from(
            values
                .iter()
                .map(|v| Some(*v))
                .chain([None])
                .collect::<Vec<_>>(),
        ));
        for chain in &chains {
            let out = apply_transforms(array.clone(), chain);
            let out = out.as_string::<i32>();
            for (i, value) in values.iter().enumerate() {
                let expected = one_by_one(value, chain);
                assert_eq!(out.value(i), expected, "{value:?} through {chain:?}");
                assert_eq!(transform_text(value, chain), expected);
            }
            assert!(out.is_null(values.len()));
        }
    }

    #[test]
    fn unmatched_items_can_go_to_a_catch_all_table() {
        let mut rules = routing(RULES);
        rules.unmatched = Unmatched::Table;
        rules.catch_all_table = Some("other".into());
        let router = Router::new(
            &rules,
            &keys(),
            Some("2026-01-01T00:00:00Z"),
            NumericLimit::Unlimited,
        )
        .unwrap();
        let line = r#"{"Item":{"PK":{"S":"X"},"SK":{"S":"Y"},"n":{"N":"1e2"}}}"#;
        let routed = router.route(&block(&[line]));
        assert_eq!(router.tables().last().unwrap().table, "other");
        let batch = routed.batches.last().unwrap();
        assert_eq!(batch.num_rows(), 1);
        assert_eq!(batch.column(2).as_string::<i32>().value(0), r#"{"n":100}"#);
    }

    #[test]
    fn each_rule_writing_a_table_keeps_its_own_transforms() {
        let rules = routing(
            r#"
[routing]
[[routing.rules]]
name = "deleted users"
table = "users"
match = { pk_prefix = "USER#", attribute = "deleted", equals = "true" }
columns = [
  { name = "pk", from = "PK", type = "text" },
  { name = "sk", from = "SK", type = "text" },
  { name = "email", from = "email", type = "text", transform = ["redact"] },
]
[[routing.rules]]
name = "users"
table = "users"
match = { pk_prefix = "USER#" }
columns = [
  { name = "pk", from = "PK", type = "text" },
  { name = "sk", from = "SK", type = "text" },
  { name = "email", from = "email", type = "text", transform = ["trim", "lowercase"] },
]
"#,
        );
        let router =
            Router::new(&rules, &keys(), None, NumericLimit::Unlimited).expect("valid rules");
        let routed = router.route(&block(&[
            r#"{"Item":{"PK":{"S":"USER#1"},"SK":{"S":"P"},"email":{"S":" A@B.C "}}}"#,
            r#"{"Item":{"PK":{"S":"USER#2"},"SK":{"S":"P"},"email":{"S":"X@Y.Z"},"deleted":{"BOOL":true}}}"#,
        ]));
        let emails = routed.batches[0].column(2).as_string::<i32>();
        assert_eq!(emails.value(0), "a@b.c");
        assert_eq!(
            emails.value(1),
            "[redacted]",
            "the second rule's redaction applies"
        );
    }

    #[test]
    fn numbers_a_decimal96_target_cannot_hold_are_rejects_with_their_reason() {
        let rules = routing(
            r#"
[routing]
[[routing.rules]]
name = "values"
table = "vals"
columns = [
  { name = "pk", from = "PK", type = "text" },
  { name = "sk", from = "SK", type = "text" },
  { name = "v", from = "v", type = "numeric" },
  { name = "blobs", from = "blobs", type = "bytea[]" },
]
"#,
        );
        let router = Router::new(&rules, &keys(), None, NumericLimit::Decimal96).unwrap();
        let line = |v: &str| {
            format!(
                r#"{{"Item":{{"PK":{{"S":"{v}"}},"SK":{{"S":"A"}},"v":{{"N":"{v}"}},"blobs":{{"BS":["AAE="]}}}}}}"#
            )
        };
        let lines = [
            line("1.2345678901234567890123456789012"),
            line("12345678901234567890123456789012345678"),
            line("1.25"),
        ];
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let routed = router.route(&block(&refs));
        assert_eq!(routed.rows, 1);
        assert_eq!(routed.rejects.len(), 2, "{:?}", routed.rejects);
        for reject in &routed.rejects {
            assert!(
                reject
                    .reason
                    .contains("does not fit the target's NUMERIC exactly"),
                "{}",
                reject.reason
            );
            assert_eq!(reject.kind, RejectKind::Cast);
        }
        let batch = &routed.batches[0];
        assert_eq!(batch.column(2).as_string::<i32>().value(0), "1.25");
        let blobs = batch.column(3).as_list::<i32>().value(0);
        assert_eq!(blobs.as_binary::<i32>().value(0), &[0u8, 1]);
    }

    #[test]
    fn epoch_numbers_convert_exactly() {
        assert_eq!(epoch_micros("1.5", 1_000_000), Ok(1_500_000));
        assert_eq!(epoch_micros("-2", 1_000_000), Ok(-2_000_000));
        assert_eq!(
            epoch_micros("1700000000123", 1_000),
            Ok(1_700_000_000_123_000)
        );
        assert!(epoch_micros("1.0000001", 1_000_000).is_err());
    }

    /// The differential test of routing: the scanner with its fallback against the reference
    /// parser alone, with the rules above and the migration guide's, over generated items of the
    /// shapes they route (and every other value the scanner's own test generates), clean and
    /// damaged: batches, line numbers, filters and rejects all equal.
    mod differential {
        use super::*;
        use crate::scan::differential::{damaged, number, render, text, value, V};
        use proptest::prelude::*;
        use proptest::sample::select;

        fn attribute() -> impl Strategy<Value = String> {
            let name = select(vec![
                "total",
                "qty",
                "placed",
                "placed_ms",
                "ttl",
                "status",
                "kind",
                "email",
                "body",
                "GSI1PK",
                "ship.to",
                "shipping_address",
                "items",
                "name",
                "created_at",
                "price",
                "category",
                "description",
                "rating",
                "user_pk",
                "deleted",
                "n",
                "extra",
            ]);
            let plausible = prop_oneof![
                select(vec![
                    r#"{"N":"99.50"}"#,
                    r#"{"N":"3"}"#,
                    r#"{"N":"1700000000"}"#,
                    r#"{"N":"1900000000"}"#,
                    r#"{"N":"1700000000123"}"#,
                    r#"{"N":"1.005"}"#,
                    r#"{"N":"40000"}"#,
                    r#"{"S":"deleted"}"#,
                    r#"{"S":"gift"}"#,
                    r#"{"S":"pending"}"#,
                    r#"{"S":" Alice@Example.COM "}"#,
                    r#"{"S":"2026-01-15T10:00:00.5+01:00"}"#,
                    r#"{"S":"yesterday"}"#,
                    r#"{"M":{"city":{"S":"  Paris "},"zip":{"S":"75001"}}}"#,
                    r#"{"M":{"street":{"S":"1 Main St"},"city":{"S":"Oslo"}}}"#,
                    r#"{"M":{"qty":{"N":"7"},"zip":{"S":"a\"b"},"city":{"S":"Rome"}}}"#,
                    r#"{"M":{"qty":{"N":"0070"},"zip":{"N":"12"}}}"#,
                    r#"{"M":{"qty":{"S":"7"},"zip":{"NULL":true}}}"#,
                    r#"{"L":[{"M":{"sku":{"S":"SKU-1"},"qty":{"N":"2"}}}]}"#,
                    r#"{"BOOL":true}"#,
                    r#"{"NULL":true}"#,
                    r#"{"SS":["a","b"]}"#,
                ])
                .prop_map(String::from),
                text().prop_map(|t| format!(r#"{{"S":"{t}"}}"#)),
                number().prop_map(|n| format!(r#"{{"N":"{n}"}}"#)),
                value().prop_map(|v| {
                    let mut out = String::new();
                    render(&v, &mut out);
                    out
                }),
            ];
            (name, plausible).prop_map(|(name, value)| format!("\"{name}\":{value}"))
        }

        fn item() -> impl Strategy<Value = String> {
            let pk = select(vec![
                "USER#42",
                "USER#7",
                "USER#abc",
                "PRODUCT#1",
                "PRODUCT#x",
                "X",
                "USER#\\u0031",
                "USER#٣",
                "USER#0042",
                "USER#99999999999",
                "USER#2147483648",
            ]);
            let sk = select(vec![
                "ORDER#1",
                "ORDER#000002",
                "ORDER#2147483647",
                "ORDER#9999999999999999999",
                "REVIEW#7",
                "REVIEW#x",
                "WISH#1",
                "METADATA",
                "PROFILE",
                "SESSION#1",
                "Y",
            ]);
            (pk, sk, prop::collection::vec(attribute(), 0..7)).prop_map(|(pk, sk, attributes)| {
                let mut seen = std::collections::HashSet::new();
                let attributes: Vec<String> = attributes
                    .into_iter()
                    .filter(|a| seen.insert(a.split(':').next().unwrap_or_default().to_string()))
                    .collect();
                let mut members = vec![
                    format!(r#""PK":{{"S":"{pk}"}}"#),
                    format!(r#""SK":{{"S":"{sk}"}}"#),
                ];
                members.extend(attributes);
                format!(r#"{{"Item":{{{}}}}}"#, members.join(","))
            })
        }

        fn ion_item() -> impl Strategy<Value = String> {
            (item(), prop::collection::vec(any::<u8>(), 1..8)).prop_map(|(line, spellings)| {
                crate::ion_scan::differential::to_ion(&line, &spellings, &[])
            })
        }

        fn routers() -> Vec<Router> {
            let guide = ferry_shared::config::load_settings(Some(std::path::Path::new(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../deploy/examples/migration-guide.toml"
            ))))
            .expect("the guide's config loads");
            let mut catch_all = routing(RULES);
            catch_all.unmatched = Unmatched::Table;
            catch_all.catch_all_table = Some("other".into());
            // Rules that match and filter on numbers (a number's text is its canonical form).
            let mut by_number = routing(&RULES.replacen(
                "[[routing.rules]]",
                r#"[[routing.rules]]
name = "three"
table = "three"
match = { attribute = "qty", equals = "3" }
skip_when = { attribute = "rating", equals = "5" }
columns = [
  { name = "pk", from = "PK", type = "text" },
  { name = "sk", from = "SK", type = "text" },
  { name = "total", from = "total", type = "text" },
  { name = "ship_qty", path = ["ship.to", "qty"], type = "int4" },
  { name = "ship_zip", path = ["ship.to", "zip"], type = "text" },
]
[[routing.rules]]"#,
                1,
            ));
            by_number.unmatched = Unmatched::Table;
            by_number.catch_all_table = Some("other".into());
            vec![
                Router::new(
                    &by_number,
                    &keys(),
                    Some("2026-01-01T00:00:00Z"),
                    NumericLimit::Unlimited,
                )
                .unwrap(),
                router(),
                Router::new(
                    &catch_all,
                    &keys(),
                    Some("2026-01-01T00:00:00Z"),
                    NumericLimit::Decimal96,
                )
                .unwrap(),
                Router::new(
                    &guide.routing,
                    &keys(),
                    Some("2023-11-14T22:13:20.000Z"),
                    NumericLimit::Unlimited,
                )
                .unwrap(),
            ]
        }

        fn check(lines: &[Vec<u8>]) -> Result<usize, TestCaseError> {
            check_with(&routers(), lines)
        }

        /// Lines routed by the scanner and by the reference parser route alike; how many lines
        /// the scanner routed itself, over all `routers`.
        fn check_with(routers: &[Router], lines: &[Vec<u8>]) -> Result<usize, TestCaseError> {
            let mut raw = RawBlock::default();
            for (i, line) in lines.iter().enumerate() {
                let start = raw.data.len();
                raw.data.extend_from_slice(line);
                raw.lines.push(crate::decode::LineRef {
                    line_no: 2 * i as u64 + 5,
                    start,
                    end: raw.data.len(),
                });
            }
            let mut fast_lines = 0;
            for router in routers {
                let (fast, bailed) = router.route_counting(&raw);
                let reference = router.route_reference(&raw);
                prop_assert_eq!(&fast.rejects, &reference.rejects);
                prop_assert_eq!(&fast.line_numbers, &reference.line_numbers);
                prop_assert_eq!(&fast.filtered_lines, &reference.filtered_lines);
                prop_assert_eq!(fast.filtered, reference.filtered);
                prop_assert_eq!(fast.rows, reference.rows);
                prop_assert_eq!(&fast.batches, &reference.batches);
                fast_lines += lines.len() - bailed;
            }
            Ok(fast_lines)
        }

        fn config() -> ProptestConfig {
            ProptestConfig {
                cases: std::env::var("PROPTEST_CASES")
                    .ok()
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(150),
                failure_persistence: None,
                ..ProptestConfig::default()
            }
        }

        proptest! {
            #![proptest_config(config())]

            #[test]
            fn routed_items_route_as_the_reference_does(
                lines in prop::collection::vec(item().prop_map(String::into_bytes), 1..10)
            ) {
                check(&lines)?;
            }

            #[test]
            fn damaged_items_route_as_the_reference_does(
                lines in prop::collection::vec(damaged(item()), 1..10)
            ) {
                check(&lines)?;
            }

            /// The same items as Ion export lines (`crate::ion_scan`), whole and damaged.
            #[test]
            fn ion_items_route_as_the_reference_does(
                lines in prop::collection::vec(ion_item().prop_map(String::into_bytes), 1..10),
                damaged_lines in prop::collection::vec(damaged(ion_item()), 1..10)
            ) {
                check(&lines)?;
                check(&damaged_lines)?;
            }
        }

        /// A rule whose columns take members of a map attribute (`ship`), one of each kind of
        /// cast the scanned path reads from the line in place.
        fn member_router() -> Router {
            let rules = routing(
                r#"
[routing]
[[routing.rules]]
name = "maps"
table = "maps"
match = { pk_prefix = "M#" }
columns = [
  { name = "pk", from = "PK", type = "text" },
  { name = "sk", from = "SK", type = "text" },
  { name = "city", path = ["ship", "city"], type = "text" },
  { name = "qty", path = ["ship", "qty"], type = "int4" },
  { name = "zip", path = ["ship", "zip"], type = "numeric(6,1)" },
  { name = "at", path = ["ship", "at"], type = "timestamptz", time = "epoch_seconds" },
  { name = "code", path = ["ship", "code"], type = "int2", regex = '^C(\d+)$' },
  { name = "ship", from = "ship", type = "jsonb" },
]
"#,
            );
            Router::new(&rules, &keys(), None, NumericLimit::Unlimited).unwrap()
        }

        /// A `ship` attribute: usually a map whose members the columns name, with values of
        /// every type (and names the columns do not take, before and after them).
        fn member_line() -> impl Strategy<Value = String> {
            let member = (
                select(vec!["city", "qty", "zip", "at", "code", "x", "cit"]),
                prop_oneof![
                    3 => select(vec![
                        r#"{"S":"Rome"}"#,
                        r#"{"S":"C12"}"#,
                        r#"{"S":"C99999"}"#,
                        r#"{"S":"a\"b"}"#,
                        r#"{"S":""}"#,
                        r#"{"N":"7"}"#,
                        r#"{"N":"0070"}"#,
                        r#"{"N":"-0"}"#,
                        r#"{"N":"1e3"}"#,
                        r#"{"N":"12345.6"}"#,
                        r#"{"N":"1700000000"}"#,
                        r#"{"N":"99999999999"}"#,
                        r#"{"N":"2147483648"}"#,
                        r#"{"NULL":true}"#,
                        r#"{"BOOL":false}"#,
                        r#"{"M":{"city":{"S":"nested"}}}"#,
                    ])
                    .prop_map(String::from),
                    1 => value().prop_map(|v| {
                        let mut out = String::new();
                        render(&v, &mut out);
                        out
                    }),
                ],
            );
            let map = prop::collection::vec(member, 0..6).prop_map(|members| {
                let members: Vec<String> = members
                    .iter()
                    .map(|(n, v)| format!(r#""{n}":{v}"#))
                    .collect();
                format!(r#"{{"M":{{{}}}}}"#, members.join(","))
            });
            let ship = prop_oneof![
                6 => map,
                1 => value().prop_map(|v| {
                    let mut out = String::new();
                    render(&v, &mut out);
                    out
                }),
            ];
            (0..3u8, ship).prop_map(|(i, ship)| {
                format!(r#"{{"Item":{{"PK":{{"S":"M#{i}"}},"SK":{{"S":"A"}},"ship":{ship}}}}}"#)
            })
        }

        proptest! {
            #![proptest_config(config())]

            #[test]
            fn map_members_route_as_the_reference_does(
                lines in prop::collection::vec(member_line().prop_map(String::into_bytes), 1..10)
            ) {
                check_with(&[member_router()], &lines)?;
            }
        }

        /// The members the scanned path reads in place: each value as the reference gives it,
        /// and every such line routed by the scanner itself.
        #[test]
        fn plain_map_members_are_read_in_place() {
            let lines: Vec<Vec<u8>> = [
                r#"{"Item":{"PK":{"S":"M#1"},"SK":{"S":"A"},"ship":{"M":{"x":{"S":"skip"},"city":{"S":"Rome"},"qty":{"N":"0070"},"zip":{"N":"12345.6"},"at":{"N":"1700000000"},"code":{"S":"C12"}}}}}"#,
                r#"{"Item":{"PK":{"S":"M#2"},"SK":{"S":"A"},"ship":{"M":{"code":{"S":"C7"},"zip":{"N":"-1"},"qty":{"N":"-3"},"city":{"S":""}}}}}"#,
                r#"{"Item":{"PK":{"S":"M#3"},"SK":{"S":"A"},"ship":{"M":{}}}}"#,
            ]
            .iter()
            .map(|l| l.as_bytes().to_vec())
            .collect();
            assert_eq!(check_with(&[member_router()], &lines).unwrap(), 3);
            let routed = member_router().route(&RawBlock::of_lines(&lines));
            let batch = &routed.batches[0];
            let city = batch.column(2).as_string::<i32>();
            assert_eq!(
                (city.value(0), city.value(1), city.is_null(2)),
                ("Rome", "", true)
            );
            let qty = batch
                .column(3)
                .as_primitive::<arrow_array::types::Int32Type>();
            assert_eq!((qty.value(0), qty.value(1), qty.is_null(2)), (70, -3, true));
            let zip = batch.column(4).as_string::<i32>();
            assert_eq!((zip.value(0), zip.value(1)), ("12345.6", "-1"));
            let at = batch.column(5).as_primitive::<TimestampMicrosecondType>();
            assert_eq!(at.value(0), 1_700_000_000_000_000);
            assert!(at.is_null(1));
            let code = batch.column(6).as_primitive::<Int16Type>();
            assert_eq!((code.value(0), code.value(1)), (12, 7));
        }

        /// Rules and filters read their attributes from the line when it holds them as they
        /// are, and from parsed values otherwise (escaped strings, numbers to canonicalize,
        /// booleans): both route as the reference does, TTLs of every type included.
        #[test]
        fn rules_and_filters_read_attributes_as_the_reference_does() {
            let order = |extra: &str| {
                format!(
                    r#"{{"Item":{{"PK":{{"S":"USER#42"}},"SK":{{"S":"ORDER#1"}},"total":{{"N":"10.00"}}{extra}}}}}"#
                )
            };
            let gift = |kind: &str| {
                format!(
                    r#"{{"Item":{{"PK":{{"S":"USER#42"}},"SK":{{"S":"GIFT#1"}},"kind":{kind}}}}}"#
                )
            };
            let lines: Vec<Vec<u8>> = [
                order(r#","ttl":{"NULL":true}"#),
                order(""),
                order(r#","ttl":{"N":"1700000000"}"#),
                order(r#","ttl":{"N":"1900000000"}"#),
                order(r#","ttl":{"S":"1700000000"}"#),
                order(r#","ttl":{"N":"1.7e9"}"#),
                order(r#","ttl":{"BOOL":true}"#),
                order(r#","status":{"S":"deleted"}"#),
                order(r#","status":{"S":"dele\u0074ed"}"#),
                order(r#","status":{"BOOL":true}"#),
                order(r#","status":{"N":"5"}"#),
                gift(r#"{"S":"gift"}"#),
                gift(r#"{"S":"gi\u0066t"}"#),
                gift(r#"{"BOOL":true}"#),
                gift(r#"{"NULL":true}"#),
            ]
            .iter()
            .map(|l| l.as_bytes().to_vec())
            .collect();
            let fast = check_with(&[router()], &lines).unwrap();
            let routed = router().route(&RawBlock::of_lines(&lines));
            // Filtered: the expired TTL (plain and `1.7e9`), `deleted` (plain and escaped).
            assert_eq!(routed.filtered, 4, "{routed:?}");
            // Rejected: a TTL that is a string or a boolean, and a gift whose `kind` is a
            // boolean or NULL (no rule takes it).
            assert_eq!(routed.rejects.len(), 4, "{:?}", routed.rejects);
            assert_eq!(routed.rows, 7);
            assert_eq!(routed.batches[1].num_rows(), 2, "both gifts");
            // The scanner itself routes the plain lines, rejects aside.
            assert!(fast >= 9, "{fast}");
        }

        /// A repeated attribute name, one the routing reads or any other, and among many names
        /// or few, makes the item a reject on both paths.
        #[test]
        fn a_repeated_attribute_name_is_a_reject() {
            let order = |extra: &str| {
                format!(
                    r#"{{"Item":{{"PK":{{"S":"USER#42"}},"SK":{{"S":"ORDER#1"}},"total":{{"N":"10.00"}}{extra}}}}}"#
                )
            };
            let many: String = (0..20).map(|i| format!(r#","n{i}":{{"S":"x"}}"#)).collect();
            let lines: Vec<Vec<u8>> = [
                order(r#","total":{"N":"11.00"}"#),
                order(r#","SK":{"S":"ORDER#2"}"#),
                order(r#","note":{"S":"a"},"note":{"S":"b"}"#),
                order(&format!(r#"{many},"n7":{{"S":"y"}}"#)),
                order(&format!(r#"{many},"qty":{{"N":"1"}},"qty":{{"N":"2"}}"#)),
                order(&many),
            ]
            .iter()
            .map(|l| l.as_bytes().to_vec())
            .collect();
            check_with(&[router()], &lines).unwrap();
            let routed = router().route(&RawBlock::of_lines(&lines));
            assert_eq!(routed.rows, 1, "{:?}", routed.rejects);
            assert_eq!(routed.rejects.len(), 5);
            assert!(
                routed
                    .rejects
                    .iter()
                    .all(|r| r.reason.contains("appears twice")),
                "{:?}",
                routed.rejects
            );
        }

        /// Found by `damaged_items_route_as_the_reference_does`: the partition key attribute
        /// renamed away (`K` for `PK`) is a reject on both paths, never a row with a null key.
        #[test]
        fn an_item_without_its_partition_key_is_a_reject() {
            let line = br#"{"Item":{"K":{"S":"USER#42"},"SK":{"S":"REVIEW#7"}}}"#.to_vec();
            check(std::slice::from_ref(&line)).unwrap();
            let mut raw = RawBlock::default();
            raw.data.extend_from_slice(&line);
            raw.lines.push(crate::decode::LineRef {
                line_no: 3,
                start: 0,
                end: line.len(),
            });
            let routed = router().route(&raw);
            assert_eq!(routed.rows, 0);
            assert_eq!(routed.rejects.len(), 1);
            assert!(
                routed.rejects[0]
                    .reason
                    .contains("column \"pk\": a key column, but attribute \"PK\" is missing"),
                "{}",
                routed.rejects[0].reason
            );
        }

        /// A time in ISO-8601 for a column read as epoch seconds is a reject on both paths (the
        /// scanned path parses ISO-8601 only for columns that are not epoch numbers), and an
        /// epoch number for an ISO-8601 column is a row on both.
        #[test]
        fn a_time_in_the_other_format_routes_as_the_reference_does() {
            let order = |created: &str| {
                format!(
                    r#"{{"Item":{{"PK":{{"S":"USER#7"}},"SK":{{"S":"ORDER#000002"}},"total":{{"N":"10.5"}},"status":{{"S":"pending"}},"items":{{"L":[]}},"created_at":{created}}}}}"#
                )
                .into_bytes()
            };
            let profile = |created: &str| {
                format!(
                    r#"{{"Item":{{"PK":{{"S":"USER#7"}},"SK":{{"S":"PROFILE"}},"name":{{"S":"A"}},"email":{{"S":"a@b.c"}},"status":{{"S":"active"}},"created_at":{created}}}}}"#
                )
                .into_bytes()
            };
            let lines = [
                order(r#"{"S":"2026-01-15T10:00:00.5+01:00"}"#),
                order(r#"{"S":"1700000000"}"#),
                order(r#"{"N":"1700000000"}"#),
                profile(r#"{"S":"2026-01-15T10:00:00.5+01:00"}"#),
                profile(r#"{"N":"1700000000"}"#),
                profile(r#"{"S":"1700000000"}"#),
            ];
            check(&lines).unwrap();
            let guide = routers().pop().expect("the guide's router");
            let refs: Vec<&str> = lines
                .iter()
                .map(|l| std::str::from_utf8(l).unwrap())
                .collect();
            let routed = guide.route(&block(&refs));
            let reasons: Vec<&str> = routed.rejects.iter().map(|r| r.reason.as_str()).collect();
            assert_eq!(routed.rows, 4, "{reasons:?}");
            assert_eq!(routed.rejects.len(), 2, "{reasons:?}");
            assert!(reasons[0].contains("column \"created_at\""), "{reasons:?}");
        }

        #[test]
        fn the_scanner_routes_plain_items_itself() {
            let lines = [
                order(
                    "ORDER#1",
                    r#","qty":{"N":"3"},"GSI1PK":{"S":"x"},"ship.to":{"M":{"city":{"S":"  Paris "}}},"placed":{"S":"2026-01-15T10:00:00.5+01:00"},"placed_ms":{"N":"1700000000123"},"e":{"S":"\u00e9"}"#,
                ),
                r#"{"Item":{"PK":{"S":"PRODUCT#1"},"SK":{"S":"REVIEW#7"},"email":{"S":" Alice@Example.COM "},"body":{"S":"secret"}}}"#.to_string(),
                order("ORDER#2", r#","ttl":{"N":"1700000000"}"#),
            ];
            let bytes: Vec<Vec<u8>> = lines.iter().map(|l| l.clone().into_bytes()).collect();
            let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
            let (routed, bailed) = router().route_counting(&block(&refs));
            assert_eq!(bailed, 0);
            assert_eq!(routed.rows, 2);
            assert_eq!(routed.filtered, 1);
            assert!(check(&bytes).unwrap() >= 3);
            let _ = V::Raw("");
            // The same lines as Ion: routed alike, none of them by the reference parser.
            let ion: Vec<String> = lines
                .iter()
                .map(|l| crate::ion_scan::differential::to_ion(l, &[0, 1, 3], &[]))
                .collect();
            assert!(
                ion.iter().all(|l| l.starts_with("$ion_1_0 {Item:{")),
                "{ion:?}"
            );
            let refs: Vec<&str> = ion.iter().map(String::as_str).collect();
            let (from_ion, bailed) = router().route_counting(&block(&refs));
            assert_eq!(bailed, 0);
            assert_eq!((from_ion.rows, from_ion.filtered), (2, 1));
            assert_eq!(from_ion.batches, routed.batches);
        }
    }
}
