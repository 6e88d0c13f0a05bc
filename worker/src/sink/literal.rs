//! The one encoder of SQL literals: a value written into statement text instead of a parameter.
//!
//! Ferry binds every value as a parameter, except where a server gets a statement wrong with
//! parameters: HeliosDB 4.41's `INSERT … ON CONFLICT DO UPDATE` with `$n` values updates a
//! conflicting row in committed storage, outside the statement's transaction (`ROLLBACK` keeps the
//! new value, other sessions see it before `COMMIT`, a key inserted earlier in the transaction is
//! "not found in storage"), and spends most of its time cloning the parameters once per conflicting
//! row. The same statement with literal values runs inside the transaction, about five times
//! faster (`scripts/heliosdb-apply-ceiling.py`). So the applier renders HeliosDB's upserts and
//! deletes through this module, and nothing else formats a value into SQL.
//!
//! A literal is `'…'` with every `'` doubled: a standard-conforming string, in which a backslash
//! is an ordinary character to PostgreSQL (`standard_conforming_strings` is on by default since
//! 9.1) and to HeliosDB's parser. HeliosDB 4.41 first cuts a message into statements with a
//! scanner that reads a backslash as escaping the character after it, though: where an odd run of
//! backslashes stands before a quote (or the literal's end), the scanner and the parser disagree
//! on where the literal ends, and a `;` in a later value split the statement
//! (`tests/tests/catch_up.rs`, `applied_statements_are_exact_on_heliosdb`). Such a value is
//! written as a concatenation in which every backslash is its own escape string,
//! `('it' || E'\\' || '''s')`: both readers agree on every piece, and the pieces hold no
//! non-ASCII character (HeliosDB reads the bytes of an escape string as Latin-1). Only text can
//! hold that pattern: the other values Ferry writes (`\x…` for bytea, arrays and JSON with their
//! own escaping, numbers, booleans, times) never put an odd run of backslashes before a quote;
//! a literal is untyped, so the server reads it as the column's type. `None` is `NULL`. A value
//! holding a NUL character is refused: no server stores one in text, and the statement text could
//! not carry it.

/// Why a value cannot be a literal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LiteralError {
    /// The value holds a NUL character.
    #[error("a value holds a NUL character, which a SQL literal cannot carry")]
    Nul,
}

/// Appends `value` to `sql` as a literal: `NULL`, `'…'` with every `'` doubled, or, when an odd
/// run of backslashes stands before a quote or at the end, the concatenation of plain pieces and
/// one `E'\\'` per backslash.
pub fn push_literal(sql: &mut String, value: Option<&str>) -> Result<(), LiteralError> {
    let Some(value) = value else {
        sql.push_str("NULL");
        return Ok(());
    };
    if value.contains('\0') {
        return Err(LiteralError::Nul);
    }
    if !escapes_a_quote(value) {
        push_plain(sql, value);
        return Ok(());
    }
    sql.push('(');
    for (i, piece) in value.split('\\').enumerate() {
        if i > 0 {
            sql.push_str(" || E'\\\\' || ");
        }
        push_plain(sql, piece);
    }
    sql.push(')');
    Ok(())
}

/// `'…'` with every `'` doubled.
fn push_plain(sql: &mut String, value: &str) {
    sql.reserve(value.len() + 2);
    sql.push('\'');
    let mut rest = value;
    while let Some(at) = rest.find('\'') {
        sql.push_str(&rest[..=at]);
        sql.push('\'');
        rest = &rest[at + 1..];
    }
    sql.push_str(rest);
    sql.push('\'');
}

/// Whether a scanner that reads `\x` as an escaped `x` would find an escaped quote in `'value'`
/// (quotes doubled): an odd run of backslashes before a quote, or at the end (before the closing
/// quote).
fn escapes_a_quote(value: &str) -> bool {
    let mut run = 0usize;
    for byte in value.bytes() {
        match byte {
            b'\\' => run += 1,
            b'\'' if run % 2 == 1 => return true,
            _ => run = 0,
        }
    }
    run % 2 == 1
}

/// `value` as a literal ([`push_literal`]).
pub fn literal(value: Option<&str>) -> Result<String, LiteralError> {
    let mut sql = String::new();
    push_literal(&mut sql, value)?;
    Ok(sql)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An independent reader of what [`push_literal`] writes: the value at the start of `sql` and
    /// what follows it, or `None` when `sql` does not start with a well-formed one. Plain pieces
    /// are read as standard strings (a backslash is itself), `E'…'` pieces may hold only `\\`.
    fn read_literal(sql: &str) -> Option<(Option<String>, &str)> {
        if let Some(rest) = sql.strip_prefix("NULL") {
            return Some((None, rest));
        }
        if let Some(mut rest) = sql.strip_prefix('(') {
            let mut value = String::new();
            loop {
                if let Some(after) = rest.strip_prefix("E'\\\\'") {
                    value.push('\\');
                    rest = after;
                } else {
                    let (piece, after) = read_plain(rest)?;
                    value.push_str(&piece);
                    rest = after;
                }
                if let Some(after) = rest.strip_prefix(" || ") {
                    rest = after;
                } else {
                    return Some((Some(value), rest.strip_prefix(')')?));
                }
            }
        }
        let (value, rest) = read_plain(sql)?;
        Some((Some(value), rest))
    }

    fn read_plain(sql: &str) -> Option<(String, &str)> {
        let body = sql.strip_prefix('\'')?;
        let mut chars = body.char_indices().peekable();
        let mut value = String::new();
        while let Some((i, c)) = chars.next() {
            if c == '\'' {
                if chars.peek().map(|(_, n)| *n) == Some('\'') {
                    chars.next();
                    value.push('\'');
                } else {
                    return Some((value, &body[i + 1..]));
                }
            } else {
                value.push(c);
            }
        }
        None
    }

    /// Which bytes of `sql` are outside quoted text, and the escape strings found: read as a
    /// parser does (`scanner` false: in `E'…'` a backslash escapes the next character, in `'…'`
    /// it is itself), or as HeliosDB's statement splitter does (`scanner` true: a backslash
    /// escapes the next character in any quoted text). `''` is a quote in both.
    fn outside(sql: &str, scanner: bool) -> (Vec<bool>, Vec<&str>) {
        let bytes = sql.as_bytes();
        let mut outside = vec![true; bytes.len()];
        let mut escape_strings = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] != b'\'' {
                i += 1;
                continue;
            }
            let escape_string = i > 0 && bytes[i - 1] == b'E';
            let escapes = scanner || escape_string;
            let start = i;
            i += 1;
            loop {
                match bytes.get(i) {
                    None => break,
                    Some(b'\\') if escapes => i += 2,
                    Some(b'\'') if bytes.get(i + 1) == Some(&b'\'') => i += 2,
                    Some(b'\'') => {
                        i += 1;
                        break;
                    }
                    Some(_) => i += 1,
                }
            }
            outside[start..i.min(bytes.len())].fill(false);
            if escape_string {
                escape_strings.push(&sql[start..i.min(bytes.len())]);
            }
        }
        (outside, escape_strings)
    }

    #[test]
    fn quotes_are_doubled_and_nothing_else_changes() {
        assert_eq!(literal(None).unwrap(), "NULL");
        assert_eq!(literal(Some("")).unwrap(), "''");
        assert_eq!(literal(Some("it's")).unwrap(), "'it''s'");
        assert_eq!(literal(Some("''")).unwrap(), "''''''");
        assert_eq!(literal(Some(r"back\slash")).unwrap(), r"'back\slash'");
        assert_eq!(literal(Some(r"\\'")).unwrap(), r"'\\'''");
        assert_eq!(literal(Some(r"\x0a0b")).unwrap(), r"'\x0a0b'");
        // An odd run of backslashes before a quote or at the end: each backslash its own piece.
        assert_eq!(literal(Some("\\")).unwrap(), r"('' || E'\\' || '')");
        assert_eq!(literal(Some(r"ü\'s")).unwrap(), r"('ü' || E'\\' || '''s')");
        assert_eq!(
            literal(Some(r"a\\\")).unwrap(),
            r"('a' || E'\\' || '' || E'\\' || '' || E'\\' || '')"
        );
        assert_eq!(
            literal(Some("x'); DROP TABLE t; --")).unwrap(),
            "'x''); DROP TABLE t; --'"
        );
        assert_eq!(literal(Some("$1 ? ünï ☃\t\n")).unwrap(), "'$1 ? ünï ☃\t\n'");
        assert_eq!(literal(Some("NULL")).unwrap(), "'NULL'");
        assert_eq!(literal(Some("a\0b")), Err(LiteralError::Nul));
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            cases: 2000, ..proptest::test_runner::Config::default()
        })]

        /// Any value (quotes, backslashes, dollar signs, any Unicode) reads back as itself, and the
        /// literal ends exactly where it was written: whatever follows cannot be reached from
        /// inside it.
        #[test]
        fn every_value_reads_back_and_ends_where_written(
            value in proptest::option::of("[^\0]*|['\\\\$;\"ü]{0,12}"),
            tail in "[a-z,) ]{0,8}",
        ) {
            let mut sql = literal(value.as_deref()).unwrap();
            sql.push_str(&tail);
            let (read, rest) = read_literal(&sql).expect("a well-formed literal");
            proptest::prop_assert_eq!(&read, &value);
            proptest::prop_assert_eq!(rest, tail.as_str());
            // The parser and a backslash-escaping scanner agree on what is outside quotes (where a
            // `;` would cut the statement), whatever follows.
            let probe = format!("{sql}; x");
            let (by_parser, escape_strings) = outside(&probe, false);
            proptest::prop_assert_eq!(by_parser, outside(&probe, true).0);
            // Escape strings are only ever `E'\\'` (ASCII: HeliosDB reads their bytes as
            // Latin-1).
            proptest::prop_assert!(escape_strings.iter().all(|e| *e == "'\\\\'"), "{:?}", escape_strings);
        }
    }
}
