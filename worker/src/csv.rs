//! Encoding Arrow batches as CSV rows for `COPY … (FORMAT csv)`, the format HeliosDB accepts
//! (it refuses binary COPY) and PostgreSQL reads too.
//!
//! Only the defaults every server honours are used: comma, double quote, no header. An unquoted
//! empty field is NULL and `""` is the empty string, so every text value is quoted. Arrays are
//! array literals (`{"a","b c"}`, elements quoted with backslash escapes) inside a quoted field;
//! BYTEA is `\x` hex; JSONB is its text; NUMERIC its exact decimal text.

use std::fmt::Write as _;

use arrow_array::cast::AsArray;
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

/// Appends every row of `batch` as CSV lines.
pub fn encode_batch_csv(schema: &TableSchema, batch: &RecordBatch, out: &mut Vec<u8>) {
    let mut types: Vec<PgType> = schema.columns.iter().map(|c| c.pg_type).collect();
    types.push(PgType::Jsonb);
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
            match pg_type {
                PgType::Text | PgType::Jsonb => {
                    quoted(out, array.as_string::<i32>().value(row).as_bytes())
                }
                PgType::Numeric => {
                    out.extend_from_slice(array.as_string::<i32>().value(row).as_bytes())
                }
                PgType::Boolean => out.extend_from_slice(if array.as_boolean().value(row) {
                    b"true"
                } else {
                    b"false"
                }),
                PgType::Bytea => {
                    scratch.clear();
                    hex(&mut scratch, array.as_binary::<i32>().value(row));
                    out.extend_from_slice(scratch.as_bytes());
                }
                PgType::TextArray | PgType::NumericArray | PgType::ByteaArray => {
                    let values = array.as_list::<i32>().value(row);
                    scratch.clear();
                    scratch.push('{');
                    for i in 0..values.len() {
                        if i > 0 {
                            scratch.push(',');
                        }
                        match pg_type {
                            PgType::TextArray => {
                                array_element(&mut scratch, values.as_string::<i32>().value(i))
                            }
                            PgType::NumericArray => {
                                scratch.push_str(values.as_string::<i32>().value(i))
                            }
                            _ => {
                                let mut element = String::new();
                                hex(&mut element, values.as_binary::<i32>().value(i));
                                array_element(&mut scratch, &element);
                            }
                        }
                    }
                    scratch.push('}');
                    quoted(out, scratch.as_bytes());
                }
            }
        }
        out.push(b'\n');
    }
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
        encode_batch_csv(&schema, &decoded.batch, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "\"a,\"\"b\"\"\nc\",-0.5,,\\x000102,true,,\"{\"\"x\\\"\"y\"\",\"\"back\\\\slash\"\",\"\"\"\"}\",\"{1,2.5}\",\"{\"\"\\\\x0001\"\"}\",\"{\"\"q\"\":\"\"\"\"}\"\n\"\",1,,,,,,,,\n"
        );
    }
}
