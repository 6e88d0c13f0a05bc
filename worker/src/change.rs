//! Change records of DynamoDB incremental exports (`exportType: INCREMENTAL_EXPORT`), one per line:
//! `Metadata` (`WriteTimestampMicros`, typed `{"N":"…"}`, a string or a number), `Keys` (the
//! primary key), `NewImage` (the item at the end of the window; absent for a delete) and
//! `OldImage` (the item before the window, in the `NEW_AND_OLD_IMAGES` view only). A line with a
//! `NewImage` upserts its item; a line without one deletes its key. Lines are DynamoDB JSON, or
//! Amazon Ion text (a line starting with `$ion_1_0`, [`crate::ion`]).
//!
//! This module owns the record shape and its parsing; what a record does to the run's tables is
//! [`crate::sink::apply`]'s.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use crate::item::{AttrValue, Attributes};

/// One change record.
#[derive(Clone, Debug, PartialEq)]
pub struct ChangeRecord<'a> {
    /// The primary-key attributes.
    pub keys: Attributes<'a>,
    /// The item at the end of the window; `None` for a delete.
    pub new_image: Option<Attributes<'a>>,
    /// The item before the window (`NEW_AND_OLD_IMAGES` only, and only when it existed).
    pub old_image: Option<Attributes<'a>>,
    /// The item's last write in the window, microseconds since 1970.
    pub write_micros: Option<i64>,
}

/// Parses one line of an incremental export in DynamoDB JSON ([`crate::ion::parse_change_line`]
/// reads the Ion ones; the applier sniffs which a line is).
pub fn parse_json_change_line(line: &[u8]) -> Result<ChangeRecord<'_>, String> {
    let text = std::str::from_utf8(line)
        .map_err(|e| format!("invalid UTF-8 at byte {}", e.valid_up_to()))?;
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let record = RecordSeed
        .deserialize(&mut deserializer)
        .map_err(|e| e.to_string())?;
    deserializer.end().map_err(|e| e.to_string())?;
    check_record(record)
}

/// The checks every record passes, whatever its encoding: `Keys` present and not empty.
pub(crate) fn check_record(record: ChangeRecord<'_>) -> Result<ChangeRecord<'_>, String> {
    if record.keys.is_empty() {
        return Err("the change record's \"Keys\" is empty".into());
    }
    Ok(record)
}

/// `WriteTimestampMicros` from its text (typed `{"N":…}`, a string or a JSON number).
pub(crate) fn parse_micros(text: &str) -> Result<i64, String> {
    text.trim()
        .parse::<i64>()
        .map_err(|_| format!("WriteTimestampMicros {text:?} is not a whole number of microseconds"))
}

/// A string that borrows from the input when it can.
struct Str<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StrVisitor;
        impl<'de> Visitor<'de> for StrVisitor {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(StrVisitor)
    }
}

/// A map of attribute names to typed values.
struct AttributesSeed;

impl<'de> DeserializeSeed<'de> for AttributesSeed {
    type Value = Attributes<'de>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for AttributesSeed {
    type Value = Attributes<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of attribute names to typed values")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(map.size_hint().unwrap_or(8));
        while let Some(name) = map.next_key::<Str<'de>>()? {
            let value = map.next_value::<AttrValue<'de>>()?;
            out.push((name.0, value));
        }
        Ok(out)
    }
}

/// `WriteTimestampMicros` in any of the forms seen: `{"N":"…"}`, `"…"` or a number.
struct Micros(i64);

impl<'de> Deserialize<'de> for Micros {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MicrosVisitor;
        impl<'de> Visitor<'de> for MicrosVisitor {
            type Value = Micros;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("microseconds: {\"N\":\"…\"}, a string or a number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Micros, E> {
                parse_micros(v).map(Micros).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Micros, E> {
                Ok(Micros(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Micros, E> {
                i64::try_from(v)
                    .map(Micros)
                    .map_err(|_| E::custom("WriteTimestampMicros is out of range"))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Micros, A::Error> {
                let mut found = None;
                while let Some(key) = map.next_key::<Str<'de>>()? {
                    match key.0.as_ref() {
                        // serde_json (arbitrary_precision) hands a bare number over as this map.
                        "N" | "$serde_json::private::Number" if found.is_none() => {
                            let text = map.next_value::<Str<'de>>()?;
                            found = Some(parse_micros(&text.0).map_err(de::Error::custom)?);
                        }
                        other => {
                            return Err(de::Error::custom(format!(
                            "WriteTimestampMicros: unexpected {other:?} (expected {{\"N\":\"…\"}})"
                        )))
                        }
                    }
                }
                found
                    .map(Micros)
                    .ok_or_else(|| de::Error::custom("WriteTimestampMicros: no \"N\""))
            }
        }
        deserializer.deserialize_any(MicrosVisitor)
    }
}

/// `Metadata`: `WriteTimestampMicros` and anything else (ignored).
struct MetadataSeed;

impl<'de> DeserializeSeed<'de> for MetadataSeed {
    type Value = Option<i64>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for MetadataSeed {
    type Value = Option<i64>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the change record's Metadata object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut micros = None;
        while let Some(key) = map.next_key::<Str<'de>>()? {
            if key.0 == "WriteTimestampMicros" {
                micros = Some(map.next_value::<Micros>()?.0);
            } else {
                map.next_value::<de::IgnoredAny>()?;
            }
        }
        Ok(micros)
    }
}

struct RecordSeed;

impl<'de> DeserializeSeed<'de> for RecordSeed {
    type Value = ChangeRecord<'de>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RecordSeed {
    type Value = ChangeRecord<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a change record {\"Keys\":{…},\"NewImage\":{…},…}")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut keys = None;
        let mut new_image = None;
        let mut old_image = None;
        let mut write_micros = None;
        let mut seen_metadata = false;
        while let Some(key) = map.next_key::<Str<'de>>()? {
            let twice = |name: &str| de::Error::custom(format!("duplicate {name:?} key"));
            match key.0.as_ref() {
                "Keys" if keys.is_none() => keys = Some(map.next_value_seed(AttributesSeed)?),
                "NewImage" if new_image.is_none() => {
                    new_image = Some(map.next_value_seed(AttributesSeed)?)
                }
                "OldImage" if old_image.is_none() => {
                    old_image = Some(map.next_value_seed(AttributesSeed)?)
                }
                "Metadata" if !seen_metadata => {
                    seen_metadata = true;
                    write_micros = map.next_value_seed(MetadataSeed)?;
                }
                name @ ("Keys" | "NewImage" | "OldImage" | "Metadata") => return Err(twice(name)),
                "Item" => {
                    return Err(de::Error::custom(
                        "this is a full export's line ({\"Item\":…}): catch-up applies incremental exports",
                    ))
                }
                other => {
                    return Err(de::Error::custom(format!(
                        "unexpected key {other:?} in a change record (expected Metadata, Keys, NewImage, OldImage)"
                    )))
                }
            }
        }
        let keys = keys.ok_or_else(|| de::Error::custom("the change record has no \"Keys\""))?;
        Ok(ChangeRecord {
            keys,
            new_image,
            old_image,
            write_micros,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_of_every_shape_parse() {
        let upsert = br#"{"Metadata":{"WriteTimestampMicros":{"N":"1718098123456789"}},"Keys":{"pk":{"S":"ORDER#3"}},"OldImage":{"pk":{"S":"ORDER#3"},"status":{"S":"NEW"}},"NewImage":{"pk":{"S":"ORDER#3"},"status":{"S":"PAID"},"n":{"N":"1.50"}}}"#;
        let record = parse_json_change_line(upsert).unwrap();
        assert_eq!(record.write_micros, Some(1_718_098_123_456_789));
        assert_eq!(
            record.keys,
            vec![(Cow::Borrowed("pk"), AttrValue::S(Cow::Borrowed("ORDER#3")))]
        );
        let new = record.new_image.unwrap();
        assert_eq!(new[2].1, AttrValue::N(Cow::Borrowed("1.50")));
        assert_eq!(record.old_image.unwrap().len(), 2);

        // A delete in the NEW_IMAGE view: Keys only; metadata as a bare string or number.
        for line in [
            r#"{"Keys":{"pk":{"S":"a"}}}"#,
            r#"{"Metadata":{"WriteTimestampMicros":"17"},"Keys":{"pk":{"S":"a"}}}"#,
            r#"{"Keys":{"pk":{"S":"a"}},"Metadata":{"WriteTimestampMicros":17,"Other":{"x":1}}}"#,
        ] {
            let record = parse_json_change_line(line.as_bytes()).unwrap();
            assert!(
                record.new_image.is_none() && record.old_image.is_none(),
                "{line}"
            );
        }
        let record = parse_json_change_line(
            br#"{"Metadata":{"WriteTimestampMicros":17},"Keys":{"pk":{"S":"a"}}}"#,
        )
        .unwrap();
        assert_eq!(record.write_micros, Some(17));
    }

    #[test]
    fn bad_records_are_explained() {
        let error = |line: &str| parse_json_change_line(line.as_bytes()).unwrap_err();
        assert!(error(r#"{"Item":{"pk":{"S":"a"}}}"#).contains("full export"));
        assert!(error(r#"{"NewImage":{"pk":{"S":"a"}}}"#).contains("no \"Keys\""));
        assert!(error(r#"{"Keys":{}}"#).contains("empty"));
        assert!(
            error(r#"{"Keys":{"pk":{"S":"a"}},"Keys":{"pk":{"S":"b"}}}"#).contains("duplicate")
        );
        assert!(error(r#"{"Keys":{"pk":{"S":"a"}},"Other":1}"#).contains("unexpected key"));
        assert!(error(r#"{"Keys":{"pk":{"Q":"a"}}}"#).contains("unknown type descriptor"));
        assert!(error(
            r#"{"Metadata":{"WriteTimestampMicros":{"N":"1.5"}},"Keys":{"pk":{"S":"a"}}}"#
        )
        .contains("whole number"));
        assert!(error(r#"{"Keys":{"pk":{"S":"a"}}"#).contains("EOF"));
    }
}
