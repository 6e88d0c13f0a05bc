//! What `ferry.rejects` keeps of a rejected line (`load.reject_lines`), for tables holding
//! personal data:
//! - `raw` (default): the line as read and the reason as written;
//! - `redacted`: the line's shape (attribute names, type descriptors, nesting) with every string
//!   value replaced by `"…"` and every number by `0`; a line that is not JSON becomes a note of
//!   its length. The reason keeps its class and the attribute names it mentions, never a value;
//! - `omitted`: no line at all (an empty value), and the reason as for `redacted`.
//!
//! The same setting covers the key values Ferry's own messages would quote (shard errors, the
//! reasons of deferred change records, post-load notes): with `redacted` or `omitted` a key is
//! shown as its column names and each value's length ([`key_value`]), and a database error that
//! quotes the rows it refused (`Key (pk)=(USER#1) already exists`, HeliosDB's
//! `Duplicate key: USER#1`) as its class only ([`server_text`]).
//!
//! The mode is set once per process from the configuration ([`configure`]); a load's
//! [`crate::sink::LoadContext`] carries its own copy.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU8, Ordering};

use ferry_shared::config::RejectLines;

static MODE: AtomicU8 = AtomicU8::new(0);

/// Sets what the ledger keeps of rejected lines in this process.
pub fn configure(mode: RejectLines) {
    MODE.store(
        match mode {
            RejectLines::Raw => 0,
            RejectLines::Redacted => 1,
            RejectLines::Omitted => 2,
        },
        Ordering::Relaxed,
    );
}

/// The mode in force.
pub fn mode() -> RejectLines {
    match MODE.load(Ordering::Relaxed) {
        1 => RejectLines::Redacted,
        2 => RejectLines::Omitted,
        _ => RejectLines::Raw,
    }
}

/// The line as the ledger keeps it under `mode`.
pub fn line(raw: &[u8], mode: RejectLines) -> Cow<'_, [u8]> {
    match mode {
        RejectLines::Raw => Cow::Borrowed(raw),
        RejectLines::Omitted => Cow::Borrowed(&[]),
        RejectLines::Redacted => {
            let redacted = serde_json::from_slice::<serde_json::Value>(raw)
                .ok()
                .map(|mut value| {
                    blank(&mut value);
                    value.to_string()
                })
                .unwrap_or_else(|| format!("(not JSON: {} bytes, redacted)", raw.len()));
            Cow::Owned(redacted.into_bytes())
        }
    }
}

fn blank(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::String(s) => *s = "…".into(),
        Value::Number(n) => *n = 0.into(),
        Value::Array(items) => items.iter_mut().for_each(blank),
        Value::Object(map) => map.values_mut().for_each(blank),
        Value::Bool(_) | Value::Null => {}
    }
}

/// The reason as the ledger keeps it under `mode`: as written, or its class (`label`) and the
/// attribute names it mentions.
pub fn reason<'a>(reason: &'a str, label: &str, mode: RejectLines) -> Cow<'a, str> {
    if mode == RejectLines::Raw {
        return Cow::Borrowed(reason);
    }
    let mut names: Vec<&str> = Vec::new();
    for marker in ["attribute \"", "attribute name \"", "column \""] {
        let mut rest = reason;
        while let Some(at) = rest.find(marker) {
            let after = &rest[at + marker.len()..];
            let Some(end) = after.find('"') else { break };
            let name = &after[..end];
            if !names.contains(&name) {
                names.push(name);
            }
            rest = &after[end..];
        }
    }
    let mut text = format!("{label} (details redacted: load.reject_lines)");
    if !names.is_empty() {
        let quoted: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
        text = format!(
            "{label}: attribute {} (details redacted: load.reject_lines)",
            quoted.join(", ")
        );
    }
    Cow::Owned(text)
}

/// A key value as a message shows it under `mode`: quoted (`"USER#1"`), or its length only
/// (`<6 bytes, redacted>`).
pub fn key_value(value: &str, mode: RejectLines) -> String {
    match mode {
        RejectLines::Raw => format!("{value:?}"),
        RejectLines::Redacted | RejectLines::Omitted => {
            format!("<{} bytes, redacted>", value.len())
        }
    }
}

/// A database error's words under `mode`: as the server wrote them, or, since a constraint
/// violation quotes the values it refused, a note that they are withheld.
pub fn server_text(text: &str, mode: RejectLines) -> Cow<'_, str> {
    match mode {
        RejectLines::Raw => Cow::Borrowed(text),
        RejectLines::Redacted | RejectLines::Omitted => Cow::Borrowed(
            "the server's message is withheld: it may quote key values (load.reject_lines)",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_keeps_shape_and_names_never_values() {
        let raw = br#"{"Item":{"email":{"S":"ann@example.com"},"age":{"N":"42"},"tags":{"SS":["vip"]},"ok":{"BOOL":true}}}"#;
        let kept = line(raw, RejectLines::Redacted);
        let text = String::from_utf8(kept.into_owned()).unwrap();
        assert_eq!(
            text,
            r#"{"Item":{"age":{"N":"…"},"email":{"S":"…"},"ok":{"BOOL":true},"tags":{"SS":["…"]}}}"#
        );
        assert_eq!(
            line(b"ann@example.com, not json", RejectLines::Redacted).as_ref(),
            b"(not JSON: 25 bytes, redacted)"
        );
        assert!(line(raw, RejectLines::Omitted).is_empty());
        assert_eq!(line(raw, RejectLines::Raw).as_ref(), &raw[..]);
        let why = "attribute \"age\": \"4x2\" is not a number: invalid number \"4x2\"";
        assert_eq!(reason(why, "invalid_value", RejectLines::Raw), why);
        let redacted = reason(why, "invalid_value", RejectLines::Redacted);
        assert_eq!(
            redacted,
            "invalid_value: attribute \"age\" (details redacted: load.reject_lines)"
        );
        assert!(!redacted.contains("4x2"));
        assert_eq!(
            reason(
                "malformed line: EOF while parsing \"ann\"",
                "malformed",
                RejectLines::Omitted
            ),
            "malformed (details redacted: load.reject_lines)"
        );
    }

    #[test]
    fn key_values_and_server_words_are_withheld_unless_raw() {
        assert_eq!(key_value("USER#1", RejectLines::Raw), "\"USER#1\"");
        for mode in [RejectLines::Redacted, RejectLines::Omitted] {
            assert_eq!(key_value("USER#1", mode), "<6 bytes, redacted>");
            let text = server_text("Key (pk)=(USER#1) already exists.", mode);
            assert!(!text.contains("USER#1"), "{text}");
        }
        let raw = "Duplicate key: USER#1";
        assert_eq!(server_text(raw, RejectLines::Raw), raw);
    }

    #[test]
    fn keys_in_messages_show_columns_and_lengths_unless_raw() {
        use crate::sink::{describe_key, KeyValue};
        let schema =
            crate::decode::tests::test_schema(ferry_shared::schema::OnTypeMismatch::Overflow);
        let key = vec![KeyValue::Text("USER#1".into()), KeyValue::Text("42".into())];
        assert_eq!(
            describe_key(&schema, &key, RejectLines::Raw),
            "(pk=\"USER#1\", sk=\"42\")"
        );
        for mode in [RejectLines::Redacted, RejectLines::Omitted] {
            assert_eq!(
                describe_key(&schema, &key, mode),
                "(pk=<6 bytes, redacted>, sk=<2 bytes, redacted>)"
            );
        }
    }
}
