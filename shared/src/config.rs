//! Ferry's configuration: one TOML file plus `FERRY_*` environment variables.
//!
//! Every scalar key can be overridden from the environment with its section and key joined by `__`:
//! `FERRY_LOAD__CHUNK_LINES=50000`, `FERRY_MAPPING__OVERFLOW_COLUMN=extra`. Lists (the key
//! attributes) live in the file or on the command line. Other `FERRY_*` variables (`FERRY_LOG`,
//! `FERRY_FAILPOINTS`) are not configuration and are left alone.
//!
//! The file is parsed into [`RawConfig`] (unknown keys are errors) and validated, without IO, into
//! [`Settings`].
//!
//! ```toml
//! version = 1
//! [load]
//! chunk_lines = 100000   # lines per transaction; fixed per run, recorded in the ledger
//! max_rejects = 0        # the run fails when more lines than this are rejected
//! workers = 3            # shards loaded at once (default: cores + 1 on PostgreSQL, 2 on HeliosDB)
//! [mapping]
//! key = ["PK", "SK"]     # or --key PK,SK (optionally typed: PK:S,SK:N)
//! overflow_column = "attrs"
//! ```

use std::collections::HashMap;
use std::num::{NonZeroU64, NonZeroUsize};
use std::path::Path;

use serde::Deserialize;

use crate::schema::{DdbType, NestedJson, OnTypeMismatch};
use crate::{Error, Result};

/// The configuration sections, which are also the accepted `FERRY_<SECTION>__<KEY>` prefixes.
const SECTIONS: &[&str] = &["load", "mapping", "target"];

/// The configuration as written, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Format version of the file; 1.
    #[serde(default = "default_version")]
    pub version: u32,
    /// Loading.
    #[serde(default)]
    pub load: RawLoad,
    /// Mapping DynamoDB items to rows.
    #[serde(default)]
    pub mapping: RawMapping,
    /// The target database.
    #[serde(default)]
    pub target: RawTarget,
}

const fn default_version() -> u32 {
    1
}

/// `[load]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLoad {
    /// Input lines per committed chunk (one transaction). Fixed per run.
    pub chunk_lines: u64,
    /// Lines per decode block (the unit of rayon parallelism).
    pub block_lines: usize,
    /// Decoded blocks in flight per shard (bounds memory).
    pub pipeline_depth: usize,
    /// Rejected lines tolerated before the run fails.
    pub max_rejects: u64,
    /// Shards loaded at once (default: per target, see [`LoadSettings::workers_for`]).
    pub workers: Option<usize>,
    /// Connection attempts before a worker gives up on the target.
    pub connect_attempts: u32,
    /// `auto` (binary COPY on PostgreSQL, CSV COPY on HeliosDB), `binary`, `csv` or `insert`.
    pub copy_format: CopyFormat,
}

/// How rows are sent to the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CopyFormat {
    /// The fastest format the detected server supports.
    #[default]
    Auto,
    /// Binary COPY inside the checkpoint transaction (PostgreSQL).
    Binary,
    /// CSV COPY over the simple protocol in autocommit, with the presence-checked checkpoint
    /// (HeliosDB; works on PostgreSQL too).
    Csv,
    /// Multi-row INSERTs with text parameters in the checkpoint's transaction: the last resort,
    /// for a server without a usable COPY.
    Insert,
}

impl Default for RawLoad {
    fn default() -> Self {
        RawLoad {
            chunk_lines: 100_000,
            block_lines: 4_096,
            pipeline_depth: 4,
            max_rejects: 0,
            workers: None,
            connect_attempts: 5,
            copy_format: CopyFormat::Auto,
        }
    }
}

/// `[mapping]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMapping {
    /// Key attributes, `name` or `name:TYPE` (S, N or B).
    pub key: Vec<String>,
    /// Target table (default: the export's table name).
    pub table: Option<String>,
    /// The JSONB column for attributes without a typed column.
    pub overflow_column: String,
    /// `plain` or `dynamodb`.
    pub nested_json: NestedJson,
    /// `overflow` or `reject`.
    pub on_type_mismatch: OnTypeMismatch,
    /// Items read for schema inference.
    pub sample_items: usize,
    /// Attributes present in fewer than this fraction of sampled items go to overflow.
    pub min_presence: f64,
}

impl Default for RawMapping {
    fn default() -> Self {
        RawMapping {
            key: Vec::new(),
            table: None,
            overflow_column: "attrs".into(),
            nested_json: NestedJson::Plain,
            on_type_mismatch: OnTypeMismatch::Overflow,
            sample_items: 10_000,
            min_presence: 0.1,
        }
    }
}

/// `[target]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTarget {
    /// `postgres://user@host:port/db` (the password may come from `PGPASSWORD`). Without one,
    /// `migrate` starts its own HeliosDB (the embedded default).
    pub url: Option<String>,
    /// The embedded HeliosDB's data folder (default `./ferry-data`).
    pub data_dir: Option<String>,
    /// The `heliosdb-nano` binary for the embedded default (default: `$FERRY_HELIOSDB_BIN`, the
    /// install cache `~/.cache/ferry/heliosdb-<version>/bin`, then `PATH`).
    pub heliosdb_bin: Option<String>,
    /// The embedded HeliosDB's port (default: a free one).
    pub port: Option<u16>,
}

/// A key attribute with an optional declared type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyAttribute {
    /// Attribute name.
    pub name: String,
    /// Declared type, if given (`pk:S`).
    pub ddb_type: Option<DdbType>,
}

impl KeyAttribute {
    /// Parses `name` or `name:TYPE`.
    pub fn parse(spec: &str) -> Result<KeyAttribute> {
        let spec = spec.trim();
        let (name, ddb_type) = match spec.rsplit_once(':') {
            Some((name, ty)) if matches!(ty, "S" | "N" | "B") => {
                (name, DdbType::from_descriptor(ty))
            }
            Some((_, ty)) if ty.chars().all(|c| c.is_ascii_uppercase()) && !ty.is_empty() => {
                return Err(Error::Config(format!(
                    "key {spec:?}: type {ty:?} cannot be a key type (use S, N or B)"
                )))
            }
            _ => (spec, None),
        };
        if name.is_empty() {
            return Err(Error::Config(format!(
                "key {spec:?} has an empty attribute name"
            )));
        }
        Ok(KeyAttribute {
            name: name.to_string(),
            ddb_type,
        })
    }

    /// Parses a comma-separated list (`pk,sk` or `pk:S,sk:N`).
    pub fn parse_list(specs: &str) -> Result<Vec<KeyAttribute>> {
        specs
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(KeyAttribute::parse)
            .collect()
    }
}

/// Validated loading settings.
#[derive(Clone, Debug)]
pub struct LoadSettings {
    /// Input lines per committed chunk.
    pub chunk_lines: NonZeroU64,
    /// Lines per decode block.
    pub block_lines: NonZeroUsize,
    /// Blocks in flight per shard.
    pub pipeline_depth: NonZeroUsize,
    /// Rejects tolerated.
    pub max_rejects: u64,
    /// Concurrent shard loaders, when configured.
    pub workers: Option<NonZeroUsize>,
    /// Connection attempts.
    pub connect_attempts: u32,
    /// COPY format.
    pub copy_format: CopyFormat,
}

impl LoadSettings {
    /// Concurrent shard loaders: as configured, else a default measured per target with
    /// `ferry-bench`. PostgreSQL gains from one more loader than cores (the database, not
    /// decoding, is the bottleneck, and a loader waiting on a commit leaves its core to others);
    /// HeliosDB gains nothing from concurrent COPYs, so two (one loading while one decodes).
    pub fn workers_for(&self, concurrent_copy_helps: bool) -> usize {
        match self.workers {
            Some(workers) => workers.get(),
            None if concurrent_copy_helps => std::thread::available_parallelism()
                .map(|n| n.get() + 1)
                .unwrap_or(3),
            None => 2,
        }
    }
}

/// Validated mapping settings.
#[derive(Clone, Debug)]
pub struct MappingSettings {
    /// Key attributes (may be empty here; the CLI can supply them).
    pub key: Vec<KeyAttribute>,
    /// Target table override.
    pub table: Option<String>,
    /// Overflow column name.
    pub overflow_column: String,
    /// Nested JSON style.
    pub nested_json: NestedJson,
    /// Type mismatch policy.
    pub on_type_mismatch: OnTypeMismatch,
    /// Sample size for inference.
    pub sample_items: usize,
    /// Presence threshold for a typed column.
    pub min_presence: f64,
}

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `[load]`
    pub load: LoadSettings,
    /// `[mapping]`
    pub mapping: MappingSettings,
    /// `[target] url`
    pub target_url: Option<String>,
    /// `[target]` settings of the embedded default.
    pub embedded: EmbeddedSettings,
}

/// Where and how the embedded HeliosDB runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmbeddedSettings {
    /// Data folder.
    pub data_dir: std::path::PathBuf,
    /// Binary, when configured.
    pub heliosdb_bin: Option<std::path::PathBuf>,
    /// Port, when configured.
    pub port: Option<u16>,
}

impl Default for Settings {
    fn default() -> Self {
        RawConfig {
            version: 1,
            load: RawLoad::default(),
            mapping: RawMapping::default(),
            target: RawTarget::default(),
        }
        .validate_and_build()
        .expect("the defaults are valid")
    }
}

fn positive<T: TryInto<u64> + Copy>(value: T, key: &str) -> Result<()> {
    match value.try_into() {
        Ok(0) | Err(_) => Err(Error::Config(format!("{key} must be a positive number"))),
        Ok(_) => Ok(()),
    }
}

impl RawConfig {
    /// Checks every value and builds the settings. Does no IO.
    pub fn validate_and_build(self) -> Result<Settings> {
        if self.version != 1 {
            return Err(Error::Config(format!(
                "version {} is not supported (expected 1)",
                self.version
            )));
        }
        let load = self.load;
        positive(load.chunk_lines, "load.chunk_lines")?;
        positive(load.block_lines as u64, "load.block_lines")?;
        positive(load.pipeline_depth as u64, "load.pipeline_depth")?;
        if let Some(workers) = load.workers {
            positive(workers as u64, "load.workers")?;
        }
        let mapping = self.mapping;
        if !crate::ident::is_valid_column_name(&mapping.overflow_column) {
            return Err(Error::Config(format!(
                "mapping.overflow_column {:?} is not a usable column name (1 to 63 bytes)",
                mapping.overflow_column
            )));
        }
        if !(0.0..=1.0).contains(&mapping.min_presence) {
            return Err(Error::Config(
                "mapping.min_presence must be between 0 and 1".into(),
            ));
        }
        let key = mapping
            .key
            .iter()
            .map(|k| KeyAttribute::parse(k))
            .collect::<Result<Vec<_>>>()?;
        Ok(Settings {
            load: LoadSettings {
                chunk_lines: NonZeroU64::new(load.chunk_lines).expect("checked"),
                block_lines: NonZeroUsize::new(load.block_lines).expect("checked"),
                pipeline_depth: NonZeroUsize::new(load.pipeline_depth).expect("checked"),
                max_rejects: load.max_rejects,
                workers: load.workers.and_then(NonZeroUsize::new),
                connect_attempts: load.connect_attempts.max(1),
                copy_format: load.copy_format,
            },
            mapping: MappingSettings {
                key,
                table: mapping.table,
                overflow_column: mapping.overflow_column,
                nested_json: mapping.nested_json,
                on_type_mismatch: mapping.on_type_mismatch,
                sample_items: mapping.sample_items.max(1),
                min_presence: mapping.min_presence,
            },
            embedded: EmbeddedSettings {
                data_dir: self
                    .target
                    .data_dir
                    .unwrap_or_else(|| "ferry-data".into())
                    .into(),
                heliosdb_bin: self.target.heliosdb_bin.map(Into::into),
                port: self.target.port,
            },
            target_url: self.target.url,
        })
    }
}

/// Loads the settings from an optional TOML file and the process environment.
pub fn load_settings(file: Option<&Path>) -> Result<Settings> {
    load_settings_from(file, std::env::vars())
}

/// Loads the settings from an optional TOML file and the given environment (for tests).
pub fn load_settings_from(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Settings> {
    let mut builder = config::Config::builder();
    if let Some(path) = file {
        if !path.is_file() {
            return Err(Error::Config(format!(
                "config file {} does not exist",
                path.display()
            )));
        }
        builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
    }
    let overrides: HashMap<String, String> = env
        .into_iter()
        .filter_map(|(name, value)| {
            let rest = name.strip_prefix("FERRY_")?;
            let (section, key) = rest.split_once("__")?;
            let section = section.to_ascii_lowercase();
            SECTIONS
                .contains(&section.as_str())
                .then(|| (format!("FERRY_{}__{}", section, key), value))
        })
        .collect();
    builder = builder.add_source(
        config::Environment::with_prefix("FERRY")
            .prefix_separator("_")
            .separator("__")
            .try_parsing(true)
            .source(Some(overrides)),
    );
    let raw: RawConfig = builder
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| Error::Config(e.to_string()))?;
    raw.validate_and_build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let settings = Settings::default();
        assert_eq!(settings.load.chunk_lines.get(), 100_000);
        assert_eq!(settings.load.max_rejects, 0);
        assert_eq!(settings.mapping.overflow_column, "attrs");
    }

    #[test]
    fn file_then_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferry.toml");
        std::fs::write(
            &path,
            "version = 1\n[load]\nchunk_lines = 500\nmax_rejects = 3\n[mapping]\nkey = [\"PK:S\", \"SK\"]\nnested_json = \"dynamodb\"\n",
        )
        .unwrap();
        let env = vec![
            ("FERRY_LOAD__CHUNK_LINES".to_string(), "250".to_string()),
            (
                "FERRY_MAPPING__OVERFLOW_COLUMN".to_string(),
                "extra".to_string(),
            ),
            (
                "FERRY_FAILPOINTS".to_string(),
                "after_copy=exit".to_string(),
            ),
            ("FERRY_LOG".to_string(), "debug".to_string()),
        ];
        let settings = load_settings_from(Some(&path), env).unwrap();
        assert_eq!(settings.load.chunk_lines.get(), 250);
        assert_eq!(settings.load.max_rejects, 3);
        assert_eq!(settings.mapping.overflow_column, "extra");
        assert_eq!(settings.mapping.nested_json, NestedJson::Dynamodb);
        assert_eq!(
            settings.mapping.key,
            vec![
                KeyAttribute {
                    name: "PK".into(),
                    ddb_type: Some(DdbType::S)
                },
                KeyAttribute {
                    name: "SK".into(),
                    ddb_type: None
                }
            ]
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferry.toml");
        std::fs::write(&path, "[load]\nchunk_lnes = 5\n").unwrap();
        let err = load_settings_from(Some(&path), vec![])
            .unwrap_err()
            .to_string();
        assert!(err.contains("chunk_lnes"), "{err}");
        std::fs::write(&path, "[load]\nchunk_lines = 0\n").unwrap();
        let err = load_settings_from(Some(&path), vec![])
            .unwrap_err()
            .to_string();
        assert!(err.contains("load.chunk_lines"), "{err}");
        let err = load_settings_from(None, vec![("FERRY_LOAD__WORKERS".into(), "many".into())])
            .unwrap_err();
        assert!(err.to_string().contains("workers"), "{err}");
        assert!(load_settings_from(Some(&dir.path().join("missing.toml")), vec![]).is_err());
    }

    #[test]
    fn key_specs() {
        assert_eq!(
            KeyAttribute::parse_list("pk:S, sk:N").unwrap(),
            vec![
                KeyAttribute {
                    name: "pk".into(),
                    ddb_type: Some(DdbType::S)
                },
                KeyAttribute {
                    name: "sk".into(),
                    ddb_type: Some(DdbType::N)
                }
            ]
        );
        // A colon that is not a type stays in the name.
        assert_eq!(KeyAttribute::parse("a:b").unwrap().name, "a:b");
        assert!(KeyAttribute::parse("pk:SS").is_err());
    }
}
