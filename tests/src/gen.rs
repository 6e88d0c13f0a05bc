//! Deterministic synthetic DynamoDB "export to S3" generator.
//!
//! Owns the on-disk shape of a fake full export (`_started`, `manifest-summary.json`,
//! `manifest-files.json`, their `.md5`/`.checksum` files and gzip JSON Lines data files),
//! laid out exactly as DynamoDB writes it (see `shared/docs/dynamodb-export-format.md` §1–2).
//! Items follow a realistic single-table design (users, orders, products, reviews) plus
//! optional edge-case items. Output is a pure function of [`GenOptions`]: the same seed gives
//! byte-identical files on any platform. Items are streamed to disk as they are generated, so
//! exports of millions of items never sit in memory.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use flate2::write::GzEncoder;
use flate2::Compression;
use md5::{Digest, Md5};

/// Gzip level used for data files: fast, the generator feeds benchmarks.
const GZIP_LEVEL: u32 = 1;
/// Items are buffered up to this many bytes before going to the gzip encoder.
const CHUNK_BYTES: usize = 256 * 1024;
/// Account and region baked into the ARNs.
const ARN_PREFIX: &str = "arn:aws:dynamodb:us-east-1:111122223333:table/";
/// Bucket name written into `manifest-summary.json`.
const BUCKET: &str = "ferry-test-exports";
/// Epoch millis used for `exportTime` when the export id does not start with one.
const FALLBACK_EXPORT_MS: u64 = 1_700_000_000_000;

/// Name of the checksum files next to the manifests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ChecksumExt {
    /// `manifest-*.md5`, what real exports contain.
    #[default]
    Md5,
    /// `manifest-*.checksum`, what the AWS docs describe.
    Checksum,
}

impl ChecksumExt {
    /// File extension without the dot.
    pub fn ext(self) -> &'static str {
        match self {
            ChecksumExt::Md5 => "md5",
            ChecksumExt::Checksum => "checksum",
        }
    }
}

/// What to generate; see the field docs for defaults.
#[derive(Clone, Debug)]
pub struct GenOptions {
    /// PRNG seed; same seed and options give byte-identical output.
    pub seed: u64,
    /// Total real items across all data files (edge-case items included).
    pub items: u64,
    /// Number of data files the items are spread over (roughly even). If `items < files`
    /// some of them hold no item.
    pub files: usize,
    /// Table name, goes into `tableArn`. Default `AppTable`.
    pub table_name: String,
    /// Export id, last segment of `exportArn`. Default `01700000000000-0a1b2c3d`.
    pub export_id: String,
    /// S3 prefix above `AWSDynamoDB/`. Default `Some("exports/app")`; `None` puts the export
    /// at the bucket root.
    pub s3_prefix: Option<String>,
    /// Name of the manifest checksum files. Default [`ChecksumExt::Md5`].
    pub checksum_ext: ChecksumExt,
    /// Extra data files that are 0 bytes long (itemCount 0).
    pub zero_byte_files: usize,
    /// Extra data files that are a valid, empty gzip member (itemCount 0).
    pub empty_gzip_files: usize,
    /// Default true; false writes only `data/*.json.gz` (no manifests, no `_started`).
    pub write_manifest: bool,
    /// Default true: the first items are the edge-case items (`PK=EDGE#<k>`).
    pub edge_cases: bool,
}

impl GenOptions {
    /// `items` items over `files` data files from `seed`, every other option the default.
    pub fn sized(seed: u64, items: u64, files: usize) -> GenOptions {
        GenOptions {
            seed,
            items,
            files,
            ..GenOptions::default()
        }
    }
}

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions {
            seed: 42,
            items: 1000,
            files: 4,
            table_name: "AppTable".to_string(),
            export_id: "01700000000000-0a1b2c3d".to_string(),
            s3_prefix: Some("exports/app".to_string()),
            checksum_ext: ChecksumExt::Md5,
            zero_byte_files: 0,
            empty_gzip_files: 0,
            write_manifest: true,
            edge_cases: true,
        }
    }
}

/// A generated export on disk.
#[derive(Clone, Debug)]
pub struct GeneratedExport {
    /// The folder the caller passed (the "bucket root").
    pub root: PathBuf,
    /// `root/<prefix>/AWSDynamoDB/<export_id>`.
    pub export_dir: PathBuf,
    /// Sum of the data files' item counts.
    pub total_items: u64,
    /// Data files in manifest order.
    pub data_files: Vec<GeneratedFile>,
    /// Table name used in the ARNs.
    pub table_name: String,
    /// Export id used in the ARN and the folder name.
    pub export_id: String,
    /// Normalised prefix (no leading/trailing `/`, `None` when empty).
    pub s3_prefix: Option<String>,
    /// Name of the manifest checksum files.
    pub checksum_ext: ChecksumExt,
    /// Whether manifests were written (false for `write_manifest: false`).
    pub has_manifest: bool,
}

/// One data file of a generated export.
#[derive(Clone, Debug)]
pub struct GeneratedFile {
    /// Path on disk.
    pub path: PathBuf,
    /// Full key from the bucket root, as written in `dataFileS3Key`.
    pub key: String,
    /// Items (lines) in the file, as written in the manifest.
    pub item_count: u64,
    /// Size of the file (compressed bytes) when generated.
    pub bytes: u64,
}

impl GeneratedExport {
    /// Full key of `manifest-files.json`.
    pub fn manifest_files_key(&self) -> String {
        format!(
            "{}/manifest-files.json",
            key_base(self.s3_prefix.as_deref(), &self.export_id)
        )
    }

    /// Full key of `manifest-summary.json`.
    pub fn manifest_summary_key(&self) -> String {
        format!(
            "{}/manifest-summary.json",
            key_base(self.s3_prefix.as_deref(), &self.export_id)
        )
    }

    /// `arn:aws:dynamodb:…:table/<table_name>`.
    pub fn table_arn(&self) -> String {
        format!("{ARN_PREFIX}{}", self.table_name)
    }

    /// `tableArn` + `/export/<export_id>`.
    pub fn export_arn(&self) -> String {
        format!("{}/export/{}", self.table_arn(), self.export_id)
    }
}

// ---------------------------------------------------------------------------------------------
// PRNG
// ---------------------------------------------------------------------------------------------

/// Tiny splitmix64 PRNG: deterministic on every platform, good enough for test data.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`0` when `n == 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// A random element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }

    /// A random element of a non-empty list of strings.
    pub fn pick_str(&mut self, xs: &[&'static str]) -> &'static str {
        xs[self.below(xs.len() as u64) as usize]
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// JSON writing helpers (by hand, for speed)
// ---------------------------------------------------------------------------------------------

/// Appends `s` as a JSON string literal (quotes included) with correct escaping.
pub fn push_json_str(b: &mut String, s: &str) {
    b.push('"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &c) in bytes.iter().enumerate() {
        let esc: &str = match c {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        // Escaped bytes are ASCII, so `i` is a char boundary.
        b.push_str(&s[start..i]);
        if esc.is_empty() {
            let _ = write!(b, "\\u{:04x}", c);
        } else {
            b.push_str(esc);
        }
        start = i + 1;
    }
    b.push_str(&s[start..]);
    b.push('"');
}

/// Writes `,"name":` (or without the comma for the first member of an object).
fn key(b: &mut String, first: bool, name: &str) {
    if !first {
        b.push(',');
    }
    push_json_str(b, name);
    b.push(':');
}

fn v_s(b: &mut String, v: &str) {
    b.push_str("{\"S\":");
    push_json_str(b, v);
    b.push('}');
}

/// `{"N":"<v>"}`; `v` must already be a valid number literal.
fn v_n(b: &mut String, v: &str) {
    b.push_str("{\"N\":\"");
    b.push_str(v);
    b.push_str("\"}");
}

fn v_int(b: &mut String, v: i64) {
    let _ = write!(b, "{{\"N\":\"{v}\"}}");
}

fn v_cents(b: &mut String, cents: i64) {
    b.push_str("{\"N\":\"");
    push_cents(b, cents);
    b.push_str("\"}");
}

fn v_b(b: &mut String, bytes: &[u8]) {
    b.push_str("{\"B\":\"");
    B64.encode_string(bytes, b);
    b.push_str("\"}");
}

fn v_bool(b: &mut String, v: bool) {
    b.push_str(if v {
        "{\"BOOL\":true}"
    } else {
        "{\"BOOL\":false}"
    });
}

fn v_null(b: &mut String) {
    b.push_str("{\"NULL\":true}");
}

fn v_ss(b: &mut String, vs: &[&str]) {
    b.push_str("{\"SS\":[");
    for (i, v) in vs.iter().enumerate() {
        if i > 0 {
            b.push(',');
        }
        push_json_str(b, v);
    }
    b.push_str("]}");
}

fn v_ns(b: &mut String, vs: &[String]) {
    b.push_str("{\"NS\":[");
    for (i, v) in vs.iter().enumerate() {
        if i > 0 {
            b.push(',');
        }
        b.push('"');
        b.push_str(v);
        b.push('"');
    }
    b.push_str("]}");
}

fn v_bs(b: &mut String, vs: &[Vec<u8>]) {
    b.push_str("{\"BS\":[");
    for (i, v) in vs.iter().enumerate() {
        if i > 0 {
            b.push(',');
        }
        b.push('"');
        B64.encode_string(v, b);
        b.push('"');
    }
    b.push_str("]}");
}

/// A DynamoDB-normalised decimal with at most 2 fraction digits (no trailing zeros, no `-0`).
fn push_cents(b: &mut String, cents: i64) {
    if cents < 0 {
        b.push('-');
    }
    let c = cents.unsigned_abs();
    let (int, frac) = (c / 100, c % 100);
    let _ = write!(b, "{int}");
    if frac != 0 {
        if frac % 10 == 0 {
            let _ = write!(b, ".{}", frac / 10);
        } else {
            let _ = write!(b, ".{frac:02}");
        }
    }
}

/// A DynamoDB-normalised decimal with at most 1 fraction digit.
fn tenths(t: u64) -> String {
    if t % 10 == 0 {
        format!("{}", t / 10)
    } else {
        format!("{}.{}", t / 10, t % 10)
    }
}

// ---------------------------------------------------------------------------------------------
// Item content
// ---------------------------------------------------------------------------------------------

const FIRST_NAMES: &[&str] = &[
    "Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy", "Mallory",
    "Niaj", "Olivia", "Peggy", "Rupert", "Sybil", "Trent", "Victor", "Walter", "Yuki",
];
const LAST_NAMES: &[&str] = &[
    "Smith",
    "García",
    "Müller",
    "Østergaard",
    "Nakamura",
    "O'Brien",
    "Kowalski",
    "Dubois",
    "Rossi",
    "Ivanova",
    "Chen",
    "Okafor",
    "Silva",
    "Jensen",
    "Novák",
    "Haddad",
];
const TAGS: &[&str] = &[
    "vip",
    "beta",
    "newsletter",
    "early-adopter",
    "b2b",
    "churn-risk",
    "staff",
];
const THEMES: &[&str] = &["light", "dark", "solarized", "high-contrast"];
const PERIODS: &[&str] = &["daily", "weekly", "monthly"];
const ORDER_STATUSES: &[&str] = &["pending", "processing", "shipped", "delivered", "cancelled"];
const STREETS: &[&str] = &[
    "Main St",
    "Oak Ave",
    "Rue de la Paix",
    "Königstraße",
    "Elm Rd",
    "Baker St",
];
const CITIES: &[&str] = &[
    "Springfield",
    "Paris",
    "München",
    "Tokyo",
    "Lisbon",
    "Toronto",
    "Oslo",
];
const ADJECTIVES: &[&str] = &[
    "Ergonomic",
    "Rustic",
    "Sleek",
    "Durable",
    "Compact",
    "Deluxe",
    "Smart",
];
const NOUNS: &[&str] = &[
    "Chair", "Lamp", "Keyboard", "Backpack", "Kettle", "Monitor", "Desk", "Mug",
];
const CATEGORIES: &[&str] = &[
    "furniture",
    "electronics",
    "kitchen",
    "outdoor",
    "office",
    "toys",
];
const COLORS: &[&str] = &["red", "black", "white", "forest green", "navy", "beige"];
const REVIEW_TITLES: &[&str] = &[
    "Great value",
    "Not what I expected",
    "Works as described",
    "Five stars!",
    "Broke after a week",
    "Très bien",
    "最高です",
];
const REVIEW_BODIES: &[&str] = &[
    "Arrived quickly, café-quality build — 日本語 manual included 🚀.",
    "He said \"best purchase ever\" and I agree.\nSecond paragraph here.",
    "Path was C:\\Users\\me\\Desktop, don't ask.\nStill works fine 👍",
    "Crème brûlée colour, naïve design, but solid. 😀",
    "Plain ASCII review without anything special.",
];
const USER_SCORE_LABELS: &[&str] = &["gold", "silver", "bronze"];
const PRODUCT_SCORE_LABELS: &[&str] = &["A+", "B", "C-"];

/// Streams realistic single-table items.
struct ItemGen {
    rng: Rng,
    users: u64,
    orders: u64,
    products: u64,
    reviews: u64,
}

impl ItemGen {
    fn new(seed: u64) -> ItemGen {
        ItemGen {
            rng: Rng::new(seed),
            users: 0,
            orders: 0,
            products: 0,
            reviews: 0,
        }
    }

    /// Appends one `{"Item":{...}}` line (without newline) to `b`.
    fn next_item(&mut self, b: &mut String) {
        let mut kind = self.rng.below(100);
        // Orders and reviews point at users/products that exist, so create those first.
        if self.users == 0 {
            kind = 0;
        } else if kind >= 85 && self.products == 0 {
            kind = 70;
        }
        b.push_str("{\"Item\":{");
        match kind {
            0..=34 => self.user(b),
            35..=69 => self.order(b),
            70..=84 => self.product(b),
            _ => self.review(b),
        }
        b.push_str("}}");
    }

    fn user(&mut self, b: &mut String) {
        let n = self.users;
        self.users += 1;
        let r = &mut self.rng;
        let first = r.pick_str(FIRST_NAMES);
        let last = r.pick_str(LAST_NAMES);
        key(b, true, "PK");
        let _ = write!(b, "{{\"S\":\"USER#{n}\"}}");
        key(b, false, "SK");
        v_s(b, "PROFILE");
        key(b, false, "name");
        v_s(b, &format!("{first} {last}"));
        key(b, false, "email");
        v_s(
            b,
            &format!("{}.{n}@example.com", first.to_ascii_lowercase()),
        );
        key(b, false, "status");
        v_s(b, if r.chance(85) { "active" } else { "suspended" });
        key(b, false, "created_at");
        v_int(b, r.range(1_500_000_000, 1_700_000_000) as i64);
        key(b, false, "balance");
        let cents = if r.chance(10) {
            -(r.range(1, 99) as i64)
        } else {
            r.below(10_000_000) as i64
        };
        v_cents(b, cents);
        key(b, false, "tags");
        let k = r.range(1, 3) as usize;
        let mut tags: Vec<&str> = Vec::with_capacity(k);
        while tags.len() < k {
            let t = r.pick_str(TAGS);
            if !tags.contains(&t) {
                tags.push(t);
            }
        }
        v_ss(b, &tags);
        key(b, false, "prefs");
        b.push_str("{\"M\":{");
        key(b, true, "theme");
        v_s(b, r.pick_str(THEMES));
        key(b, false, "limits");
        b.push_str("{\"L\":[");
        v_int(b, r.range(10, 1000) as i64);
        b.push(',');
        v_s(b, r.pick_str(PERIODS));
        b.push_str("]}}}");
        if r.chance(25) {
            key(b, false, "avatar");
            let len = r.range(3, 12) as usize;
            v_b(b, &r.bytes(len));
        }
        if r.chance(30) {
            key(b, false, "nickname");
            v_s(
                b,
                &format!("{}{}", first.to_ascii_lowercase(), r.below(100)),
            );
        }
        if r.chance(10) {
            key(b, false, "deleted_at");
            v_null(b);
        }
        let s = r.below(100);
        if s < 60 {
            key(b, false, "score");
            v_int(b, r.below(1000) as i64);
        } else if s < 75 {
            key(b, false, "score");
            v_s(b, r.pick_str(USER_SCORE_LABELS));
        }
    }

    fn order(&mut self, b: &mut String) {
        let n = self.orders;
        self.orders += 1;
        let r = &mut self.rng;
        let user = r.below(self.users);
        key(b, true, "PK");
        let _ = write!(b, "{{\"S\":\"USER#{user}\"}}");
        key(b, false, "SK");
        let _ = write!(b, "{{\"S\":\"ORDER#{n:06}\"}}");
        let lines = r.range(1, 4) as usize;
        let mut total: i64 = 0;
        let mut items = String::with_capacity(64 * lines);
        items.push_str("{\"L\":[");
        for i in 0..lines {
            if i > 0 {
                items.push(',');
            }
            let qty = r.range(1, 5) as i64;
            let price = r.range(99, 99_999) as i64;
            total += qty * price;
            items.push_str("{\"M\":{");
            key(&mut items, true, "sku");
            let _ = write!(items, "{{\"S\":\"SKU-{:05}\"}}", r.below(100_000));
            key(&mut items, false, "qty");
            v_int(&mut items, qty);
            key(&mut items, false, "price");
            v_cents(&mut items, price);
            items.push_str("}}");
        }
        items.push_str("]}");
        key(b, false, "total");
        v_cents(b, total);
        key(b, false, "status");
        v_s(b, r.pick_str(ORDER_STATUSES));
        key(b, false, "items");
        b.push_str(&items);
        key(b, false, "created_at");
        v_int(b, r.range(1_500_000_000, 1_700_000_000) as i64);
        if r.chance(70) {
            key(b, false, "shipping_address");
            b.push_str("{\"M\":{");
            key(b, true, "street");
            v_s(b, &format!("{} {}", r.range(1, 999), r.pick(STREETS)));
            key(b, false, "city");
            v_s(b, r.pick_str(CITIES));
            key(b, false, "zip");
            v_s(b, &format!("{:05}", r.below(100_000)));
            b.push_str("}}");
        }
    }

    fn product(&mut self, b: &mut String) {
        let n = self.products;
        self.products += 1;
        let r = &mut self.rng;
        key(b, true, "PK");
        let _ = write!(b, "{{\"S\":\"PRODUCT#{n}\"}}");
        key(b, false, "SK");
        v_s(b, "METADATA");
        let adj = r.pick_str(ADJECTIVES);
        let noun = r.pick_str(NOUNS);
        key(b, false, "name");
        v_s(b, &format!("{adj} {noun}"));
        key(b, false, "description");
        v_s(
            b,
            &format!(
                "The {} {} you always wanted. Model {}, {} colour options.",
                adj.to_lowercase(),
                noun.to_lowercase(),
                r.below(10_000),
                r.range(1, 9)
            ),
        );
        key(b, false, "price");
        v_cents(b, r.range(100, 500_000) as i64);
        key(b, false, "category");
        v_s(b, r.pick_str(CATEGORIES));
        key(b, false, "dims");
        let mut dims: Vec<String> = Vec::with_capacity(3);
        while dims.len() < 3 {
            let d = tenths(r.range(5, 2000));
            if !dims.contains(&d) {
                dims.push(d);
            }
        }
        v_ns(b, &dims);
        key(b, false, "in_stock");
        v_bool(b, r.chance(80));
        key(b, false, "attributes");
        b.push_str("{\"M\":{");
        key(b, true, "color");
        v_s(b, r.pick_str(COLORS));
        key(b, false, "weight_kg");
        v_n(b, &tenths(r.range(1, 500)));
        key(b, false, "warranty_years");
        v_int(b, r.range(0, 5) as i64);
        key(b, false, "fragile");
        v_bool(b, r.chance(20));
        b.push_str("}}");
        if r.chance(30) {
            key(b, false, "score");
            v_s(b, r.pick_str(PRODUCT_SCORE_LABELS));
        }
    }

    fn review(&mut self, b: &mut String) {
        let n = self.reviews;
        self.reviews += 1;
        let r = &mut self.rng;
        let product = r.below(self.products);
        let user = r.below(self.users);
        key(b, true, "PK");
        let _ = write!(b, "{{\"S\":\"PRODUCT#{product}\"}}");
        key(b, false, "SK");
        let _ = write!(b, "{{\"S\":\"REVIEW#{n}\"}}");
        key(b, false, "user_pk");
        let _ = write!(b, "{{\"S\":\"USER#{user}\"}}");
        let rating = r.range(1, 5) as i64;
        key(b, false, "rating");
        v_int(b, rating);
        key(b, false, "title");
        v_s(b, r.pick_str(REVIEW_TITLES));
        key(b, false, "text");
        v_s(b, &format!("{} (review {n})", r.pick(REVIEW_BODIES)));
        key(b, false, "helpful");
        v_int(b, r.below(500) as i64);
        if r.chance(20) {
            key(b, false, "thumbnails");
            let k = r.range(1, 3) as usize;
            // Distinct lengths keep the set elements unique.
            let blobs: Vec<Vec<u8>> = (0..k).map(|i| r.bytes(4 + i)).collect();
            v_bs(b, &blobs);
        }
        if r.chance(20) {
            key(b, false, "score");
            v_int(b, rating * 20);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Edge-case items
// ---------------------------------------------------------------------------------------------

/// Number of edge-case items written when `edge_cases` is on.
pub const EDGE_ITEM_COUNT: usize = 6;

/// The extreme numbers carried by `EDGE#0`, as `(attribute name, N text)`. All are valid,
/// DynamoDB-normalised numbers (plain notation, at most 38 significant digits).
pub fn edge_numbers() -> Vec<(&'static str, String)> {
    vec![
        (
            "edge_n38",
            "12345678901234567890123456789012345678".to_string(),
        ),
        (
            "edge_n38_neg_frac",
            "-0.1234567890123456789012345678901234567".to_string(),
        ),
        ("edge_n_1e125", format!("1{}", "0".repeat(125))),
        (
            "edge_n_max",
            format!("{}{}", "9".repeat(38), "0".repeat(88)),
        ),
        (
            "edge_n_neg_max",
            format!("-{}{}", "9".repeat(38), "0".repeat(88)),
        ),
        ("edge_n_1e_minus_130", format!("0.{}1", "0".repeat(129))),
        (
            "edge_n_neg_1e_minus_130",
            format!("-0.{}1", "0".repeat(129)),
        ),
        ("edge_n_neg_half", "-0.5".to_string()),
        ("edge_n_zero", "0".to_string()),
    ]
}

/// Unicode/escaping stress string used by the edge items.
pub const EDGE_UNICODE: &str = "é 日本語 🚀 \"quoted\" back\\slash\nnew line\ttab \u{7f} \u{1} ü";

/// Appends edge item `k` (`0..EDGE_ITEM_COUNT`) as a `{"Item":{...}}` line.
fn edge_item(k: usize, b: &mut String) {
    b.push_str("{\"Item\":{");
    key(b, true, "PK");
    let _ = write!(b, "{{\"S\":\"EDGE#{k}\"}}");
    key(b, false, "SK");
    v_s(b, "EDGE");
    match k {
        0 => {
            for (name, v) in edge_numbers() {
                key(b, false, name);
                v_n(b, &v);
            }
        }
        1 => {
            key(b, false, "edge_empty_s");
            v_s(b, "");
            key(b, false, "edge_empty_b");
            v_b(b, &[]);
            key(b, false, "edge_unicode");
            v_s(b, EDGE_UNICODE);
            key(b, false, "edge_bool_t");
            v_bool(b, true);
            key(b, false, "edge_bool_f");
            v_bool(b, false);
            key(b, false, "edge_null");
            v_null(b);
            key(b, false, "edge_name with space.dot-é");
            v_s(b, "odd attribute name");
        }
        2 => {
            // 31 M wrappers around a scalar: the deepest nesting DynamoDB allows.
            key(b, false, "edge_deep");
            for _ in 0..31 {
                b.push_str("{\"M\":{\"d\":");
            }
            v_s(b, "bottom");
            for _ in 0..31 {
                b.push_str("}}");
            }
            // Same depth alternating L and M.
            key(b, false, "edge_deep_mixed");
            for i in 0..31 {
                b.push_str(if i % 2 == 0 {
                    "{\"L\":["
                } else {
                    "{\"M\":{\"x\":"
                });
            }
            v_n(b, "42");
            for i in (0..31).rev() {
                b.push_str(if i % 2 == 0 { "]}" } else { "}}" });
            }
        }
        3 => {
            key(b, false, "edge_mixed_list");
            b.push_str(
                "{\"L\":[{\"S\":\"a\"},{\"N\":\"1\"},{\"BOOL\":true},{\"NULL\":true},{\"M\":{}},\
                 {\"L\":[]},{\"B\":\"AAE=\"},{\"SS\":[\"x\"]}]}",
            );
            key(b, false, "edge_ss");
            v_ss(b, &["a", "b", "日本"]);
            key(b, false, "edge_ns");
            v_ns(
                b,
                &[
                    "1".to_string(),
                    "-2.5".to_string(),
                    "0.001".to_string(),
                    "12345678901234567890123456789012345678".to_string(),
                ],
            );
            key(b, false, "edge_bs");
            v_bs(b, &[vec![0, 1], vec![2, 3], vec![0xff]]);
            key(b, false, "edge_empty_m");
            b.push_str("{\"M\":{}}");
            key(b, false, "edge_empty_l");
            b.push_str("{\"L\":[]}");
        }
        4 => {
            // Keys only.
        }
        _ => {
            key(b, false, "edge_long");
            v_s(b, &"0123456789abcdef".repeat(512));
            key(b, false, "edge_map_all_types");
            b.push_str("{\"M\":{");
            key(b, true, "s");
            v_s(b, EDGE_UNICODE);
            key(b, false, "n");
            v_n(b, "-0.5");
            key(b, false, "b");
            v_b(b, b"\x00\x01\x02");
            key(b, false, "bool");
            v_bool(b, false);
            key(b, false, "null");
            v_null(b);
            key(b, false, "ss");
            v_ss(b, &["x", "y"]);
            key(b, false, "ns");
            v_ns(b, &["1".to_string(), "2".to_string()]);
            key(b, false, "bs");
            v_bs(b, &[vec![1], vec![2]]);
            key(b, false, "m");
            b.push_str("{\"M\":{}}");
            key(b, false, "l");
            b.push_str("{\"L\":[]}");
            b.push_str("}}");
        }
    }
    b.push_str("}}");
}

// ---------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------

/// Writer adapter that hashes and counts what goes through it.
struct HashingWriter<W> {
    inner: W,
    md5: Md5,
    bytes: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.md5.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Base64 (standard, padded) of the MD5 of `bytes`.
pub fn md5_base64(bytes: &[u8]) -> String {
    B64.encode(Md5::digest(bytes).as_slice())
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for x in bytes {
        let _ = write!(s, "{x:02x}");
    }
    s
}

/// `<prefix>/AWSDynamoDB/<id>` or `AWSDynamoDB/<id>`.
fn key_base(prefix: Option<&str>, export_id: &str) -> String {
    match prefix {
        Some(p) => format!("{p}/AWSDynamoDB/{export_id}"),
        None => format!("AWSDynamoDB/{export_id}"),
    }
}

fn normalize_prefix(prefix: Option<&str>) -> Option<String> {
    prefix
        .map(|p| p.trim_matches('/').to_string())
        .filter(|p| !p.is_empty())
}

/// 26 lowercase base32 characters.
fn file_stem(rng: &mut Rng) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    (0..26)
        .map(|_| ALPHABET[rng.below(32) as usize] as char)
        .collect()
}

/// Opens a gzip data file; call [`finish_gz`] to close it.
fn create_gz(path: &Path) -> io::Result<GzEncoder<HashingWriter<BufWriter<File>>>> {
    let file = File::create(path)?;
    let hw = HashingWriter {
        inner: BufWriter::with_capacity(1 << 20, file),
        md5: Md5::new(),
        bytes: 0,
    };
    Ok(GzEncoder::new(hw, Compression::new(GZIP_LEVEL)))
}

/// Finishes the gzip stream and returns `(bytes, base64 md5)` of the file.
fn finish_gz(enc: GzEncoder<HashingWriter<BufWriter<File>>>) -> io::Result<(u64, String)> {
    let mut hw = enc.finish()?;
    hw.flush()?;
    let bytes = hw.bytes;
    let md5 = B64.encode(hw.md5.finalize().as_slice());
    hw.inner
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()?;
    Ok((bytes, md5))
}

/// Writes a gzip file from chunks produced by `fill` on the calling thread while a helper
/// thread compresses and hashes, so generation and compression overlap. `fill` appends whole
/// lines to the (empty) buffer it gets and returns false once everything was produced.
/// Returns the file size. Chunk boundaries only depend on the content, so output stays
/// deterministic.
fn write_gz_streamed(path: &Path, mut fill: impl FnMut(&mut String) -> bool) -> io::Result<u64> {
    let enc = create_gz(path)?;
    std::thread::scope(|scope| {
        let (full_tx, full_rx) = mpsc::sync_channel::<String>(2);
        let (empty_tx, empty_rx) = mpsc::channel::<String>();
        let writer = scope.spawn(move || -> io::Result<u64> {
            let mut enc = enc;
            for mut chunk in full_rx {
                enc.write_all(chunk.as_bytes())?;
                chunk.clear();
                let _ = empty_tx.send(chunk);
            }
            Ok(finish_gz(enc)?.0)
        });
        loop {
            let mut chunk = empty_rx
                .try_recv()
                .unwrap_or_else(|_| String::with_capacity(CHUNK_BYTES + 64 * 1024));
            let more = fill(&mut chunk);
            // A send error means the writer stopped on an error, which join() reports.
            if (!chunk.is_empty() && full_tx.send(chunk).is_err()) || !more {
                break;
            }
        }
        drop(full_tx);
        writer
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("gzip writer thread panicked")))
    })
}

/// Generates an export under `root` (the "bucket root"); see the module docs.
pub fn generate_export(root: &Path, opts: &GenOptions) -> io::Result<GeneratedExport> {
    if opts.files == 0 && opts.items > 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "items > 0 needs at least one data file",
        ));
    }
    let prefix = normalize_prefix(opts.s3_prefix.as_deref());
    let base = key_base(prefix.as_deref(), &opts.export_id);
    let export_dir = root.join(&base);
    let data_dir = export_dir.join("data");
    fs::create_dir_all(&data_dir)?;

    let mut names = Rng::new(opts.seed ^ 0x6e61_6d65_735f_7267);
    let new_file = |names: &mut Rng, used: &[GeneratedFile]| loop {
        let stem = file_stem(names);
        let key = format!("{base}/data/{stem}.json.gz");
        if !used.iter().any(|f| f.key == key) {
            return (data_dir.join(format!("{stem}.json.gz")), key);
        }
    };

    let mut export = GeneratedExport {
        root: root.to_path_buf(),
        export_dir: export_dir.clone(),
        total_items: 0,
        data_files: Vec::with_capacity(opts.files + opts.zero_byte_files + opts.empty_gzip_files),
        table_name: opts.table_name.clone(),
        export_id: opts.export_id.clone(),
        s3_prefix: prefix.clone(),
        checksum_ext: opts.checksum_ext,
        has_manifest: opts.write_manifest,
    };

    if opts.write_manifest {
        // Written first by DynamoDB.
        File::create(export_dir.join("_started"))?;
    }

    let edge_count = if opts.edge_cases {
        (EDGE_ITEM_COUNT as u64).min(opts.items)
    } else {
        0
    };
    let mut items_gen = ItemGen::new(opts.seed);
    let mut written: u64 = 0;
    let files = opts.files as u64;
    for f in 0..files {
        let count = opts.items / files + u64::from(f < opts.items % files);
        let (path, key) = new_file(&mut names, &export.data_files);
        let mut remaining = count;
        let bytes = write_gz_streamed(&path, |chunk| {
            while remaining > 0 && chunk.len() < CHUNK_BYTES {
                if written < edge_count {
                    edge_item(written as usize, chunk);
                } else {
                    items_gen.next_item(chunk);
                }
                chunk.push('\n');
                written += 1;
                remaining -= 1;
            }
            remaining > 0
        })?;
        export.data_files.push(GeneratedFile {
            path,
            key,
            item_count: count,
            bytes,
        });
    }
    for _ in 0..opts.zero_byte_files {
        let (path, key) = new_file(&mut names, &export.data_files);
        File::create(&path)?;
        export.data_files.push(GeneratedFile {
            path,
            key,
            item_count: 0,
            bytes: 0,
        });
    }
    for _ in 0..opts.empty_gzip_files {
        let (path, key) = new_file(&mut names, &export.data_files);
        let (bytes, _) = finish_gz(create_gz(&path)?)?;
        export.data_files.push(GeneratedFile {
            path,
            key,
            item_count: 0,
            bytes,
        });
    }
    export.total_items = written;

    rewrite_manifest(&export)?;
    Ok(export)
}

/// Recomputes `manifest-files.json` (md5/size from the current bytes of the data files,
/// item counts from `export.data_files`), `manifest-summary.json` (itemCount = sum of the
/// file item counts) and both checksum files. For tests that corrupt or replace a file.
/// Does nothing when the export was generated without manifests.
pub fn rewrite_manifest(export: &GeneratedExport) -> io::Result<()> {
    if !export.has_manifest {
        return Ok(());
    }
    let mut files_json = String::with_capacity(256 * export.data_files.len());
    let mut item_count: u64 = 0;
    let mut billed: u64 = 0;
    for f in &export.data_files {
        let bytes = fs::read(&f.path)?;
        let digest = Md5::digest(&bytes);
        item_count += f.item_count;
        billed += bytes.len() as u64;
        files_json.push_str("{\"itemCount\":");
        let _ = write!(files_json, "{}", f.item_count);
        files_json.push_str(",\"md5Checksum\":");
        push_json_str(&mut files_json, &B64.encode(digest.as_slice()));
        // A multipart-style ETag, deliberately not the plain MD5 of the object.
        let etag = format!("{}-1", hex(Md5::digest(digest.as_slice()).as_slice()));
        files_json.push_str(",\"etag\":");
        push_json_str(&mut files_json, &etag);
        files_json.push_str(",\"dataFileS3Key\":");
        push_json_str(&mut files_json, &f.key);
        files_json.push_str("}\n");
    }

    let ext = export.checksum_ext.ext();
    let dir = &export.export_dir;
    fs::write(dir.join("manifest-files.json"), files_json.as_bytes())?;
    fs::write(
        dir.join(format!("manifest-files.{ext}")),
        md5_base64(files_json.as_bytes()),
    )?;

    let summary = summary_json(export, item_count, billed);
    fs::write(dir.join("manifest-summary.json"), summary.as_bytes())?;
    fs::write(
        dir.join(format!("manifest-summary.{ext}")),
        md5_base64(summary.as_bytes()),
    )?;
    Ok(())
}

/// One-line `manifest-summary.json` content (no trailing newline).
fn summary_json(export: &GeneratedExport, item_count: u64, billed: u64) -> String {
    let export_ms = export
        .export_id
        .split('-')
        .next()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(FALLBACK_EXPORT_MS);
    let table_id = {
        let h = hex(
            Md5::digest(format!("{}/{}", export.table_name, export.export_id).as_bytes())
                .as_slice(),
        );
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    };
    let mut s = String::with_capacity(1024);
    s.push_str("{\"version\":\"2020-06-30\",\"exportArn\":");
    push_json_str(&mut s, &export.export_arn());
    s.push_str(",\"startTime\":");
    push_json_str(&mut s, &iso8601(export_ms + 1_234));
    s.push_str(",\"endTime\":");
    push_json_str(&mut s, &iso8601(export_ms + 300_567));
    s.push_str(",\"tableArn\":");
    push_json_str(&mut s, &export.table_arn());
    s.push_str(",\"tableId\":");
    push_json_str(&mut s, &table_id);
    s.push_str(",\"exportTime\":");
    push_json_str(&mut s, &iso8601(export_ms - export_ms % 1000));
    s.push_str(",\"s3Bucket\":");
    push_json_str(&mut s, BUCKET);
    s.push_str(",\"s3Prefix\":");
    match &export.s3_prefix {
        Some(p) => push_json_str(&mut s, p),
        None => s.push_str("null"),
    }
    s.push_str(",\"s3SseAlgorithm\":\"AES256\",\"s3SseKmsKeyId\":null,\"manifestFilesS3Key\":");
    push_json_str(&mut s, &export.manifest_files_key());
    let _ = write!(
        s,
        ",\"billedSizeBytes\":{billed},\"itemCount\":{item_count},\
         \"outputFormat\":\"DYNAMODB_JSON\",\"exportType\":\"FULL_EXPORT\"}}"
    );
    s
}

/// Epoch millis to `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn iso8601(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let sod = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60,
        ms % 1000
    )
}

/// Writes `lines` (each without trailing newline) as one extra gzip data file, adds it to the
/// manifest with `item_count = lines.len()` and rewrites the manifests; returns its path.
pub fn add_data_file(export: &mut GeneratedExport, lines: &[String]) -> io::Result<PathBuf> {
    let data_dir = export.export_dir.join("data");
    fs::create_dir_all(&data_dir)?;
    let base = key_base(export.s3_prefix.as_deref(), &export.export_id);
    let mut rng = Rng::new(0x6164_645f_6669_6c65 ^ (export.data_files.len() as u64));
    let (path, key) = loop {
        let stem = file_stem(&mut rng);
        let key = format!("{base}/data/{stem}.json.gz");
        if !export.data_files.iter().any(|f| f.key == key) {
            break (data_dir.join(format!("{stem}.json.gz")), key);
        }
    };
    let mut enc = create_gz(&path)?;
    for l in lines {
        enc.write_all(l.as_bytes())?;
        enc.write_all(b"\n")?;
    }
    let (bytes, _) = finish_gz(enc)?;
    let item_count = lines.len() as u64;
    export.data_files.push(GeneratedFile {
        path: path.clone(),
        key,
        item_count,
        bytes,
    });
    export.total_items += item_count;
    rewrite_manifest(export)?;
    Ok(path)
}

/// Rewrites every line of every data file through `line` (decompressed, without its newline)
/// and recomputes the manifests: for an export of the same items under other keys (a second,
/// disjoint export for `--append`).
pub fn rewrite_lines(export: &GeneratedExport, line: impl Fn(&str) -> String) -> io::Result<()> {
    for file in &export.data_files {
        let bytes = fs::read(&file.path)?;
        if bytes.is_empty() {
            continue;
        }
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(&bytes[..]).read_to_string(&mut text)?;
        let mut enc = create_gz(&file.path)?;
        for l in text.lines() {
            enc.write_all(line(l).as_bytes())?;
            enc.write_all(b"\n")?;
        }
        finish_gz(enc)?;
    }
    rewrite_manifest(export)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::MultiGzDecoder;
    use std::collections::HashSet;
    use std::io::Read;

    fn gunzip(bytes: &[u8]) -> String {
        let mut s = String::new();
        MultiGzDecoder::new(bytes)
            .read_to_string(&mut s)
            .expect("gunzip");
        s
    }

    fn all_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).expect("read_dir") {
                let p = e.expect("entry").path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let bytes = fs::read(&p).expect("read");
                    out.push((p.strip_prefix(dir).expect("prefix").to_path_buf(), bytes));
                }
            }
        }
        out.sort();
        out
    }

    fn opts() -> GenOptions {
        GenOptions {
            seed: 7,
            items: 2_000,
            files: 3,
            zero_byte_files: 2,
            empty_gzip_files: 1,
            ..Default::default()
        }
    }

    #[test]
    fn export_is_consistent_and_deterministic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let o = opts();
        let exp = generate_export(dir.path(), &o).expect("generate");
        assert_eq!(exp.total_items, 2_000);
        assert_eq!(exp.data_files.len(), 6);
        assert_eq!(
            exp.export_dir,
            dir.path()
                .join("exports/app/AWSDynamoDB/01700000000000-0a1b2c3d")
        );
        assert!(exp.export_dir.join("_started").exists());
        assert_eq!(
            fs::metadata(exp.export_dir.join("_started"))
                .expect("meta")
                .len(),
            0
        );

        // Summary.
        let summary_bytes =
            fs::read(exp.export_dir.join("manifest-summary.json")).expect("summary");
        assert!(!summary_bytes.contains(&b'\n'));
        let summary: serde_json::Value =
            serde_json::from_slice(&summary_bytes).expect("summary json");
        assert_eq!(
            summary["itemCount"].to_string(),
            exp.total_items.to_string()
        );
        assert_eq!(summary["outputFormat"], "DYNAMODB_JSON");
        assert_eq!(summary["exportType"], "FULL_EXPORT");
        assert_eq!(summary["exportTime"], "2023-11-14T22:13:20.000Z");
        assert_eq!(
            summary["tableArn"],
            "arn:aws:dynamodb:us-east-1:111122223333:table/AppTable"
        );
        assert_eq!(
            summary["exportArn"],
            "arn:aws:dynamodb:us-east-1:111122223333:table/AppTable/export/01700000000000-0a1b2c3d"
        );
        assert_eq!(
            summary["manifestFilesS3Key"],
            "exports/app/AWSDynamoDB/01700000000000-0a1b2c3d/manifest-files.json"
        );

        // Checksum files.
        let files_bytes = fs::read(exp.export_dir.join("manifest-files.json")).expect("files");
        let md5_files = fs::read_to_string(exp.export_dir.join("manifest-files.md5")).expect("md5");
        let md5_summary =
            fs::read_to_string(exp.export_dir.join("manifest-summary.md5")).expect("md5");
        assert_eq!(md5_files.len(), 24);
        assert_eq!(md5_files, md5_base64(&files_bytes));
        assert_eq!(md5_summary, md5_base64(&summary_bytes));

        // Manifest lines vs data files.
        let text = String::from_utf8(files_bytes).expect("utf8");
        assert!(text.ends_with('\n'));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), exp.data_files.len());
        let mut keys = HashSet::new();
        let mut sum = 0u64;
        let mut zero_byte = 0;
        let mut empty_gz = 0;
        for (line, f) in lines.iter().zip(&exp.data_files) {
            let m: serde_json::Value = serde_json::from_str(line).expect("manifest line");
            let key = m["dataFileS3Key"].as_str().expect("key");
            assert_eq!(key, f.key);
            assert!(exp.root.join(key) == f.path);
            let stem = key
                .rsplit('/')
                .next()
                .expect("name")
                .strip_suffix(".json.gz")
                .expect("ext");
            assert_eq!(stem.len(), 26);
            assert!(stem
                .bytes()
                .all(|c| c.is_ascii_lowercase() || (b'2'..=b'7').contains(&c)));
            let etag = m["etag"].as_str().expect("etag");
            assert_eq!(etag.len(), 34);
            assert!(etag.ends_with("-1"));
            let bytes = fs::read(&f.path).expect("data");
            assert_eq!(bytes.len() as u64, f.bytes);
            assert_eq!(m["md5Checksum"].as_str().expect("md5"), md5_base64(&bytes));
            let count: u64 = m["itemCount"].to_string().parse().expect("count");
            assert_eq!(count, f.item_count);
            sum += count;
            if bytes.is_empty() {
                zero_byte += 1;
                assert_eq!(count, 0);
                continue;
            }
            let body = gunzip(&bytes);
            if body.is_empty() {
                empty_gz += 1;
                assert!(bytes.len() < 64);
            }
            assert_eq!(body.lines().count() as u64, count);
            for l in body.lines() {
                let v: serde_json::Value = serde_json::from_str(l).expect("item line");
                let obj = v.as_object().expect("object");
                assert_eq!(obj.len(), 1);
                let item = obj["Item"].as_object().expect("item");
                let pk = item["PK"]["S"].as_str().expect("pk");
                let sk = item["SK"]["S"].as_str().expect("sk");
                assert!(
                    keys.insert((pk.to_string(), sk.to_string())),
                    "duplicate key {pk} {sk}"
                );
                for (_, av) in item {
                    assert_eq!(av.as_object().expect("typed").len(), 1);
                }
            }
        }
        assert_eq!(sum, exp.total_items);
        assert_eq!(keys.len() as u64, exp.total_items);
        assert_eq!(zero_byte, 2);
        assert_eq!(empty_gz, 1);

        // Same seed, byte-identical output; other seed, different output.
        let dir2 = tempfile::tempdir().expect("tempdir");
        generate_export(dir2.path(), &o).expect("generate");
        assert_eq!(all_files(dir.path()), all_files(dir2.path()));
        let dir3 = tempfile::tempdir().expect("tempdir");
        generate_export(dir3.path(), &GenOptions { seed: 8, ..o }).expect("generate");
        assert_ne!(all_files(dir.path()), all_files(dir3.path()));
    }

    #[test]
    fn edge_items_and_mixed_score() {
        let dir = tempfile::tempdir().expect("tempdir");
        let exp = generate_export(
            dir.path(),
            &GenOptions {
                items: 500,
                files: 2,
                ..Default::default()
            },
        )
        .expect("generate");
        let body = gunzip(&fs::read(&exp.data_files[0].path).expect("read"));
        let mut edge = 0;
        let mut score_types = HashSet::new();
        let mut kinds = std::collections::HashMap::new();
        for l in body.lines() {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            let item = &v["Item"];
            let pk = item["PK"]["S"].as_str().expect("pk");
            *kinds
                .entry(pk.split('#').next().expect("kind").to_string())
                .or_insert(0) += 1;
            if pk.starts_with("EDGE#") {
                edge += 1;
            }
            if let Some(score) = item.get("score") {
                score_types.insert(
                    score
                        .as_object()
                        .expect("typed")
                        .keys()
                        .next()
                        .expect("type")
                        .clone(),
                );
            }
            if pk == "EDGE#0" {
                for (name, n) in edge_numbers() {
                    assert_eq!(item[name]["N"].as_str().expect("n"), n);
                }
            }
            if pk == "EDGE#1" {
                assert_eq!(item["edge_unicode"]["S"].as_str().expect("s"), EDGE_UNICODE);
                assert_eq!(item["edge_empty_b"]["B"].as_str().expect("b"), "");
            }
            if pk == "EDGE#2" {
                let mut v = &item["edge_deep"];
                let mut depth = 0;
                while let Some(m) = v.get("M") {
                    v = &m["d"];
                    depth += 1;
                }
                assert_eq!(depth, 31);
                assert_eq!(v["S"], "bottom");
            }
        }
        assert_eq!(edge, EDGE_ITEM_COUNT);
        assert!(score_types.contains("N") && score_types.contains("S"));
        for k in ["USER", "PRODUCT"] {
            assert!(kinds.get(k).copied().unwrap_or(0) > 20, "{kinds:?}");
        }
        let n = edge_numbers();
        assert_eq!(n[2].1.len(), 126);
        assert_eq!(n[3].1.len(), 126);
        assert_eq!(n[5].1.len(), 2 + 129 + 1);
    }

    #[test]
    fn no_manifest_and_add_data_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let o = GenOptions {
            items: 10,
            files: 2,
            s3_prefix: None,
            checksum_ext: ChecksumExt::Checksum,
            ..Default::default()
        };
        let mut exp = generate_export(dir.path(), &o).expect("generate");
        assert_eq!(
            exp.export_dir,
            dir.path().join("AWSDynamoDB/01700000000000-0a1b2c3d")
        );
        assert!(exp.export_dir.join("manifest-files.checksum").exists());
        assert!(!exp.export_dir.join("manifest-files.md5").exists());
        let p = add_data_file(
            &mut exp,
            &["{\"Item\":".to_string(), "not json".to_string()],
        )
        .expect("add");
        assert_eq!(exp.total_items, 12);
        assert_eq!(
            gunzip(&fs::read(&p).expect("read")),
            "{\"Item\":\nnot json\n"
        );
        let text =
            fs::read_to_string(exp.export_dir.join("manifest-files.json")).expect("manifest");
        assert_eq!(text.lines().count(), 3);
        assert!(text
            .lines()
            .last()
            .expect("line")
            .contains("\"itemCount\":2,"));
        let summary =
            fs::read_to_string(exp.export_dir.join("manifest-summary.json")).expect("summary");
        assert!(summary.contains("\"itemCount\":12,"));
        assert!(summary.contains("\"s3Prefix\":null"));
        assert_eq!(
            fs::read_to_string(exp.export_dir.join("manifest-summary.checksum")).expect("sum"),
            md5_base64(summary.as_bytes())
        );

        let dir2 = tempfile::tempdir().expect("tempdir");
        let exp2 = generate_export(
            dir2.path(),
            &GenOptions {
                write_manifest: false,
                ..o
            },
        )
        .expect("generate");
        let names: Vec<_> = fs::read_dir(&exp2.export_dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().into_string().expect("name"))
            .collect();
        assert_eq!(names, vec!["data".to_string()]);
    }

    #[test]
    fn json_escaping() {
        let mut b = String::new();
        push_json_str(&mut b, "a\"b\\c\nd\u{1}e\u{1f}é🚀\t");
        assert_eq!(b, "\"a\\\"b\\\\c\\nd\\u0001e\\u001fé🚀\\t\"");
        let back: String = serde_json::from_str(&b).expect("parse");
        assert_eq!(back, "a\"b\\c\nd\u{1}e\u{1f}é🚀\t");
        let mut c = String::new();
        for (cents, want) in [
            (0, "0"),
            (5, "0.05"),
            (50, "0.5"),
            (-37, "-0.37"),
            (123456, "1234.56"),
            (1200, "12"),
        ] {
            c.clear();
            push_cents(&mut c, cents);
            assert_eq!(c, want);
        }
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(951_782_400_123), "2000-02-29T00:00:00.123Z");
    }
}
