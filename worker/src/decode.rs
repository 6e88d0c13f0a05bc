//! Decoding blocks of export lines into Arrow [`RecordBatch`]es with a run's [`TableSchema`].
//!
//! The Arrow shapes follow design.md §4: `S` as Utf8, `N` as Utf8 holding canonical exact decimal
//! text, `B` as Binary, `BOOL` as Boolean, `M`/`L` as Utf8 canonical JSON, `SS`/`NS` as
//! `List<Utf8>`, `BS` as `List<Binary>`; the overflow column is Utf8 JSON (null when empty).
//!
//! Each line becomes one row or one [`Reject`] with its line number, the reason and the raw line:
//! malformed JSON, an unknown type descriptor, invalid base64, an invalid number, a string holding
//! NUL, a missing or mistyped key. A value whose type differs from its column's goes to the overflow
//! column under its own name (counted as *spilled*), or rejects the line, as the schema says. A NULL
//! in a typed column is written as SQL NULL *and* as `"name": null` in the overflow column, so a
//! present NULL and an absent attribute stay distinguishable. Decoding is pure (no IO), so blocks
//! decode in parallel on rayon.

use std::borrow::Cow;
use std::sync::Arc;

use arrow_array::builder::StringBuilder;
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use ferry_shared::schema::{DdbType, OnTypeMismatch, TableSchema};

use crate::convert::{cast, CastError, CastSpec, Cell, ColumnBuilder};
use crate::item::{parse_line, AttrValue, Attributes};
use crate::json::{check_text, write_object, ValueError};
use crate::scan::{name_index, LineScan, NameIndex};

/// Lines read from a data file: their bytes and where each starts and ends.
#[derive(Debug, Default)]
pub struct RawBlock {
    /// The lines' bytes, back to back, without newlines.
    pub data: Vec<u8>,
    /// One entry per non-blank line.
    pub lines: Vec<LineRef>,
}

/// One line of a [`RawBlock`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineRef {
    /// 1-based physical line number in the (decompressed) file.
    pub line_no: u64,
    /// Start offset in [`RawBlock::data`].
    pub start: usize,
    /// End offset (exclusive).
    pub end: usize,
}

impl RawBlock {
    /// A block of `lines`, numbered from 1 (benchmarks, probes and tests; a worker frames its
    /// blocks from the file as it reads).
    pub fn of_lines<L: AsRef<[u8]>>(lines: &[L]) -> RawBlock {
        let mut block = RawBlock::default();
        for (i, line) in lines.iter().enumerate() {
            let start = block.data.len();
            block.data.extend_from_slice(line.as_ref());
            block.lines.push(LineRef {
                line_no: i as u64 + 1,
                start,
                end: block.data.len(),
            });
        }
        block
    }

    /// The bytes of `line`.
    pub fn line(&self, line: &LineRef) -> &[u8] {
        &self.data[line.start..line.end]
    }
}

/// Why a line was rejected, as a class (for counting; the reason text says more).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectKind {
    /// Not a line of DynamoDB JSON (bad JSON, no `Item`, a repeated or unusable attribute name).
    Malformed,
    /// A value that is not valid (an unknown descriptor, bad base64, a NUL, an invalid number).
    InvalidValue,
    /// A key attribute that is missing, of the wrong type, or not storable exactly.
    Key,
    /// A value whose type differs from its column's (`on_type_mismatch = "reject"`).
    TypeMismatch,
    /// No routing rule takes the item.
    NoRule,
    /// A routed column's value does not cast, is missing while required, or is out of bounds.
    Cast,
    /// The item's key is already in the table, from outside this run
    /// (`load.on_key_conflict = "reject"`).
    KeyConflict,
}

impl RejectKind {
    /// Every class, so metrics can show each at zero before it happens.
    pub const ALL: [RejectKind; 7] = [
        RejectKind::Malformed,
        RejectKind::InvalidValue,
        RejectKind::Key,
        RejectKind::TypeMismatch,
        RejectKind::NoRule,
        RejectKind::Cast,
        RejectKind::KeyConflict,
    ];

    /// The label used in metrics.
    pub fn label(self) -> &'static str {
        match self {
            RejectKind::Malformed => "malformed",
            RejectKind::InvalidValue => "invalid_value",
            RejectKind::Key => "key",
            RejectKind::TypeMismatch => "type_mismatch",
            RejectKind::NoRule => "no_rule",
            RejectKind::Cast => "cast",
            RejectKind::KeyConflict => "key_conflict",
        }
    }
}

/// A line that could not be loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reject {
    /// 1-based physical line number.
    pub line_no: u64,
    /// The class of the reason.
    pub kind: RejectKind,
    /// Why.
    pub reason: String,
    /// The line as read.
    pub raw: Vec<u8>,
}

/// The result of decoding one block.
#[derive(Debug)]
pub struct DecodedBatch {
    /// One row per good line.
    pub batch: RecordBatch,
    /// The line number of each row.
    pub line_numbers: Vec<u64>,
    /// The bad lines.
    pub rejects: Vec<Reject>,
    /// Values that went to the overflow column because their type differed from their column's.
    pub spilled: u64,
}

pub use crate::convert::arrow_type;

/// The Arrow schema of a table schema: its columns in order, then the overflow column.
pub fn arrow_schema(schema: &TableSchema) -> SchemaRef {
    let mut fields: Vec<Field> = schema
        .columns
        .iter()
        .map(|c| Field::new(&c.name, arrow_type(c.pg_type), !c.is_key))
        .collect();
    fields.push(Field::new(&schema.overflow_column, DataType::Utf8, true));
    Arc::new(Schema::new(fields))
}

/// Parses one line of a full export: DynamoDB JSON (`{"Item":{…}}`), or Amazon Ion text
/// (`$ion_1_0 {Item:{…}}`, [`crate::ion`]), told apart by the line's first bytes.
pub fn parse_item(raw: &[u8]) -> Result<Attributes<'_>, String> {
    if crate::ion::is_ion_line(raw) {
        crate::ion::parse_item_line(raw)
    } else {
        parse_line(raw).map_err(|e| e.to_string())
    }
}

/// [`parse_item`], reading an Ion line through its DynamoDB JSON transcoding in `buffer`
/// ([`crate::ion_scan`]) when it has one the JSON parser takes, else through `ion-rs` as
/// [`parse_item`] does: the same attributes (numbers in their canonical text rather than the
/// reference's `<coefficient>E<exponent>`), several times faster. For readers of values (schema
/// inference, `assess`); the loaders' reference stays [`parse_item`].
pub fn parse_item_fast<'b>(
    raw: &'b [u8],
    buffer: &'b mut String,
) -> Result<Attributes<'b>, String> {
    if !crate::ion::is_ion_line(raw) {
        return parse_line(raw).map_err(|e| e.to_string());
    }
    buffer.clear();
    let transcoded = std::str::from_utf8(raw)
        .ok()
        .and_then(|text| crate::ion_scan::ion_to_json(text, buffer).ok());
    if transcoded.is_some() {
        // A line the JSON parser refuses (a repeated name, a NUL) is the Ion reader's to judge.
        if let Ok(attributes) = parse_line(buffer.as_bytes()) {
            return Ok(attributes);
        }
    }
    crate::ion::parse_item_line(raw)
}

/// The DynamoDB JSON text the scanners read for a line: the line itself, or for an Ion line its
/// transcoding into `buffer` ([`crate::ion_scan`]); `None` when an Ion line is for the reference
/// parser.
pub fn as_json<'t>(text: &'t str, buffer: &'t mut String) -> Option<&'t str> {
    if crate::ion::is_ion_line(text.as_bytes()) {
        buffer.clear();
        crate::ion_scan::ion_to_json(text, buffer).ok()?;
        Some(buffer.as_str())
    } else {
        Some(text)
    }
}

/// A block's rows while they are decoded.
struct BlockOutput {
    builders: Vec<ColumnBuilder>,
    overflow: StringBuilder,
    line_numbers: Vec<u64>,
    rejects: Vec<Reject>,
    spilled: u64,
    overflow_text: String,
    /// Per typed column, how many rows its builder holds. A scanned row appends only the values
    /// it has; a builder behind the block's row count (`line_numbers.len()`) is owed NULLs,
    /// appended at once before its next value, so a sparse column costs one call per run of
    /// NULLs and a row costs nothing for the columns it lacks.
    filled: Vec<usize>,
}

impl BlockOutput {
    /// Appends every owed NULL: before a row is appended another way, and at the end.
    fn flush_nulls(&mut self) {
        let rows = self.line_numbers.len();
        for (builder, filled) in self.builders.iter_mut().zip(&mut self.filled) {
            if *filled < rows {
                builder.append_nulls(rows - *filled);
                *filled = rows;
            }
        }
    }
}

/// Decodes lines with one run's schema. Cheap to share across threads.
#[derive(Debug)]
pub struct Decoder {
    schema: Arc<TableSchema>,
    arrow_schema: SchemaRef,
    /// How each column's values are cast.
    cast_specs: Vec<CastSpec>,
    /// Column by name as bytes, for the scanner.
    name_index: NameIndex,
}

impl Decoder {
    /// A decoder for `schema`.
    pub fn new(schema: Arc<TableSchema>) -> Decoder {
        let cast_specs = schema
            .columns
            .iter()
            .map(|c| CastSpec {
                pg_type: c.pg_type,
                time: None,
                nested_json: schema.nested_json,
                numeric_limit: schema.numeric_limit,
            })
            .collect();
        Decoder {
            arrow_schema: arrow_schema(&schema),
            name_index: name_index(&schema),
            schema,
            cast_specs,
        }
    }

    /// The table schema.
    pub fn schema(&self) -> &TableSchema {
        &self.schema
    }

    /// The Arrow schema of the batches.
    pub fn arrow_schema(&self) -> SchemaRef {
        self.arrow_schema.clone()
    }

    /// Decodes every line of `block`: the scanner ([`crate::scan`]) takes each line it can, the
    /// reference parser ([`parse_item`]) the others, so rows and rejects are the reference's.
    pub fn decode(&self, block: &RawBlock) -> DecodedBatch {
        self.decode_counting(block).0
    }

    /// [`Self::decode`], also returning how many lines the scanner gave up to the reference parser.
    pub fn decode_counting(&self, block: &RawBlock) -> (DecodedBatch, usize) {
        let mut out = self.output(block.lines.len());
        // One UTF-8 check for the whole block; a line is then valid when it starts and ends on
        // character boundaries (`str::get`). A block with a bad line checks line by line.
        let whole = simdutf8::basic::from_utf8(&block.data).ok();
        let mut scan = LineScan::new(&self.schema, &self.name_index);
        let mut ion_json = String::new();
        let mut bailed = 0;
        for line in &block.lines {
            // The reference parser's failpoint, reached by every line here too (crash tests).
            let _ = ferry_shared::failpoint::hit("decode_line");
            let raw = block.line(line);
            let text = match whole {
                Some(whole) => whole.get(line.start..line.end),
                None => simdutf8::basic::from_utf8(raw).ok(),
            };
            if let Some(text) = text.and_then(|text| as_json(text, &mut ion_json)) {
                if scan.scan(text).is_ok() {
                    out.spilled += scan.append(
                        text,
                        &mut out.builders,
                        &mut out.filled,
                        out.line_numbers.len(),
                        &mut out.overflow,
                    );
                    out.line_numbers.push(line.line_no);
                    continue;
                }
            }
            bailed += 1;
            self.push_item(&mut out, line.line_no, raw, parse_item(raw));
        }
        (self.finish(out), bailed)
    }

    /// Decodes every line of `block` with the reference parser only ([`crate::item`] through
    /// serde): what the scanner is checked against, and measured against in `ferry-bench`.
    pub fn decode_reference(&self, block: &RawBlock) -> DecodedBatch {
        self.decode_items(block.lines.iter().map(|line| {
            let raw = block.line(line);
            (line.line_no, raw, parse_item(raw))
        }))
    }

    /// Decodes items already parsed: `(line number, raw line, item or why it is malformed)`.
    /// Incremental exports decode their `NewImage`s through here.
    pub fn decode_items<'b>(
        &self,
        items: impl ExactSizeIterator<Item = (u64, &'b [u8], Result<Attributes<'b>, String>)>,
    ) -> DecodedBatch {
        let mut out = self.output(items.len());
        for (line_no, raw, parsed) in items {
            self.push_item(&mut out, line_no, raw, parsed);
        }
        self.finish(out)
    }

    fn output(&self, rows: usize) -> BlockOutput {
        BlockOutput {
            builders: self
                .schema
                .columns
                .iter()
                .map(|c| ColumnBuilder::new(c.pg_type, rows))
                .collect(),
            overflow: StringBuilder::with_capacity(rows, rows * 32),
            line_numbers: Vec::with_capacity(rows),
            rejects: Vec::new(),
            spilled: 0,
            overflow_text: String::new(),
            filled: vec![0; self.schema.columns.len()],
        }
    }

    /// One parsed item into the block's builders, or its reject.
    fn push_item(
        &self,
        out: &mut BlockOutput,
        line_no: u64,
        raw: &[u8],
        parsed: Result<Attributes<'_>, String>,
    ) {
        let attributes = match parsed {
            Ok(attributes) => attributes,
            Err(e) => {
                out.rejects.push(Reject {
                    line_no,
                    kind: RejectKind::Malformed,
                    reason: format!("malformed line: {e}"),
                    raw: raw.to_vec(),
                });
                return;
            }
        };
        out.flush_nulls();
        out.overflow_text.clear();
        let mut cells = Vec::with_capacity(self.schema.columns.len());
        match self.convert(&attributes, &mut cells, &mut out.overflow_text) {
            Ok((has_overflow, row_spilled)) => {
                for (builder, cell) in out.builders.iter_mut().zip(cells.drain(..)) {
                    builder.append(cell.unwrap_or(Cell::Null));
                }
                if has_overflow {
                    out.overflow.append_value(&out.overflow_text);
                } else {
                    out.overflow.append_null();
                }
                out.spilled += row_spilled;
                out.line_numbers.push(line_no);
                // Every builder was flushed, then given this row.
                out.filled.fill(out.line_numbers.len());
            }
            Err((kind, reason)) => out.rejects.push(Reject {
                line_no,
                kind,
                reason,
                raw: raw.to_vec(),
            }),
        }
    }

    fn finish(&self, mut out: BlockOutput) -> DecodedBatch {
        out.flush_nulls();
        let BlockOutput {
            builders,
            mut overflow,
            line_numbers,
            rejects,
            spilled,
            ..
        } = out;
        let mut arrays: Vec<ArrayRef> = builders.into_iter().map(ColumnBuilder::finish).collect();
        arrays.push(Arc::new(overflow.finish()));
        let batch = RecordBatch::try_new(self.arrow_schema.clone(), arrays)
            .expect("builders follow the arrow schema and key columns never get nulls");
        DecodedBatch {
            batch,
            line_numbers,
            rejects,
            spilled,
        }
    }

    /// Turns one item into cells (into `cells`, one per typed column) and overflow JSON; returns
    /// whether the item has overflow and how many of its values spilled.
    fn convert<'a>(
        &self,
        attributes: &'a [(Cow<'a, str>, AttrValue<'a>)],
        cells: &mut Vec<Option<Cell<'a>>>,
        overflow_text: &mut String,
    ) -> Result<(bool, u64), (RejectKind, String)> {
        let columns = &self.schema.columns;
        cells.clear();
        cells.resize_with(columns.len(), || None);
        let mut overflow: Vec<(&str, &AttrValue<'a>)> = Vec::new();
        let mut spilled = 0;
        for (name, value) in attributes {
            check_text(name).map_err(|e| {
                (
                    RejectKind::Malformed,
                    format!("attribute name {name:?}: {}", e.reason),
                )
            })?;
            let Some(index) = self.name_index.get(name.as_bytes()) else {
                overflow.push((name, value));
                continue;
            };
            let column = &columns[index];
            if cells[index].is_some() {
                return Err((
                    RejectKind::Malformed,
                    format!("attribute {name:?} appears twice"),
                ));
            }
            let actual = value.ddb_type();
            if actual == DdbType::Null && !column.is_key {
                // SQL NULL in the column, and `"name": null` in the overflow, so a present NULL
                // and an absent attribute stay distinguishable.
                cells[index] = Some(Cell::Null);
                overflow.push((name, value));
                continue;
            }
            let key_kind = |kind| if column.is_key { RejectKind::Key } else { kind };
            if actual == column.ddb_type {
                match cast(value, &self.cast_specs[index]) {
                    Ok(cell) => {
                        cells[index] = Some(cell);
                        continue;
                    }
                    // A number the target cannot hold exactly: a type mismatch like any other.
                    Err(CastError::DoesNotFit(reason)) => {
                        if column.is_key || self.schema.on_type_mismatch == OnTypeMismatch::Reject {
                            let what = if column.is_key {
                                "key attribute"
                            } else {
                                "attribute"
                            };
                            return Err((
                                key_kind(RejectKind::TypeMismatch),
                                format!("{what} {name:?}: {reason}"),
                            ));
                        }
                    }
                    Err(e) => {
                        let reason = ValueError {
                            path: vec![name.to_string()],
                            reason: e.reason().to_string(),
                        }
                        .describe();
                        return Err((key_kind(RejectKind::InvalidValue), reason));
                    }
                }
            } else if column.is_key {
                return Err((
                    RejectKind::Key,
                    format!(
                        "key attribute {name:?} has type {actual}, expected {}",
                        column.ddb_type
                    ),
                ));
            } else if self.schema.on_type_mismatch == OnTypeMismatch::Reject {
                return Err((
                    RejectKind::TypeMismatch,
                    format!(
                        "attribute {name:?} has type {actual}, but its column holds {}",
                        column.ddb_type
                    ),
                ));
            }
            // The value goes to the overflow column under its own name.
            cells[index] = Some(Cell::Null);
            overflow.push((name, value));
            spilled += 1;
        }
        if let Some(missing) = columns
            .iter()
            .zip(cells.iter())
            .find(|(c, cell)| c.is_key && cell.is_none())
        {
            return Err((
                RejectKind::Key,
                format!("missing key attribute {:?}", missing.0.name),
            ));
        }
        let has_overflow = !overflow.is_empty();
        if has_overflow {
            write_object(overflow_text, overflow, self.schema.nested_json)
                .map_err(|e| (RejectKind::InvalidValue, e.describe()))?;
        }
        Ok((has_overflow, spilled))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::Array;
    use ferry_shared::schema::{ColumnSpec, NestedJson, NumericLimit};

    pub(crate) fn test_schema(on_type_mismatch: OnTypeMismatch) -> Arc<TableSchema> {
        let col = |name: &str, ddb_type: DdbType, is_key: bool| ColumnSpec {
            name: name.into(),
            ddb_type,
            pg_type: ddb_type.pg_type().unwrap(),
            is_key,
        };
        Arc::new(TableSchema {
            routing: None,
            provenance: false,
            table: "t".into(),
            columns: vec![
                col("pk", DdbType::S, true),
                col("sk", DdbType::N, true),
                col("n", DdbType::N, false),
                col("b", DdbType::B, false),
                col("ok", DdbType::Bool, false),
                col("m", DdbType::M, false),
                col("ss", DdbType::Ss, false),
                col("ns", DdbType::Ns, false),
                col("bs", DdbType::Bs, false),
            ],
            overflow_column: "attrs".into(),
            nested_json: NestedJson::Plain,
            on_type_mismatch,
            numeric_limit: NumericLimit::Unlimited,
        })
    }

    pub(crate) fn block(lines: &[&str]) -> RawBlock {
        RawBlock::of_lines(lines)
    }

    #[test]
    fn every_type_lands_in_its_arrow_column() {
        let decoder = Decoder::new(test_schema(OnTypeMismatch::Overflow));
        let decoded = decoder.decode(&block(&[
            r#"{"Item":{"pk":{"S":"USER#1"},"sk":{"N":"1.5E2"},"n":{"N":"-0.1234567890123456789012345678901234567"},"b":{"B":"AAEC"},"ok":{"BOOL":true},"m":{"M":{"z":{"N":"1"},"a":{"SS":["x"]}}},"ss":{"SS":["a","b"]},"ns":{"NS":["1","2.50"]},"bs":{"BS":["AAE=",""]},"extra":{"S":"e"}}}"#,
            r#"{"Item":{"pk":{"S":""},"sk":{"N":"0"},"n":{"NULL":true}}}"#,
        ]));
        assert!(decoded.rejects.is_empty(), "{:?}", decoded.rejects);
        let batch = &decoded.batch;
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(decoded.line_numbers, vec![1, 2]);
        assert_eq!(batch.column(0).as_string::<i32>().value(0), "USER#1");
        assert_eq!(batch.column(1).as_string::<i32>().value(0), "150");
        assert_eq!(
            batch.column(2).as_string::<i32>().value(0),
            "-0.1234567890123456789012345678901234567"
        );
        assert_eq!(batch.column(3).as_binary::<i32>().value(0), &[0u8, 1, 2]);
        assert!(batch.column(4).as_boolean().value(0));
        assert_eq!(
            batch.column(5).as_string::<i32>().value(0),
            r#"{"a":["x"],"z":1}"#
        );
        let ss = batch.column(6).as_list::<i32>().value(0);
        assert_eq!(
            ss.as_string::<i32>().iter().flatten().collect::<Vec<_>>(),
            vec!["a", "b"]
        );
        let ns = batch.column(7).as_list::<i32>().value(0);
        assert_eq!(
            ns.as_string::<i32>().iter().flatten().collect::<Vec<_>>(),
            vec!["1", "2.50"]
        );
        let bs = batch.column(8).as_list::<i32>().value(0);
        assert_eq!(bs.as_binary::<i32>().value(1), b"");
        assert_eq!(
            batch.column(9).as_string::<i32>().value(0),
            r#"{"extra":"e"}"#
        );
        // Row 2: empty-string key is kept, NULL is both SQL NULL and recorded in overflow.
        assert_eq!(batch.column(0).as_string::<i32>().value(1), "");
        assert!(batch.column(2).is_null(1));
        assert!(batch.column(3).is_null(1));
        assert_eq!(batch.column(9).as_string::<i32>().value(1), r#"{"n":null}"#);
    }

    #[test]
    fn bad_lines_become_rejects_with_reasons() {
        let decoder = Decoder::new(test_schema(OnTypeMismatch::Overflow));
        let lines = [
            r#"{"Item":{"pk":{"S":"a"},"sk":{"N":"1"}}}"#,
            r#"{"Item":{"pk":{"S":"a"},"sk":{"N":"1"}"#,
            r#"{"Item":{"pk":{"S":"a"},"sk":{"N":"1"},"x":{"Q":"1"}}}"#,
            r#"{"Item":{"pk":{"S":"a"},"sk":{"N":"1"},"b":{"B":"%%%"}}}"#,
            r#"{"Item":{"pk":{"S":"a\u0000"},"sk":{"N":"1"}}}"#,
            r#"{"Item":{"pk":{"S":"a"},"sk":{"N":"1"},"o":{"M":{"p":{"S":"\u0000"}}}}}"#,
            r#"{"Item":{"sk":{"N":"1"}}}"#,
            r#"{"Item":{"pk":{"N":"1"},"sk":{"N":"1"}}}"#,
            r#"{"Item":{"pk":{"S":"a"},"sk":{"N":"1e999"}}}"#,
            r#"{"Item":{"pk":{"S":"a"},"sk":{"N":"2"},"n":{"S":"not a number"}}}"#,
        ];
        let decoded = decoder.decode(&block(&lines));
        let reasons: Vec<(u64, &str)> = decoded
            .rejects
            .iter()
            .map(|r| (r.line_no, r.reason.as_str()))
            .collect();
        assert_eq!(decoded.batch.num_rows(), 2, "{reasons:?}");
        assert_eq!(decoded.line_numbers, vec![1, 10]);
        assert_eq!(decoded.spilled, 1);
        let expect = [
            (2, "malformed line"),
            (3, "unknown type descriptor \"Q\""),
            (4, "invalid base64"),
            (5, "NUL"),
            (6, "attribute \"o.p\""),
            (7, "missing key attribute \"pk\""),
            (8, "key attribute \"pk\" has type N, expected S"),
            (9, "outside DynamoDB's range"),
        ];
        assert_eq!(reasons.len(), expect.len(), "{reasons:?}");
        for ((line, reason), (want_line, want)) in reasons.iter().zip(expect) {
            assert_eq!(*line, want_line);
            assert!(reason.contains(want), "line {line}: {reason}");
        }
        assert_eq!(decoded.rejects[0].raw, lines[1].as_bytes());
        assert_eq!(
            decoded.batch.column(9).as_string::<i32>().value(1),
            r#"{"n":"not a number"}"#
        );
    }

    #[test]
    fn numbers_beyond_a_decimal96_target_spill_or_reject() {
        let mut schema = (*test_schema(OnTypeMismatch::Overflow)).clone();
        schema.numeric_limit = NumericLimit::Decimal96;
        let decoder = Decoder::new(Arc::new(schema));
        let decoded = decoder.decode(&block(&[
            r#"{"Item":{"pk":{"S":"a"},"sk":{"N":"1"},"n":{"N":"-123456.000000000000000000000000000001"},"ns":{"NS":["1","12345678901234567890123456789012345678"]}}}"#,
            r#"{"Item":{"pk":{"S":"b"},"sk":{"N":"1E+125"}}}"#,
            r#"{"Item":{"pk":{"S":"c"},"sk":{"N":"2"},"n":{"N":"1234.5"}}}"#,
        ]));
        assert_eq!(decoded.batch.num_rows(), 2);
        assert_eq!(decoded.spilled, 2);
        assert!(decoded.batch.column(2).is_null(0));
        assert_eq!(
            decoded.batch.column(9).as_string::<i32>().value(0),
            r#"{"n":-123456.000000000000000000000000000001,"ns":[1,12345678901234567890123456789012345678]}"#
        );
        assert_eq!(
            decoded.batch.column(2).as_string::<i32>().value(1),
            "1234.5"
        );
        assert!(
            decoded.rejects[0]
                .reason
                .contains("does not fit the target's NUMERIC"),
            "{:?}",
            decoded.rejects
        );
    }

    #[test]
    fn type_mismatch_can_reject_instead() {
        let decoder = Decoder::new(test_schema(OnTypeMismatch::Reject));
        let decoded = decoder.decode(&block(&[
            r#"{"Item":{"pk":{"S":"a"},"sk":{"N":"2"},"n":{"S":"x"}}}"#,
        ]));
        assert_eq!(decoded.batch.num_rows(), 0);
        assert!(
            decoded.rejects[0].reason.contains("its column holds N"),
            "{:?}",
            decoded.rejects
        );
    }
}
