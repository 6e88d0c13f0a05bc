//! Property-based tests of the DynamoDB JSON decoder (a line → attribute values → canonical
//! JSON, and exact numbers): any input is an error or a value, never a panic, and generated
//! items survive the trip. Brief here (CI); `scripts/fuzz` runs the long coverage-guided campaign.

use ferry_shared::schema::NestedJson;
use ferry_worker::item::{parse_line, AttrValue};
use ferry_worker::json::write_object;
use ferry_worker::number::canonical_number;
use proptest::prelude::*;

/// A DynamoDB typed value as JSON text, nested up to `depth`.
fn value(depth: u32) -> BoxedStrategy<String> {
    let text = "[a-zA-Z0-9 é\"\\\\\\n\\t\\u{1F680}]{0,12}";
    let json_string = text.prop_map(|s| serde_json::to_string(&s).unwrap());
    let number = prop_oneof![
        "-?[0-9]{1,38}(\\.[0-9]{1,20})?",
        "-?[1-9]\\.[0-9]{0,30}[eE][+-]?[0-9]{1,3}",
        "[0-9]{0,300}",
    ]
    .prop_map(|n| serde_json::to_string(&n).unwrap());
    let leaf = prop_oneof![
        json_string.clone().prop_map(|s| format!(r#"{{"S":{s}}}"#)),
        number.clone().prop_map(|n| format!(r#"{{"N":{n}}}"#)),
        "[A-Za-z0-9+/]{0,8}={0,2}".prop_map(|b| format!(r#"{{"B":"{b}"}}"#)),
        any::<bool>().prop_map(|b| format!(r#"{{"BOOL":{b}}}"#)),
        Just(r#"{"NULL":true}"#.to_string()),
        prop::collection::vec(json_string, 0..4)
            .prop_map(|v| format!(r#"{{"SS":[{}]}}"#, v.join(","))),
        prop::collection::vec(number, 0..4).prop_map(|v| format!(r#"{{"NS":[{}]}}"#, v.join(","))),
    ];
    if depth == 0 {
        return leaf.boxed();
    }
    prop_oneof![
        3 => leaf,
        1 => prop::collection::vec(("[a-z]{1,4}", value(depth - 1)), 0..4).prop_map(|entries| {
            let body: Vec<String> =
                entries.iter().map(|(k, v)| format!(r#""{k}":{v}"#)).collect();
            format!(r#"{{"M":{{{}}}}}"#, body.join(","))
        }),
        1 => prop::collection::vec(value(depth - 1), 0..4)
            .prop_map(|items| format!(r#"{{"L":[{}]}}"#, items.join(","))),
    ]
    .boxed()
}

fn item() -> impl Strategy<Value = String> {
    prop::collection::vec(("[A-Za-z_][A-Za-z0-9_]{0,6}", value(3)), 1..8).prop_map(|attrs| {
        let body: Vec<String> = attrs.iter().map(|(k, v)| format!(r#""{k}":{v}"#)).collect();
        format!(r#"{{"Item":{{{}}}}}"#, body.join(","))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_bytes_are_a_value_or_an_error(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(item) = parse_line(&bytes) {
            let mut out = String::new();
            let _ = write_object(&mut out, item.iter().map(|(k, v)| (k.as_ref(), v)), NestedJson::Plain);
        }
    }

    #[test]
    fn generated_items_parse_and_write_canonical_json(line in item()) {
        let item = parse_line(line.as_bytes()).expect("a generated item parses");
        for style in [NestedJson::Plain, NestedJson::Dynamodb] {
            let mut out = String::new();
            match write_object(&mut out, item.iter().map(|(k, v)| (k.as_ref(), v)), style) {
                // What is written is JSON that parses back.
                Ok(()) => { serde_json::from_str::<serde_json::Value>(&out).expect("valid JSON"); }
                // Refused values name their attribute.
                Err(e) => prop_assert!(e.describe().starts_with("attribute ")),
            }
        }
    }

    #[test]
    fn mutated_items_never_panic(line in item(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut bytes = line.into_bytes();
        let at = at.index(bytes.len());
        bytes[at] = byte;
        let _ = parse_line(&bytes);
    }

    #[test]
    fn numbers_are_exact_or_refused(text in "[-+]?[0-9]{0,60}(\\.[0-9]{0,60})?([eE][-+]?[0-9]{0,7})?") {
        if let Ok(plain) = canonical_number(&text) {
            // Canonical text is its own canonical form, and a JSON number.
            let again = canonical_number(&plain).unwrap().into_owned();
            prop_assert_eq!(again.as_str(), plain.as_ref());
            serde_json::from_str::<serde_json::Value>(&plain).expect("a JSON number");
        }
    }

    #[test]
    fn strings_survive_exactly(s in "\\PC{0,40}") {
        let line = format!(r#"{{"Item":{{"a":{{"S":{}}}}}}}"#, serde_json::to_string(&s).unwrap());
        let item = parse_line(line.as_bytes()).unwrap();
        prop_assert_eq!(&item[0].1, &AttrValue::S(s.clone().into()));
    }
}
