//! The fast path of Amazon Ion export lines: a one-pass transcoder from the Ion text DynamoDB's
//! exporter writes (`$ion_1_0 {Item:{…}}`) to the DynamoDB JSON line of the same item
//! (`{"Item":{…}}`), which the JSON scanner ([`crate::scan`]) then writes into the Arrow builders.
//! No tree of values is built and nothing is allocated per item once the output buffer has grown.
//!
//! It owns the Ion text subset an export holds and nothing else. Whenever a line is anything but
//! plainly that subset it *bails*, writing nothing the caller uses, and the caller decodes the
//! line with the reference parser ([`crate::ion`], `ion-rs`), which gives the row or the reject
//! exactly as before: an escape in a string or name, a long string, a clob, a comment, a symbol
//! value, an annotation other than `$dynamodb_SS`/`NS`/`BS`, a typed null (`null.null`, `null.string`), an
//! int in hex, binary or with underscores, a float, a timestamp, a negative zero, a blob with
//! whitespace inside, a trailing comma, a field other than `Item`, nesting past
//! [`MAX_NESTING`](crate::item::MAX_NESTING) and anything after the struct.
//!
//! What it writes is what the reference's values are once canonicalised: a string's text as it
//! is; a blob's base64 (checked to be the canonical encoding of its bytes, which is what the
//! reference writes back); a decimal or int as [`canonical_number`] gives the reference's number
//! text (`<coefficient>E<exponent>` for a decimal, the digits for an int), so `103.`, `6d2`,
//! `4999d-2` and `1.50` load exactly as their DynamoDB JSON spellings do. A number
//! `canonical_number` refuses bails, so its reject comes from the reference. The differential
//! tests hold the two paths to the same rows and rejects on generated and damaged lines.

use std::borrow::Cow;
use std::fmt::Write;

use base64::Engine;

use crate::item::MAX_NESTING;
use crate::number::canonical_number;

/// The transcoder gives a line up to the reference parser.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bail;

type Scan<T> = Result<T, Bail>;

/// How many digits and exponent a decimal may have to be written in place. Within it both the
/// plain text and the reference's `<coefficient>E<exponent>` are under
/// [`MAX_NUMBER_TEXT`](crate::number::MAX_NUMBER_TEXT), so [`canonical_number`] judges both by
/// value alone and alike; past it the reference's own text is canonicalised (a 250-digit
/// `0.7000…` is too long as the reference writes it, though not as plain text: found by the
/// fuzzer).
const SHORT_DIGITS: i64 = 200;

/// The element type of a `$dynamodb_*` set.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SetOf {
    S,
    N,
    B,
}

/// Appends the DynamoDB JSON line of one Ion export line to `out`. `Err` means the line is for
/// the reference parser; `out` is then as it was.
pub fn ion_to_json(line: &str, out: &mut String) -> Scan<()> {
    let len = out.len();
    let result = transcode(line, out);
    if result.is_err() {
        out.truncate(len);
    }
    result
}

fn transcode(line: &str, out: &mut String) -> Scan<()> {
    // A DEL anywhere is the reference's (JSON takes it raw; whether Ion does is `ion-rs`'s call),
    // checked once here so that strings are read with the JSON scanner's word-at-a-time run.
    if memchr::memchr(0x7f, line.as_bytes()).is_some() {
        return Err(Bail);
    }
    let mut t = Transcoder {
        bytes: line.as_bytes(),
        text: line,
        pos: 0,
    };
    t.ws();
    if t.rest().starts_with(b"$ion_1_0") {
        t.pos += b"$ion_1_0".len();
        if !t.at_delimiter() {
            return Err(Bail);
        }
        t.ws();
    }
    t.eat(b'{')?;
    t.ws();
    let name = t.field_name()?;
    if name != "Item" {
        return Err(Bail);
    }
    t.ws();
    t.eat(b':')?;
    t.ws();
    if t.peek() != Some(b'{') || t.rest().starts_with(b"{{") {
        return Err(Bail);
    }
    out.push_str("{\"Item\":");
    t.struct_body(out, 0)?;
    t.ws();
    t.eat(b'}')?;
    t.ws();
    if t.pos != t.bytes.len() {
        return Err(Bail);
    }
    out.push('}');
    Ok(())
}

struct Transcoder<'a> {
    bytes: &'a [u8],
    text: &'a str,
    pos: usize,
}

/// The bytes that end a run of a quoted symbol's plain text: its quote, a double quote, a
/// backslash and the control characters.
static SYMBOL_STOP: [bool; 256] = crate::json::string_stops(b'\'');

/// The value of hex digits (`\\xHH`, `\\uHHHH`): every byte a hex digit, no sign (which
/// `from_str_radix` would take: `\\x+1`, found by the fuzzer).
fn hex(digits: Option<&[u8]>) -> Scan<u32> {
    let digits = digits.ok_or(Bail)?;
    digits.iter().try_fold(0u32, |value, &b| {
        let digit = (b as char).to_digit(16).ok_or(Bail)?;
        Ok(value * 16 + digit)
    })
}

/// Whether `b` may follow a value or a keyword (Ion's value delimiters, and the end).
fn is_delimiter(b: Option<u8>) -> bool {
    matches!(
        b,
        None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
    )
}

fn is_identifier_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b == b'$'
}

fn is_identifier_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$'
}

impl<'a> Transcoder<'a> {
    fn rest(&self) -> &'a [u8] {
        &self.bytes[self.pos.min(self.bytes.len())..]
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn at_delimiter(&self) -> bool {
        is_delimiter(self.peek())
    }

    /// Skips Ion whitespace. A comment is not skipped, so what follows it bails.
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c) = self.peek() {
            self.pos += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Scan<()> {
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(Bail)
        }
    }

    /// The text between `quote`s, with no escape and nothing JSON would have to escape; the
    /// cursor is on the opening quote.
    fn quoted(&mut self, quote: u8) -> Scan<&'a str> {
        let start = self.pos + 1;
        let mut i = start;
        if quote == b'"' {
            // The JSON scanner's word-at-a-time run stops at exactly these bytes.
            i = crate::json::plain_run(self.bytes, i);
        } else {
            // Names are short: a byte at a time, one table lookup each.
            while let Some(&b) = self.bytes.get(i) {
                if SYMBOL_STOP[b as usize] {
                    break;
                }
                i += 1;
            }
        }
        match self.bytes.get(i) {
            Some(&b) if b == quote => {}
            // An escape (Ion's differ from JSON's), a quote JSON would escape, a control
            // character, the end: the reference decides.
            _ => return Err(Bail),
        }
        self.pos = i + 1;
        // Both ends are ASCII quotes, so both are char boundaries.
        Ok(&self.text[start..i])
    }

    /// A string at the cursor (`"…"`) written as a JSON string. Ion's escapes that JSON spells
    /// the same (`\n \t \r \b \f \" \\ \/` and `\uHHHH` outside the surrogates) are copied;
    /// `\'` and `\?` become the character, `\xHH`, `\a`, `\v` and `\0` a JSON `\u00HH`; any other
    /// escape (`\U`, a surrogate, an escaped line end) is the reference's.
    fn string_into(&mut self, out: &mut String) -> Scan<()> {
        if self.rest().starts_with(b"\"\"\"") {
            return Err(Bail);
        }
        let bytes = self.bytes;
        let mut i = self.pos + 1;
        let mut run = i;
        out.push('"');
        loop {
            // Plain bytes at a word a step (it stops at a quote, a backslash or a control
            // character).
            i = crate::json::plain_run(bytes, i);
            match bytes.get(i) {
                Some(b'"') => break,
                Some(b'\\') => match bytes.get(i + 1) {
                    Some(b'n' | b't' | b'r' | b'b' | b'f' | b'"' | b'\\' | b'/') => i += 2,
                    Some(&c @ (b'\'' | b'?' | b'a' | b'v' | b'0' | b'x')) => {
                        out.push_str(&self.text[run..i]);
                        let code = match c {
                            b'x' => {
                                let code = hex(bytes.get(i + 2..i + 4))? as u8;
                                i += 2;
                                code
                            }
                            b'a' => 0x07,
                            b'v' => 0x0b,
                            b'0' => 0,
                            other => other,
                        };
                        if code == b'\'' || code == b'?' {
                            out.push(code as char);
                        } else {
                            // Writing into a String cannot fail.
                            let _ = write!(out, "\\u{code:04x}");
                        }
                        i += 2;
                        run = i;
                    }
                    Some(b'u') => {
                        let unit = hex(bytes.get(i + 2..i + 6))?;
                        if (0xd800..0xe000).contains(&unit) {
                            return Err(Bail);
                        }
                        i += 6;
                    }
                    _ => return Err(Bail),
                },
                None | Some(0..=0x1f | 0x7f) => return Err(Bail),
                Some(_) => i += 1,
            }
        }
        out.push_str(&self.text[run..i]);
        out.push('"');
        self.pos = i + 1;
        Ok(())
    }

    /// A field name: an identifier, a quoted symbol or a string, with no escape.
    fn field_name(&mut self) -> Scan<&'a str> {
        match self.peek() {
            Some(b'"') => {
                if self.rest().starts_with(b"\"\"\"") {
                    return Err(Bail);
                }
                self.quoted(b'"')
            }
            Some(b'\'') => {
                if self.rest().starts_with(b"''") {
                    // An empty quoted symbol or a long string: rare, the reference's.
                    return Err(Bail);
                }
                self.quoted(b'\'')
            }
            // `$…` may be a symbol id (`$10`); keywords as names are the reference's too.
            Some(b) if is_identifier_start(b) && b != b'$' => {
                let start = self.pos;
                while self.peek().is_some_and(is_identifier_byte) {
                    self.pos += 1;
                }
                let name = &self.text[start..self.pos];
                if matches!(name, "null" | "true" | "false" | "nan") {
                    return Err(Bail);
                }
                Ok(name)
            }
            _ => Err(Bail),
        }
    }

    /// `{ name: value, … }` as a DynamoDB JSON attribute map (`{"name":{"T":…},…}`); the cursor
    /// is on the brace.
    fn struct_body(&mut self, out: &mut String, depth: usize) -> Scan<()> {
        self.eat(b'{')?;
        out.push('{');
        self.ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            out.push('}');
            return Ok(());
        }
        loop {
            self.ws();
            let name = self.field_name()?;
            out.push('"');
            out.push_str(name);
            out.push_str("\":");
            self.ws();
            self.eat(b':')?;
            self.ws();
            self.value(out, depth)?;
            self.ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    out.push(',');
                    self.ws();
                    if self.peek() == Some(b'}') {
                        return Err(Bail);
                    }
                }
                Some(b'}') => {
                    self.pos += 1;
                    out.push('}');
                    return Ok(());
                }
                _ => return Err(Bail),
            }
        }
    }

    /// One attribute value as `{"T":…}`.
    fn value(&mut self, out: &mut String, depth: usize) -> Scan<()> {
        if depth > MAX_NESTING {
            return Err(Bail);
        }
        match self.peek().ok_or(Bail)? {
            b'"' => {
                out.push_str("{\"S\":");
                self.string_into(out)?;
                out.push('}');
            }
            b'{' if self.rest().starts_with(b"{{") => {
                out.push_str("{\"B\":");
                self.blob(out)?;
                out.push('}');
            }
            b'{' => {
                out.push_str("{\"M\":");
                self.struct_body(out, depth + 1)?;
                out.push('}');
            }
            b'[' => {
                out.push_str("{\"L\":[");
                self.pos += 1;
                let mut first = true;
                self.items(|t| {
                    if !first {
                        out.push(',');
                    }
                    first = false;
                    t.value(out, depth + 1)
                })?;
                out.push_str("]}");
            }
            b'$' => self.set(out)?,
            b'-' | b'0'..=b'9' => {
                out.push_str("{\"N\":\"");
                self.number(out)?;
                out.push_str("\"}");
            }
            b't' | b'f' | b'n' => {
                let start = self.pos;
                while self.peek().is_some_and(is_identifier_byte) {
                    self.pos += 1;
                }
                // `null.string` and the like stop at the dot, which is no delimiter: a bail.
                if !self.at_delimiter() {
                    return Err(Bail);
                }
                out.push_str(match &self.text[start..self.pos] {
                    "true" => "{\"BOOL\":true}",
                    "false" => "{\"BOOL\":false}",
                    "null" => "{\"NULL\":true}",
                    _ => return Err(Bail),
                });
            }
            _ => return Err(Bail),
        }
        Ok(())
    }

    /// The elements of a list, after its `[`, through its `]`, each read by `element`.
    fn items(&mut self, mut element: impl FnMut(&mut Self) -> Scan<()>) -> Scan<()> {
        self.ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.ws();
            element(self)?;
            self.ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.ws();
                    if self.peek() == Some(b']') {
                        return Err(Bail);
                    }
                }
                Some(b']') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(Bail),
            }
        }
    }

    /// `$dynamodb_SS::[…]`, `$dynamodb_NS::[…]` or `$dynamodb_BS::[…]` as `{"SS":[…]}` etc.
    fn set(&mut self, out: &mut String) -> Scan<()> {
        let rest = self.rest();
        let desc = if rest.starts_with(b"$dynamodb_SS") {
            SetOf::S
        } else if rest.starts_with(b"$dynamodb_NS") {
            SetOf::N
        } else if rest.starts_with(b"$dynamodb_BS") {
            SetOf::B
        } else {
            return Err(Bail);
        };
        self.pos += b"$dynamodb_SS".len();
        self.ws();
        self.eat(b':')?;
        self.eat(b':')?;
        self.ws();
        self.eat(b'[')?;
        out.push_str(match desc {
            SetOf::S => "{\"SS\":[",
            SetOf::N => "{\"NS\":[",
            SetOf::B => "{\"BS\":[",
        });
        let mut first = true;
        self.items(|t| {
            if !first {
                out.push(',');
            }
            first = false;
            match (desc, t.peek()) {
                (SetOf::S, Some(b'"')) => t.string_into(out),
                (SetOf::N, Some(b'-' | b'0'..=b'9')) => {
                    out.push('"');
                    t.number(out)?;
                    out.push('"');
                    Ok(())
                }
                (SetOf::B, Some(b'{')) if t.rest().starts_with(b"{{") => t.blob(out),
                // Another element type is the reference's reject.
                _ => Err(Bail),
            }
        })?;
        out.push_str("]}");
        Ok(())
    }

    /// `{{ base64 }}` as a JSON string, when the text is the canonical encoding of its bytes.
    fn blob(&mut self, out: &mut String) -> Scan<()> {
        self.pos += 2;
        // Spaces only around the base64: `ion-rs` refuses some of Ion's other whitespace there
        // (a vertical tab, found by the fuzzer), so the rest is its to judge.
        let spaces = |t: &mut Self| {
            while t.peek() == Some(b' ') {
                t.pos += 1;
            }
        };
        spaces(self);
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=')
        {
            self.pos += 1;
        }
        let text = &self.text[start..self.pos];
        spaces(self);
        if !self.rest().starts_with(b"}}") {
            // A clob, whitespace inside the base64, or not a blob at all.
            return Err(Bail);
        }
        self.pos += 2;
        // The reference writes back the standard encoding of the decoded bytes: only text that
        // already is that encoding is copied (padding and trailing bits checked by the decoder).
        if text.len() % 4 != 0
            || base64::engine::general_purpose::STANDARD
                .decode(text)
                .is_err()
        {
            return Err(Bail);
        }
        out.push('"');
        out.push_str(text);
        out.push('"');
        Ok(())
    }

    /// An Ion decimal or int at the cursor, appended to `out` as its canonical DynamoDB number
    /// text: the canonical form of the reference's text (`<coefficient>E<exponent>` or the
    /// int's digits).
    fn number(&mut self, out: &mut String) -> Scan<()> {
        let bytes = self.bytes;
        let start = self.pos;
        let mut i = start;
        let negative = bytes.get(i) == Some(&b'-');
        i += usize::from(negative);
        let int_start = i;
        while bytes.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let int_digits = &self.text[int_start..i];
        // Ion forbids leading zeros; `0x…`, `0b…` stop at the letter and bail below.
        if int_digits.is_empty() || (int_digits.len() > 1 && int_digits.starts_with('0')) {
            return Err(Bail);
        }
        let mut fraction = "";
        let mut decimal = false;
        if bytes.get(i) == Some(&b'.') {
            decimal = true;
            i += 1;
            let fraction_start = i;
            while bytes.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            fraction = &self.text[fraction_start..i];
        }
        let mut exponent: i64 = 0;
        if matches!(bytes.get(i), Some(b'd' | b'D')) {
            decimal = true;
            i += 1;
            let exponent_negative = match bytes.get(i) {
                Some(b'-') => {
                    i += 1;
                    true
                }
                Some(b'+') => {
                    i += 1;
                    false
                }
                _ => false,
            };
            let digits_start = i;
            while bytes.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            let digits = &self.text[digits_start..i];
            if digits.is_empty() || digits.len() > 9 {
                return Err(Bail);
            }
            let value: i64 = digits.parse().map_err(|_| Bail)?;
            exponent = if exponent_negative { -value } else { value };
        }
        // A float (`e`), an underscore, a timestamp's `-` or `T`, a symbol: not this subset.
        if !is_delimiter(bytes.get(i).copied()) {
            return Err(Bail);
        }
        let zero = int_digits
            .bytes()
            .chain(fraction.bytes())
            .all(|b| b == b'0');
        if negative && zero {
            // Negative zero: the reference's spelling of it is its own.
            return Err(Bail);
        }
        self.pos = i;
        let at = out.len();
        if negative {
            out.push('-');
        }
        // The coefficient's digits without leading zeros (at least one digit).
        let digits = int_digits.len() + fraction.len();
        let leading = int_digits
            .bytes()
            .chain(fraction.bytes())
            .take_while(|b| *b == b'0')
            .count()
            .min(digits - 1);
        let coefficient_len = digits - leading;
        let exponent = exponent - fraction.len() as i64;
        let d_exponent = exponent + fraction.len() as i64;
        if !decimal {
            // An int: the reference's text is its digits.
            out.push_str(int_digits);
        } else if d_exponent == 0 && (digits as i64) <= SHORT_DIGITS {
            // `349.`, `1.50`, `0.05`: without an exponent the text (whose int part has no
            // leading zero, checked above) is already the canonical text of the reference's
            // number, less a trailing point.
            out.push_str(int_digits);
            if !fraction.is_empty() {
                out.push('.');
                out.push_str(fraction);
            }
        } else if fraction.is_empty()
            && leading == 0
            && coefficient_len as i64 + exponent.max(-exponent) <= SHORT_DIGITS
        {
            // `4999d-2`, `6d2`: the digits with the point moved, or zeros after them.
            if exponent >= 0 {
                out.push_str(int_digits);
                if int_digits != "0" {
                    for _ in 0..exponent {
                        out.push('0');
                    }
                }
            } else {
                let point = -exponent as usize;
                if int_digits.len() > point {
                    let (whole, part) = int_digits.split_at(int_digits.len() - point);
                    out.push_str(whole);
                    out.push('.');
                    out.push_str(part);
                } else {
                    out.push_str("0.");
                    for _ in 0..point - int_digits.len() {
                        out.push('0');
                    }
                    out.push_str(int_digits);
                }
            }
        } else if coefficient_len as i64 + exponent.max(-exponent) <= SHORT_DIGITS {
            // A short number written in place, digits and point, as `canonical_number` gives the
            // reference's `<coefficient>E<exponent>` (the scale kept: `1.50`, `0.000`).
            let push_coefficient = |number: &mut String, from: usize, to: usize| {
                for at in leading + from..leading + to {
                    number.push(if at < int_digits.len() {
                        int_digits.as_bytes()[at] as char
                    } else {
                        fraction.as_bytes()[at - int_digits.len()] as char
                    });
                }
            };
            if exponent >= 0 {
                push_coefficient(out, 0, coefficient_len);
                if !(coefficient_len == 1 && out.ends_with('0')) {
                    for _ in 0..exponent {
                        out.push('0');
                    }
                }
            } else {
                let point = -exponent as usize;
                if coefficient_len > point {
                    push_coefficient(out, 0, coefficient_len - point);
                    out.push('.');
                    push_coefficient(out, coefficient_len - point, coefficient_len);
                } else {
                    out.push_str("0.");
                    for _ in 0..point - coefficient_len {
                        out.push('0');
                    }
                    push_coefficient(out, 0, coefficient_len);
                }
            }
        } else {
            // Long or far from the point: the reference's own text, canonicalised below.
            if leading < int_digits.len() {
                out.push_str(&int_digits[leading..]);
                out.push_str(fraction);
            } else {
                out.push_str(&fraction[leading - int_digits.len()..]);
            }
            out.push('E');
            // Writing into a String cannot fail.
            let _ = write!(out, "{exponent}");
        }
        let canonical = match canonical_number(&out[at..]) {
            Ok(Cow::Borrowed(_)) => None,
            Ok(Cow::Owned(canonical)) => Some(canonical),
            Err(_) => return Err(Bail),
        };
        if let Some(canonical) = canonical {
            out.truncate(at);
            out.push_str(&canonical);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(line: &str) -> Option<String> {
        let mut out = String::new();
        ion_to_json(line, &mut out).ok().map(|()| out)
    }

    #[test]
    fn export_lines_become_their_dynamodb_json() {
        assert_eq!(
            json(r#"$ion_1_0 {Item:{pk:"ORDER#1001",qty:3.,total:4999d-2,six:6d2,scale:1.50,n:-0.25,i:7,gift:false,note:null,tags:$dynamodb_SS::["red","sale"],nums:$dynamodb_NS::[1.,25d-1],blobs:$dynamodb_BS::[{{AAE=}}],raw:{{ AAEC }},'odd name':"x","str name":"é",m:{a:[1.,"x",{k:"v"}],e:{}},l:[]}}"#)
                .as_deref(),
            Some(r#"{"Item":{"pk":{"S":"ORDER#1001"},"qty":{"N":"3"},"total":{"N":"49.99"},"six":{"N":"600"},"scale":{"N":"1.50"},"n":{"N":"-0.25"},"i":{"N":"7"},"gift":{"BOOL":false},"note":{"NULL":true},"tags":{"SS":["red","sale"]},"nums":{"NS":["1","2.5"]},"blobs":{"BS":["AAE="]},"raw":{"B":"AAEC"},"odd name":{"S":"x"},"str name":{"S":"é"},"m":{"M":{"a":{"L":[{"N":"1"},{"S":"x"},{"M":{"k":{"S":"v"}}}]},"e":{"M":{}}}},"l":{"L":[]}}}"#)
        );
        assert_eq!(
            json(r#"{Item:{a:"l1\nl2\t\"q\" \\ \/ \'s\' \u00e9",b:$dynamodb_SS::["\r"]}}"#)
                .as_deref(),
            Some(r#"{"Item":{"a":{"S":"l1\nl2\t\"q\" \\ \/ 's' \u00e9"},"b":{"SS":["\r"]}}}"#)
        );
        assert_eq!(
            json(r#"{Item:{a:"\x41\xe9\a\v\0\?"}}"#).as_deref(),
            Some(r#"{"Item":{"a":{"S":"\u0041\u00e9\u0007\u000b\u0000?"}}}"#)
        );
        assert_eq!(
            json(" { Item : { a : 1d+2 , b : 0.000 } } ").as_deref(),
            Some(r#"{"Item":{"a":{"N":"100"},"b":{"N":"0.000"}}}"#)
        );
    }

    proptest::proptest! {
        #![proptest_config(crate::scan::differential::config())]

        /// A decimal written in place is the text `canonical_number` gives the reference's
        /// `<coefficient>E<exponent>`, and one it refuses is a bail.
        #[test]
        fn decimals_are_the_canonical_text_of_the_references_number(
            negative in proptest::bool::ANY,
            int in "(0|[1-9][0-9]{0,40})",
            fraction in proptest::option::of("(0{0,130}|[0-9]{0,40}|[0-9]{100,140}|[1-9]0{240,260})"),
            exponent in proptest::option::of(-160i64..160),
        ) {
            let mut ion = format!("{}{int}", if negative { "-" } else { "" });
            if let Some(fraction) = &fraction {
                ion.push('.');
                ion.push_str(fraction);
            }
            if let Some(exponent) = exponent {
                ion.push_str(&format!("d{exponent}"));
            }
            let fraction = fraction.unwrap_or_default();
            let decimal = !fraction.is_empty() || ion.contains(['.', 'd']);
            let digits = format!("{int}{fraction}");
            let coefficient = digits.trim_start_matches('0');
            let coefficient = if coefficient.is_empty() { "0" } else { coefficient };
            let zero = coefficient == "0";
            let reference = if decimal {
                format!(
                    "{}{coefficient}E{}",
                    if negative { "-" } else { "" },
                    exponent.unwrap_or(0) - fraction.len() as i64
                )
            } else {
                ion.clone()
            };
            let got = json(&format!("{{Item:{{n:{ion}}}}}"));
            match crate::number::canonical_number(&reference) {
                _ if negative && zero => proptest::prop_assert_eq!(got, None),
                Ok(canonical) => proptest::prop_assert_eq!(
                    got,
                    Some(format!(r#"{{"Item":{{"n":{{"N":"{canonical}"}}}}}}"#)),
                    "{} from {}", ion, reference
                ),
                Err(_) => proptest::prop_assert_eq!(got, None, "{}", ion),
            }
        }
    }

    #[test]
    fn anything_outside_the_export_subset_is_left_to_the_reference() {
        for line in [
            r#"$ion_1_0 {Item:{a:"x\ud800"}}"#,
            r#"$ion_1_0 {Item:{a:"x\U0001F680"}}"#,
            r#"$ion_1_0 {Item:{a:"x\x+1"}}"#,
            r#"$ion_1_0 {Item:{a:"x\u+123"}}"#,
            "$ion_1_0 {Item:{a:{{\u{b}AAEC }}}}",
            r#"$ion_1_0 {Item:{a:"x\
y"}}"#,
            r#"$ion_1_0 {Item:{'a\'b':"x"}}"#,
            r#"$ion_1_0 {Item:{a:'''long'''}}"#,
            r#"$ion_1_0 {Item:{a:{{"clob"}}}}"#,
            r#"$ion_1_0 {Item:{a:{{AA EC}}}}"#,
            r#"$ion_1_0 {Item:{a:{{AB==}}}}"#,
            r#"$ion_1_0 {Item:{a:1.5e0}}"#,
            r#"$ion_1_0 {Item:{a:0x1F}}"#,
            r#"$ion_1_0 {Item:{a:1_000}}"#,
            r#"$ion_1_0 {Item:{a:007}}"#,
            r#"$ion_1_0 {Item:{a:-0.}}"#,
            r#"$ion_1_0 {Item:{a:2024-01-01T}}"#,
            r#"$ion_1_0 {Item:{a:null.string}}"#,
            r#"$ion_1_0 {Item:{a:sym}}"#,
            r#"$ion_1_0 {Item:{a:foo::"x"}}"#,
            r#"$ion_1_0 {Item:{a:$dynamodb_NS::["x"]}}"#,
            r#"$ion_1_0 {Item:{a:(x)}}"#,
            r#"$ion_1_0 {Item:{a:1.,}}"#,
            r#"$ion_1_0 {Item:{a:[1.,]}}"#,
            r#"$ion_1_0 {Item:{a:1.} /* c */}"#,
            r#"$ion_1_0 {Item:{$10:1.}}"#,
            r#"$ion_1_0 {Item:{a:"x"}"#,
            r#"$ion_1_0 {Item:{a:"x"}} {Item:{}}"#,
            r#"$ion_1_0 {Keys:{a:"x"}}"#,
            r#"$ion_1_0 [1.]"#,
            r#"$ion_1_0x {Item:{}}"#,
        ] {
            assert_eq!(json(line), None, "{line}");
        }
        let deep = format!(
            "{{Item:{{a:{}1.{}}}}}",
            "[".repeat(MAX_NESTING + 2),
            "]".repeat(MAX_NESTING + 2)
        );
        assert_eq!(json(&deep), None);
    }
}

/// The differential tests: decoding (and routing) with the transcoder and the JSON scanner, with
/// their fallback, against the `ion-rs` reference alone, on Ion lines written from the JSON
/// scanner's generated lines in varied spellings, with Ion's own oddities mixed in, and the same
/// lines damaged. Rows, rejects (line, class, reason, raw) and spills: all equal.
#[cfg(test)]
pub(crate) mod differential {
    use proptest::prelude::*;
    use proptest::sample::select;
    use serde_json::Value;

    use crate::scan::differential::{check, config, damaged, line};

    /// A string's content as an Ion string's (or quoted symbol's): what Ion needs escaped,
    /// escaped.
    fn ion_string(text: &str, quote: char, out: &mut String) {
        out.push(quote);
        for c in text.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                c if c == quote => {
                    out.push('\\');
                    out.push(c);
                }
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\x{:02x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push(quote);
    }

    fn ion_name(name: &str, spelling: u8, out: &mut String) {
        let identifier = name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        match spelling % 3 {
            0 if identifier => out.push_str(name),
            1 => ion_string(name, '\'', out),
            _ => ion_string(name, '"', out),
        }
    }

    /// A DynamoDB JSON number text in one of Ion's spellings (or as it is when it is not a plain
    /// decimal: then it is bad Ion or a float, and the reference decides).
    fn ion_number(text: &str, spelling: u8, out: &mut String) {
        let (mantissa, exponent) = match text.split_once(['e', 'E']) {
            Some((m, e)) => (m, e.parse::<i64>().ok()),
            None => (text, Some(0)),
        };
        let plain = mantissa.strip_prefix('-').unwrap_or(mantissa);
        let ok = !plain.is_empty()
            && plain.bytes().all(|b| b.is_ascii_digit() || b == b'.')
            && plain.bytes().filter(|b| *b == b'.').count() <= 1;
        let Some(exponent) = exponent.filter(|_| ok) else {
            out.push_str(text);
            return;
        };
        let (int, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        match spelling % 4 {
            // `4999d-2`: the digits and an exponent.
            0 => out.push_str(&format!(
                "{int}{fraction}d{}",
                exponent - fraction.len() as i64
            )),
            // `103.` and `1.50`.
            1 if exponent == 0 => out.push_str(&format!("{int}.{fraction}")),
            // An int when it is one.
            2 if fraction.is_empty() && exponent == 0 => out.push_str(int),
            _ => out.push_str(&format!("{mantissa}D{exponent}")),
        }
    }

    /// A DynamoDB JSON typed value as Ion; `false` when it is not one.
    fn ion_value(value: &Value, spelling: &mut impl Iterator<Item = u8>, out: &mut String) -> bool {
        let Some(object) = value.as_object() else {
            return false;
        };
        let Some((tag, inner)) = object.iter().next().filter(|_| object.len() == 1) else {
            return false;
        };
        let s = spelling.next().unwrap_or(0);
        let pad = if s % 7 == 0 { " " } else { "" };
        out.push_str(pad);
        match (tag.as_str(), inner) {
            ("S", Value::String(text)) => ion_string(text, '"', out),
            ("N", Value::String(text)) => ion_number(text, s, out),
            ("B", Value::String(text)) => out.push_str(&format!("{{{{{pad}{text}{pad}}}}}")),
            ("BOOL", Value::Bool(b)) => out.push_str(if *b { "true" } else { "false" }),
            ("NULL", Value::Bool(true)) => {
                out.push_str(if s % 5 == 0 { "null.null" } else { "null" })
            }
            ("SS" | "NS" | "BS", Value::Array(items)) => {
                out.push_str(&format!("$dynamodb_{tag}{pad}::{pad}["));
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                        out.push_str(pad);
                    }
                    let Value::String(text) = item else {
                        return false;
                    };
                    match tag.as_str() {
                        "SS" => ion_string(text, '"', out),
                        "NS" => ion_number(text, spelling.next().unwrap_or(0), out),
                        _ => out.push_str(&format!("{{{{{text}}}}}")),
                    }
                }
                out.push(']');
            }
            ("M", Value::Object(members)) => {
                out.push('{');
                for (i, (name, member)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    ion_name(name, spelling.next().unwrap_or(0), out);
                    out.push(':');
                    if !ion_value(member, spelling, out) {
                        return false;
                    }
                }
                out.push('}');
            }
            ("L", Value::Array(items)) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    if !ion_value(item, spelling, out) {
                        return false;
                    }
                }
                out.push(']');
            }
            _ => return false,
        }
        out.push_str(pad);
        true
    }

    /// The Ion line of a DynamoDB JSON line, with `extra` members appended to its item, or the
    /// line as it is when it is not a DynamoDB JSON item.
    pub(crate) fn to_ion(json: &str, spellings: &[u8], extra: &[String]) -> String {
        let Ok(Value::Object(line)) = serde_json::from_str::<Value>(json) else {
            return json.to_string();
        };
        let Some(Value::Object(item)) = line.get("Item").filter(|_| line.len() == 1) else {
            return json.to_string();
        };
        let mut spelling = spellings.iter().copied().cycle();
        let mut out = String::from("$ion_1_0 {Item:{");
        let mut first = true;
        for (name, value) in item {
            if !first {
                out.push(',');
            }
            first = false;
            ion_name(name, spelling.next().unwrap_or(0), &mut out);
            out.push(':');
            if !ion_value(value, &mut spelling, &mut out) {
                return json.to_string();
            }
        }
        for member in extra {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(member);
        }
        out.push_str("}}");
        out
    }

    /// Members DynamoDB JSON cannot spell: Ion's own types, escapes and forms.
    fn oddity() -> impl Strategy<Value = String> {
        select(vec![
            "f:1.5e0",
            "t:2024-01-01T",
            "t:2024-01-01T00:00:00Z",
            "sym:abc",
            "q:'quoted symbol value'",
            "sx:(a b)",
            "c:{{\"clob\"}}",
            "l:'''long'''",
            "h:0x1F",
            "u:1_000",
            "z:007",
            "nz:-0.",
            "nz2:-0d3",
            "ni:-0",
            "tn:null.string",
            "bn:null.foo",
            "a:foo::\"x\"",
            "w:$dynamodb_NS::[\"x\"]",
            "w2:$dynamodb_SS::[1.]",
            "w3:$dynamodb_BS::[\"x\"]",
            "w4:$dynamodb_SS::\"x\"",
            "e:\"a\\x41\\u00e9\\U0001F680\\0\"",
            "'e\\'n':\"x\"",
            "$10:\"x\"",
            "null:\"x\"",
            "true:1.",
            "d:1d",
            "d2:1.2.3",
            "big:123456789012345678901234567890123456789.",
            "tiny:1d-131",
            "huge:1d126",
            "ws:{{ AA EC }}",
            "pad:{{AB==}}",
            "blob:{{}}",
            "i:  -12  ",
            "m:{ a : 1. , b : [ ] }",
            "cm:1. /* c */",
            "pk:\"again\"",
            "del:\"a\u{7f}b\"",
            "hx:\"x\\x+1\"",
            "hu:\"x\\u+123\"",
            "vt:{{\u{b}AAEC }}",
        ])
        .prop_map(String::from)
    }

    fn ion_line() -> impl Strategy<Value = String> {
        (
            line(),
            prop::collection::vec(any::<u8>(), 1..16),
            prop::collection::vec(oddity(), 0..2),
            prop::bool::weighted(0.1),
        )
            .prop_map(|(json, spellings, mut extra, odd)| {
                if !odd {
                    extra.clear();
                }
                to_ion(&json, &spellings, &extra)
            })
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn generated_ion_lines_decode_as_the_reference_does(
            lines in prop::collection::vec(ion_line().prop_map(String::into_bytes), 1..12)
        ) {
            check(&lines)?;
        }

        #[test]
        fn damaged_ion_lines_decode_as_the_reference_does(
            lines in prop::collection::vec(damaged(ion_line()), 1..12)
        ) {
            check(&lines)?;
        }
    }

    use crate::ion::tests::canonical;

    proptest! {
        #![proptest_config(config())]

        /// `parse_item_fast` (schema inference and `assess`) reads an Ion line as the `ion-rs`
        /// reference does: the same attributes and values, or the same error.
        #[test]
        fn the_fast_reader_gives_the_references_attributes(
            line in prop_oneof![4 => ion_line().prop_map(String::into_bytes), 1 => damaged(ion_line())]
        ) {
            let mut buffer = String::new();
            let fast = crate::decode::parse_item_fast(&line, &mut buffer);
            let reference = crate::decode::parse_item(&line);
            match (fast, reference) {
                (Ok(fast), Ok(reference)) => {
                    let of = |a: &crate::item::Attributes<'_>| -> Vec<(String, String)> {
                        a.iter().map(|(k, v)| (k.to_string(), canonical(v))).collect()
                    };
                    prop_assert_eq!(of(&fast), of(&reference));
                }
                (Err(fast), Err(reference)) => prop_assert_eq!(fast, reference),
                (fast, reference) => prop_assert!(false, "{:?} against {:?}", fast, reference),
            }
        }
    }

    /// The generated lines exercise the fast path, not only the fallback.
    #[test]
    fn most_generated_ion_lines_take_the_fast_path() {
        use proptest::strategy::ValueTree;
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let lines: Vec<Vec<u8>> = (0..400)
            .map(|_| {
                ion_line()
                    .new_tree(&mut runner)
                    .unwrap()
                    .current()
                    .into_bytes()
            })
            .collect();
        let ion = lines.iter().filter(|l| l.starts_with(b"$ion_1_0")).count();
        // `check` decodes with five schemas.
        let fast = check(&lines).unwrap();
        assert!(ion > 200, "{ion} Ion lines of 400");
        // About 40% of the JSON generator's lines are plain enough for the JSON scanner (the
        // rest hold its bad pieces); 38% of their Ion lines were when this was written.
        assert!(
            fast * 4 > 5 * ion,
            "{fast} of {} lines took the fast path",
            5 * ion
        );
    }
}
