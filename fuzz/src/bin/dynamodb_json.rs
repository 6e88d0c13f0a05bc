//! One export line: parse it, write its canonical JSON in both styles, check every number.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        if let Ok(item) = ferry_fuzz::item::parse_line(data) {
            for style in [
                ferry_fuzz::schema::NestedJson::Plain,
                ferry_fuzz::schema::NestedJson::Dynamodb,
            ] {
                let mut out = String::new();
                if ferry_fuzz::json::write_object(
                    &mut out,
                    item.iter().map(|(k, v)| (k.as_ref(), v)),
                    style,
                )
                .is_ok()
                {
                    serde_json::from_str::<serde_json::Value>(&out).expect("canonical JSON parses");
                }
            }
        }
        if let Ok(text) = std::str::from_utf8(data) {
            if let Ok(plain) = ferry_fuzz::number::canonical_number(text) {
                assert_eq!(
                    ferry_fuzz::number::canonical_number(&plain).unwrap(),
                    plain,
                    "canonical text is stable"
                );
            }
        }
    });
}
