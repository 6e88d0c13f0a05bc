//! Scan dumps (the migration guide's "Option B" for small tables), read as if they were export
//! data files: a data file's bytes (gzip or plain) become lines of `{"Item":{…}}`, one per item,
//! whatever the file's shape:
//! - JSON Lines (a native export's data file): passed through as they are;
//! - `aws dynamodb scan --output json`: `{"Items":[<typed items>],"Count":…}` (pretty-printed or
//!   not). The items are typed DynamoDB JSON, so they load exactly; each is compacted onto a line;
//! - a JSON array of plain items, as the guide's boto3 script writes with `json.dump(items,
//!   cls=DecimalEncoder)`. The item's DynamoDB types are gone (a set, a list and a binary value all
//!   look like lists or strings), and its numbers went through Python floats, so such a source
//!   **cannot be exact**: each value is typed from its JSON (string `S`, number `N` with the text
//!   as written, `true`/`false` `BOOL`, `null` `NULL`, object `M`, array `L`). An array of typed
//!   items (`{"a":{"S":"x"}}`) is recognised and loaded exactly.
//!
//! The item on line n is the n-th element of the array, so checkpoints and rejects count items.
//! A dump has no manifest: its run is unverified unless the user accepts it.

use std::io::{BufRead, BufReader, Read};

use flate2::bufread::MultiGzDecoder;

/// What a data file's text is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextKind {
    /// JSON Lines (a native export's data file).
    Lines,
    /// `aws dynamodb scan --output json`: typed items under `Items`.
    ScanOutput,
    /// A JSON array of items (typed or plain).
    ItemArray,
}

/// Tells a data file's kind from its first non-blank bytes.
pub fn kind_of(start: &[u8]) -> TextKind {
    let mut rest = start.iter().skip_while(|b| b.is_ascii_whitespace());
    match rest.next() {
        Some(b'[') => TextKind::ItemArray,
        Some(b'{') => {
            let after: Vec<u8> = rest
                .filter(|b| !b.is_ascii_whitespace())
                .take(8)
                .copied()
                .collect();
            if after.starts_with(b"\"Items\"") {
                TextKind::ScanOutput
            } else {
                TextKind::Lines
            }
        }
        _ => TextKind::Lines,
    }
}

/// Whether bytes start a gzip stream.
pub fn is_gzip(start: &[u8]) -> bool {
    start.starts_with(&[0x1f, 0x8b])
}

/// Bytes read ahead to tell gzip from plain text and a dump from JSON Lines.
const PEEK_BYTES: usize = 256;

/// A reader with the bytes already read from it put back in front.
type Peeked<R> = std::io::Chain<std::io::Cursor<Vec<u8>>, R>;

/// Reads up to `n` bytes (fewer only at the end of the input).
fn read_prefix<R: Read>(reader: &mut R, n: usize) -> std::io::Result<Vec<u8>> {
    let mut prefix = Vec::with_capacity(n);
    reader.take(n as u64).read_to_end(&mut prefix)?;
    Ok(prefix)
}

/// The longest line accepted: DynamoDB items are at most 400 KB, so anything near this is not an
/// export line (nor an item of a scan dump).
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// A data file's text as lines: gunzipped when it is gzip, and a scan dump turned into one
/// `{"Item":…}` line per item. [`Text::into_inner`] gives back the stored bytes' reader (to drain
/// it for the MD5).
pub struct Text<B: BufRead> {
    inner: Inner<B>,
}

enum Inner<B: BufRead> {
    GzipLines(Peeked<MultiGzDecoder<Peeked<B>>>),
    PlainLines(Peeked<B>),
    GzipDump(DumpLines<BufReader<Peeked<MultiGzDecoder<Peeked<B>>>>>),
    PlainDump(DumpLines<BufReader<Peeked<B>>>),
}

impl<B: BufRead> Text<B> {
    /// Opens `stored`, a non-empty object's bytes. Plain (not gzip) text is taken only when
    /// `plain_allowed` (a file not named `.gz`: a scan dump); otherwise it is an error.
    pub fn new(mut stored: B, plain_allowed: bool) -> std::io::Result<Text<B>> {
        let head = read_prefix(&mut stored, PEEK_BYTES)?;
        let gzip = is_gzip(&head);
        let stored = std::io::Cursor::new(head).chain(stored);
        let inner = if gzip {
            let mut gz = MultiGzDecoder::new(stored);
            let text_head = read_prefix(&mut gz, PEEK_BYTES)?;
            let kind = kind_of(&text_head);
            let text = std::io::Cursor::new(text_head).chain(gz);
            match kind {
                TextKind::Lines => Inner::GzipLines(text),
                kind => Inner::GzipDump(DumpLines::new(BufReader::new(text), kind)),
            }
        } else {
            if !plain_allowed {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "not a gzip stream (a data file named .gz must be gzip)",
                ));
            }
            match kind_of(stored.get_ref().0.get_ref()) {
                TextKind::Lines => Inner::PlainLines(stored),
                kind => Inner::PlainDump(DumpLines::new(BufReader::new(stored), kind)),
            }
        };
        Ok(Text { inner })
    }

    /// The stored bytes' reader.
    pub fn into_inner(self) -> B {
        match self.inner {
            Inner::GzipLines(text) => text.into_inner().1.into_inner().into_inner().1,
            Inner::PlainLines(plain) => plain.into_inner().1,
            Inner::GzipDump(dump) => {
                dump.reader
                    .into_inner()
                    .into_inner()
                    .1
                    .into_inner()
                    .into_inner()
                    .1
            }
            Inner::PlainDump(dump) => dump.reader.into_inner().into_inner().1,
        }
    }
}

impl<B: BufRead> Read for Text<B> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match &mut self.inner {
            Inner::GzipLines(r) => r.read(buf),
            Inner::PlainLines(r) => r.read(buf),
            Inner::GzipDump(r) => r.read(buf),
            Inner::PlainDump(r) => r.read(buf),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    /// Before the array (for scan output: among the top-level keys).
    Start,
    /// Inside the items array.
    Items,
    /// After the array, scan output: its other keys.
    AfterItems,
    Done,
}

/// The items of a dump, one `{"Item":…}` line each.
struct DumpLines<R: BufRead> {
    reader: R,
    kind: TextKind,
    state: State,
    /// Whether the array holds typed items (decided on the first item).
    typed: Option<bool>,
    out: Vec<u8>,
    pos: usize,
    /// Items emitted.
    items: u64,
}

fn invalid(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}

impl<R: BufRead> DumpLines<R> {
    fn new(reader: R, kind: TextKind) -> DumpLines<R> {
        DumpLines {
            reader,
            kind,
            state: State::Start,
            typed: if kind == TextKind::ScanOutput {
                Some(true)
            } else {
                None
            },
            out: Vec::new(),
            pos: 0,
            items: 0,
        }
    }

    fn peek(&mut self) -> std::io::Result<Option<u8>> {
        loop {
            let buf = self.reader.fill_buf()?;
            match buf.iter().position(|b| !b.is_ascii_whitespace()) {
                Some(at) => {
                    let byte = buf[at];
                    self.reader.consume(at);
                    return Ok(Some(byte));
                }
                None if buf.is_empty() => return Ok(None),
                None => {
                    let n = buf.len();
                    self.reader.consume(n);
                }
            }
        }
    }

    fn expect(&mut self, byte: u8, what: &str) -> std::io::Result<()> {
        match self.peek()? {
            Some(b) if b == byte => {
                self.reader.consume(1);
                Ok(())
            }
            Some(b) => Err(invalid(format!(
                "scan dump: expected {what} after item {}, found {:?}",
                self.items, b as char
            ))),
            None => Err(invalid(format!(
                "scan dump: the file ends after item {} where {what} was expected",
                self.items
            ))),
        }
    }

    /// Copies one JSON value, without the whitespace outside its strings, into `out`.
    fn value(&mut self, out: &mut Vec<u8>) -> std::io::Result<()> {
        let mut depth = 0usize;
        let mut in_string = false;
        let mut escaped = false;
        let first = self.peek()?.ok_or_else(|| {
            invalid(format!(
                "scan dump: the file ends inside item {}",
                self.items + 1
            ))
        })?;
        let scalar = !matches!(first, b'{' | b'[' | b'"');
        loop {
            let buf = self.reader.fill_buf()?;
            if buf.is_empty() {
                if scalar && depth == 0 {
                    return Ok(());
                }
                return Err(invalid(format!(
                    "scan dump: the file ends inside item {}",
                    self.items + 1
                )));
            }
            let mut used = 0;
            let mut done = false;
            for &b in buf {
                if in_string {
                    out.push(b);
                    used += 1;
                    if escaped {
                        escaped = false;
                    } else if b == b'\\' {
                        escaped = true;
                    } else if b == b'"' {
                        in_string = false;
                        if depth == 0 {
                            done = true;
                            break;
                        }
                    }
                    continue;
                }
                match b {
                    b'"' => in_string = true,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' if depth > 0 => depth -= 1,
                    b',' | b'}' | b']' if scalar => {
                        done = true;
                        break;
                    }
                    b if b.is_ascii_whitespace() => {
                        used += 1;
                        if scalar {
                            done = true;
                            break;
                        }
                        continue;
                    }
                    _ => {}
                }
                out.push(b);
                used += 1;
                if depth == 0 && !scalar && matches!(b, b'}' | b']') {
                    done = true;
                    break;
                }
                if out.len() > MAX_LINE_BYTES {
                    return Err(invalid(format!(
                        "scan dump: item {} is over {} bytes",
                        self.items + 1,
                        MAX_LINE_BYTES
                    )));
                }
            }
            self.reader.consume(used);
            if done {
                return Ok(());
            }
        }
    }

    /// Reads top-level keys of scan output up to `"Items":[` (or the end of the object).
    fn seek_items(&mut self) -> std::io::Result<bool> {
        loop {
            match self.peek()? {
                Some(b'}') => {
                    self.reader.consume(1);
                    return Ok(false);
                }
                Some(b',') => {
                    self.reader.consume(1);
                    continue;
                }
                Some(b'"') => {}
                Some(b'{') if self.state == State::Start => {
                    self.reader.consume(1);
                    continue;
                }
                other => {
                    return Err(invalid(format!(
                        "scan dump: unexpected {:?} among the top-level keys",
                        other.map(|b| b as char)
                    )))
                }
            }
            let mut key = Vec::new();
            self.value(&mut key)?;
            self.expect(b':', "':'")?;
            if key == b"\"Items\"" && self.state == State::Start {
                self.expect(b'[', "'['")?;
                return Ok(true);
            }
            let mut ignored = Vec::new();
            self.value(&mut ignored)?;
        }
    }

    /// The next item as a line, or `None` at the end.
    fn next_line(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        loop {
            match self.state {
                State::Done => return Ok(None),
                State::Start => {
                    let found = match self.kind {
                        TextKind::ScanOutput => self.seek_items()?,
                        _ => {
                            self.expect(b'[', "'['")?;
                            true
                        }
                    };
                    self.state = if found { State::Items } else { State::Done };
                }
                State::AfterItems => {
                    self.seek_items()?;
                    self.state = State::Done;
                }
                State::Items => match self.peek()? {
                    Some(b']') => {
                        self.reader.consume(1);
                        self.state = if self.kind == TextKind::ScanOutput {
                            State::AfterItems
                        } else {
                            State::Done
                        };
                    }
                    Some(b',') => self.reader.consume(1),
                    Some(_) => {
                        let mut raw = Vec::new();
                        self.value(&mut raw)?;
                        self.items += 1;
                        return Ok(Some(self.line_of(raw)));
                    }
                    None => {
                        return Err(invalid(format!(
                            "scan dump: the file ends after item {} without closing its array",
                            self.items
                        )))
                    }
                },
            }
        }
    }

    /// `{"Item":<item>}`: typed items as they are, plain ones typed from their JSON.
    fn line_of(&mut self, raw: Vec<u8>) -> Vec<u8> {
        let parsed: Option<serde_json::Value> = match self.typed {
            Some(true) => None,
            _ => serde_json::from_slice(&raw).ok(),
        };
        if self.typed.is_none() {
            self.typed = Some(parsed.as_ref().is_some_and(looks_typed));
        }
        let mut line = b"{\"Item\":".to_vec();
        match (self.typed, parsed) {
            (Some(false), Some(serde_json::Value::Object(item))) => {
                let mut text = String::with_capacity(raw.len() * 2);
                text.push('{');
                for (i, (name, value)) in item.iter().enumerate() {
                    if i > 0 {
                        text.push(',');
                    }
                    text.push_str(&serde_json::Value::from(name.as_str()).to_string());
                    text.push(':');
                    typed_value(value, &mut text);
                }
                text.push('}');
                line.extend_from_slice(text.as_bytes());
            }
            // Typed items, and anything that is not an object (the line is then rejected with
            // its reason, never dropped).
            _ => line.extend_from_slice(&raw),
        }
        line.extend_from_slice(b"}\n");
        line
    }
}

/// Whether an item is typed DynamoDB JSON: every value an object with one type descriptor.
fn looks_typed(item: &serde_json::Value) -> bool {
    const DESCRIPTORS: [&str; 10] = ["S", "N", "B", "BOOL", "NULL", "M", "L", "SS", "NS", "BS"];
    let serde_json::Value::Object(attributes) = item else {
        return false;
    };
    !attributes.is_empty()
        && attributes.values().all(|v| match v {
            serde_json::Value::Object(typed) => {
                typed.len() == 1 && typed.keys().all(|k| DESCRIPTORS.contains(&k.as_str()))
            }
            _ => false,
        })
}

/// A plain JSON value as typed DynamoDB JSON (its number text kept as written).
fn typed_value(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match value {
        Value::String(s) => {
            out.push_str("{\"S\":");
            out.push_str(&Value::from(s.as_str()).to_string());
            out.push('}');
        }
        Value::Number(n) => {
            out.push_str("{\"N\":");
            out.push_str(&Value::from(n.to_string()).to_string());
            out.push('}');
        }
        Value::Bool(b) => out.push_str(if *b {
            "{\"BOOL\":true}"
        } else {
            "{\"BOOL\":false}"
        }),
        Value::Null => out.push_str("{\"NULL\":true}"),
        Value::Array(items) => {
            out.push_str("{\"L\":[");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                typed_value(item, out);
            }
            out.push_str("]}");
        }
        Value::Object(map) => {
            out.push_str("{\"M\":{");
            for (i, (name, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::from(name.as_str()).to_string());
                out.push(':');
                typed_value(item, out);
            }
            out.push_str("}}");
        }
    }
}

impl<R: BufRead> Read for DumpLines<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.out.len() {
            match self.next_line()? {
                Some(line) => {
                    self.out = line;
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.out.len() - self.pos);
        buf[..n].copy_from_slice(&self.out[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn lines_of(bytes: &[u8]) -> std::io::Result<Vec<String>> {
        let mut text = String::new();
        Text::new(BufReader::with_capacity(7, bytes), true)?.read_to_string(&mut text)?;
        Ok(text.lines().map(str::to_string).collect())
    }

    #[test]
    fn scan_output_becomes_one_typed_line_per_item() {
        let cli = br#"{
    "Items": [
        {
            "pk": {"S": "a, \"b\" ]}"},
            "n": {"N": "12345678901234567890123456789012345678"},
            "tags": {"SS": ["x", "y"]}
        },
        {"pk": {"S": "b"}, "raw": {"B": "AAE="}}
    ],
    "Count": 2,
    "ScannedCount": 2,
    "ConsumedCapacity": null
}
"#;
        let lines = lines_of(cli).unwrap();
        assert_eq!(
            lines,
            vec![
                r#"{"Item":{"pk":{"S":"a, \"b\" ]}"},"n":{"N":"12345678901234567890123456789012345678"},"tags":{"SS":["x","y"]}}}"#,
                r#"{"Item":{"pk":{"S":"b"},"raw":{"B":"AAE="}}}"#,
            ]
        );
        // Gzipped, the same.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(cli).unwrap();
        assert_eq!(lines_of(&gz.finish().unwrap()).unwrap(), lines);
    }

    #[test]
    fn a_plain_array_is_typed_from_its_json() {
        let guide = br#"[
  {"PK": "USER#1", "qty": 3, "price": 19.99, "big": 1.2345678901234567e+19, "tags": ["red"], "note": null, "ok": true, "m": {"a": [1, "x"]}},
  "not an item"
]"#;
        let lines = lines_of(guide).unwrap();
        assert_eq!(
            lines[0],
            // (attributes in name order: their order in an item carries nothing)
            r#"{"Item":{"PK":{"S":"USER#1"},"big":{"N":"1.2345678901234567e+19"},"m":{"M":{"a":{"L":[{"N":"1"},{"S":"x"}]}}},"note":{"NULL":true},"ok":{"BOOL":true},"price":{"N":"19.99"},"qty":{"N":"3"},"tags":{"L":[{"S":"red"}]}}}"#
        );
        assert_eq!(
            lines[1], r#"{"Item":"not an item"}"#,
            "rejected later, never dropped"
        );
        // An array of typed items loads exactly.
        let typed = br#"[{"pk":{"S":"a"},"n":{"N":"1.50"}}]"#;
        assert_eq!(
            lines_of(typed).unwrap(),
            vec![r#"{"Item":{"pk":{"S":"a"},"n":{"N":"1.50"}}}"#]
        );
    }

    #[test]
    fn json_lines_pass_through_and_a_broken_dump_is_an_error() {
        let native = b"{\"Item\":{\"a\":{\"S\":\"x\"}}}\n\n{\"Item\":{\"a\":{\"S\":\"y\"}}}\n";
        let mut text = String::new();
        Text::new(&native[..], true)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text.as_bytes(), native);
        // Plain text where gzip is expected (a data file named .gz) is an error.
        assert!(Text::new(&native[..], false).is_err());
        let error = lines_of(br#"[{"a": 1}, {"b": "#).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
        assert!(error.to_string().contains("inside item 2"), "{error}");
        assert!(lines_of(br#"{"Items": [{"a":{"S":"x"}}"#)
            .unwrap_err()
            .to_string()
            .contains("without closing its array"));
        assert_eq!(lines_of(b"[]").unwrap(), Vec::<String>::new());
    }
}
