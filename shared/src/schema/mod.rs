//! The resolved schema of a run's target table.
//!
//! The coordinator infers it once from a sample and stores it in `ferry.runs.schema_json`; every
//! worker loads with exactly this schema. Columns are named exactly as the DynamoDB attributes
//! (always quoted in SQL); attributes without a column go into the JSONB overflow column.

use serde::{Deserialize, Serialize};

pub mod routing;

use crate::ident::{quote_ident, ColumnNames};

/// Ferry's provenance column, in every table a run loads: the `load_id` of the shard generation
/// that wrote the row, shifted left by [`CHUNK_INDEX_BITS`], plus the row's chunk index in its data
/// file. A row's provenance says which attempt of which chunk wrote it, which is what lets a
/// retried chunk prove it is already stored (design.md §3), and lets a shard's rows be removed
/// exactly (a data file that changed or failed its checksum).
pub const PROVENANCE_COLUMN: &str = "_ferry_chunk";

/// Bits of [`PROVENANCE_COLUMN`] that hold the chunk index (up to 16.7 million chunks per file).
pub const CHUNK_INDEX_BITS: u32 = 24;

/// The provenance value of the rows of chunk `chunk_index` written by load `load_id`, or `None`
/// when the chunk index does not fit (raise `load.chunk_lines`).
pub fn provenance(load_id: i64, chunk_index: u64) -> Option<i64> {
    if chunk_index >= 1 << CHUNK_INDEX_BITS || !(0..1 << (63 - CHUNK_INDEX_BITS)).contains(&load_id)
    {
        return None;
    }
    Some((load_id << CHUNK_INDEX_BITS) | chunk_index as i64)
}

/// The range of provenance values a load's rows carry: `lo <= _ferry_chunk < hi`.
pub fn provenance_range(load_id: i64) -> (i64, i64) {
    (
        load_id << CHUNK_INDEX_BITS,
        (load_id + 1) << CHUNK_INDEX_BITS,
    )
}

/// A DynamoDB attribute type descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DdbType {
    /// String.
    S,
    /// Number (exact decimal text).
    N,
    /// Binary.
    B,
    /// Boolean.
    #[serde(rename = "BOOL")]
    Bool,
    /// Null.
    #[serde(rename = "NULL")]
    Null,
    /// Map.
    M,
    /// List.
    L,
    /// String set.
    #[serde(rename = "SS")]
    Ss,
    /// Number set.
    #[serde(rename = "NS")]
    Ns,
    /// Binary set.
    #[serde(rename = "BS")]
    Bs,
}

impl DdbType {
    /// The descriptor as it appears in DynamoDB JSON.
    pub fn descriptor(self) -> &'static str {
        match self {
            DdbType::S => "S",
            DdbType::N => "N",
            DdbType::B => "B",
            DdbType::Bool => "BOOL",
            DdbType::Null => "NULL",
            DdbType::M => "M",
            DdbType::L => "L",
            DdbType::Ss => "SS",
            DdbType::Ns => "NS",
            DdbType::Bs => "BS",
        }
    }

    /// Parses a descriptor (`S`, `N`, `B`, `BOOL`, …).
    pub fn from_descriptor(descriptor: &str) -> Option<DdbType> {
        Some(match descriptor {
            "S" => DdbType::S,
            "N" => DdbType::N,
            "B" => DdbType::B,
            "BOOL" => DdbType::Bool,
            "NULL" => DdbType::Null,
            "M" => DdbType::M,
            "L" => DdbType::L,
            "SS" => DdbType::Ss,
            "NS" => DdbType::Ns,
            "BS" => DdbType::Bs,
            _ => return None,
        })
    }

    /// The PostgreSQL column type this DynamoDB type maps to (design.md §4), or `None` for NULL,
    /// which has no column type of its own.
    pub fn pg_type(self) -> Option<PgType> {
        Some(match self {
            DdbType::S => PgType::Text,
            DdbType::N => PgType::Numeric,
            DdbType::B => PgType::Bytea,
            DdbType::Bool => PgType::Boolean,
            DdbType::Null => return None,
            DdbType::M | DdbType::L => PgType::Jsonb,
            DdbType::Ss => PgType::TextArray,
            DdbType::Ns => PgType::NumericArray,
            DdbType::Bs => PgType::ByteaArray,
        })
    }

    /// Whether this type can be a key attribute (DynamoDB keys are S, N or B).
    pub fn is_key_type(self) -> bool {
        matches!(self, DdbType::S | DdbType::N | DdbType::B)
    }
}

impl std::fmt::Display for DdbType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.descriptor())
    }
}

/// A target column type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PgType {
    /// TEXT
    Text,
    /// NUMERIC (arbitrary precision on PostgreSQL)
    Numeric,
    /// BYTEA
    Bytea,
    /// BOOLEAN
    Boolean,
    /// JSONB
    Jsonb,
    /// TEXT[]
    TextArray,
    /// NUMERIC[]
    NumericArray,
    /// BYTEA[]
    ByteaArray,
    /// INT2 (routed columns)
    Int2,
    /// INT4 (routed columns)
    Int4,
    /// INT8 (routed columns)
    Int8,
    /// FLOAT8 (routed columns, only when the user asks: numbers lose exactness)
    Float8,
    /// TIMESTAMPTZ (routed columns)
    Timestamptz,
    /// NUMERIC(p,s) (routed columns): values with more digits are rejected, never rounded.
    NumericScaled {
        /// Total significant digits.
        precision: u8,
        /// Digits after the point.
        scale: u8,
    },
}

impl PgType {
    /// The type as written in DDL.
    pub fn sql(self) -> String {
        match self {
            PgType::NumericScaled { precision, scale } => format!("NUMERIC({precision},{scale})"),
            other => other.sql_name().to_string(),
        }
    }

    fn sql_name(self) -> &'static str {
        match self {
            PgType::Int2 => "INT2",
            PgType::Int4 => "INT4",
            PgType::Int8 => "INT8",
            PgType::Float8 => "FLOAT8",
            PgType::Timestamptz => "TIMESTAMPTZ",
            PgType::NumericScaled { .. } => "NUMERIC",
            PgType::Text => "TEXT",
            PgType::Numeric => "NUMERIC",
            PgType::Bytea => "BYTEA",
            PgType::Boolean => "BOOLEAN",
            PgType::Jsonb => "JSONB",
            PgType::TextArray => "TEXT[]",
            PgType::NumericArray => "NUMERIC[]",
            PgType::ByteaArray => "BYTEA[]",
        }
    }

    /// The `information_schema.columns.udt_name` PostgreSQL reports for this type.
    pub fn udt_name(self) -> &'static str {
        match self {
            PgType::Int2 => "int2",
            PgType::Int4 => "int4",
            PgType::Int8 => "int8",
            PgType::Float8 => "float8",
            PgType::Timestamptz => "timestamptz",
            PgType::Text => "text",
            PgType::Numeric | PgType::NumericScaled { .. } => "numeric",
            PgType::Bytea => "bytea",
            PgType::Boolean => "bool",
            PgType::Jsonb => "jsonb",
            PgType::TextArray => "_text",
            PgType::NumericArray => "_numeric",
            PgType::ByteaArray => "_bytea",
        }
    }
}

/// One typed column of the target table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnSpec {
    /// The attribute name, which is also the column name (quoted in SQL).
    pub name: String,
    /// The DynamoDB type whose values go into this column; other types go to overflow or rejects.
    pub ddb_type: DdbType,
    /// The column's SQL type.
    pub pg_type: PgType,
    /// Whether the column is part of the primary key.
    pub is_key: bool,
}

/// How nested values (inside M and L, and in the overflow column) are written as JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NestedJson {
    /// Plain JSON, what people query with `->>`: sets become arrays, binary a base64 string,
    /// numbers exact JSON numbers.
    #[default]
    Plain,
    /// Typed DynamoDB JSON (`{"S":"x"}`), for an exact round trip.
    Dynamodb,
}

/// What happens to a value whose type differs from its column's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnTypeMismatch {
    /// The value goes into the overflow column under its own name, and is counted as spilled.
    #[default]
    Overflow,
    /// The whole item goes to rejects.
    Reject,
}

/// The resolved schema of one target table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSchema {
    /// Target table name (unqualified, quoted in SQL).
    pub table: String,
    /// Key columns first, in key order, then the other typed columns.
    pub columns: Vec<ColumnSpec>,
    /// The JSONB overflow column.
    pub overflow_column: String,
    /// How nested values are written.
    pub nested_json: NestedJson,
    /// What a value of the wrong type does.
    pub on_type_mismatch: OnTypeMismatch,
    /// The target's NUMERIC limit: `None` is arbitrary precision (PostgreSQL); `Decimal96` is a
    /// 96-bit decimal (HeliosDB), so numbers that do not fit exactly are treated as a type
    /// mismatch (overflow JSON text or a reject), never sent to be rounded.
    #[serde(default)]
    pub numeric_limit: NumericLimit,
    /// Routing rules (single-table design): items go to the rules' tables instead of this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<crate::schema::routing::Routing>,
    /// Whether rows carry [`PROVENANCE_COLUMN`] (every run planned by this Ferry; runs planned
    /// before it existed cannot be resumed by it).
    #[serde(default)]
    pub provenance: bool,
}

/// What the target's NUMERIC can hold exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NumericLimit {
    /// Arbitrary precision (PostgreSQL).
    #[default]
    Unlimited,
    /// Digits below 2^96, scale at most 28 (HeliosDB).
    Decimal96,
}

impl TableSchema {
    /// The key columns, in key order.
    pub fn key_columns(&self) -> impl Iterator<Item = &ColumnSpec> {
        self.columns.iter().filter(|c| c.is_key)
    }

    /// `CREATE TABLE IF NOT EXISTS` for this schema: typed columns, the overflow column, and the
    /// primary key over the key columns (the source identity every loaded row carries).
    pub fn create_table_sql(&self) -> String {
        self.create_table_sql_keyed_by("PRIMARY KEY")
    }

    /// `CREATE TABLE IF NOT EXISTS` with the key columns under `constraint` (`PRIMARY KEY` or
    /// `UNIQUE`).
    pub fn create_table_sql_keyed_by(&self, constraint: &str) -> String {
        let mut sql = self.columns_sql();
        sql.push_str(", ");
        sql.push_str(&self.key_clause(constraint));
        sql.push(')');
        sql
    }

    /// `CREATE TABLE IF NOT EXISTS` without the key's constraint, which [`TableSchema::add_key_sql`]
    /// adds after the load (a key built once, in one sort, instead of a B-tree kept up per row).
    pub fn create_table_sql_without_key(&self) -> String {
        let mut sql = self.columns_sql();
        sql.push(')');
        sql
    }

    /// `ALTER TABLE … ADD <constraint> (<key columns>)`: the key a table made by
    /// [`TableSchema::create_table_sql_without_key`] is given after its load.
    pub fn add_key_sql(&self, constraint: &str) -> String {
        format!(
            "ALTER TABLE {} ADD {}",
            quote_ident(&self.table),
            self.key_clause(constraint)
        )
    }

    /// `<constraint> ("k1", "k2")`.
    fn key_clause(&self, constraint: &str) -> String {
        let keys: Vec<String> = self.key_columns().map(|c| quote_ident(&c.name)).collect();
        format!("{constraint} ({})", keys.join(", "))
    }

    /// `CREATE TABLE IF NOT EXISTS "t" (<columns>` without the closing parenthesis.
    fn columns_sql(&self) -> String {
        let mut sql = format!("CREATE TABLE IF NOT EXISTS {} (", quote_ident(&self.table));
        for column in &self.columns {
            sql.push_str(&quote_ident(&column.name));
            sql.push(' ');
            sql.push_str(&column.pg_type.sql());
            if column.is_key {
                sql.push_str(" NOT NULL");
            }
            sql.push_str(", ");
        }
        sql.push_str(&quote_ident(&self.overflow_column));
        sql.push_str(" JSONB");
        if self.provenance {
            sql.push_str(", ");
            sql.push_str(&quote_ident(PROVENANCE_COLUMN));
            sql.push_str(" BIGINT");
        }
        sql
    }

    /// The quoted column list COPY writes, in order: typed columns, the overflow column, then the
    /// provenance column (when the run has it).
    pub fn copy_column_list(&self) -> String {
        self.copy_column_names()
            .iter()
            .map(|name| quote_ident(name))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The first column of this table (typed, or the overflow column) a target taking `names`
    /// could not read back, with why. A run planned before [`ColumnNames::NoDot`] existed can
    /// hold one: HeliosDB would store its values and read them back as NULL.
    pub fn unreadable_column(&self, names: ColumnNames) -> Option<(&str, &'static str)> {
        self.columns
            .iter()
            .map(|c| c.name.as_str())
            .chain(std::iter::once(self.overflow_column.as_str()))
            .find_map(|name| names.refusal(name).map(|why| (name, why)))
    }

    /// The columns a COPY fills, in order: typed columns, the overflow column, provenance.
    pub fn copy_column_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.columns.iter().map(|c| c.name.clone()).collect();
        names.push(self.overflow_column.clone());
        if self.provenance {
            names.push(PROVENANCE_COLUMN.to_string());
        }
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> TableSchema {
        TableSchema {
            table: "App\"Table".into(),
            columns: vec![
                ColumnSpec {
                    name: "PK".into(),
                    ddb_type: DdbType::S,
                    pg_type: PgType::Text,
                    is_key: true,
                },
                ColumnSpec {
                    name: "SK".into(),
                    ddb_type: DdbType::N,
                    pg_type: PgType::Numeric,
                    is_key: true,
                },
                ColumnSpec {
                    name: "tags".into(),
                    ddb_type: DdbType::Ss,
                    pg_type: PgType::TextArray,
                    is_key: false,
                },
            ],
            overflow_column: "attrs".into(),
            nested_json: NestedJson::Plain,
            on_type_mismatch: OnTypeMismatch::Overflow,
            numeric_limit: NumericLimit::Unlimited,
            routing: None,
            provenance: false,
        }
    }

    #[test]
    fn provenance_packs_the_load_and_the_chunk() {
        assert_eq!(provenance(1, 0), Some(1 << 24));
        assert_eq!(provenance(3, 5), Some((3 << 24) | 5));
        assert_eq!(provenance(3, 1 << 24), None);
        assert_eq!(provenance(1 << 39, 0), None);
        let (lo, hi) = provenance_range(3);
        assert!(lo <= provenance(3, 0).unwrap() && provenance(3, (1 << 24) - 1).unwrap() < hi);
        assert_eq!(hi, provenance(4, 0).unwrap());
        let mut with = schema();
        with.provenance = true;
        assert!(with
            .create_table_sql()
            .contains("\"attrs\" JSONB, \"_ferry_chunk\" BIGINT, PRIMARY KEY"));
        assert!(with
            .copy_column_list()
            .ends_with("\"attrs\", \"_ferry_chunk\""));
    }

    #[test]
    fn a_dotted_column_is_unreadable_on_a_target_without_dots() {
        let mut dotted = schema();
        assert_eq!(dotted.unreadable_column(ColumnNames::NoDot), None);
        dotted.columns[2].name = "tax.rate".into();
        assert_eq!(dotted.unreadable_column(ColumnNames::Any), None);
        let (column, why) = dotted.unreadable_column(ColumnNames::NoDot).unwrap();
        assert_eq!(column, "tax.rate");
        assert!(why.contains("NULL"), "{why}");
        let mut overflow = schema();
        overflow.overflow_column = "rest.json".into();
        assert_eq!(
            overflow
                .unreadable_column(ColumnNames::NoDot)
                .map(|(c, _)| c),
            Some("rest.json")
        );
    }

    #[test]
    fn ddl_quotes_every_identifier() {
        assert_eq!(
            schema().create_table_sql(),
            "CREATE TABLE IF NOT EXISTS \"App\"\"Table\" (\"PK\" TEXT NOT NULL, \"SK\" NUMERIC NOT NULL, \
             \"tags\" TEXT[], \"attrs\" JSONB, PRIMARY KEY (\"PK\", \"SK\"))"
        );
        assert_eq!(
            schema().copy_column_list(),
            "\"PK\", \"SK\", \"tags\", \"attrs\""
        );
    }

    #[test]
    fn a_deferred_key_is_the_same_table_and_key_in_two_statements() {
        let mut with = schema();
        with.provenance = true;
        assert_eq!(
            with.create_table_sql_without_key(),
            "CREATE TABLE IF NOT EXISTS \"App\"\"Table\" (\"PK\" TEXT NOT NULL, \"SK\" NUMERIC NOT NULL, \
             \"tags\" TEXT[], \"attrs\" JSONB, \"_ferry_chunk\" BIGINT)"
        );
        assert_eq!(
            with.add_key_sql("PRIMARY KEY"),
            "ALTER TABLE \"App\"\"Table\" ADD PRIMARY KEY (\"PK\", \"SK\")"
        );
        // The two together say what the one statement says.
        let whole = with.create_table_sql();
        assert_eq!(
            whole,
            format!(
                "{}, PRIMARY KEY (\"PK\", \"SK\"))",
                with.create_table_sql_without_key().trim_end_matches(')')
            )
        );
    }

    #[test]
    fn schema_round_trips_through_json() {
        let json = serde_json::to_string(&schema()).unwrap();
        assert!(json.contains("\"ddb_type\":\"SS\""), "{json}");
        let back: TableSchema = serde_json::from_str(&json).unwrap();
        assert_eq!(back, schema());
    }

    #[test]
    fn descriptors_round_trip() {
        for t in [
            DdbType::S,
            DdbType::N,
            DdbType::B,
            DdbType::Bool,
            DdbType::Null,
            DdbType::M,
            DdbType::L,
            DdbType::Ss,
            DdbType::Ns,
            DdbType::Bs,
        ] {
            assert_eq!(DdbType::from_descriptor(t.descriptor()), Some(t));
        }
        assert_eq!(DdbType::from_descriptor("X"), None);
        assert_eq!(DdbType::Null.pg_type(), None);
    }
}
