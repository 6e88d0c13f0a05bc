//! Canonical JSON for nested values (M, L) and the overflow column.
//!
//! Canonical means: map keys sorted by their bytes, no insignificant whitespace, numbers exact
//! (canonical plain decimal text, never through `f64`), binary as standard padded base64.
//! [`NestedJson::Plain`] writes plain JSON (sets become arrays); [`NestedJson::Dynamodb`] keeps the
//! typed form (`{"SS":["a"]}`) for an exact round trip.
//! Strings holding U+0000 are refused: PostgreSQL's `jsonb` cannot store them.

use base64::Engine;
use ferry_shared::schema::NestedJson;

use crate::item::AttrValue;
use crate::number::canonical_number;

/// A value that cannot be written, with the path to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValueError {
    /// Path segments from the attribute down (`prefs`, `limits`, `[1]`).
    pub path: Vec<String>,
    /// What is wrong.
    pub reason: String,
}

impl ValueError {
    /// A new error at the value itself (the caller adds path segments).
    pub fn new(reason: impl Into<String>) -> ValueError {
        ValueError {
            path: Vec::new(),
            reason: reason.into(),
        }
    }

    fn within(mut self, segment: String) -> ValueError {
        self.path.push(segment);
        self
    }

    /// `attribute "a.b[1]": reason`.
    pub fn describe(&self) -> String {
        let mut path = String::new();
        for segment in self.path.iter().rev() {
            if !segment.starts_with('[') && !path.is_empty() {
                path.push('.');
            }
            path.push_str(segment);
        }
        format!("attribute {path:?}: {}", self.reason)
    }
}

/// For each byte: whether it ends the plain run of a JSON string (a quote, a backslash, or a
/// control character, which JSON does not allow unescaped).
pub(crate) static STRING_STOP: [bool; 256] = string_stops(b'"');

/// The stop table of a string quoted by `quote`: the quote, a double quote, a backslash and the
/// control characters ([`STRING_STOP`] for JSON; Ion's single-quoted symbols add their quote).
pub(crate) const fn string_stops(quote: u8) -> [bool; 256] {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[quote as usize] = true;
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
}

/// The end of the plain run of a JSON string's content from `i`: the first quote, backslash or
/// control character, or the end of `bytes`. Eight bytes at a time (a zero-byte test on each of
/// the three conditions; the lowest flagged byte of each test is exact, so the lowest of all is
/// the first stop), then byte by byte.
#[inline(always)]
pub(crate) fn plain_run(bytes: &[u8], mut i: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let w = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        let quote = w ^ (ONES * u64::from(b'"'));
        let backslash = w ^ (ONES * u64::from(b'\\'));
        let stops = (quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (w.wrapping_sub(ONES * 0x20) & !w);
        let stops = stops & HIGH;
        if stops != 0 {
            return i + (stops.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&b) = bytes.get(i) {
        if STRING_STOP[b as usize] {
            break;
        }
        i += 1;
    }
    i
}

/// Refuses text PostgreSQL cannot store.
pub fn check_text(s: &str) -> Result<(), ValueError> {
    if s.contains('\0') {
        return Err(ValueError::new(
            "string contains U+0000 (NUL), which PostgreSQL text and jsonb cannot store",
        ));
    }
    Ok(())
}

/// Decodes standard padded base64.
pub fn decode_base64(s: &str) -> Result<Vec<u8>, ValueError> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| ValueError::new(format!("invalid base64 binary: {e}")))
}

/// Appends `s` as a JSON string literal.
pub fn write_json_string(out: &mut String, s: &str) -> Result<(), ValueError> {
    check_text(s)?;
    out.push('"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: Option<&str> = match b {
            b'"' => Some("\\\""),
            b'\\' => Some("\\\\"),
            b'\n' => Some("\\n"),
            b'\r' => Some("\\r"),
            b'\t' => Some("\\t"),
            0x08 => Some("\\b"),
            0x0c => Some("\\f"),
            0..=0x1f => None,
            _ => continue,
        };
        out.push_str(&s[start..i]);
        match escape {
            Some(e) => out.push_str(e),
            None => out.push_str(&format!("\\u{:04x}", b)),
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
    Ok(())
}

fn write_number(out: &mut String, n: &str) -> Result<(), ValueError> {
    let canonical = canonical_number(n).map_err(|e| ValueError::new(e.to_string()))?;
    out.push_str(&canonical);
    Ok(())
}

fn write_base64(out: &mut String, b: &str) -> Result<(), ValueError> {
    let bytes = decode_base64(b)?;
    out.push('"');
    base64::engine::general_purpose::STANDARD.encode_string(&bytes, out);
    out.push('"');
    Ok(())
}

fn write_array<T>(
    out: &mut String,
    items: &[T],
    mut each: impl FnMut(&mut String, &T) -> Result<(), ValueError>,
) -> Result<(), ValueError> {
    out.push('[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        each(out, item).map_err(|e| e.within(format!("[{i}]")))?;
    }
    out.push(']');
    Ok(())
}

/// Appends the JSON object of `entries` with keys sorted; a repeated key is an error.
pub fn write_object<'v, 'a: 'v>(
    out: &mut String,
    entries: impl IntoIterator<Item = (&'v str, &'v AttrValue<'a>)>,
    style: NestedJson,
) -> Result<(), ValueError> {
    let mut sorted: Vec<(&str, &AttrValue<'_>)> = entries.into_iter().collect();
    sorted.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    if let Some(pair) = sorted.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(ValueError::new("name appears twice in one map").within(pair[0].0.to_string()));
    }
    out.push('{');
    for (i, (name, value)) in sorted.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_json_string(out, name).map_err(|e| e.within(name.to_string()))?;
        out.push(':');
        write_value(out, value, style).map_err(|e| e.within(name.to_string()))?;
    }
    out.push('}');
    Ok(())
}

/// Appends `value` as canonical JSON in the given style.
pub fn write_value(
    out: &mut String,
    value: &AttrValue<'_>,
    style: NestedJson,
) -> Result<(), ValueError> {
    if style == NestedJson::Dynamodb {
        out.push_str("{\"");
        out.push_str(value.ddb_type().descriptor());
        out.push_str("\":");
        write_typed_body(out, value)?;
        out.push('}');
        return Ok(());
    }
    match value {
        AttrValue::S(s) => write_json_string(out, s),
        AttrValue::N(n) => write_number(out, n),
        AttrValue::B(b) => write_base64(out, b),
        AttrValue::Bool(b) => {
            out.push_str(if *b { "true" } else { "false" });
            Ok(())
        }
        AttrValue::Null => {
            out.push_str("null");
            Ok(())
        }
        AttrValue::M(entries) => {
            write_object(out, entries.iter().map(|(k, v)| (k.as_ref(), v)), style)
        }
        AttrValue::L(items) => write_array(out, items, |out, v| write_value(out, v, style)),
        AttrValue::Ss(items) => write_array(out, items, |out, s| write_json_string(out, s)),
        AttrValue::Ns(items) => write_array(out, items, |out, n| write_number(out, n)),
        AttrValue::Bs(items) => write_array(out, items, |out, b| write_base64(out, b)),
    }
}

/// The body of a typed value (what follows the descriptor): numbers stay strings, as in DynamoDB JSON.
fn write_typed_body(out: &mut String, value: &AttrValue<'_>) -> Result<(), ValueError> {
    let quoted_number = |out: &mut String, n: &str| -> Result<(), ValueError> {
        out.push('"');
        write_number(out, n)?;
        out.push('"');
        Ok(())
    };
    match value {
        AttrValue::S(s) => write_json_string(out, s),
        AttrValue::N(n) => quoted_number(out, n),
        AttrValue::B(b) => write_base64(out, b),
        AttrValue::Bool(b) => {
            out.push_str(if *b { "true" } else { "false" });
            Ok(())
        }
        AttrValue::Null => {
            out.push_str("true");
            Ok(())
        }
        AttrValue::M(entries) => write_object(
            out,
            entries.iter().map(|(k, v)| (k.as_ref(), v)),
            NestedJson::Dynamodb,
        ),
        AttrValue::L(items) => write_array(out, items, |out, v| {
            write_value(out, v, NestedJson::Dynamodb)
        }),
        AttrValue::Ss(items) => write_array(out, items, |out, s| write_json_string(out, s)),
        AttrValue::Ns(items) => write_array(out, items, |out, n| quoted_number(out, n)),
        AttrValue::Bs(items) => write_array(out, items, |out, b| write_base64(out, b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::item::parse_line;

    fn json_of(line: &str, style: NestedJson) -> Result<String, ValueError> {
        let item = parse_line(line.as_bytes()).unwrap();
        let mut out = String::new();
        write_object(&mut out, item.iter().map(|(k, v)| (k.as_ref(), v)), style)?;
        Ok(out)
    }

    #[test]
    fn plain_json_is_canonical_and_exact() {
        let line = r#"{"Item":{"z":{"N":"12345678901234567890123456789012345678"},"a":{"M":{"y":{"L":[{"N":"-0.5"},{"S":"x\"\n\u0001"},{"B":"AAE="},{"NULL":true},{"BOOL":false}]},"b":{"SS":["q","p"]}}},"m":{"NS":["1E+2","0.10"]},"e":{"M":{}},"l":{"L":[]},"bs":{"BS":["AgM="]}}}"#;
        assert_eq!(
            json_of(line, NestedJson::Plain).unwrap(),
            r#"{"a":{"b":["q","p"],"y":[-0.5,"x\"\n\u0001","AAE=",null,false]},"bs":["AgM="],"e":{},"l":[],"m":[100,0.10],"z":12345678901234567890123456789012345678}"#
        );
    }

    #[test]
    fn dynamodb_style_keeps_types() {
        let line = r#"{"Item":{"s":{"SS":["a"]},"n":{"N":"1.50"},"m":{"M":{"b":{"B":"AAE="},"x":{"NULL":true}}}}}"#;
        assert_eq!(
            json_of(line, NestedJson::Dynamodb).unwrap(),
            r#"{"m":{"M":{"b":{"B":"AAE="},"x":{"NULL":true}}},"n":{"N":"1.50"},"s":{"SS":["a"]}}"#
        );
    }

    #[test]
    fn bad_values_name_their_path() {
        let err = json_of(
            r#"{"Item":{"prefs":{"M":{"limits":{"L":[{"N":"1"},{"N":"abc"}]}}}}}"#,
            NestedJson::Plain,
        )
        .unwrap_err();
        assert_eq!(
            err.describe(),
            "attribute \"prefs.limits[1]\": invalid number \"abc\""
        );
        let err = json_of(r#"{"Item":{"b":{"B":"not base64!"}}}"#, NestedJson::Plain).unwrap_err();
        assert!(
            err.describe().contains("invalid base64"),
            "{}",
            err.describe()
        );
        let err = json_of(r#"{"Item":{"s":{"S":"a\u0000b"}}}"#, NestedJson::Plain).unwrap_err();
        assert!(err.describe().contains("NUL"), "{}", err.describe());
        let err = json_of(
            r#"{"Item":{"m":{"M":{"k":{"S":"1"},"k":{"S":"2"}}}}}"#,
            NestedJson::Plain,
        )
        .unwrap_err();
        assert!(err.describe().contains("twice"), "{}", err.describe());
    }

    #[test]
    fn output_parses_back_as_the_same_json() {
        let line = r#"{"Item":{"u":{"S":"日本語 🚀 é \\ \t"},"n":{"N":"1E-130"}}}"#;
        let text = json_of(line, NestedJson::Plain).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["u"], "日本語 🚀 é \\ \t");
        assert_eq!(value["n"].to_string(), format!("0.{}1", "0".repeat(129)));
    }
}
