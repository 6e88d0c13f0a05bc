//! The fast path of decoding: a scanner built for the DynamoDB JSON export grammar
//! (`{"Item":{"attr":{"T":…},…}}`) that checks a line and writes its values straight into the
//! Arrow builders of a block, without building a tree of values and without allocating per item.
//!
//! It owns the scanning of one line and the writing of canonical JSON from raw typed JSON; the
//! rules it applies are the ones of [`crate::item`] (structure, nesting at most
//! [`MAX_NESTING`](crate::item::MAX_NESTING)), [`crate::number`] (exact numbers),
//! [`crate::json`] (canonical JSON: sorted keys, exact numbers, base64 checked) and
//! [`crate::convert`] (casts), and it is held to them by a differential test against that
//! reference path.
//!
//! The scanner never decides a reject. Whenever a line is anything but plainly good (bad JSON, an
//! unknown descriptor, a repeated name, a value that does not cast, a number the target cannot
//! hold, nesting past DynamoDB's limit, an escaped attribute name, a lone surrogate, a NUL, …) it
//! *bails*, leaving nothing behind, and the caller decodes that line with the reference parser,
//! which gives the row, or the reject with its reason, exactly as before. Every hostile-input
//! bound of the reference path therefore holds unchanged, and so do reject reasons, classes and
//! line numbers.
//!
//! A line is decoded in two steps: [`LineScan::scan`] checks the whole line and records each
//! typed column's value (a range of the line, or of a scratch buffer for values it had to
//! rewrite) and the overflow attributes' canonical JSON; only a line that scanned completely is
//! then appended to the builders ([`LineScan::append`]), so a bailed line leaves no partial row.

use arrow_array::builder::StringBuilder;
use base64::Engine;
use ferry_shared::schema::{
    DdbType, NestedJson, NumericLimit, OnTypeMismatch, PgType, TableSchema,
};

use crate::convert::ColumnBuilder;
use crate::item::MAX_NESTING;
use crate::json::plain_run;
use crate::number::{canonical_number, MAX_SIGNIFICANT_DIGITS};

/// The scanner gives a line up to the reference parser.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bail;

type Scan<T> = Result<T, Bail>;

/// A type descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Desc {
    /// `S`
    S,
    /// `N`
    N,
    /// `B`
    B,
    /// `BOOL`
    Bool,
    /// `NULL`
    Null,
    /// `M`
    M,
    /// `L`
    L,
    /// `SS`
    Ss,
    /// `NS`
    Ns,
    /// `BS`
    Bs,
}

impl Desc {
    /// The descriptor's DynamoDB type.
    pub fn ddb_type(self) -> DdbType {
        match self {
            Desc::S => DdbType::S,
            Desc::N => DdbType::N,
            Desc::B => DdbType::B,
            Desc::Bool => DdbType::Bool,
            Desc::Null => DdbType::Null,
            Desc::M => DdbType::M,
            Desc::L => DdbType::L,
            Desc::Ss => DdbType::Ss,
            Desc::Ns => DdbType::Ns,
            Desc::Bs => DdbType::Bs,
        }
    }

    fn of(name: &[u8]) -> Scan<Desc> {
        Ok(match name {
            b"S" => Desc::S,
            b"N" => Desc::N,
            b"B" => Desc::B,
            b"BOOL" => Desc::Bool,
            b"NULL" => Desc::Null,
            b"M" => Desc::M,
            b"L" => Desc::L,
            b"SS" => Desc::Ss,
            b"NS" => Desc::Ns,
            b"BS" => Desc::Bs,
            _ => return Err(Bail),
        })
    }
}

/// A JSON string of the line: its content between the quotes, and whether it holds escapes.
#[derive(Clone, Copy, Debug)]
pub struct Span {
    /// First byte of the content.
    pub start: usize,
    /// One past the last byte of the content.
    pub end: usize,
    /// Whether the content holds a backslash (then it must be unescaped before use).
    pub escaped: bool,
}

/// A position in one line of text.
#[derive(Debug)]
pub struct Cursor<'a> {
    /// The line.
    pub text: &'a str,
    bytes: &'a [u8],
    /// The next byte to read.
    pub pos: usize,
}

/// Whether `a` and `b` are the same bytes, comparing slices of up to 16 bytes (attribute names,
/// key prefixes, short values) with a few word loads instead of a `memcmp` call, which costs
/// more than the comparison at these lengths.
#[inline]
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let word = |s: &[u8], at: usize| u64::from_le_bytes(s[at..at + 8].try_into().expect("8 bytes"));
    let half = |s: &[u8], at: usize| u32::from_le_bytes(s[at..at + 4].try_into().expect("4 bytes"));
    match n {
        0..=3 => a == b,
        4..=7 => half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4),
        8..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        _ => a == b,
    }
}

/// Whether `text` starts with `prefix`, as [`str::starts_with`], through [`same_bytes`].
#[inline]
pub fn starts_with(text: &str, prefix: &str) -> bool {
    text.len() >= prefix.len() && same_bytes(&text.as_bytes()[..prefix.len()], prefix.as_bytes())
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `text`.
    pub fn new(text: &'a str) -> Cursor<'a> {
        Cursor {
            text,
            bytes: text.as_bytes(),
            pos: 0,
        }
    }

    /// Skips JSON whitespace.
    #[inline]
    pub fn ws(&mut self) {
        while let Some(&b) = self.bytes.get(self.pos) {
            // One comparison for the usual byte: every whitespace byte is at most a space.
            if b > b' ' {
                break;
            }
            if matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    /// The next byte after whitespace, not consumed.
    #[inline]
    pub fn peek(&mut self) -> Option<u8> {
        match self.bytes.get(self.pos) {
            Some(&b) if b > b' ' => Some(b),
            _ => {
                self.ws();
                self.bytes.get(self.pos).copied()
            }
        }
    }

    /// Consumes `c` after whitespace.
    #[inline]
    pub fn eat(&mut self, c: u8) -> Scan<()> {
        // Compact JSON (what exports hold) has `c` right here.
        if self.bytes.get(self.pos) == Some(&c) {
            self.pos += 1;
            return Ok(());
        }
        self.ws();
        if self.bytes.get(self.pos) == Some(&c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(Bail)
        }
    }

    /// After a member or element: `true` at `,` (another follows), `false` at `close`.
    #[inline]
    pub fn next_or_close(&mut self, close: u8) -> Scan<bool> {
        if self.bytes.get(self.pos).is_none_or(|&b| b <= b' ') {
            self.ws();
        }
        match self.bytes.get(self.pos) {
            Some(b',') => {
                self.pos += 1;
                Ok(true)
            }
            Some(&b) if b == close => {
                self.pos += 1;
                Ok(false)
            }
            _ => Err(Bail),
        }
    }

    /// Consumes `close` if it comes next (an empty object or array).
    #[inline]
    pub fn empty(&mut self, close: u8) -> bool {
        if self.peek() == Some(close) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// A JSON string. Its escapes are not checked here: an escaped span is unescaped (and so
    /// checked) by [`unescape`] before any use, or the line bails.
    #[inline]
    pub fn string(&mut self) -> Scan<Span> {
        self.eat(b'"')?;
        let start = self.pos;
        let mut escaped = false;
        let bytes = self.bytes;
        let mut i = start;
        loop {
            i = plain_run(bytes, i);
            let Some(&b) = bytes.get(i) else {
                return Err(Bail);
            };
            match b {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    i += 2;
                }
                _ => return Err(Bail),
            }
        }
        self.pos = i + 1;
        Ok(Span {
            start,
            end: i,
            escaped,
        })
    }

    /// A number string that is already canonical plain text, read and checked in one pass: what
    /// [`canonical_number`] borrows at once (`-?(0|[1-9][0-9]*)(\.[0-9]+)?`, not negative zero, at
    /// most [`MAX_SIGNIFICANT_DIGITS`] bytes after the sign). Gives the content's range, or `None`
    /// with the cursor where it was (the caller then reads the string and checks it in full).
    #[inline]
    pub fn short_number(&mut self) -> Option<(usize, usize)> {
        let bytes = self.bytes;
        if bytes.get(self.pos) != Some(&b'"') {
            return None;
        }
        let start = self.pos + 1;
        let negative = bytes.get(start) == Some(&b'-');
        let body = start + usize::from(negative);
        let mut i = body;
        let mut nonzero = false;
        while let Some(&b) = bytes.get(i) {
            if !b.is_ascii_digit() {
                break;
            }
            nonzero |= b != b'0';
            i += 1;
        }
        if i == body || (i > body + 1 && bytes[body] == b'0') {
            return None;
        }
        if bytes.get(i) == Some(&b'.') {
            i += 1;
            let fraction = i;
            while let Some(&b) = bytes.get(i) {
                if !b.is_ascii_digit() {
                    break;
                }
                nonzero |= b != b'0';
                i += 1;
            }
            if i == fraction {
                return None;
            }
        }
        if bytes.get(i) != Some(&b'"')
            || i - body > MAX_SIGNIFICANT_DIGITS
            || (negative && !nonzero)
        {
            return None;
        }
        self.pos = i + 1;
        Some((start, i))
    }

    /// The text of a span (raw, escapes included).
    #[inline]
    pub fn raw(&self, span: Span) -> &'a str {
        // Spans start after a quote and end at one (ASCII), so both ends are char boundaries.
        &self.text[span.start..span.end]
    }

    /// A string without escapes, or a bail.
    #[inline]
    pub fn plain_string(&mut self) -> Scan<&'a str> {
        let span = self.string()?;
        if span.escaped {
            return Err(Bail);
        }
        Ok(self.raw(span))
    }

    /// `true` or `false`.
    #[inline]
    pub fn boolean(&mut self) -> Scan<bool> {
        self.ws();
        let rest = &self.bytes[self.pos.min(self.bytes.len())..];
        if rest.starts_with(b"true") {
            self.pos += 4;
            Ok(true)
        } else if rest.starts_with(b"false") {
            self.pos += 5;
            Ok(false)
        } else {
            Err(Bail)
        }
    }

    /// `{"T":` of a typed value: its descriptor.
    #[inline]
    pub fn typed_open(&mut self) -> Scan<Desc> {
        // The usual compact forms, `{"S":` … `{"BS":`, read at once: the four bytes after the
        // brace compared as one word. A value is followed by at least the item's closing braces,
        // so six bytes are there in a whole line. `BOOL`, `NULL` and anything with whitespace
        // take the general path below.
        const fn tag(t: &[u8; 4]) -> u32 {
            u32::from_le_bytes(*t)
        }
        const S: u32 = tag(b"\"S\":");
        const N: u32 = tag(b"\"N\":");
        const M: u32 = tag(b"\"M\":");
        const L: u32 = tag(b"\"L\":");
        const B: u32 = tag(b"\"B\":");
        const SS: u32 = tag(b"\"SS\"");
        const NS: u32 = tag(b"\"NS\"");
        const BS: u32 = tag(b"\"BS\"");
        if let Some(w) = self.bytes.get(self.pos..self.pos + 6) {
            if w[0] == b'{' {
                let found = match u32::from_le_bytes([w[1], w[2], w[3], w[4]]) {
                    S => Some((Desc::S, 5)),
                    N => Some((Desc::N, 5)),
                    M => Some((Desc::M, 5)),
                    L => Some((Desc::L, 5)),
                    B => Some((Desc::B, 5)),
                    SS if w[5] == b':' => Some((Desc::Ss, 6)),
                    NS if w[5] == b':' => Some((Desc::Ns, 6)),
                    BS if w[5] == b':' => Some((Desc::Bs, 6)),
                    _ => None,
                };
                if let Some((desc, len)) = found {
                    self.pos += len;
                    return Ok(desc);
                }
            }
        }
        self.eat(b'{')?;
        let descriptor = self.plain_string()?;
        self.eat(b':')?;
        Desc::of(descriptor.as_bytes())
    }

    /// The `}` closing a typed value (a second descriptor bails).
    #[inline]
    pub fn typed_close(&mut self) -> Scan<()> {
        self.eat(b'}')
    }

    /// Whether only whitespace is left.
    pub fn at_end(&mut self) -> bool {
        self.ws();
        self.pos == self.bytes.len()
    }
}

fn hex4(bytes: &[u8], at: usize) -> Scan<u32> {
    let digits = bytes.get(at..at + 4).ok_or(Bail)?;
    let mut value = 0u32;
    for &d in digits {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            b'A'..=b'F' => d - b'A' + 10,
            _ => return Err(Bail),
        };
        value = value * 16 + u32::from(v);
    }
    Ok(value)
}

/// Appends the unescaped text of `raw` (a JSON string's content) to `out`. Bails on an invalid
/// escape, a lone surrogate, and on U+0000, which no target column or JSON value may hold.
pub fn unescape(raw: &str, out: &mut String) -> Scan<()> {
    let bytes = raw.as_bytes();
    let mut i = 0;
    let mut last = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            i += 1;
            continue;
        }
        out.push_str(&raw[last..i]);
        let escape = *bytes.get(i + 1).ok_or(Bail)?;
        i += 2;
        let c = match escape {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let high = hex4(bytes, i)?;
                i += 4;
                let code = match high {
                    0 => return Err(Bail),
                    0xD800..=0xDBFF => {
                        if bytes.get(i) != Some(&b'\\') || bytes.get(i + 1) != Some(&b'u') {
                            return Err(Bail);
                        }
                        let low = hex4(bytes, i + 2)?;
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return Err(Bail);
                        }
                        i += 6;
                        0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
                    }
                    0xDC00..=0xDFFF => return Err(Bail),
                    other => other,
                };
                char::from_u32(code).ok_or(Bail)?
            }
            _ => return Err(Bail),
        };
        out.push(c);
        last = i;
    }
    out.push_str(&raw[last..]);
    Ok(())
}

/// Appends `s` as a JSON string literal, escaped as [`crate::json::write_json_string`] does (the
/// caller has refused NUL already).
pub fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Whether canonical plain number text fits a 96-bit decimal exactly (HeliosDB's NUMERIC), as
/// [`ParsedNumber::fits_decimal96`] decides, without allocating.
pub fn fits_decimal96_plain(text: &str) -> bool {
    const MAX: &[u8] = b"79228162514264337593543950335"; // 2^96 - 1
    let body = text.strip_prefix('-').unwrap_or(text);
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if frac.len() > 28 {
        return false;
    }
    // The digits read as one integer, without leading zeros.
    let digits = int.bytes().chain(frac.bytes()).skip_while(|&b| b == b'0');
    let len = digits.clone().count();
    if len != MAX.len() {
        return len < MAX.len();
    }
    digits.cmp(MAX.iter().copied()) != std::cmp::Ordering::Greater
}

/// Byte order of two (short) names, as `<[u8]>::cmp` gives it, without a call into `memcmp`:
/// map keys and attribute names are mostly a few bytes and differ early.
#[inline]
fn key_order(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    for (x, y) in a.iter().zip(b) {
        if x != y {
            return x.cmp(y);
        }
    }
    a.len().cmp(&b.len())
}

/// Maps of at most this many keys are put in order by an insertion sort.
const SMALL_MAP: usize = 16;

/// A map entry being written: its (unescaped, so raw) key in the line and its `"key":value` in
/// the output.
#[derive(Clone, Copy, Debug)]
struct Entry {
    key_start: usize,
    key_end: usize,
    out_start: usize,
    out_end: usize,
}

/// Writes canonical JSON from typed DynamoDB JSON (as [`crate::json::write_value`] does from
/// parsed values), reusing its buffers from line to line.
#[derive(Debug, Default)]
pub struct JsonWriter {
    entries: Vec<Entry>,
    tmp: String,
    base64: Vec<u8>,
}

impl JsonWriter {
    /// Parses the typed value at `c` (`{"T":…}`) and appends its JSON to `out`; `depth` is how
    /// many M/L containers hold it.
    pub fn typed(
        &mut self,
        c: &mut Cursor<'_>,
        out: &mut String,
        style: NestedJson,
        depth: usize,
    ) -> Scan<()> {
        let desc = c.typed_open()?;
        self.body(c, desc, out, style, depth)?;
        c.typed_close()
    }

    /// Parses the body of a value of type `desc` (after `{"T":`) and appends the value's JSON.
    pub fn body(
        &mut self,
        c: &mut Cursor<'_>,
        desc: Desc,
        out: &mut String,
        style: NestedJson,
        depth: usize,
    ) -> Scan<()> {
        let typed = style == NestedJson::Dynamodb;
        if typed {
            out.push_str("{\"");
            out.push_str(desc.ddb_type().descriptor());
            out.push_str("\":");
        }
        match desc {
            Desc::S => {
                let span = c.string()?;
                self.string(c, span, out)?;
            }
            Desc::N => self.number(c, out, typed)?,
            Desc::B => self.binary(c, out)?,
            Desc::Bool => out.push_str(if c.boolean()? { "true" } else { "false" }),
            Desc::Null => {
                if !c.boolean()? {
                    return Err(Bail);
                }
                out.push_str(if typed { "true" } else { "null" });
            }
            Desc::M => {
                if depth >= MAX_NESTING {
                    return Err(Bail);
                }
                self.map(c, out, style, depth + 1)?;
            }
            Desc::L => {
                if depth >= MAX_NESTING {
                    return Err(Bail);
                }
                c.eat(b'[')?;
                out.push('[');
                if !c.empty(b']') {
                    loop {
                        self.typed(c, out, style, depth + 1)?;
                        if !c.next_or_close(b']')? {
                            break;
                        }
                        out.push(',');
                    }
                }
                out.push(']');
            }
            Desc::Ss | Desc::Ns | Desc::Bs => {
                c.eat(b'[')?;
                out.push('[');
                if !c.empty(b']') {
                    loop {
                        match desc {
                            Desc::Ss => {
                                let span = c.string()?;
                                self.string(c, span, out)?;
                            }
                            Desc::Ns => self.number(c, out, typed)?,
                            _ => self.binary(c, out)?,
                        }
                        if !c.next_or_close(b']')? {
                            break;
                        }
                        out.push(',');
                    }
                }
                out.push(']');
            }
        }
        if typed {
            out.push('}');
        }
        Ok(())
    }

    fn string(&mut self, c: &Cursor<'_>, span: Span, out: &mut String) -> Scan<()> {
        if !span.escaped {
            // No escapes and no control characters: the canonical literal is the raw one, its
            // quotes included (a span's content sits between two quotes of the line).
            out.push_str(&c.text[span.start - 1..span.end + 1]);
            return Ok(());
        }
        self.tmp.clear();
        unescape(c.raw(span), &mut self.tmp)?;
        push_json_string(out, &self.tmp);
        Ok(())
    }

    fn number(&mut self, c: &mut Cursor<'_>, out: &mut String, quoted: bool) -> Scan<()> {
        if let Some((start, end)) = c.short_number() {
            out.push_str(if quoted {
                &c.text[start - 1..end + 1]
            } else {
                &c.text[start..end]
            });
            return Ok(());
        }
        let text = c.plain_string()?;
        let canonical = canonical_number(text).map_err(|_| Bail)?;
        if quoted {
            out.push('"');
        }
        out.push_str(&canonical);
        if quoted {
            out.push('"');
        }
        Ok(())
    }

    fn binary(&mut self, c: &mut Cursor<'_>, out: &mut String) -> Scan<()> {
        let text = c.plain_string()?;
        // Standard padded base64 decodes only from its canonical text, so a value that decodes
        // is written back as it was.
        self.base64.clear();
        base64::engine::general_purpose::STANDARD
            .decode_vec(text, &mut self.base64)
            .map_err(|_| Bail)?;
        out.push('"');
        out.push_str(text);
        out.push('"');
        Ok(())
    }

    /// A map's members, written with keys sorted by their bytes; a repeated key bails.
    fn map(
        &mut self,
        c: &mut Cursor<'_>,
        out: &mut String,
        style: NestedJson,
        depth: usize,
    ) -> Scan<()> {
        c.eat(b'{')?;
        out.push('{');
        if c.empty(b'}') {
            out.push('}');
            return Ok(());
        }
        let base = self.entries.len();
        let body_start = out.len();
        let mut sorted = true;
        loop {
            let key = c.string()?;
            if key.escaped {
                return Err(Bail);
            }
            c.eat(b':')?;
            if self.entries.len() > base {
                out.push(',');
            }
            let out_start = out.len();
            // The key with its quotes, as it is in the line (no escapes).
            out.push_str(&c.text[key.start - 1..key.end + 1]);
            out.push(':');
            self.typed(c, out, style, depth)?;
            if let Some(previous) = self.entries[base..].last() {
                let line = c.text.as_bytes();
                if key_order(
                    &line[previous.key_start..previous.key_end],
                    &line[key.start..key.end],
                )
                .is_ge()
                {
                    sorted = false;
                }
            }
            self.entries.push(Entry {
                key_start: key.start,
                key_end: key.end,
                out_start,
                out_end: out.len(),
            });
            if !c.next_or_close(b'}')? {
                break;
            }
        }
        if !sorted {
            let line = c.text.as_bytes();
            let entries = &mut self.entries[base..];
            let key = |e: &Entry| &line[e.key_start..e.key_end];
            if entries.len() <= SMALL_MAP {
                // Most maps hold a handful of keys: an insertion sort, inline, which meets a
                // repeated key as it goes.
                for i in 1..entries.len() {
                    let entry = entries[i];
                    let mut j = i;
                    while j > 0 {
                        match key_order(key(&entries[j - 1]), key(&entry)) {
                            std::cmp::Ordering::Greater => {
                                entries[j] = entries[j - 1];
                                j -= 1;
                            }
                            std::cmp::Ordering::Equal => return Err(Bail),
                            std::cmp::Ordering::Less => break,
                        }
                    }
                    entries[j] = entry;
                }
            } else {
                entries.sort_unstable_by(|a, b| key_order(key(a), key(b)));
                if entries.windows(2).any(|w| key(&w[0]) == key(&w[1])) {
                    return Err(Bail);
                }
            }
            self.tmp.clear();
            self.tmp.push_str(&out[body_start..]);
            out.truncate(body_start);
            for (i, entry) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&self.tmp[entry.out_start - body_start..entry.out_end - body_start]);
            }
        }
        self.entries.truncate(base);
        out.push('}');
        Ok(())
    }
}

/// Where a value's text is: in the line or in the scratch buffer.
#[derive(Clone, Copy, Debug)]
enum Src {
    Line(usize, usize),
    Scratch(usize, usize),
    Static(&'static str),
}

/// One typed column's value in the line being scanned.
#[derive(Clone, Copy, Debug)]
enum Slot {
    Unset,
    Null,
    Text(Src),
    Bytes(usize, usize),
    Bool(bool),
    I16(i16),
    I32(i32),
    I64(i64),
    F64(f64),
    /// Elements `start..end` of [`LineScan::elements`].
    List(usize, usize),
}

/// An element of a list column: text, or bytes of the byte scratch.
#[derive(Clone, Copy, Debug)]
enum Element {
    Text(Src),
    Bytes(usize, usize),
}

/// An attribute bound for the overflow column: its name in the line and its JSON in the scratch.
#[derive(Clone, Copy, Debug)]
struct Spill {
    name_start: usize,
    name_end: usize,
    json_start: usize,
    json_end: usize,
}

/// Column index by attribute name: open addressing over a name's length and two words read
/// from its first and last bytes (names are short: SipHash, then FNV byte by byte, showed in
/// profiles, and so did `memcmp` calls for the comparison). For a name of at most 16 bytes the
/// words hold every byte, so equal words and length are equal names.
#[derive(Clone, Debug)]
pub struct NameIndex {
    /// `(words, length, column + 1)`; `column + 1 == 0` is an empty slot.
    slots: Vec<([u64; 2], u32, u32)>,
    names: Vec<Box<[u8]>>,
    mask: usize,
}

/// The words of a name: for at most 16 bytes, every byte of it (with its length, the name).
#[inline(always)]
fn name_words(name: &[u8]) -> [u64; 2] {
    let n = name.len();
    let u32_at = |at: usize| u64::from(u32::from_le_bytes(name[at..at + 4].try_into().expect("4")));
    let u64_at = |at: usize| u64::from_le_bytes(name[at..at + 8].try_into().expect("8"));
    if n >= 8 {
        [u64_at(0), u64_at(n - 8)]
    } else if n >= 4 {
        [u32_at(0) | (u32_at(n - 4) << 32), 0]
    } else if n > 0 {
        [
            u64::from(name[0]) | u64::from(name[n / 2]) << 8 | u64::from(name[n - 1]) << 16,
            0,
        ]
    } else {
        [0, 0]
    }
}

#[inline(always)]
fn words_hash(words: [u64; 2], len: usize) -> usize {
    let h = (words[0] ^ words[1].rotate_left(29) ^ (len as u64).rotate_left(56))
        .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (h >> 32) as usize
}

impl NameIndex {
    /// The index of `names`, each to its position (a repeated name keeps its first position;
    /// a schema's column names are unique).
    pub fn new<'n>(names: impl IntoIterator<Item = &'n [u8]>) -> NameIndex {
        let names: Vec<Box<[u8]>> = names.into_iter().map(Box::from).collect();
        let size = (names.len() * 4).next_power_of_two().max(16);
        let mut index = NameIndex {
            slots: vec![([0, 0], 0, 0); size],
            names,
            mask: size - 1,
        };
        for position in 0..index.names.len() {
            let name = &index.names[position];
            if index.get(name).is_some() {
                continue;
            }
            let words = name_words(name);
            let mut i = words_hash(words, name.len()) & index.mask;
            while index.slots[i].2 != 0 {
                i = (i + 1) & index.mask;
            }
            let len = u32::try_from(name.len()).unwrap_or(u32::MAX);
            index.slots[i] = (words, len, position as u32 + 1);
        }
        index
    }

    /// How many names the index holds.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether the index holds no name.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The column of `name`.
    #[inline(always)]
    pub fn get(&self, name: &[u8]) -> Option<usize> {
        let words = name_words(name);
        let mut i = words_hash(words, name.len()) & self.mask;
        loop {
            let (w, len, column) = self.slots[i];
            if column == 0 {
                return None;
            }
            let column = column as usize - 1;
            if w == words
                && len as usize == name.len()
                && (name.len() <= 16 || *self.names[column] == *name)
            {
                return Some(column);
            }
            i = (i + 1) & self.mask;
        }
    }
}

/// Builds the name → column index of a schema.
pub fn name_index(schema: &TableSchema) -> NameIndex {
    NameIndex::new(schema.columns.iter().map(|c| c.name.as_bytes()))
}

/// Scans the lines of one block in table mode; its buffers are reused from line to line.
#[derive(Debug)]
pub struct LineScan<'s> {
    schema: &'s TableSchema,
    index: &'s NameIndex,
    /// The key columns' positions: a line without one of them bails.
    keys: Vec<usize>,
    slots: Vec<Slot>,
    /// The slots this line set, in the order it set them (each once: a second value bails).
    set: Vec<usize>,
    scratch: String,
    bytes: Vec<u8>,
    elements: Vec<Element>,
    spills: Vec<Spill>,
    json: JsonWriter,
    spilled: u64,
}

impl<'s> LineScan<'s> {
    /// A scanner for lines of `schema`.
    pub fn new(schema: &'s TableSchema, index: &'s NameIndex) -> LineScan<'s> {
        LineScan {
            schema,
            index,
            keys: (schema.columns.iter().enumerate())
                .filter(|(_, c)| c.is_key)
                .map(|(i, _)| i)
                .collect(),
            slots: vec![Slot::Unset; schema.columns.len()],
            set: Vec::with_capacity(schema.columns.len()),
            scratch: String::new(),
            bytes: Vec::new(),
            elements: Vec::new(),
            spills: Vec::new(),
            json: JsonWriter::default(),
            spilled: 0,
        }
    }

    /// Scans one line; on success [`Self::append`] writes its row.
    pub fn scan(&mut self, text: &str) -> Scan<()> {
        for &index in &self.set {
            self.slots[index] = Slot::Unset;
        }
        self.set.clear();
        self.scratch.clear();
        self.bytes.clear();
        self.elements.clear();
        self.spills.clear();
        self.spilled = 0;
        let mut c = Cursor::new(text);
        c.eat(b'{')?;
        if c.plain_string()? != "Item" {
            return Err(Bail);
        }
        c.eat(b':')?;
        c.eat(b'{')?;
        if !c.empty(b'}') {
            loop {
                let name = c.string()?;
                if name.escaped {
                    return Err(Bail);
                }
                c.eat(b':')?;
                let desc = c.typed_open()?;
                self.attribute(&mut c, name, desc)?;
                c.typed_close()?;
                if !c.next_or_close(b'}')? {
                    break;
                }
            }
        }
        c.eat(b'}')?;
        if !c.at_end() {
            return Err(Bail);
        }
        if self
            .keys
            .iter()
            .any(|&k| matches!(self.slots[k], Slot::Unset))
        {
            return Err(Bail);
        }
        if self.spills.len() > 1 {
            let line = text.as_bytes();
            self.spills.sort_unstable_by(|a, b| {
                key_order(
                    &line[a.name_start..a.name_end],
                    &line[b.name_start..b.name_end],
                )
            });
            if self.spills.windows(2).any(|w| {
                line[w[0].name_start..w[0].name_end] == line[w[1].name_start..w[1].name_end]
            }) {
                return Err(Bail);
            }
        }
        Ok(())
    }

    /// One attribute, its descriptor read.
    fn attribute(&mut self, c: &mut Cursor<'_>, name: Span, desc: Desc) -> Scan<()> {
        let name_bytes = &c.text.as_bytes()[name.start..name.end];
        let Some(index) = self.index.get(name_bytes) else {
            return self.spill(c, name, desc);
        };
        let column = &self.schema.columns[index];
        if !matches!(self.slots[index], Slot::Unset) {
            return Err(Bail);
        }
        // Set below (or the line bails, and the next scan resets it all the same).
        self.set.push(index);
        if desc == Desc::Null && !column.is_key {
            // SQL NULL in the column and `"name": null` in the overflow, as the reference does.
            self.slots[index] = Slot::Null;
            return self.spill(c, name, desc);
        }
        if desc.ddb_type() == column.ddb_type {
            let slot = self.cast(c, desc, column.pg_type)?;
            self.slots[index] = slot;
            return Ok(());
        }
        if column.is_key || self.schema.on_type_mismatch == OnTypeMismatch::Reject {
            return Err(Bail);
        }
        self.slots[index] = Slot::Null;
        self.spilled += 1;
        self.spill(c, name, desc)
    }

    /// The attribute goes to the overflow column: its JSON into the scratch.
    fn spill(&mut self, c: &mut Cursor<'_>, name: Span, desc: Desc) -> Scan<()> {
        let json_start = self.scratch.len();
        self.json
            .body(c, desc, &mut self.scratch, self.schema.nested_json, 0)?;
        self.spills.push(Spill {
            name_start: name.start,
            name_end: name.end,
            json_start,
            json_end: self.scratch.len(),
        });
        Ok(())
    }

    /// A text value: borrowed from the line, or unescaped into the scratch.
    fn text(&mut self, c: &mut Cursor<'_>) -> Scan<Src> {
        let span = c.string()?;
        if !span.escaped {
            return Ok(Src::Line(span.start, span.end));
        }
        let start = self.scratch.len();
        unescape(c.raw(span), &mut self.scratch)?;
        Ok(Src::Scratch(start, self.scratch.len()))
    }

    /// A number's canonical text: borrowed from the line when it is canonical already (read in
    /// one pass when it is plain), else rewritten into the scratch.
    fn canonical(&mut self, c: &mut Cursor<'_>) -> Scan<Src> {
        if let Some((start, end)) = c.short_number() {
            return Ok(Src::Line(start, end));
        }
        let span = c.string()?;
        if span.escaped {
            return Err(Bail);
        }
        Ok(match canonical_number(c.raw(span)).map_err(|_| Bail)? {
            std::borrow::Cow::Borrowed(_) => Src::Line(span.start, span.end),
            std::borrow::Cow::Owned(owned) => {
                let start = self.scratch.len();
                self.scratch.push_str(&owned);
                Src::Scratch(start, self.scratch.len())
            }
        })
    }

    /// A number for a NUMERIC column: canonical, and within the target's NUMERIC.
    fn numeric(&mut self, c: &mut Cursor<'_>) -> Scan<Src> {
        let src = self.canonical(c)?;
        if self.schema.numeric_limit == NumericLimit::Decimal96
            && !fits_decimal96_plain(self.resolve(c.text, src))
        {
            return Err(Bail);
        }
        Ok(src)
    }

    /// Base64 decoded into the byte scratch.
    fn binary(&mut self, c: &mut Cursor<'_>) -> Scan<(usize, usize)> {
        let text = c.plain_string()?;
        let start = self.bytes.len();
        base64::engine::general_purpose::STANDARD
            .decode_vec(text, &mut self.bytes)
            .map_err(|_| Bail)?;
        Ok((start, self.bytes.len()))
    }

    fn canonical_text<'a>(c: &mut Cursor<'a>) -> Scan<std::borrow::Cow<'a, str>> {
        let text = c.plain_string()?;
        canonical_number(text).map_err(|_| Bail)
    }

    /// Casts a value of its column's DynamoDB type, exactly as [`crate::convert::cast`] does, or
    /// bails (every cast error, and the casts the fast path does not make, go to the reference).
    fn cast(&mut self, c: &mut Cursor<'_>, desc: Desc, pg_type: PgType) -> Scan<Slot> {
        Ok(match (desc, pg_type) {
            (Desc::S, PgType::Text) => Slot::Text(self.text(c)?),
            (Desc::N, PgType::Numeric) => Slot::Text(self.numeric(c)?),
            (Desc::N, PgType::Text) => Slot::Text(self.canonical(c)?),
            (Desc::N, PgType::Int2 | PgType::Int4 | PgType::Int8) => {
                let text = c.plain_string()?;
                let n = match crate::convert::plain_i64(text) {
                    Some(n) => n,
                    None => (canonical_number(text).map_err(|_| Bail)?)
                        .parse()
                        .map_err(|_| Bail)?,
                };
                match pg_type {
                    PgType::Int2 => Slot::I16(i16::try_from(n).map_err(|_| Bail)?),
                    PgType::Int4 => Slot::I32(i32::try_from(n).map_err(|_| Bail)?),
                    _ => Slot::I64(n),
                }
            }
            (Desc::N, PgType::Float8) => {
                let f: f64 = Self::canonical_text(c)?.parse().map_err(|_| Bail)?;
                if !f.is_finite() {
                    return Err(Bail);
                }
                Slot::F64(f)
            }
            (Desc::B, PgType::Bytea) => {
                let (start, end) = self.binary(c)?;
                Slot::Bytes(start, end)
            }
            (Desc::Bool, PgType::Boolean) => Slot::Bool(c.boolean()?),
            (Desc::Bool, PgType::Text) => {
                Slot::Text(Src::Static(if c.boolean()? { "true" } else { "false" }))
            }
            (_, PgType::Jsonb) | (Desc::M | Desc::L, PgType::Text) => {
                let start = self.scratch.len();
                self.json
                    .body(c, desc, &mut self.scratch, self.schema.nested_json, 0)?;
                Slot::Text(Src::Scratch(start, self.scratch.len()))
            }
            (Desc::Ss | Desc::Ns | Desc::Bs, _) => {
                let wanted = match desc {
                    Desc::Ss => PgType::TextArray,
                    Desc::Ns => PgType::NumericArray,
                    _ => PgType::ByteaArray,
                };
                if pg_type != wanted {
                    return Err(Bail);
                }
                let first = self.elements.len();
                c.eat(b'[')?;
                if !c.empty(b']') {
                    loop {
                        let element = match desc {
                            Desc::Ss => Element::Text(self.text(c)?),
                            Desc::Ns => Element::Text(self.numeric(c)?),
                            _ => {
                                let (start, end) = self.binary(c)?;
                                Element::Bytes(start, end)
                            }
                        };
                        self.elements.push(element);
                        if !c.next_or_close(b']')? {
                            break;
                        }
                    }
                }
                Slot::List(first, self.elements.len())
            }
            _ => return Err(Bail),
        })
    }

    fn resolve<'t>(&'t self, text: &'t str, src: Src) -> &'t str {
        match src {
            Src::Line(start, end) => &text[start..end],
            Src::Scratch(start, end) => &self.scratch[start..end],
            Src::Static(s) => s,
        }
    }

    /// Appends the scanned line's row (row number `row` of the builders) to the builders;
    /// returns how many of its values spilled. Only the values the line has are appended: a
    /// builder holding `filled` rows is owed `row - filled` NULLs, appended here before its next
    /// value (the caller appends the rest before appending a row any other way, and before
    /// finishing).
    pub fn append(
        &self,
        text: &str,
        builders: &mut [ColumnBuilder],
        filled: &mut [usize],
        row: usize,
        overflow: &mut StringBuilder,
    ) -> u64 {
        for &index in &self.set {
            let slot = self.slots[index];
            if matches!(slot, Slot::Unset | Slot::Null) {
                continue;
            }
            let builder = &mut builders[index];
            if filled[index] < row {
                builder.append_nulls(row - filled[index]);
            }
            filled[index] = row + 1;
            match (builder, slot) {
                (ColumnBuilder::Utf8(b), Slot::Text(src)) => {
                    b.append_value(self.resolve(text, src))
                }
                (ColumnBuilder::Binary(b), Slot::Bytes(start, end)) => {
                    b.append_value(&self.bytes[start..end])
                }
                (ColumnBuilder::Bool(b), Slot::Bool(v)) => b.append_value(v),
                (ColumnBuilder::I16(b), Slot::I16(v)) => b.append_value(v),
                (ColumnBuilder::I32(b), Slot::I32(v)) => b.append_value(v),
                (ColumnBuilder::I64(b), Slot::I64(v)) => b.append_value(v),
                (ColumnBuilder::F64(b), Slot::F64(v)) => b.append_value(v),
                (ColumnBuilder::Utf8List(b), Slot::List(first, last)) => {
                    for element in &self.elements[first..last] {
                        if let Element::Text(src) = *element {
                            b.values().append_value(self.resolve(text, src));
                        }
                    }
                    b.append(true);
                }
                (ColumnBuilder::BinaryList(b), Slot::List(first, last)) => {
                    for element in &self.elements[first..last] {
                        if let Element::Bytes(start, end) = *element {
                            b.values().append_value(&self.bytes[start..end]);
                        }
                    }
                    b.append(true);
                }
                // Each cast gives its column type's slot.
                (builder, _) => builder.append(crate::convert::Cell::Null),
            }
        }
        if self.spills.is_empty() {
            overflow.append_null();
        } else {
            use std::fmt::Write as _;
            let _ = overflow.write_char('{');
            for (i, spill) in self.spills.iter().enumerate() {
                if i > 0 {
                    let _ = overflow.write_char(',');
                }
                let _ = overflow.write_char('"');
                let _ = overflow.write_str(&text[spill.name_start..spill.name_end]);
                let _ = overflow.write_str("\":");
                let _ = overflow.write_str(&self.scratch[spill.json_start..spill.json_end]);
            }
            let _ = overflow.write_char('}');
            overflow.append_value("");
        }
        self.spilled
    }
}

/// One top-level attribute of a scanned item ([`ItemScan`]).
#[derive(Clone, Copy, Debug)]
pub struct AttrRef {
    /// The name in the line (never escaped).
    pub name: (usize, usize),
    /// The name's position in the [`NameIndex`] the line was scanned with; `usize::MAX` when the
    /// index does not hold it.
    pub id: usize,
    /// The type.
    pub desc: Desc,
    /// Where the body (what follows `{"T":`) starts in the line.
    pub body: usize,
    /// Where the value's plain canonical JSON is: in the line itself (a string without
    /// escapes, a canonical number), or in [`ItemScan::json`].
    pub json: JsonAt,
}

/// A range of the line, or of [`ItemScan::json`].
#[derive(Clone, Copy, Debug)]
pub enum JsonAt {
    /// `start..end` of the line.
    Line(usize, usize),
    /// `start..end` of [`ItemScan::json`].
    Written(usize, usize),
}

/// Scans a line into an index of its top-level attributes, each with its plain canonical JSON
/// (routed mode: rules look attributes up by name, columns take some whole, the rest column
/// gets the others' JSON). The whole line is checked as [`LineScan`] checks it; a repeated name
/// bails.
#[derive(Debug, Default)]
pub struct ItemScan {
    /// The attributes, in line order.
    pub attrs: Vec<AttrRef>,
    /// The JSON of the attributes whose JSON is not the line's own text, back to back.
    pub json: String,
    /// Per position in the [`NameIndex`] the line was scanned with, the index in [`Self::attrs`]
    /// of the attribute of that name; `usize::MAX` when the line has none.
    pub found: Vec<usize>,
    writer: JsonWriter,
    order: Vec<usize>,
}

impl ItemScan {
    /// Scans `text`, looking each attribute's name up in `names`; on success [`Self::attrs`],
    /// [`Self::found`] and [`Self::json`] describe it. Every line of a scanner is scanned with the
    /// same `names`.
    pub fn scan(&mut self, text: &str, names: &NameIndex) -> Scan<()> {
        if self.found.len() != names.len() {
            self.found.clear();
            self.found.resize(names.len(), usize::MAX);
        }
        for attr in &self.attrs {
            if let Some(slot) = self.found.get_mut(attr.id) {
                *slot = usize::MAX;
            }
        }
        self.attrs.clear();
        self.json.clear();
        let mut c = Cursor::new(text);
        c.eat(b'{')?;
        if c.plain_string()? != "Item" {
            return Err(Bail);
        }
        c.eat(b':')?;
        c.eat(b'{')?;
        if !c.empty(b'}') {
            loop {
                let name = c.string()?;
                if name.escaped {
                    return Err(Bail);
                }
                c.eat(b':')?;
                let desc = c.typed_open()?;
                c.ws();
                let body = c.pos;
                let short = if desc == Desc::N {
                    c.short_number()
                } else {
                    None
                };
                let json = match desc {
                    // A number already canonical, read in one pass: its text is its JSON.
                    _ if short.is_some() => {
                        let (start, end) = short.expect("checked");
                        JsonAt::Line(start, end)
                    }
                    // A string without escapes is its own canonical JSON (quotes included), and
                    // so is a canonical number's text (plain JSON numbers are bare).
                    Desc::S | Desc::N if c.bytes.get(body) == Some(&b'"') => {
                        let span = c.string()?;
                        if span.escaped {
                            c.pos = body;
                            self.write(&mut c, desc)?
                        } else if desc == Desc::S {
                            JsonAt::Line(span.start - 1, span.end + 1)
                        } else {
                            match canonical_number(c.raw(span)).map_err(|_| Bail)? {
                                std::borrow::Cow::Borrowed(_) => JsonAt::Line(span.start, span.end),
                                std::borrow::Cow::Owned(canonical) => {
                                    let start = self.json.len();
                                    self.json.push_str(&canonical);
                                    JsonAt::Written(start, self.json.len())
                                }
                            }
                        }
                    }
                    _ => self.write(&mut c, desc)?,
                };
                c.typed_close()?;
                let id = names
                    .get(&c.bytes[name.start..name.end])
                    .unwrap_or(usize::MAX);
                if let Some(slot) = self.found.get_mut(id) {
                    // A name of the index seen twice (other names are checked below).
                    if *slot != usize::MAX {
                        return Err(Bail);
                    }
                    *slot = self.attrs.len();
                }
                self.attrs.push(AttrRef {
                    name: (name.start, name.end),
                    id,
                    desc,
                    body,
                    json,
                });
                if !c.next_or_close(b'}')? {
                    break;
                }
            }
        }
        c.eat(b'}')?;
        if !c.at_end() {
            return Err(Bail);
        }
        // A repeated name bails. Names of the index were checked as they came (a name of the
        // index never equals one outside it); the others are checked against each other.
        let line = text.as_bytes();
        let name = |a: &AttrRef| &line[a.name.0..a.name.1];
        self.order.clear();
        self.order
            .extend((0..self.attrs.len()).filter(|&i| self.attrs[i].id == usize::MAX));
        let attrs = &self.attrs;
        if self.order.len() <= 16 {
            for (n, &a) in self.order.iter().enumerate() {
                if self.order[..n]
                    .iter()
                    .any(|&b| same_bytes(name(&attrs[b]), name(&attrs[a])))
                {
                    return Err(Bail);
                }
            }
        } else {
            self.order
                .sort_unstable_by(|&a, &b| name(&attrs[a]).cmp(name(&attrs[b])));
            if self
                .order
                .windows(2)
                .any(|w| name(&attrs[w[0]]) == name(&attrs[w[1]]))
            {
                return Err(Bail);
            }
        }
        Ok(())
    }

    /// Writes the JSON of the value at `c` (its body) into [`Self::json`].
    fn write(&mut self, c: &mut Cursor<'_>, desc: Desc) -> Scan<JsonAt> {
        let start = self.json.len();
        self.writer
            .body(c, desc, &mut self.json, NestedJson::Plain, 0)?;
        Ok(JsonAt::Written(start, self.json.len()))
    }

    /// The JSON of attribute `index` of the scanned line `text`.
    pub fn json_of<'t>(&'t self, text: &'t str, index: usize) -> &'t str {
        match self.attrs[index].json {
            JsonAt::Line(start, end) => &text[start..end],
            JsonAt::Written(start, end) => &self.json[start..end],
        }
    }
}

/// A scalar value (`S`, `N`, `B`, `BOOL`, `NULL`) read from its body at `body` in `text`, as the
/// reference parser gives it (strings borrowed unless escaped); `None` for other types.
pub fn scalar_at(text: &str, body: usize, desc: Desc) -> Scan<Option<crate::item::AttrValue<'_>>> {
    use crate::item::AttrValue;
    use std::borrow::Cow;
    let mut c = Cursor {
        text,
        bytes: text.as_bytes(),
        pos: body,
    };
    let string = |c: &mut Cursor<'_>| -> Scan<Cow<'_, str>> {
        let span = c.string()?;
        if !span.escaped {
            return Ok(Cow::Borrowed(&text[span.start..span.end]));
        }
        let mut out = String::new();
        unescape(&text[span.start..span.end], &mut out)?;
        Ok(Cow::Owned(out))
    };
    Ok(Some(match desc {
        Desc::S => AttrValue::S(string(&mut c)?),
        Desc::N => AttrValue::N(string(&mut c)?),
        Desc::B => AttrValue::B(string(&mut c)?),
        Desc::Bool => AttrValue::Bool(c.boolean()?),
        Desc::Null => AttrValue::Null,
        _ => return Ok(None),
    }))
}

/// A scanned top-level attribute's scalar value, as [`scalar_at`] gives it, without reading the
/// line again where the scan has already found it: a string without escapes, a number already
/// canonical (its text is the reference parser's, which the scan found canonical as it is).
#[inline]
pub fn attr_scalar<'t>(text: &'t str, attr: &AttrRef) -> Scan<Option<crate::item::AttrValue<'t>>> {
    use crate::item::AttrValue;
    use std::borrow::Cow;
    Ok(Some(match (attr.desc, attr.json) {
        (Desc::S, JsonAt::Line(start, end)) => {
            AttrValue::S(Cow::Borrowed(&text[start + 1..end - 1]))
        }
        (Desc::N, JsonAt::Line(start, end)) => AttrValue::N(Cow::Borrowed(&text[start..end])),
        _ => return scalar_at(text, attr.body, attr.desc),
    }))
}

/// The elements of a set (`SS`, `NS`, `BS`) whose body starts at `body`, as the reference parser
/// gives them.
pub fn set_at(text: &str, body: usize, desc: Desc) -> Scan<crate::item::AttrValue<'_>> {
    use crate::item::AttrValue;
    use std::borrow::Cow;
    let mut c = Cursor {
        text,
        bytes: text.as_bytes(),
        pos: body,
    };
    let mut items = Vec::new();
    c.eat(b'[')?;
    if !c.empty(b']') {
        loop {
            let span = c.string()?;
            items.push(if span.escaped {
                let mut out = String::new();
                unescape(&text[span.start..span.end], &mut out)?;
                Cow::Owned(out)
            } else {
                Cow::Borrowed(&text[span.start..span.end])
            });
            if !c.next_or_close(b']')? {
                break;
            }
        }
    }
    Ok(match desc {
        Desc::Ss => AttrValue::Ss(items),
        Desc::Ns => AttrValue::Ns(items),
        Desc::Bs => AttrValue::Bs(items),
        _ => return Err(Bail),
    })
}

/// In the map whose body (`{…}`) starts at `body`, the value named `key`: its type and where
/// its body starts. The map was checked by a scan already.
pub fn member_at(text: &str, body: usize, key: &str) -> Scan<Option<(Desc, usize)>> {
    let mut c = Cursor {
        text,
        bytes: text.as_bytes(),
        pos: body,
    };
    let mut sink = String::new();
    let mut writer = JsonWriter::default();
    c.eat(b'{')?;
    if c.empty(b'}') {
        return Ok(None);
    }
    loop {
        let name = c.string()?;
        if name.escaped {
            return Err(Bail);
        }
        c.eat(b':')?;
        let desc = c.typed_open()?;
        c.ws();
        if &text[name.start..name.end] == key {
            return Ok(Some((desc, c.pos)));
        }
        sink.clear();
        writer.body(&mut c, desc, &mut sink, NestedJson::Plain, 0)?;
        c.typed_close()?;
        if !c.next_or_close(b'}')? {
            return Ok(None);
        }
    }
}

/// In the map whose body starts at `body`, the member named `key` when the line holds its plain
/// canonical JSON as it is: a string without escapes (its range includes the quotes) or a number
/// already canonical. Its type and range; `None` when it is absent or any other value.
pub fn member_plain(text: &str, body: usize, key: &str) -> Scan<Option<(Desc, usize, usize)>> {
    let Some((desc, at)) = member_at(text, body, key)? else {
        return Ok(None);
    };
    let mut c = Cursor {
        text,
        bytes: text.as_bytes(),
        pos: at,
    };
    Ok(match desc {
        Desc::S => {
            let span = c.string()?;
            (!span.escaped).then_some((desc, span.start - 1, span.end + 1))
        }
        Desc::N => c.short_number().map(|(start, end)| (desc, start, end)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::number::ParsedNumber;

    /// The word-load comparison agrees with `==` at every length around its cut-offs, for equal
    /// slices and for slices that differ in any one byte.
    #[test]
    fn same_bytes_is_slice_equality() {
        for n in 0..=40usize {
            let a: Vec<u8> = (0..n).map(|i| b'a' + (i % 26) as u8).collect();
            assert!(same_bytes(&a, &a.clone()), "{n}");
            assert!(starts_with(std::str::from_utf8(&a).unwrap(), ""));
            for at in 0..n {
                let mut b = a.clone();
                b[at] ^= 0x01;
                assert!(!same_bytes(&a, &b), "{n} bytes, differing at {at}");
                assert!(
                    !starts_with(
                        std::str::from_utf8(&b).unwrap(),
                        std::str::from_utf8(&a[..=at]).unwrap()
                    ),
                    "{n} bytes, differing at {at}"
                );
            }
            if n > 0 {
                assert!(!same_bytes(&a, &a[..n - 1]), "{n}");
                assert!(starts_with(
                    std::str::from_utf8(&a).unwrap(),
                    std::str::from_utf8(&a[..n - 1]).unwrap()
                ));
                assert!(!starts_with(
                    std::str::from_utf8(&a[..n - 1]).unwrap(),
                    std::str::from_utf8(&a).unwrap()
                ));
            }
        }
    }

    /// The cursor's one-pass number read takes exactly the text the number module borrows as it
    /// is, and leaves the cursor alone otherwise.
    #[test]
    fn short_numbers_are_the_ones_already_canonical() {
        let mut cases: Vec<String> = [
            "", "-", ".", "0", "-0", "0.0", "-0.0", "-0.01", "00", "01", "1.", ".5", "1.5", "1.50",
            "-1.50", "1e5", "1E5", "+1", "--1", "1.2.3", "١", "0x1", " 1", "1 ",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for len in [37, 38, 39] {
            cases.push("9".repeat(len));
            cases.push(format!("-{}", "9".repeat(len)));
            cases.push(format!("1.{}", "0".repeat(len - 2)));
            cases.push(format!("-0.{}", "0".repeat(len - 2)));
        }
        // Every string of up to 5 bytes over `0 1 9 - . e`.
        for len in 1..=5 {
            let mut digits = vec![0usize; len];
            loop {
                cases.push(
                    digits
                        .iter()
                        .map(|&d| ['0', '1', '9', '-', '.', 'e'][d])
                        .collect(),
                );
                let Some(i) = digits.iter().rposition(|&d| d < 5) else {
                    break;
                };
                digits[i] += 1;
                digits[i + 1..].fill(0);
            }
        }
        for case in &cases {
            let line = format!("\"{case}\"}}");
            let mut c = Cursor::new(&line);
            let got = c.short_number();
            let expected = crate::number::is_short_canonical(case);
            assert_eq!(got.is_some(), expected, "{case:?}");
            if let Some((start, end)) = got {
                assert_eq!(&line[start..end], case.as_str());
                assert_eq!(c.pos, end + 1);
                assert!(matches!(
                    canonical_number(case),
                    Ok(std::borrow::Cow::Borrowed(_))
                ));
            } else {
                assert_eq!(c.pos, 0, "{case:?}");
            }
        }
        // Not a compact string: whitespace first, an escape, no closing quote.
        for line in [" \"1\"", "\"1\\u0030\"", "\"12"] {
            assert_eq!(Cursor::new(line).short_number(), None, "{line:?}");
        }
    }

    #[test]
    fn the_name_index_finds_every_name_and_nothing_else() {
        // Names of every length up to 40 that share prefixes and suffixes, and near misses.
        let mut names: Vec<String> = Vec::new();
        for len in 0..=40 {
            names.push("a".repeat(len));
            names.push(format!("{}b", "a".repeat(len)));
            names.push(format!("b{}", "a".repeat(len)));
            if len >= 2 {
                let mut middle: Vec<u8> = "a".repeat(len).into_bytes();
                middle[len / 2] = b'z';
                names.push(String::from_utf8(middle).unwrap());
            }
        }
        names.extend(["PK", "SK", "näme", "with space", "a.b", "#"].map(String::from));
        names.sort();
        names.dedup();
        let (kept, missing): (Vec<_>, Vec<_>) =
            names.iter().enumerate().partition(|(i, _)| i % 3 != 0);
        let index = NameIndex::new(kept.iter().map(|(_, n)| n.as_bytes()));
        for (position, (_, name)) in kept.iter().enumerate() {
            assert_eq!(index.get(name.as_bytes()), Some(position), "{name:?}");
        }
        for (_, name) in &missing {
            assert_eq!(index.get(name.as_bytes()), None, "{name:?}");
        }
        // A repeated name keeps its first position, and the names after it keep theirs.
        let index = NameIndex::new(["x", "y", "x"].map(str::as_bytes));
        assert_eq!(index.get(b"x"), Some(0));
        assert_eq!(index.get(b"y"), Some(1));
        let index = NameIndex::new(["x", "x", "y"].map(str::as_bytes));
        assert_eq!(index.get(b"x"), Some(0));
        assert_eq!(index.get(b"y"), Some(2));
    }

    #[test]
    fn the_string_scan_stops_where_the_bytewise_one_does() {
        let bytes: Vec<u8> = (0u8..=255).collect();
        for start in 0..bytes.len() {
            for len in 0..24.min(bytes.len() - start) {
                let window = &bytes[start..start + len];
                let expected = window
                    .iter()
                    .position(|&b| crate::json::STRING_STOP[b as usize])
                    .unwrap_or(len);
                assert_eq!(plain_run(window, 0), expected, "{window:?}");
            }
        }
        let text = "abcdefghijklmnop\"qrs";
        assert_eq!(plain_run(text.as_bytes(), 0), 16);
        assert_eq!(
            plain_run("ünïcödé text \\ x".as_bytes(), 0),
            "ünïcödé text ".len()
        );
    }

    fn json(line: &str, style: NestedJson) -> Scan<String> {
        let mut c = Cursor::new(line);
        let mut out = String::new();
        JsonWriter::default().typed(&mut c, &mut out, style, 0)?;
        if !c.at_end() {
            return Err(Bail);
        }
        Ok(out)
    }

    #[test]
    fn canonical_json_from_typed_json() {
        let value = r#"{"M":{"z":{"N":"1.5E2"},"a":{"L":[{"S":"x\"\u00e9\ud83d\ude80\n"},{"B":"AAE="},{"NULL":true},{"BOOL":false},{"SS":["b","a"]},{"NS":["007","-0"]},{"BS":["AgM="]},{"M":{}},{"L":[]}]}}}"#;
        assert_eq!(
            json(value, NestedJson::Plain).unwrap(),
            r#"{"a":["x\"é🚀\n","AAE=",null,false,["b","a"],[7,0],["AgM="],{},[]],"z":150}"#
        );
        assert_eq!(
            json(
                r#"{"M":{"n":{"N":"1"},"x":{"NULL":true}}}"#,
                NestedJson::Dynamodb
            )
            .unwrap(),
            r#"{"M":{"n":{"N":"1"},"x":{"NULL":true}}}"#
        );
    }

    #[test]
    fn anything_unusual_bails() {
        for bad in [
            r#"{"S":"a\u0000"}"#,
            r#"{"S":"\ud800"}"#,
            r#"{"S":"\udc00x"}"#,
            r#"{"S":"\q"}"#,
            "{\"S\":\"a\u{1}\"}",
            r#"{"N":"1e999"}"#,
            r#"{"N":1}"#,
            r#"{"B":"AAE"}"#,
            r#"{"NULL":false}"#,
            r#"{"X":"1"}"#,
            r#"{"S":"1","N":"1"}"#,
            r#"{}"#,
            r#"{"M":{"a":{"S":"1"},"a":{"S":"2"}}}"#,
            r#"{"M":{"b":{"S":"1"},"a":{"S":"2"},"b":{"S":"3"}}}"#,
            r#"{"M":{"\u0061":{"S":"1"}}}"#,
            r#"{"L":[{"S":"1"},]}"#,
        ] {
            assert_eq!(json(bad, NestedJson::Plain), Err(Bail), "{bad}");
        }
    }

    #[test]
    fn nesting_is_bounded_like_the_reference() {
        let nest = |levels: usize| {
            format!(
                r#"{}{{"S":"x"}}{}"#,
                r#"{"L":["#.repeat(levels),
                "]}".repeat(levels)
            )
        };
        assert!(json(&nest(MAX_NESTING), NestedJson::Plain).is_ok());
        assert_eq!(json(&nest(MAX_NESTING + 1), NestedJson::Plain), Err(Bail));
        assert_eq!(json(&nest(100_000), NestedJson::Plain), Err(Bail));
    }

    #[test]
    fn decimal96_check_agrees_with_the_parsed_one() {
        for text in [
            "0",
            "0.00",
            "79228162514264337593543950335",
            "79228162514264337593543950336",
            "-7.9228162514264337593543950335",
            "0.0000000000000000000000000001",
            "0.00000000000000000000000000001",
            "-123456.000000000000000000000000000001",
            "12345678901234567890123456789012345678",
            "99999999999999999999999999999",
            "1234.56",
        ] {
            assert_eq!(
                fits_decimal96_plain(text),
                ParsedNumber::parse(text).unwrap().fits_decimal96(),
                "{text}"
            );
        }
    }
}

/// The differential test: the scanner with its fallback against the reference parser alone, over
/// generated lines (every type, escapes, numbers and base64 good and bad, nesting, repeated and
/// escaped names, whitespace) and the same lines fuzzed (bytes deleted, inserted, replaced, cut;
/// invalid UTF-8 included). Rows, rejects (line, class, reason, raw), spills: all equal.
/// `PROPTEST_CASES` sets how many blocks per schema (`scripts/fuzz-scan` runs a longer campaign).
#[cfg(test)]
pub(crate) mod differential {
    use std::sync::Arc;

    use ferry_shared::schema::{ColumnSpec, NestedJson, NumericLimit, OnTypeMismatch, PgType};
    use proptest::prelude::*;
    use proptest::sample::select;

    use crate::decode::tests::{block, test_schema};
    use crate::decode::Decoder;

    /// A typed value, rendered as DynamoDB JSON text.
    #[derive(Clone, Debug)]
    pub(crate) enum V {
        S(String),
        N(String),
        B(String),
        Bool(bool),
        Null(bool),
        M(Vec<(String, V)>),
        L(Vec<V>),
        Set(&'static str, Vec<String>),
        Raw(&'static str),
    }

    pub(crate) fn render(v: &V, out: &mut String) {
        match v {
            V::S(s) => out.push_str(&format!(r#"{{"S":"{s}"}}"#)),
            V::N(n) => out.push_str(&format!(r#"{{"N":"{n}"}}"#)),
            V::B(b) => out.push_str(&format!(r#"{{"B":"{b}"}}"#)),
            V::Bool(b) => out.push_str(&format!(r#"{{"BOOL":{b}}}"#)),
            V::Null(b) => out.push_str(&format!(r#"{{"NULL":{b}}}"#)),
            V::M(entries) => {
                out.push_str(r#"{"M":{"#);
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&format!("\"{k}\":"));
                    render(v, out);
                }
                out.push_str("}}");
            }
            V::L(items) => {
                out.push_str(r#"{"L":["#);
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(" , ");
                    }
                    render(v, out);
                }
                out.push_str("]}");
            }
            V::Set(t, items) => {
                let quoted: Vec<String> = items.iter().map(|s| format!("\"{s}\"")).collect();
                out.push_str(&format!(r#"{{"{t}":[{}]}}"#, quoted.join(",")));
            }
            V::Raw(r) => out.push_str(r),
        }
    }

    /// Mostly good pieces, now and then a bad one (so most lines are good, some are not).
    fn weighted(good: Vec<&'static str>, bad: Vec<&'static str>) -> impl Strategy<Value = String> {
        prop_oneof![60 => select(good), 1 => select(bad)].prop_map(String::from)
    }

    pub(crate) fn text() -> impl Strategy<Value = String> {
        let pieces = weighted(
            vec![
                "a",
                "Z",
                "0",
                " ",
                "é",
                "日本",
                "🚀",
                "/",
                "'",
                "\\n",
                "\\\"",
                "\\\\",
                "\\/",
                "\\t",
                "\\b",
                "\\f",
                "\\r",
                "\\u00e9",
                "\\u001f",
                "\\ud83d\\ude80",
                "USER#",
                "ORDER#",
                "abcdefgh",
            ],
            vec!["\\u0000", "\\ud800", "\\udc00", "\\x", "\u{1}", "\\u12"],
        );
        prop::collection::vec(pieces, 0..4).prop_map(|p| p.concat())
    }

    pub(crate) fn number() -> impl Strategy<Value = String> {
        weighted(
            vec![
                "0",
                "1",
                "-1",
                "12.50",
                "1.5E2",
                "007",
                "-0",
                "+5",
                ".5",
                "5.",
                "1E-130",
                "12345678901234567890123456789012345678",
                "79228162514264337593543950335",
                "79228162514264337593543950336",
                "1E+125",
                "9223372036854775807",
                "40000",
                "1.25",
                "-0.00000000000000000000000000000001",
                "9223372036854775808",
                "1.5",
            ],
            vec![
                "1e999",
                "abc",
                "",
                "1\\u0030",
                "123456789012345678901234567890123456789",
                "1E+126",
                "--1",
            ],
        )
    }

    fn base64() -> impl Strategy<Value = String> {
        weighted(
            vec!["", "AAE=", "AgM=", "AAEC", "AA==", "/+8="],
            vec!["AAE", "AB==", "%%%", "A\\/A="],
        )
    }

    fn name() -> impl Strategy<Value = String> {
        prop_oneof![
            80 => select(vec![
                "n", "b", "ok", "m", "ss", "ns", "bs", "i", "f", "extra", "a", "zz", "é",
                "with space", "attrs", "z1", "z2", "z3", "z4", "z5", "y", "x", "w", "v",
            ])
            .prop_map(String::from),
            1 => select(vec!["pk", "sk", "pk", "sk", "\\u0061"]).prop_map(String::from),
        ]
    }

    /// Names for wide maps: enough of them that most such maps keep more than `SMALL_MAP`.
    fn wide_name() -> impl Strategy<Value = String> {
        (0u8..48).prop_map(|i| format!("k{i:02}"))
    }

    /// Whether a map keeps repeated names (rarely: a repeated name makes a reject).
    fn dups() -> impl Strategy<Value = bool> {
        prop::bool::weighted(0.05)
    }

    /// Names repeated in `entries` dropped, unless `keep`.
    fn unique(mut entries: Vec<(String, V)>, keep: bool) -> Vec<(String, V)> {
        if !keep {
            let mut seen = std::collections::HashSet::new();
            entries.retain(|(name, _)| seen.insert(name.clone()));
        }
        entries
    }

    pub(crate) fn value() -> impl Strategy<Value = V> {
        let leaf = prop_oneof![
            12 => text().prop_map(V::S),
            9 => number().prop_map(V::N),
            3 => base64().prop_map(V::B),
            3 => any::<bool>().prop_map(V::Bool),
            3 => prop::bool::weighted(0.97).prop_map(V::Null),
            3 => prop::collection::vec(text(), 0..3).prop_map(|v| V::Set("SS", v)),
            3 => prop::collection::vec(number(), 0..3).prop_map(|v| V::Set("NS", v)),
            3 => prop::collection::vec(base64(), 0..3).prop_map(|v| V::Set("BS", v)),
            1 => select(vec![
                r#"{"N":1}"#, "{}", r#"{"X":"1"}"#, r#"{"S":"1","N":"2"}"#, r#"{"S":null}"#,
                r#"{"BOOL":"true"}"#, r#"{"SS":"a"}"#, r#"{ "S" : "spaced" }"#,
            ])
            .prop_map(V::Raw),
        ];
        leaf.prop_recursive(4, 48, 5, |inner| {
            prop_oneof![
                8 => (prop::collection::vec((name(), inner.clone()), 0..5), dups())
                    .prop_map(|(entries, dups)| V::M(unique(entries, dups))),
                // Wide maps: past `SMALL_MAP` keys, ordered by the general sort.
                1 => (prop::collection::vec((wide_name(), inner.clone()), 17..40), dups())
                    .prop_map(|(entries, dups)| V::M(unique(entries, dups))),
                8 => prop::collection::vec(inner, 0..5).prop_map(V::L),
            ]
        })
    }

    /// A line: usually a full item with its keys, sometimes another shape.
    pub(crate) fn line() -> impl Strategy<Value = String> {
        let item = (
            prop::option::weighted(0.9, text()),
            prop::option::weighted(0.9, number()),
            (prop::collection::vec((name(), value()), 0..8), dups())
                .prop_map(|(attributes, dups)| unique(attributes, dups)),
            any::<bool>(),
        )
            .prop_map(|(pk, sk, attributes, spaced)| {
                let mut members = Vec::new();
                if let Some(pk) = pk {
                    members.push(format!(r#""pk":{{"S":"{pk}"}}"#));
                }
                if let Some(sk) = sk {
                    members.push(format!(r#""sk":{{"N":"{sk}"}}"#));
                }
                for (name, value) in attributes {
                    let mut out = format!("\"{name}\":");
                    render(&value, &mut out);
                    members.push(out);
                }
                if spaced {
                    format!(" {{ \"Item\" : {{ {} }} }}\r", members.join(" ,\t"))
                } else {
                    format!(r#"{{"Item":{{{}}}}}"#, members.join(","))
                }
            });
        prop_oneof![
            20 => item,
            1 => select(vec![
                r#"{"Keys":{"pk":{"S":"a"}}}"#,
                r#"$ion_1_0 {Item:{pk:"a",sk:1.}}"#,
                r#"{"Item":{"pk":{"S":"a"},"sk":{"N":"1"}},"Item":{}}"#,
                r#"{"Item":{"pk":{"S":"a"},"sk":{"N":"1"}}} x"#,
                r#"{"\u0049tem":{"pk":{"S":"a"},"sk":{"N":"1"}}}"#,
                "[]",
            ])
            .prop_map(String::from),
        ]
    }

    /// A line, possibly damaged: (where, what) edits of its bytes.
    fn fuzzed_line() -> impl Strategy<Value = Vec<u8>> {
        damaged(line())
    }

    /// Lines of `lines`, possibly damaged: (where, what) edits of their bytes.
    pub(crate) fn damaged(lines: impl Strategy<Value = String>) -> impl Strategy<Value = Vec<u8>> {
        let edit = (
            0.0f64..1.0,
            0u8..4,
            select(vec![
                b'{', b'}', b'"', b':', b',', b'[', b'\\', b'0', 0xc3, 0xff, 0x80, 0,
            ]),
        );
        (lines, prop::collection::vec(edit, 0..3)).prop_map(|(line, edits)| {
            let mut bytes = line.into_bytes();
            for (at, op, byte) in edits {
                let at = ((bytes.len() as f64) * at) as usize;
                match op {
                    0 if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    1 => bytes.insert(at.min(bytes.len()), byte),
                    2 if at < bytes.len() => bytes[at] = byte,
                    _ => bytes.truncate(at),
                }
            }
            bytes
        })
    }

    fn schemas() -> Vec<Arc<ferry_shared::schema::TableSchema>> {
        let base = test_schema(OnTypeMismatch::Overflow);
        let mut decimal96 = (*base).clone();
        decimal96.numeric_limit = NumericLimit::Decimal96;
        let mut typed = (*base).clone();
        typed.nested_json = NestedJson::Dynamodb;
        let mut casts = (*base).clone();
        casts.columns.push(ColumnSpec {
            name: "i".into(),
            ddb_type: ferry_shared::schema::DdbType::N,
            pg_type: PgType::Int2,
            is_key: false,
        });
        casts.columns.push(ColumnSpec {
            name: "f".into(),
            ddb_type: ferry_shared::schema::DdbType::N,
            pg_type: PgType::Float8,
            is_key: false,
        });
        casts.columns[5].pg_type = PgType::Text; // a map into a TEXT column

        // A number into a TEXT column (its canonical text).
        for column in &mut casts.columns {
            if column.name == "n" {
                column.pg_type = PgType::Text;
            }
        }
        vec![
            base,
            test_schema(OnTypeMismatch::Reject),
            Arc::new(decimal96),
            Arc::new(typed),
            Arc::new(casts),
        ]
    }

    pub(crate) fn check(lines: &[Vec<u8>]) -> Result<usize, TestCaseError> {
        let mut raw = crate::decode::RawBlock::default();
        for (i, line) in lines.iter().enumerate() {
            let start = raw.data.len();
            raw.data.extend_from_slice(line);
            raw.lines.push(crate::decode::LineRef {
                line_no: 3 * i as u64 + 1,
                start,
                end: raw.data.len(),
            });
        }
        let mut fast_lines = 0;
        for schema in schemas() {
            let decoder = Decoder::new(schema);
            let (fast, bailed) = decoder.decode_counting(&raw);
            let reference = decoder.decode_reference(&raw);
            prop_assert_eq!(&fast.rejects, &reference.rejects);
            prop_assert_eq!(&fast.line_numbers, &reference.line_numbers);
            prop_assert_eq!(fast.spilled, reference.spilled);
            prop_assert_eq!(&fast.batch, &reference.batch);
            fast_lines += lines.len() - bailed;
        }
        Ok(fast_lines)
    }

    pub(crate) fn config() -> ProptestConfig {
        ProptestConfig {
            cases: std::env::var("PROPTEST_CASES")
                .ok()
                .and_then(|c| c.parse().ok())
                .unwrap_or(200),
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn generated_lines_decode_as_the_reference_does(
            lines in prop::collection::vec(line().prop_map(String::into_bytes), 1..12)
        ) {
            check(&lines)?;
        }

        #[test]
        fn fuzzed_lines_decode_as_the_reference_does(
            lines in prop::collection::vec(fuzzed_line(), 1..12)
        ) {
            check(&lines)?;
        }
    }

    #[test]
    fn the_scanner_takes_plain_lines_itself() {
        let lines: Vec<Vec<u8>> = [
            r#"{"Item":{"pk":{"S":"USER#1"},"sk":{"N":"1.5E2"},"n":{"N":"-0.5"},"b":{"B":"AAEC"},"ok":{"BOOL":true},"m":{"M":{"z":{"N":"1"},"a":{"SS":["x"]}}},"ss":{"SS":["a","b"]},"ns":{"NS":["1","2.50"]},"bs":{"BS":["AAE=",""]},"extra":{"S":"e\u00e9"},"n2":{"L":[{"NULL":true}]}}}"#,
            r#" { "Item" : { "pk" : { "S" : "a\"b" } , "sk" : { "N" : "2" } , "n" : { "S" : "spilled" } } } "#,
            r#"{"Item":{"pk":{"S":""},"sk":{"N":"0"},"n":{"NULL":true}}}"#,
        ]
        .iter()
        .map(|l| l.as_bytes().to_vec())
        .collect();
        let decoder = Decoder::new(test_schema(OnTypeMismatch::Overflow));
        let raw = block(
            &lines
                .iter()
                .map(|l| std::str::from_utf8(l).unwrap())
                .collect::<Vec<_>>(),
        );
        let (fast, bailed) = decoder.decode_counting(&raw);
        assert_eq!(bailed, 0);
        assert_eq!(fast.batch, decoder.decode_reference(&raw).batch);
        assert_eq!(fast.spilled, 1);
        assert!(check(&lines).unwrap() > 0);
    }
}
