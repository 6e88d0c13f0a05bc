//! The item a row stands for, as `export-back` writes it: DynamoDB's normal form (numbers without
//! leading or trailing zeros, attributes in name order, binary in base64), and the multiset digest
//! of such items that deep verification compares (`ferry_coordinator::deep`).
//!
//! One [`ItemPlan`] per table of a run says how a row's columns become attributes
//! ([`item_plans`]: table mode, or a routed run in reverse). A row is given as its values in
//! PostgreSQL's text form, in the order of the table's COPY columns
//! ([`ferry_shared::schema::TableSchema::copy_column_names`]): what a server returns over the
//! simple query protocol, and what [`crate::csv::field_text`] writes for a row about to be loaded.
//! The same function therefore turns both into items: a value the server stored differently (a
//! rounded number, a dropped set element, a changed string) gives another item.
//!
//! # The digest
//! An item's hash is the SHA-256 of its map as [`item_text`] writes it (`{"name":{"S":"x"},…}`, no
//! `{"Item":…}` wrapper, no newline). A set of items is digested as the item count and the sum of
//! their hashes, read as big-endian 256-bit numbers, modulo 2^256 ([`ItemDigest`]): the order
//! of rows does not matter, a duplicated item changes the sum (XOR would cancel it), and digests of
//! parts add up to the digest of the whole.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use base64::Engine;
use ferry_shared::schema::routing::TimeFormat;
use ferry_shared::schema::{DdbType, NestedJson, PgType, TableSchema};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

/// An item: its attributes by name.
pub type Item = BTreeMap<String, DValue>;

/// How one column's text becomes an attribute value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    S,
    N,
    B,
    Bool,
    /// JSON text: plain (object → M, …) or typed DynamoDB JSON.
    Json(NestedJson),
    Ss,
    Ns,
    Bs,
    /// timestamptz: epoch seconds (N), epoch milliseconds (N), or ISO-8601 (S).
    Time(Option<TimeFormat>),
}

/// One selected column.
#[derive(Clone, Debug)]
pub struct ColumnOut {
    /// The column's name.
    pub column: String,
    /// Its position among the table's COPY columns (the row's values).
    pub position: usize,
    /// The attribute it holds.
    pub attribute: String,
    /// How its text becomes the attribute's value.
    pub kind: Kind,
    /// Table mode: a NULL here is the attribute's NULL when the overflow says `name: null`.
    pub null_recorded_in_overflow: bool,
}

/// How a table's rows become items.
#[derive(Clone, Debug)]
pub struct ItemPlan {
    /// The table.
    pub table: String,
    /// The columns exported as attributes (a routed run's derived columns are not).
    pub columns: Vec<ColumnOut>,
    /// The overflow or rest column, its position among the COPY columns, and how its JSON is
    /// written.
    pub rest: Option<(String, usize, NestedJson)>,
    /// The item's key attributes.
    pub keys: Vec<String>,
    /// The table's COPY columns without the provenance: what to select for a row.
    pub copy_columns: Vec<String>,
}

/// A DynamoDB attribute value.
#[derive(Clone, Debug, PartialEq)]
pub enum DValue {
    S(String),
    N(String),
    B(Vec<u8>),
    Bool(bool),
    Null,
    M(BTreeMap<String, DValue>),
    L(Vec<DValue>),
    Ss(Vec<String>),
    Ns(Vec<String>),
    Bs(Vec<Vec<u8>>),
}

/// One row's item: `row` holds the row's values in the order of the table's COPY columns (more
/// values, such as the provenance, are ignored).
pub fn row_to_item<S: AsRef<str>>(
    plan: &ItemPlan,
    row: &[Option<S>],
) -> std::result::Result<Item, String> {
    let mut item = BTreeMap::new();
    let context = |column: &str, e: String| format!("table {}, column {column}: {e}", plan.table);
    if let Some((rest, position, nested)) = &plan.rest {
        if let Some(Some(text)) = row.get(*position) {
            let value: Value = serde_json::from_str(text.as_ref())
                .map_err(|e| context(rest, format!("not JSON: {e}")))?;
            let Value::Object(map) = value else {
                return Err(context(rest, "not a JSON object".into()));
            };
            for (name, value) in map {
                let value = json_value(&value, *nested)
                    .map_err(|e| context(rest, format!("{name}: {e}")))?;
                item.insert(name, value);
            }
        }
    }
    for column in &plan.columns {
        match row.get(column.position).and_then(Option::as_ref) {
            Some(text) => {
                let value = text_value(&column.kind, text.as_ref())
                    .map_err(|e| context(&column.column, e))?;
                item.insert(column.attribute.clone(), value);
            }
            None => {
                // Table mode: the overflow's `name: null` records a NULL attribute (already in the
                // item); a spilled value of another type is there too. Otherwise: absent.
                if !column.null_recorded_in_overflow {
                    item.remove(&column.attribute);
                }
            }
        }
    }
    Ok(item)
}

/// How a column of `pg_type` comes back as an attribute (a routed run's columns; `time` is a
/// timestamptz column's source format).
pub fn kind_of(pg_type: PgType, time: Option<TimeFormat>) -> Kind {
    match pg_type {
        PgType::Text => Kind::S,
        PgType::Numeric
        | PgType::NumericScaled { .. }
        | PgType::Int2
        | PgType::Int4
        | PgType::Int8
        | PgType::Float8 => Kind::N,
        PgType::Boolean => Kind::Bool,
        PgType::Bytea => Kind::B,
        PgType::Jsonb => Kind::Json(NestedJson::Plain),
        PgType::TextArray => Kind::Ss,
        PgType::NumericArray => Kind::Ns,
        PgType::ByteaArray => Kind::Bs,
        PgType::Timestamptz => Kind::Time(time),
    }
}

/// How the rows of each table a run with `schema` writes become items, in the order of
/// `crate::sink::run_tables` (the encoder's table order): the table, or each routed table with
/// its columns that took an attribute whole (the first rule's; derived columns are left out).
pub fn item_plans(schema: &TableSchema) -> Vec<ItemPlan> {
    let keys: Vec<String> = schema.key_columns().map(|c| c.name.clone()).collect();
    let Some(routing) = &schema.routing else {
        let nested = schema.nested_json;
        let columns = schema
            .columns
            .iter()
            .enumerate()
            .map(|(position, c)| ColumnOut {
                column: c.name.clone(),
                position,
                attribute: c.name.clone(),
                kind: match c.ddb_type {
                    DdbType::S => Kind::S,
                    DdbType::N => Kind::N,
                    DdbType::B => Kind::B,
                    DdbType::Bool => Kind::Bool,
                    DdbType::M | DdbType::L | DdbType::Null => Kind::Json(nested),
                    DdbType::Ss => Kind::Ss,
                    DdbType::Ns => Kind::Ns,
                    DdbType::Bs => Kind::Bs,
                },
                null_recorded_in_overflow: true,
            })
            .collect();
        return vec![ItemPlan {
            table: schema.table.clone(),
            columns,
            rest: Some((schema.overflow_column.clone(), schema.columns.len(), nested)),
            keys,
            copy_columns: without_provenance(schema.copy_column_names()),
        }];
    };
    let mut plans = Vec::new();
    for table in routing.tables(&keys) {
        let names = table.copy_column_names();
        let position = |name: &str| names.iter().position(|n| n == name);
        let rest = position(&table.overflow_column)
            .map(|at| (table.overflow_column.clone(), at, NestedJson::Plain));
        let Some(first) = routing.rules.iter().find(|r| r.table == table.table) else {
            // The catch-all table: the key attributes as text, the rest in its JSON.
            plans.push(ItemPlan {
                table: table.table.clone(),
                columns: keys
                    .iter()
                    .filter_map(|k| {
                        Some(ColumnOut {
                            column: k.clone(),
                            position: position(k)?,
                            attribute: k.clone(),
                            kind: Kind::S,
                            null_recorded_in_overflow: false,
                        })
                    })
                    .collect(),
                rest,
                keys: keys.clone(),
                copy_columns: without_provenance(names.clone()),
            });
            continue;
        };
        let mut columns: Vec<ColumnOut> = Vec::new();
        for column in &first.columns {
            let Some(attribute) =
                exported_whole(column).filter(|a| !columns.iter().any(|c| &c.attribute == a))
            else {
                continue;
            };
            let Some(at) = position(&column.name) else {
                continue;
            };
            columns.push(ColumnOut {
                column: column.name.clone(),
                position: at,
                attribute,
                kind: kind_of(column.pg_type(), column.time),
                null_recorded_in_overflow: false,
            });
        }
        plans.push(ItemPlan {
            table: table.table.clone(),
            columns,
            rest,
            keys: keys.clone(),
            copy_columns: without_provenance(names),
        });
    }
    plans
}

fn without_provenance(mut names: Vec<String>) -> Vec<String> {
    names.retain(|n| n != ferry_shared::schema::PROVENANCE_COLUMN);
    names
}

/// Whether `column` of a routed rule is exported as its attribute (not derived from it).
pub fn exported_whole(column: &ferry_shared::schema::routing::Column) -> Option<String> {
    column
        .whole_attribute()
        .filter(|_| column.regex.is_none() && column.constant.is_none())
}

/// The item's map in DynamoDB JSON, as export-back writes it inside `{"Item":…}`.
pub fn item_text(item: &Item) -> String {
    let mut out = String::with_capacity(256);
    write_map(&mut out, item);
    out
}

/// The hash of one item ([`item_text`]'s bytes).
pub fn item_hash(item: &Item) -> [u8; 32] {
    Sha256::digest(item_text(item).as_bytes()).into()
}

/// A multiset of items: their count and the sum of their hashes modulo 2^256.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ItemDigest {
    /// Items added.
    pub items: u64,
    /// The sum, as four 64-bit limbs, most significant first.
    sum: [u64; 4],
}

impl ItemDigest {
    /// Adds one item's hash.
    pub fn add_hash(&mut self, hash: &[u8; 32]) {
        let mut limbs = [0u64; 4];
        for (i, limb) in limbs.iter_mut().enumerate() {
            *limb = u64::from_be_bytes(hash[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        }
        self.add_sum(&limbs);
        self.items += 1;
    }

    /// Adds one item.
    pub fn add_item(&mut self, item: &Item) {
        self.add_hash(&item_hash(item));
    }

    /// Adds another digest (the union of both multisets).
    pub fn merge(&mut self, other: &ItemDigest) {
        self.add_sum(&other.sum);
        self.items += other.items;
    }

    fn add_sum(&mut self, limbs: &[u64; 4]) {
        let mut carry = false;
        for i in (0..4).rev() {
            let (a, c1) = self.sum[i].overflowing_add(limbs[i]);
            let (b, c2) = a.overflowing_add(u64::from(carry));
            self.sum[i] = b;
            carry = c1 || c2;
        }
    }

    /// The sum as 64 hex digits (how the ledger records it).
    pub fn sum_hex(&self) -> String {
        let mut out = String::with_capacity(64);
        for limb in self.sum {
            let _ = write!(out, "{limb:016x}");
        }
        out
    }

    /// A digest from its recorded count and sum.
    pub fn from_parts(items: u64, sum_hex: &str) -> Option<ItemDigest> {
        if sum_hex.len() != 64 || !sum_hex.is_ascii() {
            return None;
        }
        let mut sum = [0u64; 4];
        for (i, limb) in sum.iter_mut().enumerate() {
            *limb = u64::from_str_radix(&sum_hex[i * 16..i * 16 + 16], 16).ok()?;
        }
        Some(ItemDigest { items, sum })
    }
}

/// The digest of one row: its item's hash, or, for a row that is no item (a value the mapping
/// cannot read back), the hash of why, so that such a row still counts and still compares.
pub fn row_hash<S: AsRef<str>>(plan: &ItemPlan, row: &[Option<S>]) -> [u8; 32] {
    thread_local! {
        static TEXT: std::cell::RefCell<(String, String)> =
            const { std::cell::RefCell::new((String::new(), String::new())) };
    }
    let written = TEXT.with(|buffers| {
        let (text, scratch) = &mut *buffers.borrow_mut();
        text.clear();
        scratch.clear();
        write_row_item(plan, row, text, scratch)
            .ok()
            .map(|()| -> [u8; 32] { Sha256::digest(text.as_bytes()).into() })
    });
    if let Some(hash) = written {
        return hash;
    }
    // A row that is no item: the reference gives the reason.
    match row_to_item(plan, row) {
        Ok(item) => item_hash(&item),
        Err(why) => Sha256::digest(format!("!{why}").as_bytes()).into(),
    }
}

/// Writes the text of the item `row` stands for into `out`: what [`item_text`] writes for
/// [`row_to_item`]'s item, without building it (the values are written straight from the row's
/// text, the attributes in name order). `Err` for a row that is no item (`row_to_item` says why).
fn write_row_item<S: AsRef<str>>(
    plan: &ItemPlan,
    row: &[Option<S>],
    out: &mut String,
    rendered: &mut String,
) -> std::result::Result<(), ()> {
    enum Source<'a> {
        Column(&'a Kind, &'a str),
        Json(&'a Value, NestedJson),
        Rendered(std::ops::Range<usize>),
    }
    let mut plain_members = Vec::new();
    let mut typed_members: Option<serde_json::Map<String, Value>> = None;
    let mut nested = NestedJson::Plain;
    if let Some((_, position, how)) = &plan.rest {
        nested = *how;
        if let Some(text) = row.get(*position).and_then(Option::as_ref) {
            if nested == NestedJson::Plain {
                let mut reader = Transcode::new(text.as_ref());
                plain_members = reader.members(rendered, 0)?;
                reader.finish()?;
            } else {
                match serde_json::from_str(text.as_ref()).map_err(|_| ())? {
                    Value::Object(map) => typed_members = Some(map),
                    _ => return Err(()),
                }
            }
        }
    }
    // A column's value wins over the overflow's; a NULL column drops the attribute unless the
    // overflow records it (table mode).
    let shadowed = |name: &str| {
        plan.columns.iter().any(|c| {
            c.attribute == name
                && (row.get(c.position).and_then(Option::as_ref).is_some()
                    || !c.null_recorded_in_overflow)
        })
    };
    let mut entries: Vec<(&str, Source<'_>)> =
        Vec::with_capacity(plan.columns.len() + plain_members.len());
    for column in &plan.columns {
        if let Some(text) = row.get(column.position).and_then(Option::as_ref) {
            entries.push((
                column.attribute.as_str(),
                Source::Column(&column.kind, text.as_ref()),
            ));
        }
    }
    for (name, range) in &plain_members {
        if !shadowed(name) {
            entries.push((name.as_ref(), Source::Rendered(range.clone())));
        }
    }
    if let Some(map) = &typed_members {
        for (name, value) in map {
            if !shadowed(name) {
                entries.push((name.as_str(), Source::Json(value, nested)));
            }
        }
    }
    entries.sort_by(|a, b| a.0.cmp(b.0));
    out.push('{');
    for (i, (name, source)) in entries.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(out, name);
        out.push(':');
        match source {
            Source::Column(kind, text) => write_text_value(out, kind, text)?,
            Source::Json(value, nested) => write_json_value(out, value, *nested)?,
            Source::Rendered(range) => out.push_str(&rendered[range.clone()]),
        }
    }
    out.push('}');
    Ok(())
}

/// An object's members: each name and where its value's text is.
type Members<'a> = Vec<(std::borrow::Cow<'a, str>, std::ops::Range<usize>)>;

/// Plain JSON text read straight into the DynamoDB JSON [`write_json_value`] writes for it (objects
/// → `M` with their members in name order, arrays → `L`, …), without building a tree. `Err` for
/// text that is not plain JSON, or that the tree would read differently (a name given twice):
/// the caller then takes the tree's way, which says why.
struct Transcode<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Transcode<'a> {
    fn new(text: &'a str) -> Self {
        Transcode { text, at: 0 }
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn skip_space(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes().get(self.at) {
            self.at += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> Result<(), ()> {
        self.skip_space();
        if self.bytes().get(self.at) == Some(&byte) {
            self.at += 1;
            Ok(())
        } else {
            Err(())
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_space();
        self.bytes().get(self.at).copied()
    }

    /// The end: nothing but space left.
    fn finish(&mut self) -> Result<(), ()> {
        self.skip_space();
        if self.at == self.text.len() {
            Ok(())
        } else {
            Err(())
        }
    }

    /// A string, unescaped (borrowed when it holds no escape).
    fn string(&mut self) -> Result<std::borrow::Cow<'a, str>, ()> {
        self.eat(b'"')?;
        let start = self.at;
        let bytes = self.bytes();
        loop {
            // Eight bytes at a time while none is a quote, a backslash or a control character.
            while self.at + 8 <= bytes.len()
                && !needs_escape(u64::from_le_bytes(
                    bytes[self.at..self.at + 8].try_into().expect("8 bytes"),
                ))
            {
                self.at += 8;
            }
            match bytes.get(self.at) {
                Some(b'"') => {
                    let text = &self.text[start..self.at];
                    self.at += 1;
                    return Ok(std::borrow::Cow::Borrowed(text));
                }
                Some(b'\\') => break,
                Some(0..=0x1f) | None => return Err(()),
                Some(_) => self.at += 1,
            }
        }
        let mut owned = self.text[start..self.at].to_string();
        loop {
            match bytes.get(self.at) {
                Some(b'"') => {
                    self.at += 1;
                    return Ok(std::borrow::Cow::Owned(owned));
                }
                Some(b'\\') => {
                    let escaped = *bytes.get(self.at + 1).ok_or(())?;
                    self.at += 2;
                    match escaped {
                        b'"' => owned.push('"'),
                        b'\\' => owned.push('\\'),
                        b'/' => owned.push('/'),
                        b'b' => owned.push('\u{8}'),
                        b'f' => owned.push('\u{c}'),
                        b'n' => owned.push('\n'),
                        b'r' => owned.push('\r'),
                        b't' => owned.push('\t'),
                        b'u' => {
                            let high = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&high) {
                                if bytes.get(self.at..self.at + 2) != Some(b"\\u") {
                                    return Err(());
                                }
                                self.at += 2;
                                let low = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&low) {
                                    return Err(());
                                }
                                0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
                            } else {
                                high
                            };
                            owned.push(char::from_u32(code).ok_or(())?);
                        }
                        _ => return Err(()),
                    }
                }
                Some(0..=0x1f) | None => return Err(()),
                Some(_) => {
                    // Up to the next quote or escape, whole.
                    let run = bytes[self.at..]
                        .iter()
                        .position(|b| matches!(b, b'"' | b'\\' | 0..=0x1f))
                        .map_or(bytes.len(), |n| self.at + n);
                    owned.push_str(&self.text[self.at..run]);
                    self.at = run;
                }
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, ()> {
        let digits = self.text.get(self.at..self.at + 4).ok_or(())?;
        if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(());
        }
        self.at += 4;
        u32::from_str_radix(digits, 16).map_err(|_| ())
    }

    /// A number's text, as JSON's grammar has it.
    fn number(&mut self) -> Result<&'a str, ()> {
        self.skip_space();
        let bytes = self.bytes();
        let start = self.at;
        let digits = |at: &mut usize| {
            let from = *at;
            while bytes.get(*at).is_some_and(u8::is_ascii_digit) {
                *at += 1;
            }
            *at > from
        };
        let mut at = self.at;
        if bytes.get(at) == Some(&b'-') {
            at += 1;
        }
        match bytes.get(at) {
            Some(b'0') => at += 1,
            Some(b'1'..=b'9') => {
                digits(&mut at);
            }
            _ => return Err(()),
        }
        if bytes.get(at) == Some(&b'.') {
            at += 1;
            if !digits(&mut at) {
                return Err(());
            }
        }
        if let Some(b'e' | b'E') = bytes.get(at) {
            at += 1;
            if let Some(b'+' | b'-') = bytes.get(at) {
                at += 1;
            }
            if !digits(&mut at) {
                return Err(());
            }
        }
        self.at = at;
        Ok(&self.text[start..at])
    }

    fn literal(&mut self, word: &str) -> Result<(), ()> {
        self.skip_space();
        if self.text[self.at..].starts_with(word) {
            self.at += word.len();
            Ok(())
        } else {
            Err(())
        }
    }

    /// One value, written as DynamoDB JSON.
    fn value(&mut self, out: &mut String, depth: usize) -> Result<(), ()> {
        if depth > 128 {
            return Err(());
        }
        match self.peek().ok_or(())? {
            b'{' => {
                out.push_str("{\"M\":");
                self.object(out, depth)?;
                out.push('}');
            }
            b'[' => {
                self.at += 1;
                out.push_str("{\"L\":[");
                if self.peek() == Some(b']') {
                    self.at += 1;
                } else {
                    loop {
                        self.value(out, depth + 1)?;
                        match self.peek() {
                            Some(b',') => {
                                self.at += 1;
                                out.push(',');
                            }
                            Some(b']') => {
                                self.at += 1;
                                break;
                            }
                            _ => return Err(()),
                        }
                    }
                }
                out.push_str("]}");
            }
            b'"' => {
                let text = self.string()?;
                out.push_str("{\"S\":");
                write_read_string(out, &text);
                out.push('}');
            }
            b't' => {
                self.literal("true")?;
                out.push_str("{\"BOOL\":true}");
            }
            b'f' => {
                self.literal("false")?;
                out.push_str("{\"BOOL\":false}");
            }
            b'n' => {
                self.literal("null")?;
                out.push_str("{\"NULL\":true}");
            }
            _ => {
                let number = self.number()?;
                out.push_str("{\"N\":\"");
                write_normal_number(out, number)?;
                out.push_str("\"}");
            }
        }
        Ok(())
    }

    /// An object's members: each name and its value's text (in `values`), in name order.
    fn members(&mut self, values: &mut String, depth: usize) -> Result<Members<'a>, ()> {
        self.eat(b'{')?;
        let mut members = Vec::new();
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Ok(members);
        }
        loop {
            let name = self.string()?;
            if name == "$serde_json::private::Number" {
                // The tree would read this object as a number.
                return Err(());
            }
            self.eat(b':')?;
            let start = values.len();
            self.value(values, depth + 1)?;
            members.push((name, start..values.len()));
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b'}') => {
                    self.at += 1;
                    break;
                }
                _ => return Err(()),
            }
        }
        members.sort_by(|a, b| a.0.cmp(&b.0));
        // A name given twice: the tree keeps the last, by its own rules.
        if members.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(());
        }
        Ok(members)
    }

    /// An object, written as a map's members (`{"a":…,"b":…}`): each member written in place as
    /// it is read, then put in name order (one copy) only when the text had them in another.
    fn object(&mut self, out: &mut String, depth: usize) -> Result<(), ()> {
        self.eat(b'{')?;
        out.push('{');
        let start = out.len();
        let mut members: Vec<(std::borrow::Cow<'a, str>, std::ops::Range<usize>)> = Vec::new();
        if self.peek() == Some(b'}') {
            self.at += 1;
        } else {
            loop {
                let name = self.string()?;
                if name == "$serde_json::private::Number" {
                    return Err(());
                }
                self.eat(b':')?;
                let from = out.len();
                write_read_string(out, &name);
                out.push(':');
                self.value(out, depth + 1)?;
                members.push((name, from..out.len()));
                match self.peek() {
                    Some(b',') => {
                        self.at += 1;
                        out.push(',');
                    }
                    Some(b'}') => {
                        self.at += 1;
                        break;
                    }
                    _ => return Err(()),
                }
            }
        }
        let in_order = members.windows(2).all(|w| w[0].0 < w[1].0);
        if !in_order {
            members.sort_by(|a, b| a.0.cmp(&b.0));
            // A name given twice: the tree keeps the last, by its own rules.
            if members.windows(2).any(|w| w[0].0 == w[1].0) {
                return Err(());
            }
            let written = out[start..].to_string();
            out.truncate(start);
            for (i, (_, range)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&written[range.start - start..range.end - start]);
            }
        }
        out.push('}');
        Ok(())
    }
}

/// A string [`Transcode::string`] read, written as [`write_string`] would: one borrowed from the
/// text held no escape, no quote and no control character, so it is copied as it is.
#[allow(clippy::ptr_arg)] // the variant, not only the text, says whether it needs escaping
fn write_read_string(out: &mut String, text: &std::borrow::Cow<'_, str>) {
    match text {
        std::borrow::Cow::Borrowed(raw) => {
            out.push('"');
            out.push_str(raw);
            out.push('"');
        }
        std::borrow::Cow::Owned(unescaped) => write_string(out, unescaped),
    }
}

/// [`text_value`]'s value, written as [`write_value`] would.
fn write_text_value(out: &mut String, kind: &Kind, text: &str) -> std::result::Result<(), ()> {
    match kind {
        Kind::S => {
            out.push_str("{\"S\":");
            write_string(out, text);
            out.push('}');
        }
        Kind::N => {
            out.push_str("{\"N\":\"");
            write_normal_number(out, text)?;
            out.push_str("\"}");
        }
        Kind::Json(NestedJson::Plain) => {
            let mut reader = Transcode::new(text);
            reader.value(out, 0)?;
            reader.finish()?;
        }
        Kind::Json(nested) => {
            let value: Value = serde_json::from_str(text).map_err(|_| ())?;
            write_json_value(out, &value, *nested)?;
        }
        _ => write_value(out, &text_value(kind, text).map_err(|_| ())?),
    }
    Ok(())
}

/// [`json_value`]'s value, written as [`write_value`] would.
fn write_json_value(
    out: &mut String,
    value: &Value,
    nested: NestedJson,
) -> std::result::Result<(), ()> {
    if nested == NestedJson::Dynamodb {
        write_value(out, &typed_value(value).map_err(|_| ())?);
        return Ok(());
    }
    match value {
        Value::Null => out.push_str("{\"NULL\":true}"),
        Value::Bool(b) => out.push_str(if *b {
            "{\"BOOL\":true}"
        } else {
            "{\"BOOL\":false}"
        }),
        Value::Number(n) => {
            out.push_str("{\"N\":\"");
            write_normal_number(out, &n.to_string())?;
            out.push_str("\"}");
        }
        Value::String(s) => {
            out.push_str("{\"S\":");
            write_string(out, s);
            out.push('}');
        }
        Value::Array(items) => {
            out.push_str("{\"L\":[");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_value(out, item, nested)?;
            }
            out.push_str("]}");
        }
        Value::Object(map) => {
            // In name order, whatever order the map keeps.
            let mut names: Vec<&String> = map.keys().collect();
            names.sort();
            out.push_str("{\"M\":{");
            for (i, name) in names.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, name);
                out.push(':');
                write_json_value(out, &map[name], nested)?;
            }
            out.push_str("}}");
        }
    }
    Ok(())
}

/// [`normal_number`]'s text, written into `out`.
fn write_normal_number(out: &mut String, text: &str) -> std::result::Result<(), ()> {
    let plain = crate::number::canonical_number(text.trim()).map_err(|_| ())?;
    let (negative, body) = match plain.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, plain.as_ref()),
    };
    let body = match body.split_once('.') {
        Some((int, frac)) => {
            let frac = frac.trim_end_matches('0');
            if frac.is_empty() {
                int
            } else {
                &body[..int.len() + 1 + frac.len()]
            }
        }
        None => body,
    };
    if negative && body.bytes().any(|b| b != b'0' && b != b'.') {
        out.push('-');
    }
    out.push_str(body);
    Ok(())
}

/// DynamoDB's normal form of a number: no leading zeros, no trailing fraction zeros, no `-0`.
pub fn normal_number(text: &str) -> std::result::Result<String, String> {
    let plain = crate::number::canonical_number(text.trim())
        .map_err(|e| format!("{text:?} is not a DynamoDB number: {e}"))?;
    let (negative, body) = match plain.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, plain.as_ref()),
    };
    let body = match body.split_once('.') {
        Some((int, frac)) => {
            let frac = frac.trim_end_matches('0');
            if frac.is_empty() {
                int.to_string()
            } else {
                format!("{int}.{frac}")
            }
        }
        None => body.to_string(),
    };
    Ok(
        if negative && body.bytes().any(|b| b != b'0' && b != b'.') {
            format!("-{body}")
        } else {
            body
        },
    )
}

pub fn hex_bytes(text: &str) -> std::result::Result<Vec<u8>, String> {
    let hex = text
        .strip_prefix("\\x")
        .ok_or_else(|| format!("bytea text {text:?} is not hex (\\x…)"))?;
    if hex.len() % 2 != 0 {
        return Err(format!("bytea text {text:?} has an odd length"));
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|e| format!("bytea text: {e}")))
        .collect()
}

/// A column's text (PostgreSQL text format) as an attribute value.
pub fn text_value(kind: &Kind, text: &str) -> std::result::Result<DValue, String> {
    Ok(match kind {
        Kind::S => DValue::S(text.to_string()),
        Kind::N => DValue::N(normal_number(text)?),
        Kind::B => DValue::B(hex_bytes(text)?),
        Kind::Bool => DValue::Bool(match text {
            "t" | "true" | "TRUE" | "True" => true,
            "f" | "false" | "FALSE" | "False" => false,
            other => return Err(format!("{other:?} is not a boolean")),
        }),
        Kind::Json(nested) => {
            let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
            json_value(&value, *nested)?
        }
        Kind::Ss | Kind::Ns | Kind::Bs => {
            let elements = parse_array_literal(text)?;
            if elements.iter().any(Option::is_none) {
                return Err(format!(
                    "array {text} holds NULL, which a DynamoDB set cannot"
                ));
            }
            let elements: Vec<String> = elements.into_iter().flatten().collect();
            if elements.is_empty() {
                return Ok(DValue::L(Vec::new()));
            }
            match kind {
                Kind::Ss => DValue::Ss(elements),
                Kind::Ns => DValue::Ns(
                    elements
                        .iter()
                        .map(|n| normal_number(n))
                        .collect::<std::result::Result<_, _>>()?,
                ),
                _ => DValue::Bs(
                    elements
                        .iter()
                        .map(|b| hex_bytes(b))
                        .collect::<std::result::Result<_, _>>()?,
                ),
            }
        }
        Kind::Time(format) => {
            let time = parse_time(text)?;
            let micros = time.timestamp_micros();
            match format {
                Some(TimeFormat::EpochSeconds) => {
                    DValue::N(normal_number(&fraction(micros, 1_000_000))?)
                }
                Some(TimeFormat::EpochMillis) => {
                    DValue::N(normal_number(&fraction(micros, 1_000))?)
                }
                _ => DValue::S(time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
            }
        }
    })
}

/// `micros` in seconds (`per_unit` 1,000,000) or milliseconds (1,000), as exact decimal text.
pub fn fraction(micros: i64, per_unit: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let micros = micros.unsigned_abs();
    if per_unit == 1_000_000 {
        format!("{sign}{}.{:06}", micros / 1_000_000, micros % 1_000_000)
    } else {
        format!("{sign}{}.{:03}", micros / 1_000, micros % 1_000)
    }
}

pub fn parse_time(text: &str) -> std::result::Result<chrono::DateTime<chrono::Utc>, String> {
    let text = text.trim();
    for format in [
        "%Y-%m-%d %H:%M:%S%.f%#z",
        "%Y-%m-%d %H:%M:%S%#z",
        "%Y-%m-%dT%H:%M:%S%.f%#z",
    ] {
        if let Ok(time) = chrono::DateTime::parse_from_str(text, format) {
            return Ok(time.with_timezone(&chrono::Utc));
        }
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| format!("{text:?} is not a timestamptz: {e}"))
}

/// JSON back to a DynamoDB value: plain (object → M, array → L, …) or typed.
pub fn json_value(value: &Value, nested: NestedJson) -> std::result::Result<DValue, String> {
    if nested == NestedJson::Dynamodb {
        return typed_value(value);
    }
    Ok(match value {
        Value::Null => DValue::Null,
        Value::Bool(b) => DValue::Bool(*b),
        Value::Number(n) => DValue::N(normal_number(&n.to_string())?),
        Value::String(s) => DValue::S(s.clone()),
        Value::Array(items) => DValue::L(
            items
                .iter()
                .map(|v| json_value(v, nested))
                .collect::<std::result::Result<_, _>>()?,
        ),
        Value::Object(map) => DValue::M(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), json_value(v, nested)?)))
                .collect::<std::result::Result<_, String>>()?,
        ),
    })
}

/// Typed DynamoDB JSON (`{"S":"x"}`) to a value.
pub fn typed_value(value: &Value) -> std::result::Result<DValue, String> {
    let Value::Object(map) = value else {
        return Err(format!("{value} is not a typed DynamoDB value"));
    };
    let Some((descriptor, body)) = map.iter().next().filter(|_| map.len() == 1) else {
        return Err(format!("{value} is not a typed DynamoDB value"));
    };
    let string = |v: &Value| {
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("{v} is not a string"))
    };
    let strings = |v: &Value| -> std::result::Result<Vec<String>, String> {
        v.as_array()
            .ok_or_else(|| format!("{v} is not an array"))?
            .iter()
            .map(string)
            .collect()
    };
    let base64 = |s: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|e| format!("invalid base64: {e}"))
    };
    Ok(match descriptor.as_str() {
        "S" => DValue::S(string(body)?),
        "N" => DValue::N(normal_number(&string(body)?)?),
        "B" => DValue::B(base64(&string(body)?)?),
        "BOOL" => DValue::Bool(body.as_bool().ok_or("BOOL is not a boolean")?),
        "NULL" => DValue::Null,
        "M" => DValue::M(
            body.as_object()
                .ok_or("M is not an object")?
                .iter()
                .map(|(k, v)| Ok((k.clone(), typed_value(v)?)))
                .collect::<std::result::Result<_, String>>()?,
        ),
        "L" => DValue::L(
            body.as_array()
                .ok_or("L is not an array")?
                .iter()
                .map(typed_value)
                .collect::<std::result::Result<_, _>>()?,
        ),
        "SS" => DValue::Ss(strings(body)?),
        "NS" => DValue::Ns(
            strings(body)?
                .iter()
                .map(|n| normal_number(n))
                .collect::<std::result::Result<_, _>>()?,
        ),
        "BS" => DValue::Bs(
            strings(body)?
                .iter()
                .map(|b| base64(b))
                .collect::<std::result::Result<_, _>>()?,
        ),
        other => return Err(format!("unknown type descriptor {other:?}")),
    })
}

/// A one-dimensional array literal (`{a,"b c",NULL}`); `None` for NULL elements.
pub fn parse_array_literal(text: &str) -> std::result::Result<Vec<Option<String>>, String> {
    let inner = text
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .ok_or_else(|| format!("{text} is not an array literal"))?;
    let mut items = Vec::new();
    let mut chars = inner.chars().peekable();
    while chars.peek().is_some() {
        let mut item = String::new();
        let quoted = chars.peek() == Some(&'"');
        if quoted {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => item.push(chars.next().ok_or("dangling escape")?),
                    Some('"') => break,
                    Some(c) => item.push(c),
                    None => return Err(format!("unterminated element in {text}")),
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
        items.push(if !quoted && item.eq_ignore_ascii_case("NULL") {
            None
        } else {
            Some(item)
        });
        match chars.next() {
            Some(',') | None => {}
            Some(c) => return Err(format!("unexpected {c:?} in {text}")),
        }
    }
    Ok(items)
}

pub fn write_string(out: &mut String, s: &str) {
    out.push('"');
    // Runs of bytes that need no escape are copied whole (every byte escaped is ASCII, so the
    // runs end on character boundaries); eight bytes are checked at a time.
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if i + 8 <= bytes.len() {
            let word = u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
            if !needs_escape(word) {
                i += 8;
                continue;
            }
        }
        let b = bytes[i];
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => {
                i += 1;
                continue;
            }
        };
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{:04x}", b);
        } else {
            out.push_str(escape);
        }
        i += 1;
        start = i;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Whether any of the eight bytes of `word` is `"`, `\\` or below 0x20 (may say yes for a word
/// that needs none; never no for one that does).
fn needs_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let below_space = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
    below_space
        | has_zero(word ^ (ONES * u64::from(b'"')))
        | has_zero(word ^ (ONES * u64::from(b'\\')))
        != 0
}

pub fn write_base64(out: &mut String, bytes: &[u8]) {
    out.push('"');
    base64::engine::general_purpose::STANDARD.encode_string(bytes, out);
    out.push('"');
}

fn write_list<T>(out: &mut String, items: &[T], mut each: impl FnMut(&mut String, &T)) {
    out.push('[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        each(out, item);
    }
    out.push(']');
}

pub fn write_map(out: &mut String, map: &BTreeMap<String, DValue>) {
    out.push('{');
    for (i, (name, value)) in map.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(out, name);
        out.push(':');
        write_value(out, value);
    }
    out.push('}');
}

/// A value in DynamoDB JSON.
pub fn write_value(out: &mut String, value: &DValue) {
    match value {
        DValue::S(s) => {
            out.push_str("{\"S\":");
            write_string(out, s);
        }
        DValue::N(n) => {
            out.push_str("{\"N\":");
            write_string(out, n);
        }
        DValue::B(b) => {
            out.push_str("{\"B\":");
            write_base64(out, b);
        }
        DValue::Bool(b) => out.push_str(if *b {
            "{\"BOOL\":true"
        } else {
            "{\"BOOL\":false"
        }),
        DValue::Null => out.push_str("{\"NULL\":true"),
        DValue::M(map) => {
            out.push_str("{\"M\":");
            write_map(out, map);
        }
        DValue::L(items) => {
            out.push_str("{\"L\":");
            write_list(out, items, write_value);
        }
        DValue::Ss(items) => {
            out.push_str("{\"SS\":");
            write_list(out, items, |out, s| write_string(out, s));
        }
        DValue::Ns(items) => {
            out.push_str("{\"NS\":");
            write_list(out, items, |out, s| write_string(out, s));
        }
        DValue::Bs(items) => {
            out.push_str("{\"BS\":");
            write_list(out, items, |out, b| write_base64(out, b));
        }
    }
    out.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_take_dynamodbs_normal_form() {
        assert_eq!(normal_number("12.50").unwrap(), "12.5");
        assert_eq!(normal_number("-0.00").unwrap(), "0");
        assert_eq!(normal_number("1.5E2").unwrap(), "150");
        assert_eq!(
            normal_number("12345678901234567890123456789012345678").unwrap(),
            "12345678901234567890123456789012345678"
        );
        assert_eq!(
            normal_number("-0.000000000000000000000000000000000000001").unwrap(),
            "-0.000000000000000000000000000000000000001"
        );
        assert!(normal_number("NaN").is_err());
    }

    #[test]
    fn values_come_back_typed() {
        assert_eq!(
            text_value(&Kind::B, "\\x00ff").unwrap(),
            DValue::B(vec![0, 255])
        );
        assert_eq!(
            text_value(&Kind::Ss, "{a,\"b c\"}").unwrap(),
            DValue::Ss(vec!["a".into(), "b c".into()])
        );
        assert_eq!(
            text_value(&Kind::Bs, "{\"\\\\x0001\"}").unwrap(),
            DValue::Bs(vec![vec![0, 1]])
        );
        assert!(text_value(&Kind::Ss, "{a,NULL}").is_err());
        assert_eq!(
            text_value(
                &Kind::Time(Some(TimeFormat::EpochSeconds)),
                "2024-01-02 01:04:05.500000+00"
            )
            .unwrap(),
            DValue::N("1704157445.5".into())
        );
        assert_eq!(
            text_value(
                &Kind::Time(Some(TimeFormat::EpochMillis)),
                "2024-01-02 01:04:05.5+00"
            )
            .unwrap(),
            DValue::N("1704157445500".into())
        );
        assert_eq!(
            text_value(
                &Kind::Time(Some(TimeFormat::Iso8601)),
                "2024-01-02 01:04:05+00"
            )
            .unwrap(),
            DValue::S("2024-01-02T01:04:05Z".into())
        );
        let plain = text_value(
            &Kind::Json(NestedJson::Plain),
            r#"{"a":[1.50,"x",null,true]}"#,
        )
        .unwrap();
        let mut line = String::new();
        write_value(&mut line, &plain);
        assert_eq!(
            line,
            r#"{"M":{"a":{"L":[{"N":"1.5"},{"S":"x"},{"NULL":true},{"BOOL":true}]}}}"#
        );
        let typed = text_value(&Kind::Json(NestedJson::Dynamodb), r#"{"SS":["a"]}"#).unwrap();
        assert_eq!(typed, DValue::Ss(vec!["a".into()]));
    }

    #[test]
    fn digests_are_order_free_and_count_duplicates() {
        let item = |n: &str| -> Item {
            [("pk".to_string(), DValue::S(n.into()))]
                .into_iter()
                .collect()
        };
        let (mut a, mut b) = (ItemDigest::default(), ItemDigest::default());
        for n in ["1", "2", "3"] {
            a.add_item(&item(n));
        }
        for n in ["3", "1", "2"] {
            b.add_item(&item(n));
        }
        assert_eq!(a, b);
        assert_eq!(a.items, 3);
        // A duplicate changes the sum (an XOR would cancel it out).
        let mut twice = ItemDigest::default();
        twice.add_item(&item("1"));
        twice.add_item(&item("1"));
        let none = ItemDigest {
            items: 2,
            ..Default::default()
        };
        assert_ne!(twice.sum_hex(), none.sum_hex());
        // Parts add up to the whole, and the recorded form reads back.
        let (mut left, mut right) = (ItemDigest::default(), ItemDigest::default());
        left.add_item(&item("2"));
        right.add_item(&item("1"));
        right.add_item(&item("3"));
        left.merge(&right);
        assert_eq!(left, a);
        assert_eq!(ItemDigest::from_parts(3, &a.sum_hex()), Some(a));
        assert_eq!(ItemDigest::from_parts(3, "zz"), None);
        // The sum wraps modulo 2^256.
        let mut top = ItemDigest::default();
        top.add_hash(&[0xff; 32]);
        top.add_hash(&[
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            0, 0, 1,
        ]);
        assert_eq!(top.sum_hex(), "0".repeat(64));
        // The hash is of the item's text.
        assert_eq!(item_text(&item("1")), r#"{"pk":{"S":"1"}}"#);
    }

    #[test]
    fn a_row_and_its_loaded_form_give_one_item() {
        let column = |name: &str, ddb_type, pg_type, is_key| ferry_shared::schema::ColumnSpec {
            name: name.into(),
            ddb_type,
            pg_type,
            is_key,
        };
        let schema = TableSchema {
            table: "t".into(),
            columns: vec![
                column("pk", DdbType::S, PgType::Text, true),
                column("n", DdbType::N, PgType::Numeric, false),
            ],
            overflow_column: "attrs".into(),
            nested_json: NestedJson::Plain,
            on_type_mismatch: Default::default(),
            numeric_limit: Default::default(),
            routing: None,
            provenance: true,
        };
        let plans = item_plans(&schema);
        assert_eq!(plans.len(), 1);
        // As the worker writes the row, and as PostgreSQL returns it.
        let written = [
            Some("a"),
            Some("12.50"),
            Some(r#"{"m":{"x":[1,"y"]}}"#),
            Some("16777216"),
        ];
        let returned = [
            Some("a"),
            Some("12.5"),
            Some(r#"{"m": {"x": [1, "y"]}}"#),
            Some("1"),
        ];
        assert_eq!(
            row_hash(&plans[0], &written),
            row_hash(&plans[0], &returned)
        );
        let rounded = [
            Some("a"),
            Some("12.4"),
            Some(r#"{"m": {"x": [1, "y"]}}"#),
            None,
        ];
        assert_ne!(row_hash(&plans[0], &written), row_hash(&plans[0], &rounded));
    }

    /// The fast writer and the reference (an item built, then written) agree on every row.
    #[test]
    fn the_row_writer_agrees_with_the_item_it_stands_for() {
        let column = |name: &str, ddb_type, pg_type, is_key| ferry_shared::schema::ColumnSpec {
            name: name.into(),
            ddb_type,
            pg_type,
            is_key,
        };
        for nested in [NestedJson::Plain, NestedJson::Dynamodb] {
            let schema = TableSchema {
                table: "t".into(),
                columns: vec![
                    column("pk", DdbType::S, PgType::Text, true),
                    column("n", DdbType::N, PgType::Numeric, false),
                    column("b", DdbType::B, PgType::Bytea, false),
                    column("ok", DdbType::Bool, PgType::Boolean, false),
                    column("m", DdbType::M, PgType::Jsonb, false),
                    column("ss", DdbType::Ss, PgType::TextArray, false),
                    column("ns", DdbType::Ns, PgType::NumericArray, false),
                ],
                overflow_column: "attrs".into(),
                nested_json: nested,
                on_type_mismatch: Default::default(),
                numeric_limit: Default::default(),
                routing: None,
                provenance: true,
            };
            let plan = &item_plans(&schema)[0];
            let typed = nested == NestedJson::Dynamodb;
            let m = if typed {
                r#"{"M":{"z":{"N":"1.50"},"a":{"SS":["q"]}}}"#
            } else {
                r#"{"z": 1.50, "a": ["q", {"y": null, "b": true}]}"#
            };
            let overflow = if typed {
                r#"{"zeta": {"S": "a\"b\\c\u0001\n"}, "n": {"S": "spilled"}, "ok": {"NULL": true}, "Ω": {"N": "-0.0"}}"#
            } else {
                r#"{"zeta": "a\"b\\c\u0001\n", "n": "spilled", "ok": null, "Ω": -0.0, "big": 123456789012345678901234567890.1200}"#
            };
            let rows: Vec<Vec<Option<&str>>> = vec![
                vec![
                    Some("a"),
                    Some("12.500"),
                    Some("\\x00ff"),
                    Some("true"),
                    Some(m),
                    Some("{x,\"y z\"}"),
                    Some("{1.0,2}"),
                    Some(overflow),
                    Some("7"),
                ],
                // NULL columns: `n` recorded in the overflow as spilled text, `ok` as NULL.
                vec![
                    Some("b"),
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    Some(overflow),
                    None,
                ],
                vec![
                    Some("c\u{7f}é\t"),
                    Some("-0"),
                    None,
                    Some("f"),
                    None,
                    Some("{}"),
                    None,
                    None,
                    None,
                ],
                vec![
                    Some("d"),
                    Some("1e3"),
                    None,
                    None,
                    None,
                    None,
                    None,
                    Some("{}"),
                    None,
                ],
                // Not items: both say so.
                vec![
                    Some("e"),
                    Some("NaN"),
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                ],
                vec![
                    Some("f"),
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    Some("[1]"),
                    None,
                ],
                vec![
                    Some("g"),
                    None,
                    None,
                    None,
                    Some("{not json"),
                    None,
                    None,
                    None,
                    None,
                ],
            ];
            for row in rows {
                let mut fast = String::new();
                let written = write_row_item(plan, &row, &mut fast, &mut String::new());
                match row_to_item(plan, &row) {
                    Ok(item) => {
                        assert_eq!(written, Ok(()), "{row:?}");
                        assert_eq!(fast, item_text(&item), "{nested:?} {row:?}");
                        assert_eq!(row_hash(plan, &row), item_hash(&item));
                    }
                    Err(why) => {
                        assert!(written.is_err(), "{row:?}: {why}");
                        let expected: [u8; 32] =
                            Sha256::digest(format!("!{why}").as_bytes()).into();
                        assert_eq!(row_hash(plan, &row), expected);
                    }
                }
            }
        }
    }

    #[test]
    fn strings_are_escaped_as_json_wants() {
        let mut out = String::new();
        write_string(&mut out, "a\"b\\c\n\r\t\u{1}é\u{1f}z");
        assert_eq!(out, r#""a\"b\\c\n\r\t\u0001é\u001fz""#);
        let back: String = serde_json::from_str(&out).unwrap();
        assert_eq!(back, "a\"b\\c\n\r\t\u{1}é\u{1f}z");
        // Every byte that needs an escape, at every place in and around an eight-byte word.
        for special in ['"', '\\', '\n', '\u{0}', '\u{1f}', '\u{7f}', 'é', ' '] {
            for at in 0..20 {
                let text: String = (0..20)
                    .map(|i| if i == at { special } else { 'x' })
                    .collect();
                let mut out = String::new();
                write_string(&mut out, &text);
                assert_eq!(out, serde_json::to_string(&text).unwrap(), "{text:?}");
            }
        }
    }

    fn json_strategy() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            "-?(0|[1-9][0-9]{0,40})(\\.[0-9]{1,40})?([eE][+-]?[0-9]{1,2})?"
                .prop_map(|n| serde_json::from_str::<Value>(&n).unwrap()),
            "[a-z\"\\\\\u{0}-\u{1f}é😀 ]{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 40, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                proptest::collection::btree_map("[a-zé\"\\\\\u{1} ]{0,6}", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// Plain JSON read straight into DynamoDB JSON gives what the tree gives, whatever the
        /// spacing and member order of the text.
        #[test]
        fn plain_json_transcodes_as_the_tree_reads_it(value in json_strategy()) {
            // Numbers out of DynamoDB's range are no value on either way.
            let reference = json_value(&value, NestedJson::Plain).ok().map(|v| {
                let mut out = String::new();
                write_value(&mut out, &v);
                out
            });
            // Compact, spaced, and with every object's members in reverse order (as PostgreSQL's
            // jsonb orders them by length, not by name).
            fn reversed(value: &Value) -> String {
                match value {
                    Value::Array(items) => format!(
                        "[{}]",
                        items.iter().map(reversed).collect::<Vec<_>>().join(", ")
                    ),
                    Value::Object(map) => format!(
                        "{{{}}}",
                        map.iter()
                            .rev()
                            .map(|(k, v)| format!("{}: {}", serde_json::to_string(k).unwrap(), reversed(v)))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    other => serde_json::to_string(other).unwrap(),
                }
            }
            for text in [
                serde_json::to_string(&value).unwrap(),
                serde_json::to_string_pretty(&value).unwrap(),
                reversed(&value),
            ] {
                let mut out = String::new();
                let mut reader = Transcode::new(&text);
                let read = reader.value(&mut out, 0).and_then(|()| reader.finish()).ok().map(|()| out);
                proptest::prop_assert_eq!(&read, &reference, "{}", text);
            }
        }
    }
}
