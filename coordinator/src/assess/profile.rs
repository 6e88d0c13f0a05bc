//! The profile of an export's items: one [`Profile`] per data file (or per part of a sample),
//! filled line by line with bounded memory and merged, so files are profiled in parallel.
//!
//! Per attribute: its DynamoDB types and how often, presence, a distinct-count estimate (the k
//! smallest hashes), string and binary lengths, numbers' precision, scale and range (compared as
//! exact decimals, never as `f64`), whether they are all integers, epoch-time and ISO-8601 looks,
//! set sizes, map and list depth, and the member paths seen inside maps. Per item: its size and
//! key, the pattern of its key values (`USER#<n>` / `ORDER#<n>`) that entity detection groups by
//! ([`super::entities`]), and the largest items.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use ferry_shared::schema::DdbType;
use ferry_worker::item::AttrValue;
use serde::Serialize;

/// Distinct values a [`Kmv`] keeps: the estimate's relative error is about 1/sqrt(K), 3%.
const KMV_K: usize = 1024;
/// Member paths kept per attribute (the most frequent win once the cap is reached).
const MAX_PATHS: usize = 64;
/// Value patterns kept per string attribute (for foreign-key candidates).
const MAX_PATTERNS: usize = 32;
/// Strings longer than this get no pattern (keys and references are short).
const MAX_PATTERNED_CHARS: usize = 128;
/// Attribute names profiled (each holds up to about 40 KB: its distinct-count estimate).
pub const MAX_ATTRIBUTES: usize = 1_000;
/// Key-pattern groups kept per profile; items beyond fall into one "other" group.
pub const MAX_GROUPS: usize = 1_000;
/// Attributes named per group.
const MAX_GROUP_ATTRIBUTES: usize = 256;
/// The largest items kept.
pub const LARGEST_ITEMS: usize = 5;
/// Examples kept per finding.
pub const EXAMPLES: usize = 3;
/// A pattern longer than this is cut (an odd key stays one line).
const MAX_PATTERN_CHARS: usize = 48;

/// A map by attribute name, hashed (a profile looks a name up for every value it reads).
pub type ByName<V> = std::collections::HashMap<String, V, foldhash::quality::FixedState>;

/// The seed of every hash of a profile (fixed, so every part of a run agrees).
const SEED: u64 = 0x6665_7272_795f_6173;

/// A fresh hasher: foldhash's quality variant with a fixed seed (several times faster than
/// SipHash on short strings, and well mixed enough for k-minimum-values).
fn hasher() -> impl Hasher {
    use std::hash::BuildHasher;
    foldhash::quality::FixedState::with_seed(SEED).build_hasher()
}

/// A 64-bit hash of `value`.
pub fn hash_of(value: impl Hash) -> u64 {
    let mut hasher = hasher();
    value.hash(&mut hasher);
    hasher.finish()
}

/// Feeds a value to `hasher` by its type and content (maps in their written order).
fn hash_value(value: &AttrValue<'_>, hasher: &mut impl Hasher) {
    std::mem::discriminant(value).hash(hasher);
    match value {
        AttrValue::S(v) | AttrValue::N(v) | AttrValue::B(v) => v.hash(hasher),
        AttrValue::Bool(v) => v.hash(hasher),
        AttrValue::Null => {}
        AttrValue::M(members) => {
            members.len().hash(hasher);
            for (name, member) in members {
                name.hash(hasher);
                hash_value(member, hasher);
            }
        }
        AttrValue::L(items) => {
            items.len().hash(hasher);
            for item in items {
                hash_value(item, hasher);
            }
        }
        AttrValue::Ss(items) | AttrValue::Ns(items) | AttrValue::Bs(items) => items.hash(hasher),
    }
}

/// A distinct-count estimate: the `KMV_K` smallest distinct hashes seen ("k minimum values"),
/// kept sorted in one vector (a lookup is a binary search over 8 KiB). Exact below `KMV_K`
/// values; mergeable.
#[derive(Clone, Debug, Default)]
pub struct Kmv {
    smallest: Vec<u64>,
    /// Whether more than `KMV_K` distinct hashes were seen.
    overflowed: bool,
}

impl Kmv {
    /// Adds one hash.
    pub fn add(&mut self, hash: u64) {
        let full = self.smallest.len() >= KMV_K;
        if full && self.smallest.last().is_some_and(|largest| hash > *largest) {
            self.overflowed = true;
            return;
        }
        if let Err(at) = self.smallest.binary_search(&hash) {
            self.smallest.insert(at, hash);
            if full {
                self.smallest.pop();
                self.overflowed = true;
            }
        }
    }

    /// Adds every hash of `other`.
    pub fn merge(&mut self, other: &Kmv) {
        for hash in &other.smallest {
            self.add(*hash);
        }
        self.overflowed |= other.overflowed;
    }

    /// The estimate.
    pub fn estimate(&self) -> u64 {
        if !self.overflowed || self.smallest.len() < KMV_K {
            return self.smallest.len() as u64;
        }
        let largest = *self.smallest.last().expect("full") as f64 / u64::MAX as f64;
        ((KMV_K - 1) as f64 / largest).round() as u64
    }
}

/// The smallest and largest of some counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Range {
    /// The smallest.
    pub min: u64,
    /// The largest.
    pub max: u64,
}

fn widen(range: &mut Option<Range>, value: u64) {
    *range = Some(match *range {
        None => Range {
            min: value,
            max: value,
        },
        Some(r) => Range {
            min: r.min.min(value),
            max: r.max.max(value),
        },
    });
}

fn widen_range(range: &mut Option<Range>, other: Option<Range>) {
    if let Some(other) = other {
        widen(range, other.min);
        widen(range, other.max);
    }
}

/// An exact decimal, for comparing numbers without `f64`: sign, integer digits (no leading
/// zeros), fraction digits (no trailing zeros).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decimal {
    negative: bool,
    integer: String,
    fraction: String,
}

impl Decimal {
    /// `text` in DynamoDB's number syntax (exponents included), `None` if it is not a number.
    pub fn parse(text: &str) -> Option<Decimal> {
        Decimal::parse_with_fit(text).map(|(decimal, _)| decimal)
    }

    /// [`Decimal::parse`], and whether a 96-bit decimal (HeliosDB's NUMERIC) holds the number
    /// exactly, decided on the canonical text as the decode stage's scanner decides it.
    pub fn parse_with_fit(text: &str) -> Option<(Decimal, bool)> {
        let plain = ferry_worker::number::canonical_number(text).ok()?;
        let fits = ferry_worker::scan::fits_decimal96_plain(&plain);
        let (negative, body) = match plain.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, plain.as_ref()),
        };
        let (integer, fraction) = body.split_once('.').unwrap_or((body, ""));
        let integer = integer.trim_start_matches('0').to_string();
        let fraction = fraction.trim_end_matches('0').to_string();
        let zero = integer.is_empty() && fraction.is_empty();
        let decimal = Decimal {
            negative: negative && !zero,
            integer,
            fraction,
        };
        Some((decimal, fits))
    }

    /// Digits in all (at least 1).
    pub fn precision(&self) -> usize {
        (self.integer.len() + self.fraction.len()).max(1)
    }

    /// Digits after the point.
    pub fn scale(&self) -> usize {
        self.fraction.len()
    }

    /// The integer value, when it is an integer of at most 18 digits.
    pub fn as_i64(&self) -> Option<i64> {
        if !self.fraction.is_empty() || self.integer.len() > 18 {
            return None;
        }
        let magnitude: i64 = if self.integer.is_empty() {
            0
        } else {
            self.integer.parse().ok()?
        };
        Some(if self.negative { -magnitude } else { magnitude })
    }

    fn cmp_magnitude(&self, other: &Decimal) -> Ordering {
        self.integer
            .len()
            .cmp(&other.integer.len())
            .then_with(|| self.integer.cmp(&other.integer))
            .then_with(|| self.fraction.cmp(&other.fraction))
    }
}

impl Ord for Decimal {
    fn cmp(&self, other: &Decimal) -> Ordering {
        match (self.negative, other.negative) {
            (false, true) => Ordering::Greater,
            (true, false) => Ordering::Less,
            (false, false) => self.cmp_magnitude(other),
            (true, true) => other.cmp_magnitude(self),
        }
    }
}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, other: &Decimal) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl std::fmt::Display for Decimal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.negative {
            f.write_str("-")?;
        }
        f.write_str(if self.integer.is_empty() {
            "0"
        } else {
            &self.integer
        })?;
        if !self.fraction.is_empty() {
            write!(f, ".{}", self.fraction)?;
        }
        Ok(())
    }
}

/// What the numbers of one attribute (N, and NS elements) showed.
#[derive(Clone, Debug, Default)]
pub struct Numbers {
    /// Numbers seen.
    pub count: u64,
    /// The most digits of one.
    pub max_precision: usize,
    /// The most digits after the point.
    pub max_scale: usize,
    /// The most digits before the point.
    pub max_integer_digits: usize,
    /// The smallest and the largest.
    pub min: Option<Decimal>,
    /// The largest.
    pub max: Option<Decimal>,
    /// Numbers with a fraction.
    pub fractional: u64,
    /// Numbers a 96-bit decimal (HeliosDB's NUMERIC) cannot hold exactly.
    pub beyond_decimal96: u64,
    /// Examples of those.
    pub beyond_examples: Vec<String>,
    /// Integers that read as Unix seconds between 2000 and 2100.
    pub epoch_seconds: u64,
    /// Integers that read as Unix milliseconds between 2000 and 2100.
    pub epoch_millis: u64,
}

/// 2000-01-01 and 2100-01-01 in Unix seconds.
const EPOCH_RANGE: (i64, i64) = (946_684_800, 4_102_444_800);

/// One number of an item (N, or an NS element), parsed once for every statistic that reads it.
pub struct NumberSeen<'a> {
    /// As written.
    text: &'a str,
    /// Its exact value (`None`: not a number DynamoDB would accept).
    decimal: Option<Decimal>,
    /// Whether a 96-bit decimal holds it exactly.
    fits_decimal96: bool,
}

impl<'a> NumberSeen<'a> {
    /// Appends the numbers of `value` to `out`: its N, or its NS elements; none for other types.
    pub fn push(value: &'a AttrValue<'_>, out: &mut Vec<NumberSeen<'a>>) {
        let seen = |text: &'a str| {
            let parsed = Decimal::parse_with_fit(text);
            NumberSeen {
                text,
                fits_decimal96: parsed.as_ref().is_some_and(|(_, fits)| *fits),
                decimal: parsed.map(|(decimal, _)| decimal),
            }
        };
        match value {
            AttrValue::N(n) => out.push(seen(n)),
            AttrValue::Ns(items) => out.extend(items.iter().map(|n| seen(n))),
            _ => {}
        }
    }

    /// A hash of its exact value, for the distinct count (of the text if it is not a number).
    fn exact_hash(&self) -> u64 {
        match &self.decimal {
            Some(d) => hash_of(("N", d.negative, &d.integer, &d.fraction)),
            None => hash_of(("N?", self.text)),
        }
    }
}

impl Numbers {
    fn add(&mut self, number: &NumberSeen<'_>) {
        let Some(decimal) = number.decimal.clone() else {
            return;
        };
        let text = number.text;
        self.count += 1;
        self.max_precision = self.max_precision.max(decimal.precision());
        self.max_scale = self.max_scale.max(decimal.scale());
        self.max_integer_digits = self.max_integer_digits.max(decimal.integer.len());
        self.fractional += u64::from(decimal.scale() > 0);
        if !number.fits_decimal96 {
            self.beyond_decimal96 += 1;
            if self.beyond_examples.len() < EXAMPLES {
                self.beyond_examples.push(text.to_string());
            }
        }
        if let Some(integer) = decimal.as_i64() {
            let (from, to) = EPOCH_RANGE;
            if (from..to).contains(&integer) {
                self.epoch_seconds += 1;
            } else if (from * 1000..to * 1000).contains(&integer) {
                self.epoch_millis += 1;
            }
        }
        if self.min.as_ref().is_none_or(|m| decimal < *m) {
            self.min = Some(decimal.clone());
        }
        if self.max.as_ref().is_none_or(|m| decimal > *m) {
            self.max = Some(decimal);
        }
    }

    fn merge(&mut self, other: &Numbers) {
        self.count += other.count;
        self.max_precision = self.max_precision.max(other.max_precision);
        self.max_scale = self.max_scale.max(other.max_scale);
        self.max_integer_digits = self.max_integer_digits.max(other.max_integer_digits);
        self.fractional += other.fractional;
        self.beyond_decimal96 += other.beyond_decimal96;
        for example in &other.beyond_examples {
            if self.beyond_examples.len() < EXAMPLES {
                self.beyond_examples.push(example.clone());
            }
        }
        self.epoch_seconds += other.epoch_seconds;
        self.epoch_millis += other.epoch_millis;
        if let Some(min) = &other.min {
            if self.min.as_ref().is_none_or(|m| min < m) {
                self.min = Some(min.clone());
            }
        }
        if let Some(max) = &other.max {
            if self.max.as_ref().is_none_or(|m| max > m) {
                self.max = Some(max.clone());
            }
        }
    }
}

/// Whether `text` reads as an ISO-8601 date or date-time (`2024-05-01`, `2024-05-01T12:00:00Z`,
/// with a fraction or an offset).
pub fn looks_iso8601(text: &str) -> bool {
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        b.get(range.clone())
            .is_some_and(|s| s.iter().all(u8::is_ascii_digit))
    };
    let date = digits(0..4)
        && b.get(4) == Some(&b'-')
        && digits(5..7)
        && b.get(7) == Some(&b'-')
        && digits(8..10);
    if !date {
        return false;
    }
    if b.len() == 10 {
        return true;
    }
    if !matches!(b.get(10), Some(b'T' | b' ')) || !digits(11..13) || b.get(13) != Some(&b':') {
        return false;
    }
    if !digits(14..16) {
        return false;
    }
    let mut at = 16;
    if b.get(at) == Some(&b':') {
        if !digits(at + 1..at + 3) {
            return false;
        }
        at += 3;
        if b.get(at) == Some(&b'.') {
            at += 1;
            let start = at;
            while b.get(at).is_some_and(u8::is_ascii_digit) {
                at += 1;
            }
            if at == start {
                return false;
            }
        }
    }
    match &b[at..] {
        [] | [b'Z'] => true,
        [b'+' | b'-', rest @ ..] => {
            let rest: Vec<u8> = rest.iter().copied().filter(|c| *c != b':').collect();
            rest.len() == 4 && rest.iter().all(u8::is_ascii_digit)
        }
        _ => false,
    }
}

/// The pattern of a key or reference value: runs of digits become `<n>`, long runs of hex digits
/// and dashes (UUIDs, hashes) `<id>`, everything else stays, so `USER#1181` and `USER#7` are both
/// `USER#<n>`.
pub fn pattern_of(value: &str) -> String {
    let mut out = String::new();
    pattern_into(value, &mut out);
    out
}

/// [`pattern_of`] into `out` (cleared first), allocating nothing once `out` has grown: the
/// profile calls it for every key value and every short string holding a digit.
pub fn pattern_into(value: &str, out: &mut String) {
    out.clear();
    let bytes = value.as_bytes();
    let hexish = |b: u8| b.is_ascii_hexdigit() || b == b'-';
    let mut chars = 0;
    let mut at = 0;
    while at < bytes.len() {
        let mut end = at;
        while end < bytes.len() && hexish(bytes[end]) {
            end += 1;
        }
        let run = &bytes[at..end];
        if run.len() >= 16 {
            if run.iter().any(u8::is_ascii_digit) && run.iter().any(|b| *b != b'-') {
                out.push_str("<id>");
                chars += 4;
            } else {
                // No digit in it (none in any of its tails either): it stays as written.
                out.push_str(&value[at..end]);
                chars += run.len();
            }
            at = end;
        } else if bytes[at].is_ascii_digit() {
            while at < bytes.len() && bytes[at].is_ascii_digit() {
                at += 1;
            }
            out.push_str("<n>");
            chars += 3;
        } else {
            let c = value[at..].chars().next().expect("a char starts here");
            out.push(c);
            chars += 1;
            at += c.len_utf8();
        }
        if chars > MAX_PATTERN_CHARS {
            let cut = out
                .char_indices()
                .nth(MAX_PATTERN_CHARS)
                .map_or(out.len(), |(i, _)| i);
            out.truncate(cut);
            out.push('…');
            return;
        }
    }
}

/// Where a line is: the data file's index in the listing, and the line number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Origin {
    /// The data file's index.
    pub file: u32,
    /// The line (1-based).
    pub line: u64,
}

/// Keys kept by a [`KeySample`] at most (32 bytes each in its table, about 40 with its slack).
pub const KEY_SAMPLE: usize = 200_000;

/// A hasher for keys that are already uniform 128-bit hashes: their low 64 bits.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

/// A kept key's copies and first place, packed (an [`Origin`] and a count as a tuple take 24
/// bytes; this takes 16, so an entry with its 128-bit hash is 32).
#[derive(Clone, Copy, Debug)]
struct Kept {
    count: u32,
    file: u32,
    line: u64,
}

impl Kept {
    fn origin(&self) -> Origin {
        Origin {
            file: self.file,
            line: self.line,
        }
    }
}

type PrehashedMap<V> = std::collections::HashMap<u128, V, std::hash::BuildHasherDefault<Prehashed>>;

/// A bounded, exact duplicate check over a uniform share of the key space: every key whose
/// 128-bit hash is below a threshold is kept with its count and first place; when more than
/// [`KEY_SAMPLE`] are kept, the threshold halves and the keys above it are dropped. Every copy of
/// a kept key is kept (copies share the hash), so a duplicate found is a duplicate, and the share
/// of keys checked estimates the rate for the rest. Exact, over every key, while it never fills.
/// `assess` keeps one for the whole pass, fed in batches by the files being read.
#[derive(Clone, Debug)]
pub struct KeySample {
    kept: PrehashedMap<Kept>,
    /// Keys at or above this are not kept.
    threshold: u128,
    /// Keys kept at most.
    cap: usize,
    /// Keys offered.
    pub offered: u64,
    /// Duplicates found: (first place, second place). Each is a real duplicate, even if its key
    /// later left the checked share.
    pub duplicates: Vec<(Origin, Origin)>,
}

impl Default for KeySample {
    fn default() -> Self {
        KeySample::with_cap(KEY_SAMPLE)
    }
}

impl KeySample {
    /// An empty check keeping at most `cap` keys.
    pub fn with_cap(cap: usize) -> KeySample {
        KeySample {
            kept: PrehashedMap::default(),
            threshold: u128::MAX,
            cap: cap.max(1),
            offered: 0,
            duplicates: Vec::new(),
        }
    }

    /// The key's 128-bit hash.
    pub fn hash<S: AsRef<str>>(values: &[S]) -> u128 {
        let half = |salt: &str| {
            let mut hasher = hasher();
            salt.hash(&mut hasher);
            for value in values {
                value.as_ref().hash(&mut hasher);
            }
            hasher.finish()
        };
        (u128::from(half("ferry-key-1")) << 64) | u128::from(half("ferry-key-2"))
    }

    /// Keys at or above this hash are not checked (the share of the key space checked).
    pub fn threshold(&self) -> u128 {
        self.threshold
    }

    /// Lowers the threshold to `threshold` (another part's), dropping the keys above it.
    pub fn lower_threshold(&mut self, threshold: u128) {
        if threshold < self.threshold {
            self.threshold = threshold;
            // Rebuilt, not retained: a hash table's erased slots stay spent until it is rehashed,
            // so a table refilled after a halving could grow past the size its cap needs.
            let kept: Vec<(u128, Kept)> = std::mem::take(&mut self.kept)
                .into_iter()
                .filter(|(hash, _)| *hash < threshold)
                .collect();
            self.kept = kept.into_iter().collect();
        }
    }

    /// Offers one key (its hash) found at `origin`.
    pub fn offer(&mut self, hash: u128, origin: Origin) {
        self.offered += 1;
        self.keep(hash, 1, origin);
    }

    fn keep(&mut self, hash: u128, count: u32, origin: Origin) {
        if hash >= self.threshold {
            return;
        }
        match self.kept.entry(hash) {
            std::collections::hash_map::Entry::Occupied(mut kept) => {
                let kept = kept.get_mut();
                kept.count += count;
                if self.duplicates.len() < EXAMPLES {
                    self.duplicates.push((kept.origin(), origin));
                }
            }
            std::collections::hash_map::Entry::Vacant(free) => {
                free.insert(Kept {
                    count,
                    file: origin.file,
                    line: origin.line,
                });
                while self.kept.len() > self.cap {
                    self.lower_threshold(self.threshold / 2);
                }
            }
        }
    }

    /// Adds `other`'s keys (another file's).
    pub fn merge(&mut self, other: KeySample) {
        self.offered += other.offered;
        // Below the lower threshold, both kept every copy.
        self.lower_threshold(other.threshold);
        for pair in other.duplicates {
            if self.duplicates.len() < EXAMPLES {
                self.duplicates.push(pair);
            }
        }
        // `keep` drops a key at or above the (possibly falling) threshold.
        for (hash, kept) in other.kept {
            self.keep(hash, kept.count, kept.origin());
        }
    }

    /// Copies beyond the first of the keys checked.
    pub fn duplicate_count(&self) -> u64 {
        self.kept.values().map(|k| u64::from(k.count - 1)).sum()
    }

    /// Distinct keys checked.
    pub fn checked(&self) -> u64 {
        self.kept.len() as u64
    }

    /// The share of the key space checked (1.0: every key).
    pub fn share_checked(&self) -> f64 {
        if self.threshold == u128::MAX {
            1.0
        } else {
            self.threshold as f64 / u128::MAX as f64
        }
    }
}

/// What one attribute showed.
#[derive(Clone, Debug, Default)]
pub struct Attribute {
    /// Items holding it (NULL included).
    pub present: u64,
    /// Items by the value's type.
    pub types: BTreeMap<DdbType, u64>,
    /// Distinct values (scalars and sets by value; maps and lists by their text).
    pub distinct: Kmv,
    /// Lengths of S values, in characters.
    pub string_chars: Option<Range>,
    /// Lengths of B values, in bytes.
    pub binary_bytes: Option<Range>,
    /// N values and NS elements.
    pub numbers: Numbers,
    /// S values that read as ISO-8601.
    pub iso8601: u64,
    /// S values.
    pub strings: u64,
    /// Set sizes.
    pub set_sizes: Option<Range>,
    /// The deepest nesting of M and L (1: a map or list of scalars).
    pub max_depth: usize,
    /// Member paths inside maps (`address.city`, `items[].price`), by items holding them.
    pub paths: BTreeMap<String, u64>,
    /// Patterns of its S values that hold a digit (for foreign-key candidates), by count.
    pub patterns: BTreeMap<String, u64>,
}

impl Attribute {
    /// Adds one value; `numbers` are its numbers ([`NumberSeen::push`]).
    fn add(&mut self, value: &AttrValue<'_>, numbers: &[NumberSeen<'_>], scratch: &mut Scratch) {
        self.present += 1;
        *self.types.entry(value.ddb_type()).or_default() += 1;
        match value {
            AttrValue::S(s) => {
                self.distinct.add(hash_of(("S", s.as_ref())));
                widen(&mut self.string_chars, s.chars().count() as u64);
                self.strings += 1;
                self.iso8601 += u64::from(looks_iso8601(s));
                // Only a value with a digit has a pattern a reference can follow (`<n>`, `<id>`);
                // a reference is an attribute whose values at least 90% follow one such pattern.
                if s.len() <= MAX_PATTERNED_CHARS && s.bytes().any(|b| b.is_ascii_digit()) {
                    pattern_into(s, &mut scratch.pattern);
                    add_capped(&mut self.patterns, &scratch.pattern, 1, MAX_PATTERNS);
                }
            }
            AttrValue::N(_) => {
                for number in numbers {
                    self.distinct.add(number.exact_hash());
                    self.numbers.add(number);
                }
            }
            AttrValue::B(b) => {
                self.distinct.add(hash_of(("B", b.as_ref())));
                widen(&mut self.binary_bytes, base64_bytes(b));
            }
            AttrValue::Bool(v) => self.distinct.add(hash_of(("BOOL", v))),
            AttrValue::Null => self.distinct.add(hash_of("NULL")),
            AttrValue::Ss(items) | AttrValue::Bs(items) => {
                widen(&mut self.set_sizes, items.len() as u64);
                let mut sorted: Vec<&str> = items.iter().map(|s| s.as_ref()).collect();
                sorted.sort_unstable();
                self.distinct.add(hash_of(&sorted));
                if let AttrValue::Bs(items) = value {
                    for b in items {
                        widen(&mut self.binary_bytes, base64_bytes(b));
                    }
                }
            }
            AttrValue::Ns(items) => {
                widen(&mut self.set_sizes, items.len() as u64);
                for number in numbers {
                    self.numbers.add(number);
                }
                let mut sorted: Vec<u64> = numbers.iter().map(NumberSeen::exact_hash).collect();
                sorted.sort_unstable();
                self.distinct.add(hash_of(("NS", &sorted)));
            }
            AttrValue::M(_) | AttrValue::L(_) => {
                scratch.path.clear();
                scratch.seen.clear();
                let depth = walk(value, &mut scratch.path, &mut scratch.seen, &mut self.paths);
                self.max_depth = self.max_depth.max(depth);
                let mut hasher = hasher();
                hash_value(value, &mut hasher);
                self.distinct.add(hasher.finish());
            }
        }
    }

    fn merge(&mut self, other: &Attribute) {
        self.present += other.present;
        for (t, n) in &other.types {
            *self.types.entry(*t).or_default() += n;
        }
        self.distinct.merge(&other.distinct);
        widen_range(&mut self.string_chars, other.string_chars);
        widen_range(&mut self.binary_bytes, other.binary_bytes);
        self.numbers.merge(&other.numbers);
        self.iso8601 += other.iso8601;
        self.strings += other.strings;
        widen_range(&mut self.set_sizes, other.set_sizes);
        self.max_depth = self.max_depth.max(other.max_depth);
        for (path, n) in &other.paths {
            add_capped(&mut self.paths, path, *n, MAX_PATHS);
        }
        for (pattern, n) in &other.patterns {
            add_capped(&mut self.patterns, pattern, *n, MAX_PATTERNS);
        }
    }
}

/// Bytes a base64 text decodes to.
fn base64_bytes(text: &str) -> u64 {
    let trimmed = text.trim_end_matches('=');
    (trimmed.len() as u64 * 3) / 4
}

fn add_capped(counts: &mut BTreeMap<String, u64>, key: &str, n: u64, cap: usize) {
    if let Some(count) = counts.get_mut(key) {
        *count += n;
    } else if counts.len() < cap {
        counts.insert(key.to_string(), n);
    }
}

/// Walks a map or list, counting every member path (`a.b`, `items[].price`) in `paths` once per
/// value (`path` is the path so far; `seen`, the hashes of the paths this value has counted);
/// returns its depth.
fn walk(
    value: &AttrValue<'_>,
    path: &mut String,
    seen: &mut Vec<u64>,
    paths: &mut BTreeMap<String, u64>,
) -> usize {
    match value {
        AttrValue::M(members) => {
            let mut deepest = 0;
            for (name, member) in members {
                let len = path.len();
                if len > 0 {
                    path.push('.');
                }
                path.push_str(name);
                deepest = deepest.max(walk(member, path, seen, paths));
                let hash = hash_of(path.as_str());
                if !seen.contains(&hash) {
                    seen.push(hash);
                    add_capped(paths, path, 1, MAX_PATHS);
                }
                path.truncate(len);
            }
            deepest + 1
        }
        AttrValue::L(items) => {
            let len = path.len();
            path.push_str("[]");
            let mut deepest = 0;
            for item in items {
                deepest = deepest.max(walk(item, path, seen, paths));
            }
            path.truncate(len);
            deepest + 1
        }
        _ => 0,
    }
}

/// Buffers reused from value to value, so that profiling a value allocates nothing once they
/// have grown.
#[derive(Clone, Debug, Default)]
pub struct Scratch {
    pattern: String,
    path: String,
    seen: Vec<u64>,
    key_patterns: Vec<String>,
}

/// Items grouped by the patterns of their key values.
#[derive(Clone, Debug, Default)]
pub struct Group {
    /// Items.
    pub items: u64,
    /// Attributes (key attributes aside) and what they hold in this group's items.
    pub attributes: ByName<Shape>,
    /// One item's key values.
    pub example: Vec<String>,
    /// Per key attribute, the longest run of digits in its values (ids parsed from keys).
    pub key_digits: Vec<usize>,
}

/// What one attribute holds in one group's items: enough to type a column for it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Shape {
    /// Items holding it.
    pub items: u64,
    /// Items by its type.
    pub types: BTreeMap<DdbType, u64>,
    /// The most digits before the point of its numbers.
    pub max_integer_digits: usize,
    /// The most digits after the point.
    pub max_scale: usize,
    /// Numbers a 96-bit decimal cannot hold.
    pub beyond_decimal96: u64,
    /// Whether a map or list of it holds a set or binary (plain JSON cannot carry their types).
    pub nested_typed: bool,
}

impl Shape {
    /// Adds one value; `numbers` are its numbers ([`NumberSeen::push`]).
    fn add(&mut self, value: &AttrValue<'_>, numbers: &[NumberSeen<'_>]) {
        self.items += 1;
        *self.types.entry(value.ddb_type()).or_default() += 1;
        for number in numbers {
            if let Some(d) = &number.decimal {
                self.max_integer_digits = self.max_integer_digits.max(d.integer.len());
                self.max_scale = self.max_scale.max(d.scale());
            }
            self.beyond_decimal96 += u64::from(!number.fits_decimal96);
        }
        if matches!(value, AttrValue::M(_) | AttrValue::L(_)) {
            self.nested_typed |= holds_typed(value);
        }
    }

    /// Adds `other` (the same attribute in another file, or another entity).
    pub fn merge(&mut self, other: &Shape) {
        self.items += other.items;
        for (t, n) in &other.types {
            *self.types.entry(*t).or_default() += n;
        }
        self.max_integer_digits = self.max_integer_digits.max(other.max_integer_digits);
        self.max_scale = self.max_scale.max(other.max_scale);
        self.beyond_decimal96 += other.beyond_decimal96;
        self.nested_typed |= other.nested_typed;
    }
}

/// Whether a map or list holds a set or binary anywhere inside.
fn holds_typed(value: &AttrValue<'_>) -> bool {
    match value {
        AttrValue::M(members) => members.iter().any(|(_, v)| holds_typed(v)),
        AttrValue::L(items) => items.iter().any(holds_typed),
        AttrValue::B(_) | AttrValue::Ss(_) | AttrValue::Ns(_) | AttrValue::Bs(_) => true,
        _ => false,
    }
}

/// The longest run of ASCII digits in `text`.
fn longest_digits(text: &str) -> usize {
    text.split(|c: char| !c.is_ascii_digit())
        .map(str::len)
        .max()
        .unwrap_or(0)
}

/// One of the largest items.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct LargeItem {
    /// Its size: bytes of its line.
    pub bytes: u64,
    /// Where: the data file and line.
    pub location: String,
    /// Its key values.
    pub key: String,
}

/// A line that did not parse, and why.
#[derive(Clone, Debug, Serialize)]
pub struct BadLine {
    /// The data file and line.
    pub location: String,
    /// Why.
    pub reason: String,
}

/// Power-of-two item size buckets: bucket `i` holds sizes in `[2^(i-1), 2^i)` bytes.
pub const SIZE_BUCKETS: usize = 24;

/// The profile of some items.
#[derive(Clone, Debug, Default)]
pub struct Profile {
    /// Items parsed.
    pub items: u64,
    /// Lines that did not parse.
    pub bad_lines: u64,
    /// The first of them.
    pub bad_examples: Vec<BadLine>,
    /// Bytes of the items' lines.
    pub item_bytes: u64,
    /// Items by size bucket.
    pub size_buckets: [u64; SIZE_BUCKETS],
    /// The largest items.
    pub largest: Vec<LargeItem>,
    /// Per attribute, at most [`MAX_ATTRIBUTES`] names (the first seen in each file).
    pub attributes: ByName<Attribute>,
    /// Values of attributes past that cap (a table using attribute names as data).
    pub unprofiled_values: u64,
    /// Items by the patterns of their key values (one pattern per key attribute).
    pub groups: BTreeMap<Vec<String>, Group>,
    /// Items missing a key attribute, or holding it with a type a key cannot have.
    pub keyless: u64,
    /// Examples of those.
    pub keyless_examples: Vec<String>,
    /// Bytes of the longest key (all key values' bytes together).
    pub longest_key_bytes: u64,
    /// Keys over [`super::BTREE_KEY_BYTES`].
    pub long_keys: u64,
    /// Where those are.
    pub long_key_examples: Vec<String>,
    /// The duplicate check of the key.
    pub keys: KeySample,
    /// Buffers reused from line to line.
    scratch: Scratch,
    /// The DynamoDB JSON of the Ion line being read, reused.
    ion_json: String,
}

impl Profile {
    /// Adds one line of `location` (a data file and line number, for the examples).
    pub fn add_line(
        &mut self,
        line: &[u8],
        origin: Origin,
        location: impl Fn() -> String,
        keys: &[String],
    ) {
        // An Ion line is read through its DynamoDB JSON transcoding, in a buffer kept from line
        // to line.
        let mut ion_json = std::mem::take(&mut self.ion_json);
        let parsed = ferry_worker::decode::parse_item_fast(line, &mut ion_json);
        self.add_parsed(line, parsed, origin, location, keys);
        self.ion_json = ion_json;
    }

    fn add_parsed(
        &mut self,
        line: &[u8],
        parsed: Result<ferry_worker::item::Attributes<'_>, String>,
        origin: Origin,
        location: impl Fn() -> String,
        keys: &[String],
    ) {
        let attributes = match parsed {
            Ok(attributes) => attributes,
            Err(reason) => {
                self.bad_lines += 1;
                if self.bad_examples.len() < EXAMPLES {
                    self.bad_examples.push(BadLine {
                        location: location(),
                        reason,
                    });
                }
                return;
            }
        };
        self.items += 1;
        let bytes = line.len() as u64;
        self.item_bytes += bytes;
        let bucket = (64 - bytes.leading_zeros() as usize).min(SIZE_BUCKETS - 1);
        self.size_buckets[bucket] += 1;
        let mut key_values: Vec<Cow<'_, str>> = Vec::with_capacity(keys.len());
        for key in keys {
            match attributes
                .iter()
                .find(|(name, _)| name.as_ref() == key.as_str())
            {
                Some((_, AttrValue::S(v) | AttrValue::B(v))) => key_values.push(Cow::Borrowed(v)),
                // A number key by its value: 1 and 1.0 are one key to DynamoDB.
                Some((_, AttrValue::N(v))) => key_values.push(Cow::Owned(
                    Decimal::parse(v).map_or_else(|| v.to_string(), |d| d.to_string()),
                )),
                _ => {}
            }
        }
        let keyed = !keys.is_empty() && key_values.len() == keys.len();
        if !keys.is_empty() && !keyed {
            self.keyless += 1;
            if self.keyless_examples.len() < EXAMPLES {
                self.keyless_examples.push(location());
            }
        }
        let key_bytes: u64 = key_values.iter().map(|v| v.len() as u64).sum();
        self.longest_key_bytes = self.longest_key_bytes.max(key_bytes);
        if key_bytes > super::BTREE_KEY_BYTES {
            self.long_keys += 1;
            if self.long_key_examples.len() < EXAMPLES {
                self.long_key_examples
                    .push(format!("{} ({key_bytes} bytes)", location()));
            }
        }
        let smallest = self.largest.iter().map(|l| l.bytes).min().unwrap_or(0);
        if self.largest.len() < LARGEST_ITEMS || bytes > smallest {
            self.largest.push(LargeItem {
                bytes,
                location: location(),
                key: key_values.join(" / "),
            });
            self.largest.sort_by(|a, b| b.cmp(a));
            self.largest.truncate(LARGEST_ITEMS);
        }
        // Each number is parsed once, for the attribute's statistics and its group's shape:
        // attribute i's numbers are numbers[spans[i]..spans[i + 1]].
        let mut numbers: Vec<NumberSeen<'_>> = Vec::new();
        let mut spans: Vec<usize> = Vec::with_capacity(attributes.len() + 1);
        spans.push(0);
        for (_, value) in &attributes {
            NumberSeen::push(value, &mut numbers);
            spans.push(numbers.len());
        }
        let numbers_of = |i: usize| &numbers[spans[i]..spans[i + 1]];
        for (i, (name, value)) in attributes.iter().enumerate() {
            if let Some(known) = self.attributes.get_mut(name.as_ref()) {
                known.add(value, numbers_of(i), &mut self.scratch);
            } else if self.attributes.len() < MAX_ATTRIBUTES {
                let mut attribute = Attribute::default();
                attribute.add(value, numbers_of(i), &mut self.scratch);
                self.attributes.insert(name.to_string(), attribute);
            } else {
                self.unprofiled_values += 1;
            }
        }
        if keyed {
            self.keys.offer(KeySample::hash(&key_values), origin);
            let patterns = &mut self.scratch.key_patterns;
            patterns.resize(keys.len(), String::new());
            for (pattern, value) in patterns.iter_mut().zip(&key_values) {
                pattern_into(value, pattern);
            }
            if !self.groups.contains_key(patterns.as_slice()) {
                if self.groups.len() >= MAX_GROUPS {
                    for pattern in patterns.iter_mut() {
                        pattern.clear();
                        pattern.push_str("<other>");
                    }
                }
                if !self.groups.contains_key(patterns.as_slice()) {
                    self.groups.insert(patterns.clone(), Group::default());
                }
            }
            let group = self
                .groups
                .get_mut(patterns.as_slice())
                .expect("the group was just added");
            group.items += 1;
            group.key_digits.resize(key_values.len(), 0);
            for (most, value) in group.key_digits.iter_mut().zip(&key_values) {
                *most = (*most).max(longest_digits(value));
            }
            if group.example.is_empty() {
                group.example = key_values.iter().map(|v| v.to_string()).collect();
            }
            for (i, (name, value)) in attributes.iter().enumerate() {
                if keys.iter().any(|k| k == name.as_ref()) {
                    continue;
                }
                if let Some(shape) = group.attributes.get_mut(name.as_ref()) {
                    shape.add(value, numbers_of(i));
                } else if group.attributes.len() < MAX_GROUP_ATTRIBUTES {
                    let mut shape = Shape::default();
                    shape.add(value, numbers_of(i));
                    group.attributes.insert(name.to_string(), shape);
                }
            }
        }
    }

    /// Adds `other` (another file's profile) to this one.
    pub fn merge(&mut self, other: Profile) {
        self.items += other.items;
        self.bad_lines += other.bad_lines;
        for bad in other.bad_examples {
            if self.bad_examples.len() < EXAMPLES {
                self.bad_examples.push(bad);
            }
        }
        self.item_bytes += other.item_bytes;
        for (mine, theirs) in self.size_buckets.iter_mut().zip(other.size_buckets) {
            *mine += theirs;
        }
        self.largest.extend(other.largest);
        self.largest.sort_by(|a, b| b.cmp(a));
        self.largest.truncate(LARGEST_ITEMS);
        self.unprofiled_values += other.unprofiled_values;
        for (name, attribute) in other.attributes {
            let room = self.attributes.len() < MAX_ATTRIBUTES;
            match self.attributes.get_mut(&name) {
                Some(mine) => mine.merge(&attribute),
                None if room => {
                    self.attributes.insert(name, attribute);
                }
                None => self.unprofiled_values += attribute.present,
            }
        }
        for (patterns, group) in other.groups {
            let width = patterns.len();
            let patterns =
                if !self.groups.contains_key(&patterns) && self.groups.len() >= MAX_GROUPS {
                    vec!["<other>".to_string(); width]
                } else {
                    patterns
                };
            let mine = self.groups.entry(patterns).or_default();
            mine.items += group.items;
            if mine.example.is_empty() {
                mine.example = group.example;
            }
            mine.key_digits
                .resize(group.key_digits.len().max(mine.key_digits.len()), 0);
            for (most, theirs) in mine.key_digits.iter_mut().zip(&group.key_digits) {
                *most = (*most).max(*theirs);
            }
            for (name, shape) in &group.attributes {
                if let Some(known) = mine.attributes.get_mut(name) {
                    known.merge(shape);
                } else if mine.attributes.len() < MAX_GROUP_ATTRIBUTES {
                    mine.attributes.insert(name.clone(), shape.clone());
                }
            }
        }
        self.keyless += other.keyless;
        for example in other.keyless_examples {
            if self.keyless_examples.len() < EXAMPLES {
                self.keyless_examples.push(example);
            }
        }
        self.longest_key_bytes = self.longest_key_bytes.max(other.longest_key_bytes);
        self.long_keys += other.long_keys;
        for example in other.long_key_examples {
            if self.long_key_examples.len() < EXAMPLES {
                self.long_key_examples.push(example);
            }
        }
        self.keys.merge(other.keys);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_keep_the_words_and_name_the_numbers_and_ids() {
        assert_eq!(pattern_of("USER#1181"), "USER#<n>");
        assert_eq!(pattern_of("ORDER#000065"), "ORDER#<n>");
        assert_eq!(pattern_of("PROFILE"), "PROFILE");
        assert_eq!(pattern_of("REVIEW#19"), "REVIEW#<n>");
        assert_eq!(
            pattern_of("SESSION#3f2a9c1e-8b7d-4e21-9a0c-5d6e7f809abc"),
            "SESSION#<id>"
        );
        assert_eq!(
            pattern_of("EMAIL#user1053@example.com"),
            "EMAIL#user<n>@example.com"
        );
        // A short hex-looking word is a word.
        assert_eq!(pattern_of("CAFE#12"), "CAFE#<n>");
        assert!(pattern_of(&"x".repeat(500)).ends_with('…'));
    }

    #[test]
    fn the_key_check_is_exact_until_full_then_samples_the_key_space() {
        let key = |i: u64| KeySample::hash(&[format!("USER#{i}")]);
        let at = |line: u64| Origin { file: 0, line };
        let mut small = KeySample::default();
        for i in 0..1_000 {
            small.offer(key(i), at(i + 1));
        }
        small.offer(key(7), at(2_000));
        assert_eq!((small.duplicate_count(), small.share_checked()), (1, 1.0));
        assert_eq!(small.duplicates, vec![(at(8), at(2_000))]);
        // Two halves of 300k keys, each key twice across the halves: every checked key is a
        // duplicate; past the cap the threshold halved once (half the key space, so about 150k
        // keys), and never more keys than the cap are held.
        let (mut a, mut b) = (KeySample::default(), KeySample::default());
        for i in 0..300_000 {
            a.offer(key(i), at(i + 1));
            b.offer(key(i), at(i + 1));
            assert!(a.kept.len() <= KEY_SAMPLE);
        }
        a.merge(b);
        assert_eq!(a.offered, 600_000);
        assert_eq!(std::mem::size_of::<(u128, Kept)>(), 32);
        assert_eq!(a.duplicate_count(), a.checked());
        assert_eq!(a.share_checked(), 0.5);
        let checked = a.checked() as f64;
        assert!((checked / 150_000.0 - 1.0).abs() < 0.02, "{checked}");
        // A part whose cap is smaller samples a smaller share; merged, the lower share holds.
        let (mut whole, mut part) = (KeySample::default(), KeySample::with_cap(50_000));
        for i in 0..120_000 {
            whole.offer(key(i), at(i + 1));
            part.offer(key(i + 1_000_000), at(i + 1));
        }
        assert_eq!((whole.share_checked(), part.share_checked()), (1.0, 0.25));
        whole.merge(part);
        assert_eq!(whole.share_checked(), 0.25);
        let checked = whole.checked() as f64;
        assert!((checked / 60_000.0 - 1.0).abs() < 0.03, "{checked}");
        assert_eq!(whole.duplicate_count(), 0);
    }

    /// The pattern as the first version wrote it (chars, one at a time), for the rewrite to agree.
    fn pattern_reference(value: &str) -> String {
        let chars: Vec<char> = value.chars().collect();
        let mut out = String::new();
        let mut at = 0;
        while at < chars.len() {
            let hexish = |c: char| c.is_ascii_hexdigit() || c == '-';
            let mut end = at;
            while end < chars.len() && hexish(chars[end]) {
                end += 1;
            }
            let run = &chars[at..end];
            let digits = run.iter().filter(|c| c.is_ascii_digit()).count();
            if run.len() >= 16 && digits > 0 && run.iter().any(|c| *c != '-') {
                out.push_str("<id>");
                at = end;
            } else if chars[at].is_ascii_digit() {
                while at < chars.len() && chars[at].is_ascii_digit() {
                    at += 1;
                }
                out.push_str("<n>");
            } else {
                out.push(chars[at]);
                at += 1;
            }
            if out.chars().count() > MAX_PATTERN_CHARS {
                let cut: String = out.chars().take(MAX_PATTERN_CHARS).collect();
                return format!("{cut}…");
            }
        }
        out
    }

    #[test]
    fn the_pattern_rewrite_agrees_with_the_first_version() {
        // Values from an alphabet of digits, hex letters, dashes, other letters, separators and
        // non-ASCII characters, of lengths 0 to 80, from a fixed generator.
        let alphabet: Vec<char> = "0123456789abcdefABCDEF--xyzXYZ#_@.é€日 ".chars().collect();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut out = String::new();
        for _ in 0..50_000 {
            let len = (next() % 81) as usize;
            // Long runs of one class too: ids, words, numbers.
            let bias = next() % 4;
            let value: String = (0..len)
                .map(|_| {
                    let pick = next() as usize;
                    match bias {
                        0 => alphabet[pick % 10],
                        1 => alphabet[pick % 22],
                        2 => alphabet[10 + pick % 14],
                        _ => alphabet[pick % alphabet.len()],
                    }
                })
                .collect();
            pattern_into(&value, &mut out);
            assert_eq!(out, pattern_reference(&value), "{value:?}");
        }
    }

    #[test]
    fn number_keys_are_compared_by_value() {
        let keys = vec!["id".to_string()];
        let mut profile = Profile::default();
        for (i, line) in [
            r#"{"Item":{"id":{"N":"1"}}}"#,
            r#"{"Item":{"id":{"N":"1.0"}}}"#,
            r#"{"Item":{"id":{"N":"2"}}}"#,
        ]
        .iter()
        .enumerate()
        {
            let origin = Origin {
                file: 0,
                line: i as u64 + 1,
            };
            profile.add_line(line.as_bytes(), origin, String::new, &keys);
        }
        assert_eq!(profile.keys.duplicate_count(), 1);
    }

    #[test]
    fn decimals_compare_exactly_without_floats() {
        let d = |t: &str| Decimal::parse(t).unwrap();
        assert!(
            d("12345678901234567890123456789012345678")
                > d("12345678901234567890123456789012345677")
        );
        assert!(d("-1.5") < d("-1.25"));
        assert!(d("0.1") > d("-0"));
        assert_eq!(d("1.500").to_string(), "1.5");
        assert_eq!(d("1E+3").to_string(), "1000");
        assert_eq!(d("-0.00").to_string(), "0");
        assert_eq!(d("123.4500").precision(), 5);
        assert_eq!(d("123.4500").scale(), 2);
        assert_eq!(d("1699806719").as_i64(), Some(1_699_806_719));
        assert!(Decimal::parse("1.2.3").is_none());
        // The fit is decided on the canonical text, as the full parse decides it, in every
        // spelling (exponents, signs, zeros).
        for text in [
            "1",
            "1.50",
            "-0.0",
            "1e30",
            "1E-30",
            "7.9228162514264337593543950335E28",
            "79228162514264337593543950336",
            "0.00000000000000000000000000001",
            "12345678901234567890123456789012345678",
            "+5e2",
        ] {
            let (_, fits) = Decimal::parse_with_fit(text).unwrap();
            let full = ferry_worker::number::ParsedNumber::parse(text).unwrap();
            assert_eq!(fits, full.fits_decimal96(), "{text}");
        }
    }

    #[test]
    fn iso8601_looks() {
        for yes in [
            "2022-05-18",
            "2022-05-18T14:49:35Z",
            "2022-05-18 14:49",
            "2022-05-18T14:49:35.123+02:00",
            "2022-05-18T14:49:35-0500",
        ] {
            assert!(looks_iso8601(yes), "{yes}");
        }
        for no in [
            "2022-5-18",
            "18/05/2022",
            "2022-05-18T",
            "2022-05-18Tx",
            "20220518",
            "",
        ] {
            assert!(!looks_iso8601(no), "{no}");
        }
    }

    #[test]
    fn the_distinct_estimate_is_exact_when_small_and_close_when_large() {
        let mut small = Kmv::default();
        for i in 0..100u64 {
            small.add(hash_of(i % 40));
        }
        assert_eq!(small.estimate(), 40);
        let (mut a, mut b) = (Kmv::default(), Kmv::default());
        for i in 0..50_000u64 {
            a.add(hash_of(i));
            b.add(hash_of(i + 25_000));
        }
        a.merge(&b);
        let estimate = a.estimate() as f64;
        assert!((estimate - 75_000.0).abs() / 75_000.0 < 0.1, "{estimate}");
    }

    #[test]
    fn a_profile_of_two_halves_merged_is_the_profile_of_the_whole() {
        let lines = [
            r#"{"Item":{"PK":{"S":"USER#1"},"SK":{"S":"PROFILE"},"ttl":{"N":"1699806719"},"m":{"M":{"a":{"M":{"b":{"N":"1.25"}}}}}}}"#,
            r#"{"Item":{"PK":{"S":"USER#2"},"SK":{"S":"ORDER#7"},"tags":{"SS":["a","b","c"]},"n":{"N":"-3"}}}"#,
            r#"{"Item":{"PK":{"S":"USER#3"},"SK":{"S":"ORDER#8"},"n":{"N":"12345678901234567890123456789.5"}}}"#,
            r#"{"Item":{"PK":{"S":"USER#3"}}}"#,
            r#"{"Item":{"PK":{"S":"x""#,
        ];
        let keys = vec!["PK".to_string(), "SK".to_string()];
        let mut whole = Profile::default();
        let (mut first, mut second) = (Profile::default(), Profile::default());
        for (i, line) in lines.iter().enumerate() {
            let at = || format!("file:{}", i + 1);
            let origin = Origin {
                file: 0,
                line: i as u64 + 1,
            };
            whole.add_line(line.as_bytes(), origin, at, &keys);
            let half = if i < 2 { &mut first } else { &mut second };
            half.add_line(line.as_bytes(), origin, at, &keys);
        }
        first.merge(second);
        for profile in [&whole, &first] {
            assert_eq!(
                (profile.items, profile.bad_lines, profile.keyless),
                (4, 1, 1)
            );
            assert_eq!(profile.bad_examples[0].location, "file:5");
            assert_eq!(profile.keyless_examples, vec!["file:4".to_string()]);
            let groups: Vec<(Vec<String>, u64)> = profile
                .groups
                .iter()
                .map(|(p, g)| (p.clone(), g.items))
                .collect();
            assert_eq!(
                groups,
                vec![
                    (vec!["USER#<n>".into(), "ORDER#<n>".into()], 2),
                    (vec!["USER#<n>".into(), "PROFILE".into()], 1)
                ]
            );
            let n = &profile.attributes["n"].numbers;
            assert_eq!(n.min.as_ref().unwrap().to_string(), "-3");
            assert_eq!(
                n.max.as_ref().unwrap().to_string(),
                "12345678901234567890123456789.5"
            );
            assert_eq!(
                (n.max_precision, n.max_scale, n.beyond_decimal96),
                (30, 1, 1)
            );
            assert_eq!(profile.attributes["ttl"].numbers.epoch_seconds, 1);
            assert_eq!(profile.attributes["m"].max_depth, 2);
            assert_eq!(
                profile.attributes["m"].paths.keys().collect::<Vec<_>>(),
                vec!["a", "a.b"]
            );
            assert_eq!(
                profile.attributes["tags"].set_sizes,
                Some(Range { min: 3, max: 3 })
            );
            assert_eq!(profile.attributes["PK"].distinct.estimate(), 3);
            assert_eq!(profile.attributes["m"].distinct.estimate(), 1);
            assert_eq!(profile.largest.len(), 4);
            assert!(profile.largest[0].bytes >= profile.largest[3].bytes);
        }
    }
}
