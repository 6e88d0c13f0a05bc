//! One Ion export line through the fast path's transcoder (`ion_scan`) and through the `ion-rs`
//! reference (`ion`): whenever the transcoder gives a DynamoDB JSON line the JSON reference takes
//! (what the JSON scanner then loads), the Ion reference must take the line too and give the same
//! attributes, numbers compared by their canonical text. A difference, or a panic of either
//! reader on such a line, is a crash. (`ion-rs` 1.2 panics on some lines the transcoder gives up,
//! such as a symbol id past `usize`; the loader catches that panic as a reject, and AFL would
//! stop on it, so the reference reads only lines the transcoder took.)
use std::borrow::Cow;

use ferry_fuzz::item::AttrValue;

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Ok(line) = std::str::from_utf8(data) else { return };
        let mut json = String::new();
        if ferry_fuzz::ion_scan::ion_to_json(line, &mut json).is_err() {
            assert!(json.is_empty(), "a bail leaves the buffer as it was");
            return;
        }
        let Ok(from_json) = ferry_fuzz::item::parse_line(json.as_bytes()) else { return };
        let from_ion = ferry_fuzz::ion::parse_item_line(data)
            .unwrap_or_else(|e| panic!("the reference refuses a transcoded line ({e}): {json}"));
        let canonical = |attributes: &[(Cow<'_, str>, AttrValue<'_>)]| -> Vec<(String, String)> {
            attributes.iter().map(|(k, v)| (k.to_string(), canonical(v))).collect()
        };
        assert_eq!(canonical(&from_ion), canonical(&from_json), "{json}");
    });
}

/// A value with its numbers in canonical text (the form both paths load).
fn canonical(value: &AttrValue<'_>) -> String {
    let number = |n: &str| ferry_fuzz::number::canonical_number(n).map(Cow::into_owned).unwrap_or_else(|e| format!("!{e}"));
    match value {
        AttrValue::N(n) => number(n),
        AttrValue::Ns(ns) => ns.iter().map(|n| number(n)).collect::<Vec<_>>().join(","),
        AttrValue::M(m) => m
            .iter()
            .map(|(k, v)| format!("{k:?}={}", canonical(v)))
            .collect::<Vec<_>>()
            .join(";"),
        AttrValue::L(l) => format!("[{}]", l.iter().map(canonical).collect::<Vec<_>>().join("|")),
        other => format!("{other:?}"),
    }
}
