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

/// Whether the catalog's name `reported` is the column `name`: the same text, or its UTF-8 bytes
/// read as Latin-1, which is how HeliosDB 4.41 reports a non-ASCII identifier (`ü` as `Ã¼`) in
/// `information_schema` and in a result's column names.
pub fn same_column_name(name: &str, reported: &str) -> bool {
    reported == name || reported == latin1_of_utf8(name)
}

/// `name`'s UTF-8 bytes, each read as one Latin-1 character: how HeliosDB 4.41's catalog lists a
/// non-ASCII identifier (`ü` as `Ã¼`); `name` itself when it is ASCII.
pub fn latin1_of_utf8(name: &str) -> String {
    name.bytes().map(char::from).collect()
}

/// Which column names a target reads back as written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ColumnNames {
    /// Every name [`is_valid_column_name`] accepts (PostgreSQL, Parquet).
    #[default]
    Any,
    /// Those without a `.`: HeliosDB (4.41.1) creates and fills a column named `"a.b"`, and
    /// `sum("a.b")` and `UPDATE … SET "a.b"` see its values, but a select list, a `WHERE` and an
    /// `ORDER BY` read it as NULL (`WHERE "a.b" = 10` matches nothing). A value there could not be
    /// read back, so such a name is not made a column on it.
    NoDot,
}

impl ColumnNames {
    /// Whether `name` can be a column on the target and be read back.
    pub fn allows(self, name: &str) -> bool {
        is_valid_column_name(name) && !(self == ColumnNames::NoDot && name.contains('.'))
    }

    /// Why `name`, a valid column name, cannot be one here (`None` when it can).
    pub fn refusal(self, name: &str) -> Option<&'static str> {
        (is_valid_column_name(name) && !self.allows(name)).then_some(
            "HeliosDB reads a column whose name holds a dot as NULL in SELECT and WHERE, so its values could not be read back",
        )
    }
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
    fn heliosdb_names_match_as_reported() {
        assert!(same_column_name("PK", "PK"));
        assert!(same_column_name("ünïcode näme", "ünïcode näme"));
        // HeliosDB 4.41's catalog: the UTF-8 bytes read as Latin-1.
        assert!(same_column_name("ünïcode näme", "Ã¼nÃ¯code nÃ¤me"));
        assert!(same_column_name("créé le", "crÃ©Ã© le"));
        assert!(!same_column_name("ünïcode näme", "unicode name"));
        assert!(!same_column_name("pk", "PK"));
        assert!(!same_column_name("ä", "Ã¤x"));
    }

    #[test]
    fn a_dotted_name_is_a_column_only_where_it_reads_back() {
        assert!(ColumnNames::Any.allows("tax.rate"));
        assert!(!ColumnNames::NoDot.allows("tax.rate"));
        assert!(ColumnNames::NoDot.allows("tax rate"));
        assert!(!ColumnNames::NoDot.allows(""));
        assert!(ColumnNames::NoDot.refusal("a.b").is_some());
        assert_eq!(ColumnNames::NoDot.refusal("ab"), None);
        assert_eq!(ColumnNames::Any.refusal("a.b"), None);
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
