//! `ferry-coordinator assess`: what is *in* an export, and what will not fit the target, before
//! a run starts. It reads the export (a sample, or every item with `--full`; a folder or S3; JSON
//! or Ion, as a run reads them), profiles every attribute ([`profile`]), checks the key, groups a
//! single-table design's items into entities by the patterns of their key values and finds
//! foreign-key candidates ([`entities`]), and lists what a run would reject, spill or do slowly,
//! each finding with counts, examples and what to do. The result prints as text or JSON, and as
//! one self-contained HTML page ([`report`]); `--draft` writes a config and DDL per target
//! ([`draft`]).
//!
//! Files are read in parallel (`--workers`), one line in memory at a time each; every per-file
//! profile is bounded (capped maps, a k-minimum-values distinct estimate, a key check over a
//! bounded, uniform share of the key space: [`profile::KeySample`]), and profiles are merged as
//! files finish; the key check is one for the whole pass, fed in batches by the files being
//! read, so memory does not grow with the export's size.

pub mod draft;
pub mod entities;
pub mod profile;
pub mod report;

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use ferry_shared::config::Settings;
use ferry_shared::manifest::DataFile;
use ferry_shared::schema::DdbType;
use ferry_shared::store::ObjectStore;
use futures_util::StreamExt;
use serde::Serialize;

use crate::{CoordinatorError, Result};
use entities::{Entity, ForeignKey};
use profile::{Origin, Profile};

/// PostgreSQL's largest B-tree index entry is about a third of an 8 KB page: keys over this many
/// bytes cannot be in a primary key there. DynamoDB allows 2,048 bytes of partition key and 1,024
/// of sort key.
pub const BTREE_KEY_BYTES: u64 = 2_700;
/// Items read for a key proposal when no key is given.
const KEY_PROPOSAL_ITEMS: usize = 10_000;
/// Attributes a proposed key is drawn from, at most (the most key-like by name).
const KEY_CANDIDATES: usize = 24;
/// Data files a sample is spread over, at most.
const SAMPLE_FILES: usize = 64;
/// Entities shown in the text (all are in `--json`).
const ENTITIES_SHOWN: usize = 20;
/// Attributes shown in the text (all are in `--json`).
const ATTRIBUTES_SHOWN: usize = 40;

/// What to assess.
#[derive(Clone, Debug)]
pub struct AssessRequest {
    /// The export (a folder or `s3://…`).
    pub export: String,
    /// The key attributes; `None` proposes one.
    pub keys: Option<Vec<String>>,
    /// Items to sample; `None` reads every item.
    pub sample: Option<usize>,
    /// Files read at once.
    pub workers: usize,
    /// Settings (AWS access).
    pub settings: Settings,
    /// Draw a progress bar (a terminal).
    pub progress_bar: bool,
}

/// One attribute in the assessment.
#[derive(Clone, Debug, Serialize)]
pub struct AttributeReport {
    /// Its name.
    pub name: String,
    /// Items holding it, and their share of all items.
    pub present: u64,
    /// The share.
    pub presence: f64,
    /// Items by DynamoDB type.
    pub types: Vec<(String, u64)>,
    /// Distinct values, estimated (exact under 1,024; about 3% off above).
    pub distinct: u64,
    /// Lengths of its strings, in characters.
    pub string_chars: Option<profile::Range>,
    /// Lengths of its binary values, in bytes.
    pub binary_bytes: Option<profile::Range>,
    /// Its numbers, when it has any.
    pub numbers: Option<NumbersReport>,
    /// Strings that read as ISO-8601 dates or times.
    pub iso8601: u64,
    /// Set sizes.
    pub set_sizes: Option<profile::Range>,
    /// The deepest nesting of maps and lists.
    pub max_depth: usize,
    /// Member paths inside its maps and lists, with the items holding each.
    pub paths: Vec<(String, u64)>,
}

impl AttributeReport {
    /// What its values showed, one phrase each (`3–40 chars`, `1..99, precision 2 scale 0,
    /// integers`, `sets of 1–5`), for the text and the HTML report.
    pub fn details(&self) -> Vec<String> {
        let mut detail = Vec::new();
        if let Some(r) = self.string_chars {
            detail.push(format!("{}–{} chars", r.min, r.max));
        }
        if self.iso8601 > 0 {
            detail.push(format!("{} ISO-8601", self.iso8601));
        }
        if let Some(n) = &self.numbers {
            detail.push(format!(
                "{}..{}, precision {} scale {}{}",
                n.min,
                n.max,
                n.max_precision,
                n.max_scale,
                if n.integers_only { ", integers" } else { "" }
            ));
            if n.beyond_decimal96 > 0 {
                detail.push(format!("{} beyond HeliosDB's decimal", n.beyond_decimal96));
            }
            if n.epoch_seconds > 0 {
                detail.push(format!("{} epoch seconds", n.epoch_seconds));
            }
            if n.epoch_millis > 0 {
                detail.push(format!("{} epoch milliseconds", n.epoch_millis));
            }
        }
        if let Some(r) = self.binary_bytes {
            detail.push(format!("{}–{} bytes", r.min, r.max));
        }
        if let Some(r) = self.set_sizes {
            detail.push(format!("sets of {}–{}", r.min, r.max));
        }
        if self.max_depth > 0 {
            detail.push(format!(
                "depth {}, {} paths",
                self.max_depth,
                self.paths.len()
            ));
        }
        detail
    }
}

/// An attribute's numbers.
#[derive(Clone, Debug, Serialize)]
pub struct NumbersReport {
    /// Numbers seen (N, and NS elements).
    pub count: u64,
    /// The smallest, exact.
    pub min: String,
    /// The largest, exact.
    pub max: String,
    /// The most digits of one.
    pub max_precision: usize,
    /// The most digits after the point.
    pub max_scale: usize,
    /// Whether every one is an integer.
    pub integers_only: bool,
    /// Integers that read as Unix seconds (2000–2100).
    pub epoch_seconds: u64,
    /// Integers that read as Unix milliseconds (2000–2100).
    pub epoch_millis: u64,
    /// Numbers HeliosDB's 96-bit NUMERIC cannot hold exactly.
    pub beyond_decimal96: u64,
}

/// The key check.
#[derive(Clone, Debug, Serialize)]
pub struct KeyReport {
    /// The key attributes.
    pub attributes: Vec<String>,
    /// Whether assess proposed them (no `--key`).
    pub proposed: bool,
    /// Each key attribute's types.
    pub types: Vec<(String, Vec<(String, u64)>)>,
    /// Items missing a key attribute (or holding one as a type no key can have).
    pub keyless: u64,
    /// Distinct keys checked for duplicates.
    pub checked: u64,
    /// The share of the key space checked (1: every key, exactly).
    pub share_checked: f64,
    /// Copies beyond the first among the keys checked.
    pub duplicates: u64,
    /// Examples: both places of a duplicate.
    pub duplicate_examples: Vec<String>,
    /// Bytes of the longest key.
    pub longest_bytes: u64,
}

/// One finding: what a run would reject, spill or do slowly, and what to do.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    /// A stable name (`numbers_beyond_decimal96`, …).
    pub kind: String,
    /// What was found.
    pub what: String,
    /// How many items or values.
    pub count: u64,
    /// Examples.
    pub examples: Vec<String>,
    /// What to do.
    pub advice: String,
}

/// Item sizes.
#[derive(Clone, Debug, Serialize)]
pub struct SizeReport {
    /// Items per bucket: `(upper bound in bytes, items)`, buckets doubling.
    pub buckets: Vec<(u64, u64)>,
    /// Mean bytes per item (its line).
    pub mean_bytes: f64,
    /// The largest items.
    pub largest: Vec<profile::LargeItem>,
}

/// The assessment of an export.
#[derive(Clone, Debug, Serialize)]
pub struct Assessment {
    /// The export.
    pub export: String,
    /// `sample` or `full`.
    pub mode: String,
    /// Data files in the export, and how many were read.
    pub files: usize,
    /// Files read.
    pub files_read: usize,
    /// Items per the manifest, when it says.
    pub manifest_items: Option<u64>,
    /// Items read.
    pub items: u64,
    /// Lines that did not parse.
    pub bad_lines: u64,
    /// Where, and why.
    pub bad_examples: Vec<profile::BadLine>,
    /// Seconds the pass took.
    pub seconds: f64,
    /// The key.
    pub key: Option<KeyReport>,
    /// Item sizes.
    pub sizes: SizeReport,
    /// Every attribute, most present first.
    pub attributes: Vec<AttributeReport>,
    /// Entities (single-table design), largest first.
    pub entities: Vec<Entity>,
    /// Foreign-key candidates.
    pub foreign_keys: Vec<ForeignKey>,
    /// What a run would reject, spill or do slowly.
    pub findings: Vec<Finding>,
    /// The draft config and DDL per target (single-table designs: one rule per entity).
    pub drafts: Vec<draft::Draft>,
}

/// Assesses the export.
pub async fn assess(request: &AssessRequest) -> Result<Assessment> {
    let started = Instant::now();
    let (opened, listing) = crate::plan::open_listing(&request.export, &request.settings).await?;
    let store = opened.store.clone();
    let files: Vec<DataFile> = listing
        .files
        .iter()
        .filter(|f| f.size > 0 && f.item_count != Some(0))
        .cloned()
        .collect();
    let keys = match &request.keys {
        Some(keys) => keys.clone(),
        None => propose_key(&store, &files).await?.unwrap_or_default(),
    };
    let (read, per_file): (Vec<DataFile>, Option<usize>) = match request.sample {
        Some(items) => {
            let read: Vec<DataFile> = files.iter().take(SAMPLE_FILES).cloned().collect();
            let per_file = items.div_ceil(read.len().max(1)).max(1);
            (read, Some(per_file))
        }
        None => (files.clone(), None),
    };
    let bar = progress_bar(request.progress_bar, &read, per_file);
    let keys_shared = Arc::new(keys.clone());
    let mut merged = Profile::default();
    // One key check for the whole pass, fed in batches by the files being read: its memory is
    // its cap however large the export and however many files are read at once.
    let key_check = Arc::new(std::sync::Mutex::new(profile::KeySample::default()));
    let workers = request.workers.max(1);
    let mut results = futures_util::stream::iter(read.iter().cloned().enumerate())
        .map(|(index, file)| {
            let store = store.clone();
            let keys = keys_shared.clone();
            let key_check = key_check.clone();
            async move { profile_file(store, index as u32, file, per_file, keys, key_check).await }
        })
        .buffer_unordered(workers);
    let mut last_log = Instant::now();
    let mut unreadable = Vec::new();
    while let Some(result) = results.next().await {
        let (profile, bytes) = match result {
            Ok(done) => done,
            // A run would fail this shard with the same message: a finding, and the rest goes on.
            Err(e) => {
                unreadable.push(e.to_string());
                continue;
            }
        };
        bar.inc(if per_file.is_some() {
            profile.items
        } else {
            bytes
        });
        merged.merge(profile);
        if bar.is_hidden() && last_log.elapsed().as_secs() >= 10 {
            last_log = Instant::now();
            tracing::info!(items = merged.items, "assessing");
        }
    }
    if !bar.is_hidden() {
        ferry_shared::telemetry::set_around_bar(None);
    }
    bar.finish_and_clear();
    drop(results);
    merged.keys = std::mem::take(
        &mut *key_check
            .lock()
            .map_err(|_| CoordinatorError::Invalid("assess: a file's task died".into()))?,
    );
    let names: Vec<String> = read.iter().map(|f| store.location(&f.key)).collect();
    let mut assessment = build(
        request,
        &listing,
        files.len(),
        &names,
        &keys,
        merged,
        started.elapsed().as_secs_f64(),
    );
    if !unreadable.is_empty() {
        assessment.findings.insert(
            0,
            Finding {
                kind: "unreadable_files".into(),
                what: "data files that cannot be read to the end (their items are not in this profile)".into(),
                count: unreadable.len() as u64,
                examples: unreadable.into_iter().take(profile::EXAMPLES).collect(),
                advice: "a run fails these shards and names them; replace the files (a new export) and `reset` the shards"
                    .into(),
            },
        );
    }
    Ok(assessment)
}

fn progress_bar(draw: bool, read: &[DataFile], per_file: Option<usize>) -> indicatif::ProgressBar {
    if !draw {
        return indicatif::ProgressBar::hidden();
    }
    let (total, template) = match per_file {
        Some(per_file) => (
            (per_file * read.len()) as u64,
            "{spinner} [{elapsed_precise}] assess (sample) {wide_bar} {human_pos}/{human_len} items",
        ),
        None => (
            read.iter().map(|f| f.size).sum(),
            "{spinner} [{elapsed_precise}] assess {wide_bar} {binary_bytes}/{binary_total_bytes}, ETA {eta}",
        ),
    };
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total),
        indicatif::ProgressDrawTarget::stderr(),
    );
    bar.set_style(
        indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    crate::migrate::logs_above(&bar);
    bar
}

/// Lines whose keys a file gathers before it hands them to the pass's key check.
const KEY_BATCH: u64 = 4_096;

/// Profiles one data file (its first `per_file` items, or all): the profile and the stored bytes.
/// Its keys go to `key_check`, every [`KEY_BATCH`] lines and at the end.
async fn profile_file(
    store: Arc<dyn ObjectStore>,
    index: u32,
    file: DataFile,
    per_file: Option<usize>,
    keys: Arc<Vec<String>>,
    key_check: Arc<std::sync::Mutex<profile::KeySample>>,
) -> Result<(Profile, u64)> {
    let stream = store.open(&file.key).await?;
    let raw = ferry_worker::source::blocking_reader(stream);
    let location = store.location(&file.key);
    tokio::task::spawn_blocking(move || {
        let mut profile = Profile::default();
        let limit = per_file.unwrap_or(usize::MAX) as u64;
        // Hands the batch over, and takes the check's threshold back (keys above it are dropped
        // at once).
        let hand_over = |batch: &mut profile::KeySample| {
            if let Ok(mut check) = key_check.lock() {
                check.merge(std::mem::take(batch));
                batch.lower_threshold(check.threshold());
            }
        };
        let read = ferry_worker::source::for_each_line(raw, &location, |line_no, line| {
            if line_no % KEY_BATCH == 0 {
                hand_over(&mut profile.keys);
            }
            let origin = Origin {
                file: index,
                line: line_no,
            };
            profile.add_line(line, origin, || format!("{location}:{line_no}"), &keys);
            profile.items + profile.bad_lines < limit
        });
        // A file cut short still hands over the keys it read: they are the export's, and a
        // duplicate among them is one.
        hand_over(&mut profile.keys);
        read?;
        Ok((profile, file.size))
    })
    .await
    .map_err(|e| CoordinatorError::Invalid(format!("assess task died: {e}")))?
}

/// A key when none is given: among the attributes every sampled item holds as a string, number
/// or binary, one that is unique in the sample, else a pair (partition-key-like names first,
/// then sort-key-like ones). `None` when no such key exists in the sample.
async fn propose_key(
    store: &Arc<dyn ObjectStore>,
    files: &[DataFile],
) -> Result<Option<Vec<String>>> {
    let mut stats = crate::infer::SampleStats::default();
    let read: Vec<DataFile> = files.iter().take(SAMPLE_FILES).cloned().collect();
    let per_file = KEY_PROPOSAL_ITEMS.div_ceil(read.len().max(1)).max(1);
    for file in read {
        let stream = store.open(&file.key).await?;
        let raw = ferry_worker::source::blocking_reader(stream);
        let location = store.location(&file.key);
        let lines = tokio::task::spawn_blocking(move || {
            ferry_worker::source::sample_lines(
                raw,
                &location,
                per_file,
                ferry_worker::source::MAX_SAMPLE_BYTES,
            )
        })
        .await
        .map_err(|e| CoordinatorError::Invalid(format!("assess task died: {e}")))??;
        for line in &lines {
            stats.add_line(line);
        }
    }
    Ok(key_from_sample(&stats))
}

/// The key [`propose_key`] picks from a sample's statistics.
pub fn key_from_sample(stats: &crate::infer::SampleStats) -> Option<Vec<String>> {
    use std::collections::HashSet;
    // Key-like names first: exact partition-key names, exact sort-key names, then names that
    // only contain one (`GSI1PK` is an index's key, not the table's), then the rest.
    let rank = |name: &str| {
        let lower = name.to_ascii_lowercase();
        let pk = ["pk", "id", "partition_key", "hash_key", "partitionkey"];
        let sk = ["sk", "sort_key", "range_key", "sortkey"];
        if pk.contains(&lower.as_str()) {
            0
        } else if sk.contains(&lower.as_str()) {
            1
        } else if ["pk", "id", "partition", "hash"]
            .iter()
            .any(|p| lower.contains(p))
        {
            2
        } else if ["sk", "sort", "range"].iter().any(|s| lower.contains(s)) {
            3
        } else {
            4
        }
    };
    let mut candidates: Vec<&str> = stats
        .attributes
        .iter()
        .filter(|(_, a)| {
            stats.items > 0 && a.present == stats.items && a.types.keys().all(|t| t.is_key_type())
        })
        .map(|(name, _)| name.as_str())
        .collect();
    candidates.sort_by_key(|name| (rank(name), name.to_string()));
    // Pairs of the most key-like only: their number grows as the square.
    candidates.truncate(KEY_CANDIDATES);
    let value_of = |item: &Vec<(String, u64)>, name: &str| {
        item.binary_search_by(|(n, _)| n.as_str().cmp(name))
            .ok()
            .map(|at| item[at].1)
    };
    let unique = |names: &[&str]| {
        let mut seen = HashSet::new();
        stats.keyable.iter().all(|item| {
            let tuple: Option<Vec<u64>> = names.iter().map(|n| value_of(item, n)).collect();
            tuple.is_some_and(|t| seen.insert(t))
        })
    };
    // Every single attribute and pair, key-like names first (the sum of their ranks), fewer
    // attributes first on a tie: the first unique one.
    let mut keys: Vec<(usize, Vec<&str>)> = Vec::new();
    for (i, first) in candidates.iter().enumerate() {
        keys.push((rank(first), vec![first]));
        for second in &candidates[i + 1..] {
            keys.push((rank(first) + rank(second), vec![first, second]));
        }
    }
    keys.sort_by_key(|(score, names)| (*score, names.len()));
    keys.into_iter()
        .find(|(_, names)| unique(names))
        .map(|(_, names)| names.into_iter().map(str::to_string).collect())
}

fn type_counts(types: &std::collections::BTreeMap<DdbType, u64>) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = types
        .iter()
        .map(|(t, n)| (t.descriptor().to_string(), *n))
        .collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out
}

fn build(
    request: &AssessRequest,
    listing: &ferry_shared::manifest::ExportListing,
    files: usize,
    names: &[String],
    keys: &[String],
    profile: Profile,
    seconds: f64,
) -> Assessment {
    let place = |origin: Origin| {
        format!(
            "{}:{}",
            names.get(origin.file as usize).map_or("?", String::as_str),
            origin.line
        )
    };
    let found_entities = if keys.is_empty() {
        Vec::new()
    } else {
        entities::entities(&profile)
    };
    let foreign_keys = entities::foreign_keys(&profile, &found_entities, keys);
    let key = (!keys.is_empty()).then(|| KeyReport {
        attributes: keys.to_vec(),
        proposed: request.keys.is_none(),
        types: keys
            .iter()
            .map(|k| {
                let types = profile
                    .attributes
                    .get(k)
                    .map(|a| type_counts(&a.types))
                    .unwrap_or_default();
                (k.clone(), types)
            })
            .collect(),
        keyless: profile.keyless,
        checked: profile.keys.checked(),
        share_checked: profile.keys.share_checked(),
        duplicates: profile.keys.duplicate_count(),
        duplicate_examples: profile
            .keys
            .duplicates
            .iter()
            .map(|(a, b)| format!("{} and {}", place(*a), place(*b)))
            .collect(),
        longest_bytes: profile.longest_key_bytes,
    });
    let mut attributes: Vec<AttributeReport> = profile
        .attributes
        .iter()
        .map(|(name, a)| {
            let n = &a.numbers;
            let mut paths: Vec<(String, u64)> =
                a.paths.iter().map(|(p, c)| (p.clone(), *c)).collect();
            paths.sort_by(|x, y| y.1.cmp(&x.1).then_with(|| x.0.cmp(&y.0)));
            AttributeReport {
                name: name.clone(),
                present: a.present,
                presence: a.present as f64 / profile.items.max(1) as f64,
                types: type_counts(&a.types),
                distinct: a.distinct.estimate(),
                string_chars: a.string_chars,
                binary_bytes: a.binary_bytes,
                numbers: (n.count > 0).then(|| NumbersReport {
                    count: n.count,
                    min: n.min.as_ref().map(ToString::to_string).unwrap_or_default(),
                    max: n.max.as_ref().map(ToString::to_string).unwrap_or_default(),
                    max_precision: n.max_precision,
                    max_scale: n.max_scale,
                    integers_only: n.fractional == 0,
                    epoch_seconds: n.epoch_seconds,
                    epoch_millis: n.epoch_millis,
                    beyond_decimal96: n.beyond_decimal96,
                }),
                iso8601: a.iso8601,
                set_sizes: a.set_sizes,
                max_depth: a.max_depth,
                paths,
            }
        })
        .collect();
    attributes.sort_by(|a, b| b.present.cmp(&a.present).then_with(|| a.name.cmp(&b.name)));
    let findings = findings(&profile, keys, &attributes, &found_entities, &place);
    let mode = if request.sample.is_some() {
        "sample"
    } else {
        "full"
    };
    let drafts = if found_entities.is_empty() {
        Vec::new()
    } else {
        draft::drafts(&profile, &found_entities, &foreign_keys, keys, mode)
    };
    let buckets = profile
        .size_buckets
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(i, n)| (1u64 << i, *n))
        .collect();
    Assessment {
        export: listing.location.clone(),
        mode: mode.into(),
        files,
        files_read: names.len(),
        manifest_items: listing.manifest_items(),
        items: profile.items,
        bad_lines: profile.bad_lines,
        bad_examples: profile.bad_examples.clone(),
        seconds,
        key,
        sizes: SizeReport {
            buckets,
            mean_bytes: profile.item_bytes as f64 / profile.items.max(1) as f64,
            largest: profile.largest.clone(),
        },
        attributes,
        entities: found_entities,
        foreign_keys,
        findings,
        drafts,
    }
}

/// Attribute names HeliosDB handles badly as column names: not plain ASCII, or with a dot.
fn awkward_name(name: &str) -> bool {
    !name.is_ascii() || name.contains('.')
}

fn findings(
    profile: &Profile,
    keys: &[String],
    attributes: &[AttributeReport],
    entities: &[Entity],
    place: &dyn Fn(Origin) -> String,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut push = |kind: &str, what: String, count: u64, examples: Vec<String>, advice: &str| {
        if count > 0 {
            out.push(Finding {
                kind: kind.into(),
                what,
                count,
                examples,
                advice: advice.into(),
            });
        }
    };
    push(
        "bad_lines",
        "lines that are not DynamoDB JSON or Ion items".into(),
        profile.bad_lines,
        profile
            .bad_examples
            .iter()
            .map(|b| format!("{}: {}", b.location, b.reason))
            .collect(),
        "a run rejects them into ferry.rejects (load.max_rejects bounds how many it accepts)",
    );
    if let Some(first) = keys.first() {
        push(
            "keyless_items",
            format!(
                "items without the key ({}) as a string, number or binary",
                keys.join(", ")
            ),
            profile.keyless,
            profile.keyless_examples.clone(),
            "a run rejects them; check --key against the table's KeySchema",
        );
        let duplicates = profile.keys.duplicate_count();
        push(
            "duplicate_keys",
            format!(
                "items repeating another's key ({}) among the {:.0}% of keys checked",
                keys.join(", "),
                profile.keys.share_checked() * 100.0
            ),
            duplicates,
            profile
                .keys
                .duplicates
                .iter()
                .map(|(a, b)| format!("{} and {}", place(*a), place(*b)))
                .collect(),
            "the key is not the table's key: every shard holding a duplicate fails; pass the full key (--key PK,SK)",
        );
        push(
            "long_keys",
            format!("keys over PostgreSQL's B-tree entry limit (about {BTREE_KEY_BYTES} bytes)"),
            profile.long_keys,
            profile.long_key_examples.clone(),
            "PostgreSQL cannot index them in the primary key: load them into a table keyed by a hash of the key, or route those items elsewhere",
        );
        if keys.len() > 1 {
            push(
                "composite_key",
                format!("a composite key ({}): catch-up deletes match it column by column", keys.join(", ")),
                1,
                vec![format!("{first} + {}", keys[1..].join(" + "))],
                "on HeliosDB 4.41 a catch-up's deletes scan the table per window; on PostgreSQL they use the primary key",
            );
        }
    }
    for a in attributes {
        if let Some(n) = &a.numbers {
            let examples = profile.attributes[&a.name].numbers.beyond_examples.clone();
            push(
                "numbers_beyond_decimal96",
                format!("{:?}: numbers HeliosDB's 96-bit NUMERIC cannot hold exactly", a.name),
                n.beyond_decimal96,
                examples,
                "on HeliosDB they go to the overflow column as exact JSON text (or are rejected with on_type_mismatch = \"reject\"); PostgreSQL's NUMERIC holds them",
            );
            let epoch = n.epoch_seconds.max(n.epoch_millis);
            let ttl_named = [
                "ttl",
                "expire",
                "expires",
                "expires_at",
                "expiry",
                "expiration",
            ]
            .iter()
            .any(|t| a.name.to_ascii_lowercase().contains(t));
            if ttl_named && epoch * 10 >= n.count * 9 {
                push(
                    "ttl_attribute",
                    format!("{:?} looks like a TTL attribute (epoch {})", a.name, if n.epoch_seconds >= n.epoch_millis { "seconds" } else { "milliseconds" }),
                    epoch,
                    vec![format!("{} to {}", n.min, n.max)],
                    "DynamoDB deletes expired items in the background, so the export may hold items already expired: filter them with a routing filter or a post-load DELETE, and keep the column as a number (or add a timestamptz column with a transform)",
                );
            }
        }
        if awkward_name(&a.name) {
            push(
                "awkward_name",
                format!("{:?}: a name with a dot or non-ASCII characters", a.name),
                a.present,
                vec![a.name.clone()],
                "HeliosDB cannot read such a column back: Ferry keeps the attribute in the overflow column there; rename it with a routing column mapping to type it",
            );
        }
        let scalar_types = a.types.len();
        if scalar_types > 1 && !keys.contains(&a.name) {
            let (main, main_n) = &a.types[0];
            push(
                "varying_type",
                format!(
                    "{:?} takes {} types ({})",
                    a.name,
                    scalar_types,
                    a.types
                        .iter()
                        .map(|(t, n)| format!("{t} {n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                a.present - main_n,
                vec![format!("mostly {main}")],
                "in table mode its column takes the main type and the other values spill to the overflow column under its name (counted as spilled; on_type_mismatch = \"reject\" rejects the item instead); if each entity holds one type, routing gives each entity its own column",
            );
        }
    }
    push(
        "too_many_attribute_names",
        format!(
            "values of attributes beyond the first {} names (attribute names used as data?)",
            profile::MAX_ATTRIBUTES
        ),
        profile.unprofiled_values,
        Vec::new(),
        "they are not profiled; a run puts attributes without a column in the overflow (rest) column, one JSON key each",
    );
    let rare: Vec<&Entity> = entities
        .iter()
        .filter(|e| e.share < 0.001 && e.items < 100)
        .collect();
    push(
        "rare_key_patterns",
        "key patterns held by very few items (test data, or items a routing config would not route)".into(),
        rare.iter().map(|e| e.items).sum(),
        rare.iter()
            .take(profile::EXAMPLES)
            .map(|e| format!("{} ({} items, e.g. {})", e.key_patterns.join(" / "), e.items, e.example.join(" / ")))
            .collect(),
        "route them to a table of their own, filter them out, or let routing.unmatched = \"reject\" record them",
    );
    out
}

impl Assessment {
    /// The terminal summary.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "export  {}", self.export);
        let _ = writeln!(
            out,
            "read    {} items ({}) from {} of {} data files in {:.1} s{}",
            self.items,
            self.mode,
            self.files_read,
            self.files,
            self.seconds,
            self.manifest_items
                .map(|n| format!("; the manifest says {n}"))
                .unwrap_or_default()
        );
        let _ = writeln!(
            out,
            "size    {:.0} bytes per item on average; largest {}",
            self.sizes.mean_bytes,
            self.sizes
                .largest
                .first()
                .map(|l| format!("{} bytes ({}, {})", l.bytes, l.key, l.location))
                .unwrap_or_else(|| "-".into())
        );
        match &self.key {
            Some(key) => {
                let _ = writeln!(
                    out,
                    "key     {}{}: {} duplicate{} among {} keys checked ({:.0}% of the key space), longest {} bytes",
                    key.attributes.join(", "),
                    if key.proposed { " (proposed: pass --key to choose)" } else { "" },
                    key.duplicates,
                    if key.duplicates == 1 { "" } else { "s" },
                    key.checked,
                    key.share_checked * 100.0,
                    key.longest_bytes
                );
            }
            None => {
                let _ = writeln!(out, "key     none found unique in the sample: pass --key");
            }
        }
        if !self.entities.is_empty() {
            let _ = writeln!(out, "\nentities (by key pattern)");
            for e in self.entities.iter().take(ENTITIES_SHOWN) {
                let attributes: Vec<&str> = e
                    .attributes
                    .iter()
                    .take(8)
                    .map(|(a, _)| a.as_str())
                    .collect();
                let _ = writeln!(
                    out,
                    "  {:<16} {:>10} items {:>6.2}%  {:<32} {}{}",
                    e.name,
                    e.items,
                    e.share * 100.0,
                    e.key_patterns.join(" / "),
                    attributes.join(", "),
                    if e.attributes.len() > 8 { ", …" } else { "" }
                );
            }
            if self.entities.len() > ENTITIES_SHOWN {
                let _ = writeln!(
                    out,
                    "  … {} entities in all (--json lists them)",
                    self.entities.len()
                );
            }
        }
        for fk in &self.foreign_keys {
            let _ = writeln!(
                out,
                "  reference: {}.{} holds {} keys ({}, {:.0}% of its values)",
                fk.in_entities.join("/"),
                fk.attribute,
                fk.references,
                fk.pattern,
                fk.share * 100.0
            );
        }
        let _ = writeln!(out, "\nattributes");
        for a in self.attributes.iter().take(ATTRIBUTES_SHOWN) {
            let types: Vec<String> = a.types.iter().map(|(t, n)| format!("{t} {n}")).collect();
            let detail = a.details();
            let _ = writeln!(
                out,
                "  {:<24} {:>6.2}%  ~{:<9} {:<16} {}",
                a.name,
                a.presence * 100.0,
                a.distinct,
                types.join(" "),
                detail.join("; ")
            );
        }
        if self.attributes.len() > ATTRIBUTES_SHOWN {
            let _ = writeln!(
                out,
                "  … {} attributes in all (--json lists them)",
                self.attributes.len()
            );
        }
        let _ = writeln!(out, "\nfindings");
        if self.findings.is_empty() {
            let _ = writeln!(out, "  none: nothing here a run would reject or spill");
        }
        for f in &self.findings {
            let _ = writeln!(out, "  {} ({}): {}", f.kind, f.count, f.what);
            for example in &f.examples {
                let _ = writeln!(out, "      e.g. {example}");
            }
            let _ = writeln!(out, "      → {}", f.advice);
        }
        for d in &self.drafts {
            let _ = writeln!(
                out,
                "\ndraft for {:?}: {} routing rules ({} lines of config; --draft DIR writes it){}",
                d.target,
                d.config.matches("[[routing.rules]]").count(),
                d.config.lines().count(),
                if d.notes.is_empty() {
                    String::new()
                } else {
                    format!(", {} notes", d.notes.len())
                }
            );
            for note in d.notes.iter().take(5) {
                let _ = writeln!(out, "  note: {note}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proposed_key_is_the_tables_not_an_indexs() {
        let mut stats = crate::infer::SampleStats::default();
        for user in 0..50 {
            for order in 0..3 {
                let line = format!(
                    r#"{{"Item":{{"GSI1PK":{{"S":"G#{user}-{order}"}},"PK":{{"S":"USER#{user}"}},"SK":{{"S":"ORDER#{order}"}},"total":{{"N":"{order}"}}}}}}"#
                );
                stats.add_line(line.as_bytes());
            }
        }
        // GSI1PK alone is unique too, but PK, SK is the table's key by its names.
        assert_eq!(
            key_from_sample(&stats),
            Some(vec!["PK".to_string(), "SK".to_string()])
        );
        let mut single = crate::infer::SampleStats::default();
        for id in 0..20 {
            single.add_line(
                format!(r#"{{"Item":{{"id":{{"N":"{id}"}},"kind":{{"S":"a"}}}}}}"#).as_bytes(),
            );
        }
        assert_eq!(key_from_sample(&single), Some(vec!["id".to_string()]));
    }
}
