//! SQL identifier quoting: every table and column name Ferry writes into SQL goes through [`quote_ident`].
//! Values never go into SQL text; they travel as COPY data or bound parameters.

/// Quotes an identifier for PostgreSQL: wraps it in double quotes and doubles inner quotes.
/// `Status` and `status` stay two different names.
pub fn quote_ident(name: &str) -> String {
    let mut quoted = String::with_capacity(name.len() + 2);
    quoted.push('"');
    for ch in name.chars() {
        if ch == '"' {
            quoted.push('"');
        }
        quoted.push(ch);
    }
    quoted.push('"');
    quoted
}

/// The longest identifier PostgreSQL keeps without truncating (NAMEDATALEN - 1 bytes).
pub const MAX_IDENT_BYTES: usize = 63;

/// Whether `name` can be a column name as is: non-empty, at most 63 bytes, no NUL.
pub fn is_valid_column_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_IDENT_BYTES && !name.contains('\0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_and_doubles_inner_quotes() {
        assert_eq!(quote_ident("pk"), "\"pk\"");
        assert_eq!(quote_ident("Status"), "\"Status\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_ident("x; DROP TABLE t"), "\"x; DROP TABLE t\"");
    }

    #[test]
    fn column_name_limits() {
        assert!(is_valid_column_name("pk"));
        assert!(is_valid_column_name(&"a".repeat(63)));
        assert!(!is_valid_column_name(&"a".repeat(64)));
        assert!(!is_valid_column_name(""));
        assert!(!is_valid_column_name("a\0b"));
        // 63 bytes of multi-byte characters is the limit, not 63 characters.
        assert!(!is_valid_column_name(&"é".repeat(32)));
    }
}
