//! Amazon Ion export lines (`outputFormat: ION`, `data/*.ion.gz`): each line is an Ion version
//! marker and one struct, `$ion_1_0 {Item:{…}}` in a full export and
//! `$ion_1_0 {Metadata:{…},Keys:{…},NewImage:{…},OldImage:{…}}` in an incremental one. This module
//! turns a line into the same attribute values a DynamoDB JSON line gives ([`crate::item`]), so
//! both formats go through one conversion into the same Arrow batches with the same rules.
//!
//! Type mapping (AWS's table): string → `S`; decimal → `N` (written as `<coefficient>E<exponent>`
//! and canonicalised like any `N`, so `103.`, `6d2` and `1.50` give the same text as DynamoDB
//! JSON's `"103"`, `"600"` and `"1.50"`; never through a float); blob → `B`; bool → `BOOL`; null
//! (of any type) → `NULL`; struct → `M`; list → `L`, or `SS`/`NS`/`BS` when annotated
//! `$dynamodb_SS`/`$dynamodb_NS`/`$dynamodb_BS`. An Ion int is accepted as a number; a float,
//! timestamp, symbol value, clob or s-expression is not a DynamoDB value and rejects the line.

use std::borrow::Cow;

use base64::Engine;
use ion_rs::{Element, IonType, Struct, Value};

use crate::change::{check_record, parse_micros, ChangeRecord};
use crate::item::{AttrValue, Attributes};

/// Whether a line is Ion text: it starts (after blanks) with the version marker, or with a struct
/// whose first field name is not a JSON string.
pub fn is_ion_line(line: &[u8]) -> bool {
    let mut rest = line.iter().skip_while(|b| b.is_ascii_whitespace());
    match rest.next() {
        Some(b'$') => line.trim_ascii_start().starts_with(b"$ion_1_0"),
        Some(b'{') => rest
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|b| *b != b'"' && *b != b'}'),
        _ => false,
    }
}

fn read_struct(line: &[u8]) -> Result<Struct, String> {
    // Ion text is UTF-8. `ion-rs` 1.2 panics on invalid UTF-8 inside a quoted symbol
    // ("successfully lexed symbol later found to be invalid UTF-8"), so a damaged line is refused
    // here, before it reaches the reader; any other panic of the reader is a reject too, never a
    // dead worker.
    if let Err(e) = std::str::from_utf8(line) {
        return Err(format!(
            "invalid Ion: not UTF-8 at byte {}",
            e.valid_up_to()
        ));
    }
    let element = std::panic::catch_unwind(|| Element::read_one(line))
        .map_err(|_| "invalid Ion: the Ion reader failed on this line".to_string())?
        .map_err(|e| format!("invalid Ion: {e}"))?;
    match element.value() {
        Value::Struct(fields) => Ok(fields.clone()),
        other => Err(format!(
            "expected an Ion struct, found {}",
            other.ion_type()
        )),
    }
}

/// Parses one line of a full Ion export, `$ion_1_0 {Item:{…}}`.
pub fn parse_item_line(line: &[u8]) -> Result<Attributes<'static>, String> {
    let record = read_struct(line)?;
    let mut item = None;
    for (name, value) in record.fields() {
        match name.text() {
            Some("Item") if item.is_none() => item = Some(attributes(value, "Item")?),
            Some("Item") => return Err("duplicate \"Item\" field".into()),
            Some("Keys" | "NewImage" | "OldImage" | "Metadata") => {
                return Err(
                    "this is an incremental export record, which a full load does not take".into(),
                )
            }
            other => {
                return Err(format!(
                    "unexpected field {:?} (expected {{Item:{{…}}}})",
                    other.unwrap_or("$0")
                ))
            }
        }
    }
    item.ok_or_else(|| "no \"Item\" field".into())
}

/// Parses one line of an incremental Ion export.
pub fn parse_change_line(line: &[u8]) -> Result<ChangeRecord<'static>, String> {
    let record = read_struct(line)?;
    let mut change = ChangeRecord {
        keys: Vec::new(),
        new_image: None,
        old_image: None,
        write_micros: None,
    };
    let mut seen_keys = false;
    for (name, value) in record.fields() {
        match name.text() {
            Some("Keys") if !seen_keys => {
                seen_keys = true;
                change.keys = attributes(value, "Keys")?;
            }
            Some("NewImage") if change.new_image.is_none() => {
                change.new_image = Some(attributes(value, "NewImage")?)
            }
            Some("OldImage") if change.old_image.is_none() => {
                change.old_image = Some(attributes(value, "OldImage")?)
            }
            Some("Metadata") => change.write_micros = metadata_micros(value)?,
            Some(name @ ("Keys" | "NewImage" | "OldImage")) => {
                return Err(format!("duplicate {name:?} field"))
            }
            Some("Item") => {
                return Err(
                    "this is a full export's line ({Item:…}): catch-up applies incremental exports"
                        .into(),
                )
            }
            other => {
                return Err(format!(
                    "unexpected field {:?} in a change record (expected Metadata, Keys, NewImage, OldImage)",
                    other.unwrap_or("$0")
                ))
            }
        }
    }
    if !seen_keys {
        return Err("the change record has no \"Keys\"".into());
    }
    check_record(change)
}

fn metadata_micros(value: &Element) -> Result<Option<i64>, String> {
    let Value::Struct(fields) = value.value() else {
        return Err("Metadata is not a struct".into());
    };
    let Some(micros) = fields.get("WriteTimestampMicros") else {
        return Ok(None);
    };
    let text = match micros.value() {
        Value::Int(int) => int.to_string(),
        Value::Decimal(decimal) => {
            let text = decimal_text(decimal);
            crate::number::canonical_number(&text)
                .map_err(|e| format!("WriteTimestampMicros: {e}"))?
                .into_owned()
        }
        Value::String(text) => text.text().to_string(),
        Value::Struct(typed) => match typed.get("N").map(Element::value) {
            Some(Value::String(text)) => text.text().to_string(),
            _ => return Err("WriteTimestampMicros: expected {N:\"…\"}".into()),
        },
        other => {
            return Err(format!(
                "WriteTimestampMicros is an Ion {}, not a number",
                other.ion_type()
            ))
        }
    };
    parse_micros(&text).map(Some)
}

/// An Ion decimal as number text DynamoDB's canonicalisation takes: `<coefficient>E<exponent>`.
fn decimal_text(decimal: &ion_rs::Decimal) -> String {
    format!("{}E{}", decimal.coefficient(), decimal.exponent())
}

fn attributes(value: &Element, what: &str) -> Result<Attributes<'static>, String> {
    let Value::Struct(fields) = value.value() else {
        return Err(format!(
            "{what} is an Ion {}, not a struct",
            value.ion_type()
        ));
    };
    fields_of(fields, what)
}

fn fields_of(fields: &Struct, path: &str) -> Result<Attributes<'static>, String> {
    let mut out = Vec::with_capacity(fields.len());
    for (name, value) in fields.fields() {
        let name = name
            .text()
            .ok_or_else(|| format!("{path}: a field name without text ($0)"))?
            .to_string();
        let converted = attr_value(value, &format!("{path}.{name}"))?;
        out.push((Cow::Owned(name), converted));
    }
    Ok(out)
}

/// One value at `path` (for messages: `Item.a.b`).
fn attr_value(element: &Element, path: &str) -> Result<AttrValue<'static>, String> {
    attr_value_here(element, path).map_err(|e| {
        if e.starts_with(path) {
            e
        } else {
            format!("{path}: {e}")
        }
    })
}

fn attr_value_here(element: &Element, path: &str) -> Result<AttrValue<'static>, String> {
    let set = element.annotations().iter().find_map(|a| match a.text() {
        Some("$dynamodb_SS") => Some(SetKind::S),
        Some("$dynamodb_NS") => Some(SetKind::N),
        Some("$dynamodb_BS") => Some(SetKind::B),
        _ => None,
    });
    if let Some(kind) = set {
        let Value::List(items) = element.value() else {
            return Err(format!(
                "a set annotation on an Ion {}, not a list",
                element.ion_type()
            ));
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items.iter() {
            out.push(Cow::Owned(match (kind, item.value()) {
                (SetKind::S, Value::String(text)) => text.text().to_string(),
                (SetKind::N, Value::Decimal(decimal)) => decimal_text(decimal),
                (SetKind::N, Value::Int(int)) => int.to_string(),
                (SetKind::B, Value::Blob(bytes)) => base64(bytes.as_ref()),
                (_, other) => {
                    return Err(format!(
                        "a {} set holds an Ion {}",
                        kind.descriptor(),
                        other.ion_type()
                    ))
                }
            }));
        }
        return Ok(match kind {
            SetKind::S => AttrValue::Ss(out),
            SetKind::N => AttrValue::Ns(out),
            SetKind::B => AttrValue::Bs(out),
        });
    }
    Ok(match element.value() {
        Value::Null(_) => AttrValue::Null,
        Value::Bool(b) => AttrValue::Bool(*b),
        Value::String(text) => AttrValue::S(Cow::Owned(text.text().to_string())),
        Value::Decimal(decimal) => AttrValue::N(Cow::Owned(decimal_text(decimal))),
        Value::Int(int) => AttrValue::N(Cow::Owned(int.to_string())),
        Value::Blob(bytes) => AttrValue::B(Cow::Owned(base64(bytes.as_ref()))),
        Value::Struct(fields) => AttrValue::M(fields_of(fields, path)?),
        Value::List(items) => AttrValue::L(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| attr_value(item, &format!("{path}[{i}]")))
                .collect::<Result<Vec<_>, String>>()?,
        ),
        Value::Float(_) => {
            return Err(
                "an Ion float is not a DynamoDB number (exports write decimals): refused rather than rounded"
                    .into(),
            )
        }
        other => {
            return Err(format!(
                "an Ion {} is not a DynamoDB value",
                match other.ion_type() {
                    IonType::Timestamp => "timestamp",
                    IonType::Symbol => "symbol",
                    IonType::Clob => "clob",
                    IonType::SExp => "s-expression",
                    _ => "value of this type",
                }
            ))
        }
    })
}

#[derive(Clone, Copy)]
enum SetKind {
    S,
    N,
    B,
}

impl SetKind {
    fn descriptor(self) -> &'static str {
        match self {
            SetKind::S => "SS",
            SetKind::N => "NS",
            SetKind::B => "BS",
        }
    }
}

fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::item::parse_line;

    #[test]
    fn ion_lines_give_the_values_dynamodb_json_gives() {
        let ion = br#"$ion_1_0 {Item:{pk:"ORDER#1001",qty:3.,total:4999d-2,big:12345678901234567890123456789012345678.,tiny:1d-130,neg:-0.25,six:6d2,scale:1.50,gift:false,note:null,tags:$dynamodb_SS::["red","sale"],nums:$dynamodb_NS::[1.,25d-1],blobs:$dynamodb_BS::[{{AAE=}}],raw:{{AAEC}},'odd name':"x",m:{a:[1.,"x",{k:"v"}],e:{}},l:[]}}"#;
        let json = br#"{"Item":{"pk":{"S":"ORDER#1001"},"qty":{"N":"3"},"total":{"N":"49.99"},"big":{"N":"12345678901234567890123456789012345678"},"tiny":{"N":"1E-130"},"neg":{"N":"-0.25"},"six":{"N":"600"},"scale":{"N":"1.50"},"gift":{"BOOL":false},"note":{"NULL":true},"tags":{"SS":["red","sale"]},"nums":{"NS":["1","2.5"]},"blobs":{"BS":["AAE="]},"raw":{"B":"AAEC"},"odd name":{"S":"x"},"m":{"M":{"a":{"L":[{"N":"1"},{"S":"x"},{"M":{"k":{"S":"v"}}}]},"e":{"M":{}}}},"l":{"L":[]}}}"#;
        assert!(is_ion_line(ion) && !is_ion_line(json));
        let from_ion = parse_item_line(ion).unwrap();
        let from_json = parse_line(json).unwrap();
        assert_eq!(from_ion.len(), from_json.len());
        for ((ion_name, ion_value), (json_name, json_value)) in from_ion.iter().zip(&from_json) {
            assert_eq!(ion_name, json_name);
            assert_eq!(
                canonical(ion_value),
                canonical(json_value),
                "attribute {ion_name}"
            );
        }
    }

    /// Numbers compared by their canonical text (the form both formats are loaded in).
    pub(crate) fn canonical(value: &AttrValue<'_>) -> String {
        // A number DynamoDB refuses shows as its error, so two refusals compare too.
        let number = |n: &str| {
            crate::number::canonical_number(n)
                .map(|c| c.into_owned())
                .unwrap_or_else(|e| format!("!{e}"))
        };
        match value {
            AttrValue::N(n) => number(n),
            AttrValue::Ns(ns) => ns.iter().map(|n| number(n)).collect::<Vec<_>>().join(","),
            AttrValue::M(m) => m
                .iter()
                .map(|(k, v)| format!("{k:?}={}", canonical(v)))
                .collect::<Vec<_>>()
                .join(";"),
            AttrValue::L(l) => format!(
                "[{}]",
                l.iter().map(canonical).collect::<Vec<_>>().join("|")
            ),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn change_records_parse_from_ion() {
        let line = br#"$ion_1_0 {Metadata:{WriteTimestampMicros:1718098123456789.},Keys:{pk:"ORDER#3"},OldImage:{pk:"ORDER#3",status:"NEW"},NewImage:{pk:"ORDER#3",status:"PAID"}}"#;
        let record = parse_change_line(line).unwrap();
        assert_eq!(record.write_micros, Some(1_718_098_123_456_789));
        assert_eq!(record.keys.len(), 1);
        assert!(record.new_image.is_some() && record.old_image.is_some());
        let delete = parse_change_line(br#"$ion_1_0 {Keys:{pk:"a"}}"#).unwrap();
        assert!(delete.new_image.is_none());
        // The same entry point as DynamoDB JSON records.
        let via = crate::sink::apply::parse_change_line(line).unwrap();
        assert_eq!(via, record);
    }

    /// Found by the differential test: `ion-rs` panicked on this line (invalid UTF-8 in a quoted
    /// symbol); it is a reject naming the byte.
    #[test]
    fn a_line_that_is_not_utf8_is_refused_not_a_panic() {
        let mut line = br#"$ion_1_0 {Item:{'ab':"x"}}"#.to_vec();
        line[18] = 0xff;
        let error = parse_item_line(&line).unwrap_err();
        assert_eq!(error, "invalid Ion: not UTF-8 at byte 18");
        assert!(parse_change_line(&line).unwrap_err().contains("not UTF-8"));
    }

    #[test]
    fn values_dynamodb_does_not_have_are_refused_with_their_path() {
        let error = |line: &str| parse_item_line(line.as_bytes()).unwrap_err();
        assert!(error(r#"$ion_1_0 {Item:{a:1.5e0}}"#).contains("Item.a: an Ion float"));
        assert!(
            error(r#"$ion_1_0 {Item:{m:{t:2024-01-01T}}}"#).contains("Item.m.t: an Ion timestamp")
        );
        assert!(error(r#"$ion_1_0 {Item:{s:$dynamodb_NS::["x"]}}"#)
            .contains("NS set holds an Ion string"));
        assert!(error(r#"$ion_1_0 {Item:{a:"x"}"#).contains("invalid Ion"));
        assert!(error(r#"$ion_1_0 {Keys:{a:"x"}}"#).contains("incremental"));
        assert!(error(r#"$ion_1_0 [1.]"#).contains("expected an Ion struct"));
    }
}
