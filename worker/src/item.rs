//! Parsing one export line, `{"Item":{…}}` in typed DynamoDB JSON, into borrowed attribute values.
//!
//! Strings borrow from the line when they hold no escapes, so a typical line allocates only its
//! vectors. Structure is checked here (exactly one type descriptor per value, known descriptors,
//! `NULL` is `true`); values (numbers, base64, NUL characters) are checked when they are converted.
//! Nesting is bounded: a value nested deeper than DynamoDB's 32 levels is an error (a reject), so
//! a hostile line cannot exhaust the stack of the thread decoding it.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// One attribute value.
#[derive(Clone, Debug, PartialEq)]
pub enum AttrValue<'a> {
    /// `S`
    S(Cow<'a, str>),
    /// `N`, as written.
    N(Cow<'a, str>),
    /// `B`, base64 as written.
    B(Cow<'a, str>),
    /// `BOOL`
    Bool(bool),
    /// `NULL`
    Null,
    /// `M`, in the order written.
    M(Vec<(Cow<'a, str>, AttrValue<'a>)>),
    /// `L`
    L(Vec<AttrValue<'a>>),
    /// `SS`
    Ss(Vec<Cow<'a, str>>),
    /// `NS`, as written.
    Ns(Vec<Cow<'a, str>>),
    /// `BS`, base64 as written.
    Bs(Vec<Cow<'a, str>>),
}

impl AttrValue<'_> {
    /// The value's type.
    pub fn ddb_type(&self) -> ferry_shared::schema::DdbType {
        use ferry_shared::schema::DdbType;
        match self {
            AttrValue::S(_) => DdbType::S,
            AttrValue::N(_) => DdbType::N,
            AttrValue::B(_) => DdbType::B,
            AttrValue::Bool(_) => DdbType::Bool,
            AttrValue::Null => DdbType::Null,
            AttrValue::M(_) => DdbType::M,
            AttrValue::L(_) => DdbType::L,
            AttrValue::Ss(_) => DdbType::Ss,
            AttrValue::Ns(_) => DdbType::Ns,
            AttrValue::Bs(_) => DdbType::Bs,
        }
    }
}

/// The deepest nesting of M and L values accepted (DynamoDB's own limit).
pub const MAX_NESTING: usize = 32;

/// An item's attributes, in the order written.
pub type Attributes<'a> = Vec<(Cow<'a, str>, AttrValue<'a>)>;

/// Parses one line of a full export.
pub fn parse_line(line: &[u8]) -> Result<Attributes<'_>, serde_json::Error> {
    // Crash tests make decoding panic here; without FERRY_FAILPOINTS this is one atomic load.
    let _ = ferry_shared::failpoint::hit("decode_line");
    // One UTF-8 check for the whole line is much cheaper than one per string.
    let text = std::str::from_utf8(line).map_err(|e| {
        <serde_json::Error as de::Error>::custom(format!(
            "invalid UTF-8 at byte {}",
            e.valid_up_to()
        ))
    })?;
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let item = LineSeed.deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(item)
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

struct LineSeed;

impl<'de> DeserializeSeed<'de> for LineSeed {
    type Value = Attributes<'de>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for LineSeed {
    type Value = Attributes<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object {\"Item\":{…}}")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut item = None;
        while let Some(key) = map.next_key::<Str<'de>>()? {
            match key.0.as_ref() {
                "Item" if item.is_none() => item = Some(map.next_value_seed(MapSeed { depth: 0 })?),
                "Item" => return Err(de::Error::custom("duplicate \"Item\" key")),
                "Keys" | "NewImage" | "OldImage" | "Metadata" => {
                    return Err(de::Error::custom(
                        "this is an incremental export record, which table mode does not load yet",
                    ))
                }
                other => {
                    return Err(de::Error::custom(format!(
                        "unexpected key {other:?} (expected {{\"Item\":{{…}}}})"
                    )))
                }
            }
        }
        item.ok_or_else(|| de::Error::custom("no \"Item\" key"))
    }
}

/// A map of attributes whose values sit `depth` containers deep.
struct MapSeed {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for MapSeed {
    type Value = Attributes<'de>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for MapSeed {
    type Value = Attributes<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of attribute names to typed values")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(map.size_hint().unwrap_or(8));
        while let Some(name) = map.next_key::<Str<'de>>()? {
            let value = map.next_value_seed(ValueSeed { depth: self.depth })?;
            out.push((name.0, value));
        }
        Ok(out)
    }
}

struct StrList<'a>(Vec<Cow<'a, str>>);

impl<'de> Deserialize<'de> for StrList<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListVisitor;
        impl<'de> Visitor<'de> for ListVisitor {
            type Value = StrList<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of strings")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(4));
                while let Some(s) = seq.next_element::<Str<'de>>()? {
                    out.push(s.0);
                }
                Ok(StrList(out))
            }
        }
        deserializer.deserialize_seq(ListVisitor)
    }
}

impl<'de> Deserialize<'de> for AttrValue<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        ValueSeed { depth: 0 }.deserialize(deserializer)
    }
}

/// A typed value inside `depth` containers (M or L).
#[derive(Clone, Copy)]
struct ValueSeed {
    depth: usize,
}

impl ValueSeed {
    /// The seed for a value one container deeper, or the error when that is too deep.
    fn nested<E: de::Error>(self) -> Result<ValueSeed, E> {
        if self.depth >= MAX_NESTING {
            return Err(E::custom(format!(
                "a value is nested deeper than {MAX_NESTING} levels of M and L, DynamoDB's limit"
            )));
        }
        Ok(ValueSeed {
            depth: self.depth + 1,
        })
    }
}

/// A list of values inside `depth` containers.
struct ListSeed {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for ListSeed {
    type Value = Vec<AttrValue<'de>>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ListSeed {
    type Value = Vec<AttrValue<'de>>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of typed values")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(4).min(1024));
        while let Some(value) = seq.next_element_seed(ValueSeed { depth: self.depth })? {
            out.push(value);
        }
        Ok(out)
    }
}

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = AttrValue<'de>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed {
    type Value = AttrValue<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a typed value such as {\"S\":\"x\"}")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let Some(descriptor) = map.next_key::<Str<'de>>()? else {
            return Err(de::Error::custom(
                "empty typed value {}: expected one type descriptor",
            ));
        };
        let value = match descriptor.0.as_ref() {
            "S" => AttrValue::S(map.next_value::<Str<'de>>()?.0),
            "N" => AttrValue::N(map.next_value::<Str<'de>>()?.0),
            "B" => AttrValue::B(map.next_value::<Str<'de>>()?.0),
            "BOOL" => AttrValue::Bool(map.next_value::<bool>()?),
            "NULL" => {
                if !map.next_value::<bool>()? {
                    return Err(de::Error::custom("NULL must be true"));
                }
                AttrValue::Null
            }
            "M" => AttrValue::M(map.next_value_seed(MapSeed {
                depth: self.nested::<A::Error>()?.depth,
            })?),
            "L" => AttrValue::L(map.next_value_seed(ListSeed {
                depth: self.nested::<A::Error>()?.depth,
            })?),
            "SS" => AttrValue::Ss(map.next_value::<StrList<'de>>()?.0),
            "NS" => AttrValue::Ns(map.next_value::<StrList<'de>>()?.0),
            "BS" => AttrValue::Bs(map.next_value::<StrList<'de>>()?.0),
            other => {
                return Err(de::Error::custom(format!(
                    "unknown type descriptor {other:?}"
                )))
            }
        };
        if let Some(extra) = map.next_key::<Str<'de>>()? {
            return Err(de::Error::custom(format!(
                "typed value has a second type descriptor {:?} after {:?}",
                extra.0, descriptor.0
            )));
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_type_and_borrows() {
        let line = br#"{"Item":{"pk":{"S":"u#42"},"e":{"S":""},"n":{"N":"-1.5"},"b":{"B":"AAE="},"t":{"BOOL":true},"z":{"NULL":true},"m":{"M":{"a":{"L":[{"N":"1"},{"S":"x"},{"M":{}}]}}},"ss":{"SS":["a","b"]},"ns":{"NS":["1","2.5"]},"bs":{"BS":["AAE="]}}}"#;
        let item = parse_line(line).unwrap();
        assert_eq!(item.len(), 10);
        assert!(matches!(&item[0].1, AttrValue::S(Cow::Borrowed("u#42"))));
        assert_eq!(item[1].1, AttrValue::S(Cow::Borrowed("")));
        assert_eq!(item[2].1, AttrValue::N(Cow::Borrowed("-1.5")));
        assert_eq!(item[5].1, AttrValue::Null);
        let AttrValue::M(m) = &item[6].1 else {
            panic!("not a map")
        };
        let AttrValue::L(l) = &m[0].1 else {
            panic!("not a list")
        };
        assert_eq!(l.len(), 3);
        assert_eq!(
            item[8].1,
            AttrValue::Ns(vec![Cow::Borrowed("1"), Cow::Borrowed("2.5")])
        );
    }

    #[test]
    fn escapes_are_decoded() {
        let item = parse_line(br#"{"Item":{"k\u00e9":{"S":"a\"b\\c\n\u65e5"}}}"#).unwrap();
        assert_eq!(item[0].0, "ké");
        assert_eq!(item[0].1, AttrValue::S(Cow::Owned("a\"b\\c\n日".into())));
    }

    fn error(line: &str) -> String {
        parse_line(line.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn structural_errors_are_explained() {
        assert!(error(r#"{"Item":{"a":{"X":"1"}}}"#).contains("unknown type descriptor \"X\""));
        assert!(error(r#"{"Item":{"a":{"S":"1","N":"1"}}}"#).contains("second type descriptor"));
        assert!(error(r#"{"Item":{"a":{}}}"#).contains("empty typed value"));
        assert!(error(r#"{"Item":{"a":{"N":1}}}"#).contains("expected a string"));
        assert!(error(r#"{"Item":{"a":{"NULL":false}}}"#).contains("NULL must be true"));
        assert!(error(r#"{"Item":{"a":{"S":"x"}}"#).contains("EOF"));
        assert!(error(r#"{"Keys":{}}"#).contains("incremental"));
        assert!(error(r#"{"Other":1}"#).contains("unexpected key"));
        assert!(error(r#"{}"#).contains("no \"Item\""));
        assert!(error(r#"{"Item":{}} x"#).contains("trailing"));
        assert!(parse_line(b"{\"Item\":{\"a\":{\"S\":\"\xff\"}}}").is_err());
    }

    #[test]
    fn depth_32_nesting_parses() {
        let mut value = r#"{"S":"bottom"}"#.to_string();
        for _ in 0..31 {
            value = format!(r#"{{"M":{{"d":{value}}}}}"#);
        }
        let line = format!(r#"{{"Item":{{"deep":{value}}}}}"#);
        let item = parse_line(line.as_bytes()).unwrap();
        let mut depth = 0;
        let mut current = &item[0].1;
        while let AttrValue::M(m) = current {
            depth += 1;
            current = &m[0].1;
        }
        assert_eq!(depth, 31);
        assert_eq!(current, &AttrValue::S(Cow::Borrowed("bottom")));
    }

    #[test]
    fn nesting_past_dynamodbs_limit_is_an_error_in_bounded_time() {
        let nest = |levels: usize, list: bool| {
            let (open, close) = if list {
                (r#"{"L":["#, "]}")
            } else {
                (r#"{"M":{"d":"#, "}}")
            };
            format!(
                r#"{{"Item":{{"deep":{}{{"S":"bottom"}}{}}}}}"#,
                open.repeat(levels),
                close.repeat(levels)
            )
        };
        assert!(parse_line(nest(MAX_NESTING, false).as_bytes()).is_ok());
        assert!(parse_line(nest(MAX_NESTING, true).as_bytes()).is_ok());
        for levels in [MAX_NESTING + 1, 100_000] {
            for list in [false, true] {
                let line = nest(levels, list);
                let started = std::time::Instant::now();
                let err = parse_line(line.as_bytes()).unwrap_err().to_string();
                assert!(err.contains("nested deeper than 32 levels"), "{err}");
                assert!(started.elapsed() < std::time::Duration::from_secs(2));
            }
        }
        // Unclosed nesting (no valid JSON at all) fails the same way, not on the stack.
        let open = format!(r#"{{"Item":{{"a":{}"#, r#"{"M":{"d":"#.repeat(200_000));
        let err = parse_line(open.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("nested deeper"), "{err}");
    }

    #[test]
    fn thousands_of_attributes_parse_in_linear_time() {
        let mut line = String::from(r#"{"Item":{"#);
        for i in 0..200_000 {
            if i > 0 {
                line.push(',');
            }
            line.push_str(&format!(r#""a{i}":{{"N":"{i}"}}"#));
        }
        line.push_str("}}");
        let started = std::time::Instant::now();
        let item = parse_line(line.as_bytes()).unwrap();
        assert_eq!(item.len(), 200_000);
        let mut out = String::new();
        crate::json::write_object(
            &mut out,
            item.iter().map(|(k, v)| (k.as_ref(), v)),
            ferry_shared::schema::NestedJson::Plain,
        )
        .unwrap();
        assert!(
            out.starts_with(r#"{"a0":0,"a1":1,"a10":10,"#),
            "{}",
            &out[..40]
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }
}
