//! One value rendered as a SQL literal (the applier's HeliosDB statements): it must read back as
//! itself, and a reader that takes a backslash as an escape (HeliosDB's statement splitter) must
//! find the literal's end where a standard parser does. A difference panics, which the fuzzer
//! reports as a crash.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Ok(value) = std::str::from_utf8(data) else { return };
        let Ok(sql) = ferry_fuzz::literal::literal(Some(value)) else {
            assert!(value.contains('\0'), "only a NUL is refused");
            return;
        };
        let probe = format!("{sql}; x");
        let (parser_end, read) = parser_reading(&probe);
        assert_eq!(read, value, "reads back as itself: {sql}");
        assert_eq!(parser_end, scanner_end(&probe), "one end for both readers: {sql}");
    });
}

/// Where a standard parser finds the end of the expression at the start of `sql` (plain pieces:
/// a backslash is itself; `E'…'` pieces: a backslash escapes), and the text it reads.
fn parser_reading(sql: &str) -> (usize, String) {
    let bytes = sql.as_bytes();
    let mut i = usize::from(bytes[0] == b'(');
    let mut value = Vec::new();
    loop {
        let escapes = bytes[i] == b'E';
        i += usize::from(escapes) + 1; // the opening quote
        loop {
            match bytes[i] {
                b'\\' if escapes => {
                    value.push(bytes[i + 1]);
                    i += 2;
                }
                b'\'' if bytes.get(i + 1) == Some(&b'\'') => {
                    value.push(b'\'');
                    i += 2;
                }
                b'\'' => {
                    i += 1;
                    break;
                }
                b => {
                    value.push(b);
                    i += 1;
                }
            }
        }
        if sql[i..].starts_with(" || ") {
            i += 4;
        } else {
            i += usize::from(bytes[0] == b'(');
            return (i, String::from_utf8(value).expect("UTF-8 pieces"));
        }
    }
}

/// Where a reader that takes a backslash as escaping the next character, inside any quotes, finds
/// the first `;` outside quotes.
fn scanner_end(sql: &str) -> usize {
    let bytes = sql.as_bytes();
    let mut i = 0;
    let mut quoted = false;
    while i < bytes.len() {
        match (quoted, bytes[i]) {
            (true, b'\\') => i += 2,
            (true, b'\'') if bytes.get(i + 1) == Some(&b'\'') => i += 2,
            (_, b'\'') => {
                quoted = !quoted;
                i += 1;
            }
            (false, b';') => return i,
            _ => i += 1,
        }
    }
    i
}
