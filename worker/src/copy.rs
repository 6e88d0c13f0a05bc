//! Encoding Arrow batches as PostgreSQL binary `COPY` tuples.
//!
//! The encoder writes tuples only; a COPY stream is [`COPY_HEADER`], any number of encoded
//! batches, then [`COPY_TRAILER`]. NUMERIC values are encoded from their exact decimal text,
//! JSONB as version 1 + text, arrays as one-dimensional arrays without nulls.

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int16Type, Int32Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{
    Array, BinaryArray, BooleanArray, ListArray, PrimitiveArray, RecordBatch, StringArray,
};
use arrow_buffer::NullBuffer;
use ferry_shared::schema::{PgType, TableSchema};

use crate::number::{write_pg_numeric_plain, ParsedNumber};

/// The binary COPY signature, flags and header extension length.
pub const COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// The end-of-data marker.
pub const COPY_TRAILER: &[u8] = &[0xff, 0xff];

/// Microseconds from 1970-01-01 to 2000-01-01, PostgreSQL's timestamp epoch.
pub const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

const OID_TEXT: i32 = 25;
const OID_NUMERIC: i32 = 1700;
const OID_BYTEA: i32 = 17;

/// A value that cannot be encoded (a bug upstream: decoding validates every value).
#[derive(Debug, thiserror::Error)]
#[error("cannot encode column {column:?}: {reason}")]
pub struct EncodeError {
    /// The column.
    pub column: String,
    /// Why.
    pub reason: String,
}

/// Placeholder for a length, patched once the field is written.
fn begin_field(out: &mut Vec<u8>) -> usize {
    let at = out.len();
    out.extend_from_slice(&[0, 0, 0, 0]);
    at
}

fn end_field(out: &mut [u8], at: usize) {
    let len = (out.len() - at - 4) as i32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

fn write_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn write_numeric(out: &mut Vec<u8>, text: &str, column: &str) -> Result<(), EncodeError> {
    let at = begin_field(out);
    // Decoding leaves numbers in canonical plain text, which encodes without allocating.
    if write_pg_numeric_plain(text, out).is_none() {
        let parsed = ParsedNumber::parse(text).map_err(|e| EncodeError {
            column: column.into(),
            reason: e.to_string(),
        })?;
        parsed.write_pg_numeric(out);
    }
    end_field(out, at);
    Ok(())
}

/// One column of a batch, its array downcast once per batch (not once per value).
enum Column<'a> {
    Text(&'a StringArray),
    Numeric(&'a StringArray),
    Jsonb(&'a StringArray),
    I16(&'a PrimitiveArray<Int16Type>),
    I32(&'a PrimitiveArray<Int32Type>),
    I64(&'a PrimitiveArray<Int64Type>),
    F64(&'a PrimitiveArray<Float64Type>),
    Micros(&'a PrimitiveArray<TimestampMicrosecondType>),
    Bytea(&'a BinaryArray),
    Bool(&'a BooleanArray),
    TextList(&'a ListArray, &'a StringArray),
    NumericList(&'a ListArray, &'a StringArray),
    ByteaList(&'a ListArray, &'a BinaryArray),
}

impl<'a> Column<'a> {
    fn of(pg_type: PgType, array: &'a dyn Array) -> Column<'a> {
        match pg_type {
            PgType::Text => Column::Text(array.as_string()),
            PgType::Numeric | PgType::NumericScaled { .. } => Column::Numeric(array.as_string()),
            PgType::Jsonb => Column::Jsonb(array.as_string()),
            PgType::Int2 => Column::I16(array.as_primitive()),
            PgType::Int4 => Column::I32(array.as_primitive()),
            PgType::Int8 => Column::I64(array.as_primitive()),
            PgType::Float8 => Column::F64(array.as_primitive()),
            PgType::Timestamptz => Column::Micros(array.as_primitive()),
            PgType::Bytea => Column::Bytea(array.as_binary()),
            PgType::Boolean => Column::Bool(array.as_boolean()),
            PgType::TextArray => {
                let list = array.as_list();
                Column::TextList(list, list.values().as_string())
            }
            PgType::NumericArray => {
                let list = array.as_list();
                Column::NumericList(list, list.values().as_string())
            }
            PgType::ByteaArray => {
                let list = array.as_list();
                Column::ByteaList(list, list.values().as_binary())
            }
        }
    }
}

/// Appends a one-dimensional array without nulls: header, then each element by `element`.
fn write_array(
    out: &mut Vec<u8>,
    list: &ListArray,
    row: usize,
    elem_oid: i32,
    mut element: impl FnMut(&mut Vec<u8>, usize) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    let offsets = list.value_offsets();
    let (first, last) = (offsets[row] as usize, offsets[row + 1] as usize);
    let at = begin_field(out);
    let len = (last - first) as i32;
    out.extend_from_slice(&(if len == 0 { 0i32 } else { 1 }).to_be_bytes());
    out.extend_from_slice(&0i32.to_be_bytes());
    out.extend_from_slice(&elem_oid.to_be_bytes());
    if len > 0 {
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&1i32.to_be_bytes());
    }
    for i in first..last {
        element(out, i)?;
    }
    end_field(out, at);
    Ok(())
}

/// Appends every row of `batch` (laid out by [`crate::decode::arrow_schema`]) as COPY tuples,
/// each ending with `provenance` when the schema has the provenance column.
pub fn encode_batch(
    schema: &TableSchema,
    batch: &RecordBatch,
    provenance: Option<i64>,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let provenance = provenance.filter(|_| schema.provenance);
    let num_fields = (schema.columns.len() + 1 + usize::from(provenance.is_some())) as i16;
    let mut types: Vec<(PgType, &str)> = schema
        .columns
        .iter()
        .map(|c| (c.pg_type, c.name.as_str()))
        .collect();
    types.push((PgType::Jsonb, schema.overflow_column.as_str()));
    let columns: Vec<(Column<'_>, Option<&NullBuffer>, &str)> = types
        .iter()
        .enumerate()
        .map(|(index, (pg_type, name))| {
            let array = batch.column(index);
            (Column::of(*pg_type, array.as_ref()), array.nulls(), *name)
        })
        .collect();
    for row in 0..batch.num_rows() {
        out.extend_from_slice(&num_fields.to_be_bytes());
        for (column, nulls, name) in &columns {
            if nulls.is_some_and(|n| n.is_null(row)) {
                out.extend_from_slice(&(-1i32).to_be_bytes());
                continue;
            }
            match column {
                Column::Text(a) => write_bytes(out, a.value(row).as_bytes()),
                Column::Numeric(a) => write_numeric(out, a.value(row), name)?,
                Column::I16(a) => write_bytes(out, &a.value(row).to_be_bytes()),
                Column::I32(a) => write_bytes(out, &a.value(row).to_be_bytes()),
                Column::I64(a) => write_bytes(out, &a.value(row).to_be_bytes()),
                Column::F64(a) => write_bytes(out, &a.value(row).to_be_bytes()),
                Column::Micros(a) => {
                    write_bytes(out, &(a.value(row) - PG_EPOCH_MICROS).to_be_bytes())
                }
                Column::Jsonb(a) => {
                    let text = a.value(row);
                    out.extend_from_slice(&(text.len() as i32 + 1).to_be_bytes());
                    out.push(1);
                    out.extend_from_slice(text.as_bytes());
                }
                Column::Bytea(a) => write_bytes(out, a.value(row)),
                Column::Bool(a) => write_bytes(out, &[a.value(row) as u8]),
                Column::TextList(list, values) => {
                    write_array(out, list, row, OID_TEXT, |out, i| {
                        write_bytes(out, values.value(i).as_bytes());
                        Ok(())
                    })?
                }
                Column::NumericList(list, values) => {
                    write_array(out, list, row, OID_NUMERIC, |out, i| {
                        write_numeric(out, values.value(i), name)
                    })?
                }
                Column::ByteaList(list, values) => {
                    write_array(out, list, row, OID_BYTEA, |out, i| {
                        write_bytes(out, values.value(i));
                        Ok(())
                    })?
                }
            }
        }
        if let Some(value) = provenance {
            write_bytes(out, &value.to_be_bytes());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::tests::{block, test_schema};
    use crate::decode::Decoder;
    use ferry_shared::schema::OnTypeMismatch;

    fn read_i16(b: &[u8], at: &mut usize) -> i16 {
        let v = i16::from_be_bytes([b[*at], b[*at + 1]]);
        *at += 2;
        v
    }
    fn read_i32(b: &[u8], at: &mut usize) -> i32 {
        let v = i32::from_be_bytes(b[*at..*at + 4].try_into().unwrap());
        *at += 4;
        v
    }

    #[test]
    fn tuples_have_the_binary_copy_layout() {
        let schema = test_schema(OnTypeMismatch::Overflow);
        let decoded = Decoder::new(schema.clone()).decode(&block(&[
            r#"{"Item":{"pk":{"S":"ab"},"sk":{"N":"-0.5"},"ok":{"BOOL":false},"ss":{"SS":["x","yz"]},"q":{"S":"1"}}}"#,
        ]));
        let mut out = Vec::new();
        encode_batch(&schema, &decoded.batch, Some(7), &mut out).unwrap();
        let mut at = 0;
        assert_eq!(read_i16(&out, &mut at), 10);
        // pk TEXT
        assert_eq!(read_i32(&out, &mut at), 2);
        assert_eq!(&out[at..at + 2], b"ab");
        at += 2;
        // sk NUMERIC -0.5: ndigits 1, weight -1, sign neg, dscale 1, digit 5000
        assert_eq!(read_i32(&out, &mut at), 10);
        assert_eq!(
            (
                read_i16(&out, &mut at),
                read_i16(&out, &mut at),
                read_i16(&out, &mut at) as u16,
                read_i16(&out, &mut at),
                read_i16(&out, &mut at)
            ),
            (1, -1, 0x4000, 1, 5000)
        );
        // n, b: NULL
        assert_eq!(read_i32(&out, &mut at), -1);
        assert_eq!(read_i32(&out, &mut at), -1);
        // ok BOOLEAN false
        assert_eq!(read_i32(&out, &mut at), 1);
        assert_eq!(out[at], 0);
        at += 1;
        // m NULL
        assert_eq!(read_i32(&out, &mut at), -1);
        // ss TEXT[] {x,yz}
        let len = read_i32(&out, &mut at);
        assert_eq!(len, 20 + 4 + 1 + 4 + 2);
        assert_eq!(
            (
                read_i32(&out, &mut at),
                read_i32(&out, &mut at),
                read_i32(&out, &mut at)
            ),
            (1, 0, OID_TEXT)
        );
        assert_eq!((read_i32(&out, &mut at), read_i32(&out, &mut at)), (2, 1));
        assert_eq!(read_i32(&out, &mut at), 1);
        at += 1;
        assert_eq!(read_i32(&out, &mut at), 2);
        at += 2;
        // ns, bs NULL
        assert_eq!(read_i32(&out, &mut at), -1);
        assert_eq!(read_i32(&out, &mut at), -1);
        // attrs JSONB: version byte then text
        let text = br#"{"q":"1"}"#;
        assert_eq!(read_i32(&out, &mut at), text.len() as i32 + 1);
        assert_eq!(out[at], 1);
        assert_eq!(&out[at + 1..at + 1 + text.len()], text);
        assert_eq!(at + 1 + text.len(), out.len());
    }

    #[test]
    fn rows_end_with_their_provenance_when_the_run_has_it() {
        let mut schema = (*test_schema(OnTypeMismatch::Overflow)).clone();
        schema.provenance = true;
        let decoded = Decoder::new(std::sync::Arc::new(schema.clone()))
            .decode(&block(&[r#"{"Item":{"pk":{"S":"ab"},"sk":{"N":"1"}}}"#]));
        let mut out = Vec::new();
        encode_batch(&schema, &decoded.batch, Some(0x0102_0304_0506), &mut out).unwrap();
        let mut at = 0;
        assert_eq!(read_i16(&out, &mut at), 11);
        assert_eq!(
            &out[out.len() - 12..],
            &[0, 0, 0, 8, 0, 0, 1, 2, 3, 4, 5, 6]
        );
    }
}
