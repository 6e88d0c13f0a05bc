//! Encoding Arrow batches as CSV rows for `COPY … (FORMAT csv)`, the format HeliosDB accepts
//! (it refuses binary COPY) and PostgreSQL reads too.
//!
//! Only the defaults every server honours are used: comma, double quote, no header. An unquoted
//! empty field is NULL and `""` is the empty string, so every text value is quoted. Arrays are
//! array literals (`{"a","b c"}`, elements quoted with backslash escapes) inside a quoted field;
//! BYTEA is `\x` hex; JSONB is its text; NUMERIC its exact decimal text.

use std::fmt::Write as _;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int16Type, Int32Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, RecordBatch};
use ferry_shared::schema::{PgType, TableSchema};

/// Appends `s` as a quoted CSV field.
fn quoted(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    for &b in s {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
    out.push(b'"');
}

fn hex(out: &mut String, bytes: &[u8]) {
    out.push_str("\\x");
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
}

/// Appends an array literal element, quoted with backslash escapes.
fn array_element(out: &mut String, s: &str) {
    out.push('"');
    for ch in s.chars() {
        if ch == '"' || ch == '\\' {
            out.push('\\');
        }
        out.push(ch);
    }
    out.push('"');
}

/// Appends the PostgreSQL text input form of a non-null value: text as is, NUMERIC as its exact
/// decimal text, `true`/`false`, BYTEA as `\x` hex, JSONB as its text, arrays as literals.
pub fn field_text(pg_type: PgType, array: &dyn Array, row: usize, out: &mut String) {
    match pg_type {
        PgType::Text | PgType::Jsonb | PgType::Numeric | PgType::NumericScaled { .. } => {
            out.push_str(array.as_string::<i32>().value(row))
        }
        PgType::Int2 => {
            let _ = write!(out, "{}", array.as_primitive::<Int16Type>().value(row));
        }
        PgType::Int4 => {
            let _ = write!(out, "{}", array.as_primitive::<Int32Type>().value(row));
        }
        PgType::Int8 => {
            let _ = write!(out, "{}", array.as_primitive::<Int64Type>().value(row));
        }
        PgType::Float8 => {
            // Rust prints the shortest text that reads back as the same f64.
            let _ = write!(out, "{:?}", array.as_primitive::<Float64Type>().value(row));
        }
        PgType::Timestamptz => {
            let micros = array.as_primitive::<TimestampMicrosecondType>().value(row);
            match chrono::DateTime::from_timestamp_micros(micros) {
                Some(t) => out.push_str(&t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
                None => out.push_str("infinity"),
            }
        }
        PgType::Boolean => out.push_str(if array.as_boolean().value(row) {
            "true"
        } else {
            "false"
        }),
        PgType::Bytea => hex(out, array.as_binary::<i32>().value(row)),
        PgType::TextArray | PgType::NumericArray | PgType::ByteaArray => {
            let values = array.as_list::<i32>().value(row);
            out.push('{');
            for i in 0..values.len() {
                if i > 0 {
                    out.push(',');
                }
                match pg_type {
                    PgType::TextArray => array_element(out, values.as_string::<i32>().value(i)),
                    PgType::NumericArray => out.push_str(values.as_string::<i32>().value(i)),
                    _ => {
                        let mut element = String::new();
                        hex(&mut element, values.as_binary::<i32>().value(i));
                        array_element(out, &element);
                    }
                }
            }
            out.push('}');
        }
    }
}

/// The column types of a batch laid out by [`crate::decode::arrow_schema`]: columns, then overflow.
pub fn batch_types(schema: &TableSchema) -> Vec<PgType> {
    let mut types: Vec<PgType> = schema.columns.iter().map(|c| c.pg_type).collect();
    types.push(PgType::Jsonb);
    types
}

/// The column types of the rows [`batch_texts`] gives: the batch's, then the provenance column's.
pub fn row_types(schema: &TableSchema) -> Vec<PgType> {
    let mut types = batch_types(schema);
    if schema.provenance {
        types.push(PgType::Int8);
    }
    types
}

/// Appends every row of `batch` as CSV lines, each ending with `provenance` when the schema has
/// the provenance column.
pub fn encode_batch_csv(
    schema: &TableSchema,
    batch: &RecordBatch,
    provenance: Option<i64>,
    out: &mut Vec<u8>,
) {
    let types = batch_types(schema);
    let provenance = provenance
        .filter(|_| schema.provenance)
        .map(|p| format!(",{p}"));
    let mut scratch = String::new();
    for row in 0..batch.num_rows() {
        for (index, pg_type) in types.iter().enumerate() {
            if index > 0 {
                out.push(b',');
            }
            let array = batch.column(index);
            if array.is_null(row) {
                continue;
            }
            scratch.clear();
            field_text(*pg_type, array.as_ref(), row, &mut scratch);
            match pg_type {
                // Unquoted: no comma, quote or newline can appear, and never empty.
                PgType::Numeric
                | PgType::NumericScaled { .. }
                | PgType::Boolean
                | PgType::Bytea
                | PgType::Int2
                | PgType::Int4
                | PgType::Int8
                | PgType::Float8
                | PgType::Timestamptz => out.extend_from_slice(scratch.as_bytes()),
                _ => quoted(out, scratch.as_bytes()),
            }
        }
        if let Some(provenance) = &provenance {
            out.extend_from_slice(provenance.as_bytes());
        }
        out.push(b'\n');
    }
}

/// Every row of `batch` as text values (`None` for NULL), for INSERT with text parameters; the
/// provenance value ends each row when the schema has the provenance column.
pub fn batch_texts(
    schema: &TableSchema,
    batch: &RecordBatch,
    provenance: Option<i64>,
) -> Vec<Vec<Option<String>>> {
    let types = batch_types(schema);
    let provenance = provenance.filter(|_| schema.provenance);
    (0..batch.num_rows())
        .map(|row| {
            let mut values: Vec<Option<String>> = types
                .iter()
                .enumerate()
                .map(|(index, pg_type)| {
                    let array = batch.column(index);
                    (!array.is_null(row)).then(|| {
                        let mut text = String::new();
                        field_text(*pg_type, array.as_ref(), row, &mut text);
                        text
                    })
                })
                .collect();
            if let Some(value) = provenance {
                values.push(Some(value.to_string()));
            }
            values
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::tests::{block, test_schema};
    use crate::decode::Decoder;
    use ferry_shared::schema::OnTypeMismatch;

    #[test]
    fn csv_rows_quote_text_and_leave_nulls_empty() {
        let schema = test_schema(OnTypeMismatch::Overflow);
        let decoded = Decoder::new(schema.clone()).decode(&block(&[
            r#"{"Item":{"pk":{"S":"a,\"b\"\nc"},"sk":{"N":"-0.5"},"b":{"B":"AAEC"},"ok":{"BOOL":true},"ss":{"SS":["x\"y","back\\slash",""]},"ns":{"NS":["1","2.5"]},"bs":{"BS":["AAE="]},"q":{"S":""}}}"#,
            r#"{"Item":{"pk":{"S":""},"sk":{"N":"1"}}}"#,
        ]));
        let mut out = Vec::new();
        encode_batch_csv(&schema, &decoded.batch, Some(9), &mut out);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "\"a,\"\"b\"\"\nc\",-0.5,,\\x000102,true,,\"{\"\"x\\\"\"y\"\",\"\"back\\\\slash\"\",\"\"\"\"}\",\"{1,2.5}\",\"{\"\"\\\\x0001\"\"}\",\"{\"\"q\"\":\"\"\"\"}\"\n\"\",1,,,,,,,,\n"
        );
    }

    #[test]
    fn csv_rows_end_with_their_provenance_when_the_run_has_it() {
        let mut schema = (*test_schema(OnTypeMismatch::Overflow)).clone();
        schema.provenance = true;
        let decoded = Decoder::new(std::sync::Arc::new(schema.clone()))
            .decode(&block(&[r#"{"Item":{"pk":{"S":"a"},"sk":{"N":"1"}}}"#]));
        let mut out = Vec::new();
        encode_batch_csv(&schema, &decoded.batch, Some(42), &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), "\"a\",1,,,,,,,,,42\n");
        let texts = batch_texts(&schema, &decoded.batch, Some(42));
        assert_eq!(texts[0].last(), Some(&Some("42".to_string())));
        assert_eq!(row_types(&schema).len(), texts[0].len());
    }
}
