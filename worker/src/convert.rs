//! The one conversion from DynamoDB attribute values to Arrow columns, shared by table mode
//! ([`crate::decode`]) and routed mode ([`crate::route`]).
//!
//! A value is first *cast* to a [`Cell`] for its target column type ([`cast`]), exactly or not at
//! all: numbers come from their decimal text (never through `f64` unless the column is `FLOAT8`),
//! a `NUMERIC(p,s)` refuses a value it would round, an integer column refuses a fraction, binary is
//! base64-decoded, text is checked for NUL, maps and lists become canonical JSON, and on a target
//! whose NUMERIC is a 96-bit decimal (HeliosDB) a number that does not fit is refused
//! ([`CastError::DoesNotFit`]) rather than sent to be rounded. A row's cells are then appended to
//! its columns' [`ColumnBuilder`]s together, only once every cell of the row cast (a row that fails
//! becomes a reject and leaves no partial values behind).
//!
//! | column type | Arrow | accepts |
//! |---|---|---|
//! | `text` | Utf8 | S; N (canonical), BOOL (`true`/`false`), M/L (JSON) |
//! | `numeric`, `numeric(p,s)` | Utf8 (exact decimal text) | N, or S holding a number |
//! | `int2`/`int4`/`int8` | Int16/32/64 | N or S holding an integer in range |
//! | `float8` | Float64 | N or S (the user asked for a float) |
//! | `boolean` | Boolean | BOOL; S `true`/`false`; N `1`/`0` |
//! | `bytea` | Binary | B |
//! | `jsonb` | Utf8 (canonical JSON) | any |
//! | `timestamptz` | Timestamp(µs, UTC) | N (epoch seconds or millis, exact), S (ISO-8601 or epoch) |
//! | `text[]` | List<Utf8> | SS, or L of S |
//! | `numeric[]` | List<Utf8> | NS, or L of N |
//! | `bytea[]` | List<Binary> | BS, or L of B |

use std::borrow::Cow;
use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Float64Builder, Int16Builder, Int32Builder, Int64Builder,
    ListBuilder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::ArrayRef;
use arrow_schema::{DataType, Field};
use ferry_shared::schema::routing::TimeFormat;
use ferry_shared::schema::{NestedJson, NumericLimit, PgType};

use crate::item::AttrValue;
use crate::json::{check_text, decode_base64, write_value};
use crate::number::{canonical_number, ParsedNumber};

/// A key column's value, as bound in a presence probe.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyValue {
    /// Text (or exact decimal text, cast in SQL).
    Text(String),
    /// Binary.
    Bytes(Vec<u8>),
}

/// The values of a row's key columns, in key order.
pub type Key = Vec<KeyValue>;

/// The Arrow type a column of `pg_type` is built as.
pub fn arrow_type(pg_type: PgType) -> DataType {
    match pg_type {
        PgType::Text | PgType::Numeric | PgType::Jsonb | PgType::NumericScaled { .. } => {
            DataType::Utf8
        }
        PgType::Int2 => DataType::Int16,
        PgType::Int4 => DataType::Int32,
        PgType::Int8 => DataType::Int64,
        PgType::Float8 => DataType::Float64,
        PgType::Timestamptz => {
            DataType::Timestamp(arrow_schema::TimeUnit::Microsecond, Some("UTC".into()))
        }
        PgType::Bytea => DataType::Binary,
        PgType::Boolean => DataType::Boolean,
        PgType::TextArray | PgType::NumericArray => {
            DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)))
        }
        PgType::ByteaArray => {
            DataType::List(Arc::new(Field::new_list_field(DataType::Binary, true)))
        }
    }
}

/// How a value is cast for one column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CastSpec {
    /// The column type.
    pub pg_type: PgType,
    /// How a `timestamptz` column reads numbers and strings.
    pub time: Option<TimeFormat>,
    /// How maps and lists are written as JSON.
    pub nested_json: NestedJson,
    /// What the target's NUMERIC holds exactly.
    pub numeric_limit: NumericLimit,
}

impl CastSpec {
    /// A spec for `pg_type` with the defaults (plain JSON, no time format, unlimited NUMERIC).
    pub fn new(pg_type: PgType) -> CastSpec {
        CastSpec {
            pg_type,
            time: None,
            nested_json: NestedJson::Plain,
            numeric_limit: NumericLimit::Unlimited,
        }
    }
}

/// Why a value did not cast.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CastError {
    /// The value's DynamoDB type cannot go into the column.
    Mismatch(String),
    /// A number the target's NUMERIC cannot hold exactly.
    DoesNotFit(String),
    /// The value is invalid or would lose data (bad base64, NUL, a fraction in an integer column,
    /// more digits than `NUMERIC(p,s)` holds, a malformed time).
    Invalid(String),
}

impl CastError {
    /// The reason, in words.
    pub fn reason(&self) -> &str {
        match self {
            CastError::Mismatch(r) | CastError::DoesNotFit(r) | CastError::Invalid(r) => r,
        }
    }

    /// The same error with `context` in front of its reason.
    pub fn context(self, context: &str) -> CastError {
        let with = |r: String| format!("{context}: {r}");
        match self {
            CastError::Mismatch(r) => CastError::Mismatch(with(r)),
            CastError::DoesNotFit(r) => CastError::DoesNotFit(with(r)),
            CastError::Invalid(r) => CastError::Invalid(with(r)),
        }
    }
}

impl std::fmt::Display for CastError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

/// One value ready for its column. Text borrows from the line when it can (strings without
/// escapes), so most text cells cost no allocation.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell<'a> {
    /// SQL NULL.
    Null,
    /// Text, exact decimal text, or canonical JSON.
    Text(Cow<'a, str>),
    /// INT2
    I16(i16),
    /// INT4
    I32(i32),
    /// INT8
    I64(i64),
    /// FLOAT8
    F64(f64),
    /// BOOLEAN
    Bool(bool),
    /// BYTEA
    Bytes(Vec<u8>),
    /// TIMESTAMPTZ, microseconds since 1970 UTC.
    Micros(i64),
    /// TEXT[] or NUMERIC[] elements.
    TextList(Vec<Cow<'a, str>>),
    /// BYTEA[] elements.
    BytesList(Vec<Vec<u8>>),
}

fn invalid(reason: impl Into<String>) -> CastError {
    CastError::Invalid(reason.into())
}

/// The text of a scalar (S as is, N in canonical form, BOOL as `true`/`false`), for matching,
/// regexes and text columns; `None` for other types.
pub fn scalar_text<'a>(value: &'a AttrValue<'_>) -> Option<Cow<'a, str>> {
    match value {
        AttrValue::S(s) => Some(Cow::Borrowed(s.as_ref())),
        AttrValue::N(n) => canonical_number(n).ok(),
        AttrValue::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        _ => None,
    }
}

/// Checks a canonical number against the target's NUMERIC.
#[inline]
fn fits(text: &str, limit: NumericLimit) -> Result<(), CastError> {
    if limit == NumericLimit::Decimal96
        && !ParsedNumber::parse(text).is_ok_and(|p| p.fits_decimal96())
    {
        return Err(CastError::DoesNotFit(format!(
            "{text} does not fit the target's NUMERIC exactly (a 96-bit decimal: 28 digits, scale at most 28)"
        )));
    }
    Ok(())
}

#[inline]
fn canonical<'b>(n: &Cow<'b, str>) -> Result<Cow<'b, str>, CastError> {
    match canonical_number(n) {
        Ok(Cow::Borrowed(_)) => Ok(n.clone()),
        Ok(Cow::Owned(text)) => Ok(Cow::Owned(text)),
        Err(e) => Err(invalid(format!("{:?} is not a number: {e}", n.as_ref()))),
    }
}

/// The value of `-?[0-9]{1,18}` (leading zeros allowed): what canonicalizing and parsing give
/// (`007` is 7, `-0` is 0), without either. Anything else is `None` and takes the full path.
#[inline]
pub(crate) fn plain_i64(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    let (negative, digits) = match bytes {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, bytes),
    };
    digits_i64(digits).map(|n| if negative { -n } else { n })
}

/// The value of 1 to 18 ASCII digits (leading zeros allowed), read in one pass without a branch
/// per digit; `None` for anything else.
#[inline]
pub(crate) fn digits_i64(digits: &[u8]) -> Option<i64> {
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    let mut n = 0i64;
    let mut plain = true;
    for &d in digits {
        plain &= d.is_ascii_digit();
        n = n
            .wrapping_mul(10)
            .wrapping_add(i64::from(d.wrapping_sub(b'0')));
    }
    plain.then_some(n)
}

/// Checks a canonical number for a `NUMERIC` or `NUMERIC(p,s)` column: within the target's
/// NUMERIC, and for `NUMERIC(p,s)` exactly representable (no digit rounded away, none past the
/// precision). Other types pass.
#[inline]
pub(crate) fn check_numeric(
    text: &str,
    pg_type: PgType,
    limit: NumericLimit,
) -> Result<(), CastError> {
    if let PgType::NumericScaled { precision, scale } = pg_type {
        let unsigned = text.trim_start_matches('-');
        let (int, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
        let int_digits = int.trim_start_matches('0').len();
        let frac_digits = frac.trim_end_matches('0').len();
        // A number the column cannot hold exactly: refused like one the target cannot hold
        // (a routed column rejects its item; a table-mode column, which only a Parquet run's
        // plan makes, spills it to the overflow column).
        if frac_digits > usize::from(scale) {
            return Err(CastError::DoesNotFit(format!(
                "{text} has more than {scale} digits after the point: NUMERIC({precision},{scale}) would round it"
            )));
        }
        if int_digits > usize::from(precision - scale) {
            return Err(CastError::DoesNotFit(format!(
                "{text} does not fit NUMERIC({precision},{scale})"
            )));
        }
    }
    fits(text, limit)
}

#[inline]
/// Casts `value` for a column of `spec`, exactly (see the module docs). A NULL value is
/// [`Cell::Null`].
pub fn cast<'b>(value: &AttrValue<'b>, spec: &CastSpec) -> Result<Cell<'b>, CastError> {
    let pg_type = spec.pg_type;
    let mismatch = || {
        CastError::Mismatch(format!(
            "{} value cannot go into a {} column",
            value.ddb_type(),
            pg_type.sql()
        ))
    };
    if let AttrValue::Null = value {
        return Ok(Cell::Null);
    }
    let number_text = || -> Result<Cow<'b, str>, CastError> {
        match value {
            AttrValue::N(n) => canonical(n),
            AttrValue::S(s) => canonical_number(s.trim())
                .map(|c| Cow::Owned(c.into_owned()))
                .map_err(|e| invalid(format!("{:?} is not a number: {e}", s.as_ref()))),
            _ => Err(mismatch()),
        }
    };
    let json = || -> Result<Cell<'b>, CastError> {
        let mut out = String::new();
        write_value(&mut out, value, spec.nested_json).map_err(|e| invalid(e.describe()))?;
        Ok(Cell::Text(Cow::Owned(out)))
    };
    Ok(match pg_type {
        PgType::Text => match value {
            AttrValue::S(s) => {
                check_text(s).map_err(|e| invalid(e.reason))?;
                Cell::Text(s.clone())
            }
            AttrValue::N(n) => Cell::Text(canonical(n)?),
            AttrValue::Bool(b) => Cell::Text(Cow::Borrowed(if *b { "true" } else { "false" })),
            AttrValue::B(_) => return Err(mismatch()),
            _ => json()?,
        },
        PgType::Int2 | PgType::Int4 | PgType::Int8 => {
            let plain = match value {
                AttrValue::N(n) => plain_i64(n),
                AttrValue::S(s) => plain_i64(s.trim()),
                _ => None,
            };
            let n: i64 = match plain {
                Some(n) => n,
                None => {
                    let text = number_text()?;
                    text.parse()
                        .map_err(|_| invalid(format!("{text} is not an integer that fits INT8")))?
                }
            };
            match pg_type {
                PgType::Int2 => Cell::I16(
                    i16::try_from(n).map_err(|_| invalid(format!("{n} does not fit INT2")))?,
                ),
                PgType::Int4 => Cell::I32(
                    i32::try_from(n).map_err(|_| invalid(format!("{n} does not fit INT4")))?,
                ),
                _ => Cell::I64(n),
            }
        }
        PgType::Numeric | PgType::NumericScaled { .. } => {
            let text = number_text()?;
            check_numeric(&text, pg_type, spec.numeric_limit)?;
            Cell::Text(text)
        }
        PgType::Float8 => {
            let text = number_text()?;
            let f: f64 = text
                .parse()
                .map_err(|_| invalid(format!("{text} is not a number")))?;
            if !f.is_finite() {
                return Err(invalid(format!("{text} does not fit FLOAT8")));
            }
            Cell::F64(f)
        }
        PgType::Boolean => match value {
            AttrValue::Bool(b) => Cell::Bool(*b),
            AttrValue::S(s) if s.eq_ignore_ascii_case("true") => Cell::Bool(true),
            AttrValue::S(s) if s.eq_ignore_ascii_case("false") => Cell::Bool(false),
            AttrValue::N(n) if n.as_ref() == "1" => Cell::Bool(true),
            AttrValue::N(n) if n.as_ref() == "0" => Cell::Bool(false),
            AttrValue::S(s) => return Err(invalid(format!("{:?} is not a boolean", s.as_ref()))),
            AttrValue::N(n) => return Err(invalid(format!("{n} is not a boolean"))),
            _ => return Err(mismatch()),
        },
        PgType::Bytea => match value {
            AttrValue::B(b) => Cell::Bytes(decode_base64(b).map_err(|e| invalid(e.reason))?),
            _ => return Err(mismatch()),
        },
        PgType::Jsonb => json()?,
        PgType::Timestamptz => {
            let per_unit = match spec.time {
                Some(TimeFormat::EpochMillis) => 1_000,
                _ => 1_000_000,
            };
            match value {
                AttrValue::N(n) => Cell::Micros(epoch_micros(n, per_unit).map_err(invalid)?),
                AttrValue::S(s)
                    if matches!(
                        spec.time,
                        Some(TimeFormat::EpochSeconds | TimeFormat::EpochMillis)
                    ) =>
                {
                    Cell::Micros(epoch_micros(s, per_unit).map_err(invalid)?)
                }
                AttrValue::S(s) => {
                    let parsed = chrono::DateTime::parse_from_rfc3339(s.trim()).map_err(|e| {
                        invalid(format!(
                            "{:?} is not an ISO-8601 time with an offset: {e}",
                            s.as_ref()
                        ))
                    })?;
                    Cell::Micros(parsed.timestamp_micros())
                }
                _ => return Err(mismatch()),
            }
        }
        PgType::TextArray => {
            let items: Vec<&Cow<'b, str>> = match value {
                AttrValue::Ss(items) => items.iter().collect(),
                AttrValue::L(items) => items
                    .iter()
                    .map(|v| match v {
                        AttrValue::S(s) => Ok(s),
                        other => Err(invalid(format!(
                            "a list element is {}, not S",
                            other.ddb_type()
                        ))),
                    })
                    .collect::<Result<_, _>>()?,
                _ => return Err(mismatch()),
            };
            let mut out = Vec::with_capacity(items.len());
            for s in items {
                check_text(s).map_err(|e| invalid(e.reason))?;
                out.push(s.clone());
            }
            Cell::TextList(out)
        }
        PgType::NumericArray => {
            let items: Vec<&Cow<'b, str>> = match value {
                AttrValue::Ns(items) => items.iter().collect(),
                AttrValue::L(items) => items
                    .iter()
                    .map(|v| match v {
                        AttrValue::N(n) => Ok(n),
                        other => Err(invalid(format!(
                            "a list element is {}, not N",
                            other.ddb_type()
                        ))),
                    })
                    .collect::<Result<_, _>>()?,
                _ => return Err(mismatch()),
            };
            let mut out = Vec::with_capacity(items.len());
            for n in items {
                let text = canonical(n)?;
                fits(&text, spec.numeric_limit)?;
                out.push(text);
            }
            Cell::TextList(out)
        }
        PgType::ByteaArray => {
            let items: Vec<&Cow<'b, str>> = match value {
                AttrValue::Bs(items) => items.iter().collect(),
                AttrValue::L(items) => items
                    .iter()
                    .map(|v| match v {
                        AttrValue::B(b) => Ok(b),
                        other => Err(invalid(format!(
                            "a list element is {}, not B",
                            other.ddb_type()
                        ))),
                    })
                    .collect::<Result<_, _>>()?,
                _ => return Err(mismatch()),
            };
            Cell::BytesList(
                items
                    .into_iter()
                    .map(|b| decode_base64(b).map_err(|e| invalid(e.reason)))
                    .collect::<Result<_, _>>()?,
            )
        }
    })
}

/// Exact microseconds from a decimal number of seconds (`per_unit` 1,000,000) or milliseconds
/// (1,000); refuses digits below a microsecond rather than dropping them.
#[inline]
pub fn epoch_micros(text: &str, per_unit: i64) -> Result<i64, String> {
    // The common case, a whole number short enough that its product with `per_unit` stays below
    // 10^18 (11 digits of seconds, 14 of milliseconds: about 3,000 years after 1970), read in one
    // pass. Routing reads one per item in a TTL filter and in each epoch column.
    let digits = text.as_bytes();
    let most = match per_unit {
        1_000_000 => 11,
        1_000 => 14,
        _ => per_unit
            .checked_ilog10()
            .map_or(0, |places| 17usize.saturating_sub(places as usize)),
    };
    if digits.len() <= most {
        if let Some(whole) = digits_i64(digits) {
            return Ok(whole * per_unit);
        }
    }
    epoch_micros_parsed(text, per_unit)
}

/// [`epoch_micros`] of any number: through its canonical form.
#[inline(never)]
fn epoch_micros_parsed(text: &str, per_unit: i64) -> Result<i64, String> {
    let canonical =
        canonical_number(text.trim()).map_err(|e| format!("{text:?} is not a number: {e}"))?;
    let negative = canonical.starts_with('-');
    let unsigned = canonical.trim_start_matches('-');
    let (int, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let frac_places = if per_unit == 1_000_000 { 6 } else { 3 };
    if frac.len() > frac_places {
        return Err(format!("{text} has digits below a microsecond"));
    }
    let whole: i64 = int.parse().map_err(|_| format!("{text} is out of range"))?;
    let frac_value: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<width$}", width = frac_places)
            .parse()
            .unwrap_or(0)
    };
    let micros = whole
        .checked_mul(per_unit)
        .and_then(|m| m.checked_add(frac_value))
        .ok_or_else(|| format!("{text} is out of range"))?;
    Ok(if negative { -micros } else { micros })
}

/// An Arrow builder for one column of any supported type.
#[derive(Debug)]
pub enum ColumnBuilder {
    /// Utf8 columns.
    Utf8(StringBuilder),
    /// Binary.
    Binary(BinaryBuilder),
    /// Boolean.
    Bool(BooleanBuilder),
    /// Int16.
    I16(Int16Builder),
    /// Int32.
    I32(Int32Builder),
    /// Int64.
    I64(Int64Builder),
    /// Float64.
    F64(Float64Builder),
    /// Timestamp(µs, UTC).
    Micros(TimestampMicrosecondBuilder),
    /// List<Utf8>.
    Utf8List(ListBuilder<StringBuilder>),
    /// List<Binary>.
    BinaryList(ListBuilder<BinaryBuilder>),
}

impl ColumnBuilder {
    /// A builder for a column of `pg_type`, sized for `rows`.
    pub fn new(pg_type: PgType, rows: usize) -> ColumnBuilder {
        match pg_type {
            PgType::Text | PgType::Numeric | PgType::NumericScaled { .. } | PgType::Jsonb => {
                ColumnBuilder::Utf8(StringBuilder::with_capacity(rows, rows * 16))
            }
            PgType::Bytea => ColumnBuilder::Binary(BinaryBuilder::with_capacity(rows, rows * 8)),
            PgType::Boolean => ColumnBuilder::Bool(BooleanBuilder::with_capacity(rows)),
            PgType::Int2 => ColumnBuilder::I16(Int16Builder::with_capacity(rows)),
            PgType::Int4 => ColumnBuilder::I32(Int32Builder::with_capacity(rows)),
            PgType::Int8 => ColumnBuilder::I64(Int64Builder::with_capacity(rows)),
            PgType::Float8 => ColumnBuilder::F64(Float64Builder::with_capacity(rows)),
            PgType::Timestamptz => ColumnBuilder::Micros(
                TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC"),
            ),
            PgType::TextArray | PgType::NumericArray => {
                ColumnBuilder::Utf8List(ListBuilder::new(StringBuilder::new()))
            }
            PgType::ByteaArray => ColumnBuilder::BinaryList(ListBuilder::new(BinaryBuilder::new())),
        }
    }

    /// Appends one cell; a cell of another kind than the column's (only [`Cell::Null`] in
    /// practice: [`cast`] gives each column type its kind) is appended as NULL.
    pub fn append(&mut self, cell: Cell<'_>) {
        self.append_ref(&cell);
    }

    /// [`Self::append`] of a cell left where it is: its fields are read one by one, as they were
    /// written. Moving a cell just written in place (routing writes each into a row buffer) reads
    /// it back in 16-byte loads over its 8-byte stores, which stalls the load until the stores
    /// retire: measured at two thirds of `append`'s time in routing before this.
    pub fn append_ref(&mut self, cell: &Cell<'_>) {
        match (self, cell) {
            (ColumnBuilder::Utf8(b), Cell::Text(s)) => b.append_value(s),
            (ColumnBuilder::Utf8(b), _) => b.append_null(),
            (ColumnBuilder::Binary(b), Cell::Bytes(v)) => b.append_value(v),
            (ColumnBuilder::Binary(b), _) => b.append_null(),
            (ColumnBuilder::Bool(b), Cell::Bool(v)) => b.append_value(*v),
            (ColumnBuilder::Bool(b), _) => b.append_null(),
            (ColumnBuilder::I16(b), Cell::I16(v)) => b.append_value(*v),
            (ColumnBuilder::I16(b), _) => b.append_null(),
            (ColumnBuilder::I32(b), Cell::I32(v)) => b.append_value(*v),
            (ColumnBuilder::I32(b), _) => b.append_null(),
            (ColumnBuilder::I64(b), Cell::I64(v)) => b.append_value(*v),
            (ColumnBuilder::I64(b), _) => b.append_null(),
            (ColumnBuilder::F64(b), Cell::F64(v)) => b.append_value(*v),
            (ColumnBuilder::F64(b), _) => b.append_null(),
            (ColumnBuilder::Micros(b), Cell::Micros(v)) => b.append_value(*v),
            (ColumnBuilder::Micros(b), _) => b.append_null(),
            (ColumnBuilder::Utf8List(b), Cell::TextList(items)) => {
                for item in items {
                    b.values().append_value(item);
                }
                b.append(true);
            }
            (ColumnBuilder::Utf8List(b), _) => b.append(false),
            (ColumnBuilder::BinaryList(b), Cell::BytesList(items)) => {
                for item in items {
                    b.values().append_value(item);
                }
                b.append(true);
            }
            (ColumnBuilder::BinaryList(b), _) => b.append(false),
        }
    }

    /// Appends `n` NULLs at once.
    pub fn append_nulls(&mut self, n: usize) {
        match self {
            ColumnBuilder::Utf8(b) => b.append_nulls(n),
            ColumnBuilder::Binary(b) => b.append_nulls(n),
            ColumnBuilder::Bool(b) => b.append_nulls(n),
            ColumnBuilder::I16(b) => b.append_nulls(n),
            ColumnBuilder::I32(b) => b.append_nulls(n),
            ColumnBuilder::I64(b) => b.append_nulls(n),
            ColumnBuilder::F64(b) => b.append_nulls(n),
            ColumnBuilder::Micros(b) => b.append_nulls(n),
            ColumnBuilder::Utf8List(b) => b.append_nulls(n),
            ColumnBuilder::BinaryList(b) => b.append_nulls(n),
        }
    }

    /// The column as an Arrow array.
    pub fn finish(self) -> ArrayRef {
        match self {
            ColumnBuilder::Utf8(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Binary(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Bool(mut b) => Arc::new(b.finish()),
            ColumnBuilder::I16(mut b) => Arc::new(b.finish()),
            ColumnBuilder::I32(mut b) => Arc::new(b.finish()),
            ColumnBuilder::I64(mut b) => Arc::new(b.finish()),
            ColumnBuilder::F64(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Micros(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Utf8List(mut b) => Arc::new(b.finish()),
            ColumnBuilder::BinaryList(mut b) => Arc::new(b.finish()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::Array;

    fn s(text: &str) -> AttrValue<'_> {
        AttrValue::S(Cow::Borrowed(text))
    }
    fn n(text: &str) -> AttrValue<'_> {
        AttrValue::N(Cow::Borrowed(text))
    }

    /// The integer fast path gives what canonicalizing and parsing give, and leaves to the full
    /// path (and its errors) everything else.
    #[test]
    fn plain_integers_agree_with_the_full_path() {
        let full = |text: &str| -> Option<i64> { canonical_number(text).ok()?.parse().ok() };
        let mut cases: Vec<String> = [
            "0",
            "-0",
            "00",
            "-000",
            "7",
            "007",
            "-007",
            "123456789012345678",
            "-123456789012345678",
            "999999999999999999",
            "1234567890123456789",
            "",
            "-",
            "+5",
            "5-",
            "1.0",
            "1e3",
            " 5",
            "0x10",
            "١٢",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for len in 1..=4 {
            let mut digits = vec![0usize; len];
            loop {
                cases.push(digits.iter().map(|&d| ['0', '1', '9', '-'][d]).collect());
                let mut i = 0;
                while i < len && digits[i] == 3 {
                    digits[i] = 0;
                    i += 1;
                }
                if i == len {
                    break;
                }
                digits[i] += 1;
            }
        }
        for text in &cases {
            if let Some(n) = plain_i64(text) {
                assert_eq!(Some(n), full(text), "{text:?}");
            }
            for ty in [PgType::Int2, PgType::Int4, PgType::Int8] {
                let spec = CastSpec::new(ty);
                let fast = cast(&n(text), &spec).ok();
                let slow = full(text).and_then(|v| match ty {
                    PgType::Int2 => i16::try_from(v).ok().map(Cell::I16),
                    PgType::Int4 => i32::try_from(v).ok().map(Cell::I32),
                    _ => Some(Cell::I64(v)),
                });
                assert_eq!(fast, slow, "{text:?} as {ty:?}");
            }
        }
        assert_eq!(plain_i64("-007"), Some(-7));
        assert_eq!(plain_i64("1234567890123456789"), None);
    }

    #[test]
    fn numbers_cast_exactly_or_not_at_all() {
        let numeric = CastSpec::new(PgType::Numeric);
        assert_eq!(
            cast(&n("1.50E3"), &numeric).unwrap(),
            Cell::Text(Cow::Borrowed("1500"))
        );
        let scaled = CastSpec::new(PgType::NumericScaled {
            precision: 12,
            scale: 2,
        });
        assert!(cast(&n("1.005"), &scaled)
            .unwrap_err()
            .reason()
            .contains("would round"));
        assert_eq!(
            cast(&s(" 12.50 "), &scaled).unwrap(),
            Cell::Text(Cow::Borrowed("12.50"))
        );
        let int2 = CastSpec::new(PgType::Int2);
        assert_eq!(
            cast(&n("40000"), &int2).unwrap_err().reason(),
            "40000 does not fit INT2"
        );
        assert!(matches!(cast(&n("1.5"), &int2), Err(CastError::Invalid(_))));
        assert!(matches!(
            cast(&s("x"), &CastSpec::new(PgType::Bytea)),
            Err(CastError::Mismatch(_))
        ));
    }

    #[test]
    fn a_decimal96_target_refuses_what_it_would_round() {
        let mut spec = CastSpec::new(PgType::Numeric);
        spec.numeric_limit = NumericLimit::Decimal96;
        let long = "1.2345678901234567890123456789012";
        assert!(matches!(
            cast(&n(long), &spec),
            Err(CastError::DoesNotFit(_))
        ));
        let digits38 = "12345678901234567890123456789012345678";
        assert!(matches!(
            cast(&n(digits38), &spec),
            Err(CastError::DoesNotFit(_))
        ));
        assert!(cast(&n("79228162514264337593543950335"), &spec).is_ok());
        spec.pg_type = PgType::NumericScaled {
            precision: 38,
            scale: 31,
        };
        assert!(matches!(
            cast(&n(long), &spec),
            Err(CastError::DoesNotFit(_))
        ));
        spec.pg_type = PgType::NumericArray;
        let set = AttrValue::Ns(vec![Cow::Borrowed("1"), Cow::Borrowed(digits38)]);
        assert!(matches!(cast(&set, &spec), Err(CastError::DoesNotFit(_))));
    }

    #[test]
    fn binary_sets_and_lists_of_binary_become_bytea_arrays() {
        let spec = CastSpec::new(PgType::ByteaArray);
        let set = AttrValue::Bs(vec![Cow::Borrowed("AAE="), Cow::Borrowed("")]);
        let list = AttrValue::L(vec![AttrValue::B(Cow::Borrowed("AgM="))]);
        let mut builder = ColumnBuilder::new(PgType::ByteaArray, 2);
        builder.append(cast(&set, &spec).unwrap());
        builder.append(cast(&list, &spec).unwrap());
        builder.append(Cell::Null);
        let array = builder.finish();
        let lists = array.as_list::<i32>();
        assert_eq!(lists.value(0).as_binary::<i32>().value(0), &[0u8, 1]);
        assert_eq!(lists.value(0).as_binary::<i32>().value(1), b"");
        assert_eq!(lists.value(1).as_binary::<i32>().value(0), &[2u8, 3]);
        assert!(lists.is_null(2));
        let mixed = AttrValue::L(vec![AttrValue::S(Cow::Borrowed("x"))]);
        assert!(cast(&mixed, &spec).is_err());
    }

    #[test]
    fn times_and_booleans() {
        let mut spec = CastSpec::new(PgType::Timestamptz);
        assert_eq!(cast(&n("1.5"), &spec).unwrap(), Cell::Micros(1_500_000));
        spec.time = Some(TimeFormat::EpochMillis);
        assert_eq!(
            cast(&s("1700000000123"), &spec).unwrap(),
            Cell::Micros(1_700_000_000_123_000)
        );
        assert_eq!(
            epoch_micros("1.0000001", 1_000_000).unwrap_err(),
            "1.0000001 has digits below a microsecond"
        );
        // The one-pass reading of whole numbers agrees with the canonical one, at its edges too.
        for text in [
            "0",
            "7",
            "007",
            "000000000000",
            "1700000000",
            "99999999999",
            "999999999999",
            "9999999999999",
            "99999999999999",
            "999999999999999",
            "1700000000123",
            "10000000000000000000",
            "-5",
            " 5",
            "5 ",
            "1e3",
            "5.",
            "",
        ] {
            for per_unit in [1_000, 1_000_000] {
                assert_eq!(
                    epoch_micros(text, per_unit),
                    epoch_micros_parsed(text, per_unit),
                    "{text:?} in units of {per_unit}"
                );
            }
        }
        let boolean = CastSpec::new(PgType::Boolean);
        assert_eq!(cast(&s("TRUE"), &boolean).unwrap(), Cell::Bool(true));
        assert_eq!(cast(&n("0"), &boolean).unwrap(), Cell::Bool(false));
        assert!(cast(&n("2"), &boolean).is_err());
    }
}
