//! DynamoDB numbers, kept exact: validated against DynamoDB's limits, written as canonical plain
//! decimal text, and encoded as PostgreSQL binary NUMERIC. No number ever passes through `f64`.
//!
//! DynamoDB numbers carry at most 38 significant digits with magnitudes from 1E-130 to just under
//! 1E+126. Exports write them normalised in plain digits, but exponent notation is accepted too and
//! expanded. The canonical text keeps every digit as written (`1.50` stays `1.50`, as PostgreSQL
//! keeps its display scale), drops a leading `+` and leading integer zeros, and writes zero without
//! a sign.

use std::borrow::Cow;

/// Why a number is refused. The number is quoted as written, cut to its first characters when
/// it is long (a hostile line can hold one of megabytes).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NumberError {
    /// Not decimal number syntax.
    #[error("invalid number {0}")]
    Syntax(Quoted),
    /// More than 38 significant digits.
    #[error("number {0} has more than 38 significant digits")]
    TooPrecise(Quoted),
    /// Outside 1E-130 ..= 9.99…E+125.
    #[error("number {0} is outside DynamoDB's range (1E-130 to 1E+126)")]
    OutOfRange(Quoted),
    /// Longer than any DynamoDB number is written.
    #[error(
        "number {0} is {1} characters long; no DynamoDB number is longer than {MAX_NUMBER_TEXT}"
    )]
    TooLong(Quoted, usize),
}

/// The longest number text accepted: a DynamoDB number in plain digits is at most 170 characters
/// (`-0.` + 129 zeros + 38 digits), so this leaves room for trailing zeros and exponents while
/// bounding the work and the scale a hostile number can ask for.
pub const MAX_NUMBER_TEXT: usize = 256;

/// A number as written, quoted for a message: its first 40 characters, then how many more.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quoted(String);

impl Quoted {
    fn of(text: &str) -> Quoted {
        const SHOWN: usize = 40;
        match text.char_indices().nth(SHOWN) {
            None => Quoted(format!("{text:?}")),
            Some((cut, _)) => Quoted(format!(
                "{:?}… ({} more characters)",
                &text[..cut],
                text[cut..].chars().count()
            )),
        }
    }
}

impl std::fmt::Display for Quoted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Maximum significant digits of a DynamoDB number.
pub const MAX_SIGNIFICANT_DIGITS: usize = 38;

/// A validated number: `0.digits × 10^point`, with the sign apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedNumber {
    negative: bool,
    /// Integer digits, no leading zeros (empty for |x| < 1).
    int_digits: String,
    /// Fraction digits as written (trailing zeros kept; they are the display scale).
    frac_digits: String,
}

impl ParsedNumber {
    /// Parses and validates DynamoDB number text.
    pub fn parse(text: &str) -> Result<ParsedNumber, NumberError> {
        check_length(text)?;
        let syntax = || NumberError::Syntax(Quoted::of(text));
        let bytes = text.as_bytes();
        let mut pos = 0;
        let mut negative = false;
        if let Some(&sign) = bytes.first() {
            if sign == b'-' || sign == b'+' {
                negative = sign == b'-';
                pos = 1;
            }
        }
        let mantissa_start = pos;
        while pos < bytes.len() && (bytes[pos].is_ascii_digit() || bytes[pos] == b'.') {
            pos += 1;
        }
        let mantissa = &text[mantissa_start..pos];
        let (int_part, frac_part) = match mantissa.split_once('.') {
            Some((i, f)) => (i, f),
            None => (mantissa, ""),
        };
        if frac_part.contains('.') || (int_part.is_empty() && frac_part.is_empty()) {
            return Err(syntax());
        }
        let mut exponent: i64 = 0;
        if pos < bytes.len() {
            if bytes[pos] != b'e' && bytes[pos] != b'E' {
                return Err(syntax());
            }
            let exp_text = &text[pos + 1..];
            let digits = exp_text.strip_prefix(['+', '-']).unwrap_or(exp_text);
            if digits.is_empty() || digits.len() > 6 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(syntax());
            }
            exponent = digits.parse::<i64>().map_err(|_| syntax())?;
            if exp_text.starts_with('-') {
                exponent = -exponent;
            }
        }

        check_limits(text, int_part, frac_part, exponent)?;

        // Apply the exponent by moving the decimal point.
        let (mut int_digits, mut frac_digits) = (int_part.to_string(), frac_part.to_string());
        if exponent > 0 {
            let shift = exponent as usize;
            if frac_digits.len() <= shift {
                int_digits.push_str(&frac_digits);
                int_digits.extend(std::iter::repeat_n('0', shift - frac_digits.len()));
                frac_digits.clear();
            } else {
                int_digits.push_str(&frac_digits[..shift]);
                frac_digits.drain(..shift);
            }
        } else if exponent < 0 {
            let shift = (-exponent) as usize;
            if int_digits.len() <= shift {
                let mut f = "0".repeat(shift - int_digits.len());
                f.push_str(&int_digits);
                f.push_str(&frac_digits);
                frac_digits = f;
                int_digits.clear();
            } else {
                let moved = int_digits.split_off(int_digits.len() - shift);
                frac_digits.insert_str(0, &moved);
            }
        }
        let int_digits = int_digits.trim_start_matches('0').to_string();
        let is_zero = int_digits.is_empty() && frac_digits.bytes().all(|b| b == b'0');
        Ok(ParsedNumber {
            negative: negative && !is_zero,
            int_digits,
            frac_digits,
        })
    }

    /// Whether the value fits a 96-bit decimal exactly (HeliosDB's NUMERIC): its digits, read as an
    /// integer, below 2^96, with at most 28 fraction digits. A value that does not fit would be
    /// refused or, worse, silently rounded by such a server.
    pub fn fits_decimal96(&self) -> bool {
        const MAX: &str = "79228162514264337593543950335"; // 2^96 - 1
        if self.frac_digits.len() > 28 {
            return false;
        }
        let digits: String = format!("{}{}", self.int_digits, self.frac_digits);
        let digits = digits.trim_start_matches('0');
        digits.len() < MAX.len() || (digits.len() == MAX.len() && digits <= MAX)
    }

    /// Canonical plain decimal text (also a valid JSON number).
    pub fn to_plain(&self) -> String {
        let mut out = String::with_capacity(self.int_digits.len() + self.frac_digits.len() + 3);
        if self.negative {
            out.push('-');
        }
        if self.int_digits.is_empty() {
            out.push('0');
        } else {
            out.push_str(&self.int_digits);
        }
        if !self.frac_digits.is_empty() {
            out.push('.');
            out.push_str(&self.frac_digits);
        }
        out
    }

    /// Appends PostgreSQL's binary NUMERIC representation: ndigits, weight, sign, dscale, then
    /// base-10000 digits.
    pub fn write_pg_numeric(&self, out: &mut Vec<u8>) {
        let dscale = self.frac_digits.len() as u16;
        // Pad the integer part on the left and the fraction on the right to whole base-10000 groups.
        let int_pad = (4 - self.int_digits.len() % 4) % 4;
        let frac_pad = (4 - self.frac_digits.len() % 4) % 4;
        let mut digits: Vec<u8> =
            Vec::with_capacity(int_pad + self.int_digits.len() + self.frac_digits.len() + frac_pad);
        digits.extend(std::iter::repeat_n(0u8, int_pad));
        digits.extend(self.int_digits.bytes().map(|b| b - b'0'));
        digits.extend(self.frac_digits.bytes().map(|b| b - b'0'));
        digits.extend(std::iter::repeat_n(0u8, frac_pad));
        let int_groups = ((int_pad + self.int_digits.len()) / 4) as i32;
        let mut groups: Vec<i16> = digits
            .chunks(4)
            .map(|c| (c[0] as i16) * 1000 + (c[1] as i16) * 100 + (c[2] as i16) * 10 + c[3] as i16)
            .collect();
        let mut weight = int_groups - 1;
        let leading = groups.iter().take_while(|&&g| g == 0).count();
        groups.drain(..leading);
        weight -= leading as i32;
        while groups.last() == Some(&0) {
            groups.pop();
        }
        if groups.is_empty() {
            weight = 0;
        }
        out.extend_from_slice(&(groups.len() as i16).to_be_bytes());
        out.extend_from_slice(&(weight as i16).to_be_bytes());
        out.extend_from_slice(&(if self.negative { 0x4000u16 } else { 0 }).to_be_bytes());
        out.extend_from_slice(&dscale.to_be_bytes());
        for group in groups {
            out.extend_from_slice(&group.to_be_bytes());
        }
    }
}

fn check_length(text: &str) -> Result<(), NumberError> {
    if text.len() > MAX_NUMBER_TEXT {
        return Err(NumberError::TooLong(Quoted::of(text), text.len()));
    }
    Ok(())
}

/// Checks DynamoDB's limits on `int_part.frac_part × 10^exponent` without allocating.
fn check_limits(
    text: &str,
    int_part: &str,
    frac_part: &str,
    exponent: i64,
) -> Result<(), NumberError> {
    let all_digits = || int_part.bytes().chain(frac_part.bytes());
    let leading_zeros = all_digits().take_while(|&b| b == b'0').count();
    let total = int_part.len() + frac_part.len();
    if leading_zeros < total {
        let trailing_zeros = all_digits().rev().take_while(|&b| b == b'0').count();
        let significant = total - leading_zeros - trailing_zeros;
        if significant > MAX_SIGNIFICANT_DIGITS {
            return Err(NumberError::TooPrecise(Quoted::of(text)));
        }
        // Decimal exponent of the leading significant digit.
        let lead_exp = int_part.len() as i64 - 1 - leading_zeros as i64 + exponent;
        if !(-130..=125).contains(&lead_exp) {
            return Err(NumberError::OutOfRange(Quoted::of(text)));
        }
    } else if exponent.abs() > 1000 {
        return Err(NumberError::OutOfRange(Quoted::of(text)));
    }
    Ok(())
}

/// Appends PostgreSQL's binary NUMERIC for canonical plain text (as [`canonical_number`] returns)
/// without allocating; `None` (and nothing appended) when the text is not canonical plain text or
/// has more than [`PLAIN_GROUPS`] groups of four digits.
pub fn write_pg_numeric_plain(text: &str, out: &mut Vec<u8>) -> Option<()> {
    if !is_canonical_plain(text) {
        return None;
    }
    let negative = text.starts_with('-');
    let body = text.strip_prefix('-').unwrap_or(text);
    let (int_part, frac_part) = body.split_once('.').unwrap_or((body, ""));
    let int_part = int_part.trim_start_matches('0');
    // Base-10000 groups of the digits, the integer part padded on the left and the fraction on
    // the right to whole groups, in one pass into a buffer on the stack (longer numbers: None,
    // and the caller takes the general encoder).
    let int_pad = (4 - int_part.len() % 4) % 4;
    let int_groups = (int_pad + int_part.len()) / 4;
    let count = int_groups + frac_part.len().div_ceil(4);
    let mut groups = [0i16; PLAIN_GROUPS];
    if count > PLAIN_GROUPS {
        return None;
    }
    let (mut n, mut group, mut in_group) = (0, 0i16, int_pad);
    for &b in int_part.as_bytes().iter().chain(frac_part.as_bytes()) {
        group = group * 10 + i16::from(b - b'0');
        in_group += 1;
        if in_group == 4 {
            groups[n] = group;
            (n, group, in_group) = (n + 1, 0, 0);
        }
    }
    if in_group > 0 {
        groups[n] = group * [1, 1000, 100, 10][in_group];
    }
    let groups = &groups[..count];
    let (ndigits, weight, first) = match groups.iter().position(|&g| g != 0) {
        None => (0usize, 0i32, 0usize),
        Some(first) => {
            let last = groups
                .iter()
                .rposition(|&g| g != 0)
                .expect("a nonzero group");
            (
                last - first + 1,
                int_groups as i32 - 1 - first as i32,
                first,
            )
        }
    };
    out.extend_from_slice(&(ndigits as i16).to_be_bytes());
    out.extend_from_slice(&(weight as i16).to_be_bytes());
    let sign: u16 = if negative && ndigits > 0 { 0x4000 } else { 0 };
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&(frac_part.len() as u16).to_be_bytes());
    for group in &groups[first..first + ndigits] {
        out.extend_from_slice(&group.to_be_bytes());
    }
    Some(())
}

/// The most base-10000 groups [`write_pg_numeric_plain`] encodes (192 digits, far past
/// DynamoDB's 38).
const PLAIN_GROUPS: usize = 48;

/// Whether `text` is already canonical plain text (the common case for exports), so it can be
/// used as is: optional `-`, digits without a redundant leading zero, optional fraction.
fn is_canonical_plain(text: &str) -> bool {
    let body = text.strip_prefix('-').unwrap_or(text);
    let (int_part, frac) = match body.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (body, None),
    };
    let digits_ok = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits_ok(int_part) || (int_part.len() > 1 && int_part.starts_with('0')) {
        return false;
    }
    if let Some(frac) = frac {
        if !digits_ok(frac) {
            return false;
        }
    }
    // "-0", "-0.00": canonical zero has no sign.
    !(text.starts_with('-') && body.bytes().all(|b| b == b'0' || b == b'.'))
}

/// The common case in one pass: canonical plain text (`-?(0|[1-9][0-9]*)(\.[0-9]+)?`, no
/// negative zero) of at most [`MAX_SIGNIFICANT_DIGITS`] bytes, which is within every DynamoDB
/// limit (at most 38 digits, and a leading digit's exponent between -37 and 37).
#[inline]
pub(crate) fn is_short_canonical(text: &str) -> bool {
    let bytes = text.as_bytes();
    let (negative, body) = match bytes {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, bytes),
    };
    if body.is_empty() || body.len() > MAX_SIGNIFICANT_DIGITS {
        return false;
    }
    let mut nonzero = false;
    let mut i = 0;
    while let Some(&b) = body.get(i) {
        if !b.is_ascii_digit() {
            break;
        }
        nonzero |= b != b'0';
        i += 1;
    }
    if i == 0 || (i > 1 && body[0] == b'0') {
        return false;
    }
    if i < body.len() {
        if body[i] != b'.' || i + 1 == body.len() {
            return false;
        }
        for &b in &body[i + 1..] {
            if !b.is_ascii_digit() {
                return false;
            }
            nonzero |= b != b'0';
        }
    }
    !negative || nonzero
}

/// Validates DynamoDB number text and returns its canonical plain form, borrowing when the input
/// already is canonical.
pub fn canonical_number(text: &str) -> Result<Cow<'_, str>, NumberError> {
    if is_short_canonical(text) {
        return Ok(Cow::Borrowed(text));
    }
    check_length(text)?;
    if is_canonical_plain(text) {
        let body = text.strip_prefix('-').unwrap_or(text);
        let (int_part, frac_part) = body.split_once('.').unwrap_or((body, ""));
        check_limits(text, int_part, frac_part, 0)?;
        return Ok(Cow::Borrowed(text));
    }
    Ok(Cow::Owned(ParsedNumber::parse(text)?.to_plain()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(text: &str) -> String {
        canonical_number(text).unwrap().into_owned()
    }

    /// The one-pass check takes only text the full path keeps as it is.
    #[test]
    fn the_short_canonical_check_agrees_with_the_full_path() {
        let slow = |text: &str| {
            check_length(text).is_ok() && is_canonical_plain(text) && {
                let body = text.strip_prefix('-').unwrap_or(text);
                let (i, f) = body.split_once('.').unwrap_or((body, ""));
                check_limits(text, i, f, 0).is_ok()
            }
        };
        let mut cases: Vec<String> = [
            "0",
            "-0",
            "0.0",
            "-0.0",
            "00",
            "01",
            "-01",
            "1",
            "-1",
            "10",
            "1.",
            ".1",
            "1.5",
            "-1.50",
            "0.001",
            "-0.000",
            "1e5",
            "1E5",
            "+1",
            "--1",
            "1.2.3",
            "",
            "-",
            "1 ",
            " 1",
            "١",
            "12345678901234567890123456789012345678",
            "-12345678901234567890123456789012345678",
            "123456789012345678901234567890123456789",
            "1234567890123456789012345678901234567.8",
            "0.0000000000000000000000000000000000001",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Every short string over a small alphabet.
        let alphabet = ['0', '1', '9', '-', '.', 'e'];
        let mut frontier = vec![String::new()];
        for _ in 0..5 {
            let mut next = Vec::new();
            for prefix in &frontier {
                for c in alphabet {
                    let mut text = prefix.clone();
                    text.push(c);
                    next.push(text);
                }
            }
            cases.extend(next.iter().cloned());
            frontier = next;
        }
        let mut fast_taken = 0;
        for text in &cases {
            if is_short_canonical(text) {
                fast_taken += 1;
                assert!(slow(text), "{text:?} taken by the fast check only");
                assert_eq!(
                    canonical_number(text).unwrap(),
                    Cow::Borrowed(text.as_str())
                );
            } else if text.len() <= MAX_SIGNIFICANT_DIGITS && slow(text) {
                panic!("{text:?} is short canonical text the fast check missed");
            }
        }
        assert!(fast_taken > 100, "{fast_taken}");
    }

    #[test]
    fn canonical_forms() {
        assert_eq!(plain("0"), "0");
        assert_eq!(plain("-0"), "0");
        assert_eq!(plain("-0.00"), "0.00");
        assert_eq!(plain("+5"), "5");
        assert_eq!(plain("007"), "7");
        assert_eq!(plain(".5"), "0.5");
        assert_eq!(plain("5."), "5");
        assert_eq!(plain("-0.5"), "-0.5");
        assert_eq!(plain("1.50"), "1.50");
        assert_eq!(plain("1.5E2"), "150");
        assert_eq!(plain("1.50e1"), "15.0");
        assert_eq!(plain("-12.5E-3"), "-0.0125");
        assert_eq!(plain("1E+125"), format!("1{}", "0".repeat(125)));
        assert_eq!(plain("1E-130"), format!("0.{}1", "0".repeat(129)));
        assert_eq!(
            plain("1.00000000000000007629769841092E+50"),
            "100000000000000007629769841092000000000000000000000"
        );
    }

    #[test]
    fn dynamodb_limits() {
        let d38 = "12345678901234567890123456789012345678";
        assert_eq!(plain(d38), d38);
        assert_eq!(plain(&format!("-0.{d38}")), format!("-0.{d38}"));
        assert!(matches!(
            canonical_number(&format!("{d38}9")),
            Err(NumberError::TooPrecise(_))
        ));
        // Trailing zeros are not significant: 38 digits followed by zeros is fine.
        assert!(canonical_number(&format!("{d38}000")).is_ok());
        let max = format!("9.{}E+125", "9".repeat(37));
        assert_eq!(plain(&max).len(), 126);
        assert!(matches!(
            canonical_number("1E+126"),
            Err(NumberError::OutOfRange(_))
        ));
        assert!(matches!(
            canonical_number("1E-131"),
            Err(NumberError::OutOfRange(_))
        ));
        assert!(canonical_number(&format!("1{}", "0".repeat(125))).is_ok());
        assert!(canonical_number(&format!("0.{}1", "0".repeat(129))).is_ok());
        assert!(canonical_number(&format!("0.{}1", "0".repeat(130))).is_err());
        assert_eq!(plain("0E+500"), "0");
        assert!(matches!(
            canonical_number("0E+5000"),
            Err(NumberError::OutOfRange(_))
        ));
    }

    #[test]
    fn decimal96_limits() {
        let fits = |t: &str| ParsedNumber::parse(t).unwrap().fits_decimal96();
        assert!(fits("79228162514264337593543950335"));
        assert!(!fits("79228162514264337593543950336"));
        assert!(fits("-7.9228162514264337593543950335"));
        assert!(fits("0.0000000000000000000000000001"));
        assert!(!fits("0.00000000000000000000000000001"));
        assert!(!fits("-123456.000000000000000000000000000001"));
        assert!(!fits("12345678901234567890123456789012345678"));
        assert!(!fits("1E+125"));
        assert!(!fits("1E-130"));
        assert!(fits("1234.56"));
        assert!(fits("0"));
    }

    #[test]
    fn syntax_errors() {
        for bad in [
            "", "-", "abc", "1.2.3", "1e", "1e+", "NaN", "Infinity", "1,5", " 1", "1 ", "0x10",
            "--1", "1e5.5", ".",
        ] {
            assert!(
                matches!(canonical_number(bad), Err(NumberError::Syntax(_))),
                "{bad:?}"
            );
        }
    }

    fn pg(text: &str) -> (i16, i16, u16, u16, Vec<i16>) {
        let mut out = Vec::new();
        ParsedNumber::parse(text)
            .unwrap()
            .write_pg_numeric(&mut out);
        let word = |i: usize| i16::from_be_bytes([out[i], out[i + 1]]);
        let n = word(0);
        let digits = (0..n as usize).map(|k| word(8 + 2 * k)).collect();
        (n, word(2), word(4) as u16, word(6) as u16, digits)
    }

    #[test]
    fn the_allocation_free_encoder_agrees() {
        let d38 = "12345678901234567890123456789012345678";
        let many = [
            "0",
            "0.00",
            "1",
            "10000",
            "12345.678",
            "-0.5",
            "0.00001",
            "-99999999.99990000",
            d38,
            &format!("-0.{d38}"),
            &format!("1{}", "0".repeat(125)),
            &format!("0.{}1", "0".repeat(129)),
        ];
        for text in many {
            let mut fast = Vec::new();
            write_pg_numeric_plain(text, &mut fast).unwrap();
            let mut slow = Vec::new();
            ParsedNumber::parse(text)
                .unwrap()
                .write_pg_numeric(&mut slow);
            assert_eq!(fast, slow, "{text}");
        }
        assert!(write_pg_numeric_plain("1E5", &mut Vec::new()).is_none());
        // Past the stack buffer: nothing written, the caller takes the general encoder.
        let mut out = Vec::new();
        assert!(write_pg_numeric_plain(&"9".repeat(193), &mut out).is_none());
        assert!(out.is_empty());
        let mut out = Vec::new();
        write_pg_numeric_plain(&"9".repeat(192), &mut out).unwrap();
        assert_eq!(out.len(), 8 + 2 * 48);
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            cases: 2000,
            failure_persistence: None,
            ..proptest::test_runner::Config::default()
        })]

        /// Every number the scanner's tests generate that is canonical plain text and a valid
        /// DynamoDB number encodes as the general encoder encodes its parse.
        #[test]
        fn the_allocation_free_encoder_agrees_on_generated_numbers(
            text in proptest::prop_oneof![
                crate::scan::differential::number(),
                "-?(0|[1-9][0-9]{0,19})(\\.[0-9]{1,19})?",
                "-?0\\.0{0,12}[0-9]{1,12}",
                "[1-9][0-9]{0,6}0{0,30}",
            ]
        ) {
            let mut fast = Vec::new();
            let plain = write_pg_numeric_plain(&text, &mut fast).is_some();
            if !plain {
                proptest::prop_assert!(fast.is_empty());
            }
            if let (true, Ok(parsed)) = (plain, ParsedNumber::parse(&text)) {
                let mut slow = Vec::new();
                parsed.write_pg_numeric(&mut slow);
                proptest::prop_assert_eq!(fast, slow, "{}", text);
            }
        }
    }

    #[test]
    fn pg_numeric_encoding() {
        assert_eq!(pg("0"), (0, 0, 0, 0, vec![]));
        assert_eq!(pg("0.00"), (0, 0, 0, 2, vec![]));
        assert_eq!(pg("1"), (1, 0, 0, 0, vec![1]));
        assert_eq!(pg("10000"), (1, 1, 0, 0, vec![1]));
        assert_eq!(pg("12345.678"), (3, 1, 0, 3, vec![1, 2345, 6780]));
        assert_eq!(pg("-0.5"), (1, -1, 0x4000, 1, vec![5000]));
        assert_eq!(pg("0.00001"), (1, -2, 0, 5, vec![1000]));
        let tiny = pg("1E-130");
        assert_eq!(
            (tiny.0, tiny.1, tiny.3, tiny.4.clone()),
            (1, -33, 130, vec![100])
        );
        let big = pg("1E+125");
        assert_eq!((big.0, big.1, big.4), (1, 31, vec![10]));
    }

    #[test]
    fn hostile_numbers_are_refused_quickly_with_a_short_message() {
        let cases = [
            "9".repeat(50_000),
            format!("1.{}", "0".repeat(50_000)),
            format!("0.{}", "0".repeat(50_000)),
            format!("1{}", "0".repeat(50_000)),
            format!("{}E-5", "1".repeat(30_000)),
        ];
        for text in &cases {
            let started = std::time::Instant::now();
            let err = canonical_number(text).unwrap_err();
            assert!(
                matches!(err, NumberError::TooLong(_, n) if n == text.len()),
                "{err}"
            );
            assert!(matches!(
                ParsedNumber::parse(text),
                Err(NumberError::TooLong(..))
            ));
            let message = err.to_string();
            assert!(message.len() < 200, "{message}");
            assert!(message.contains("more characters"), "{message}");
            assert!(started.elapsed() < std::time::Duration::from_millis(100));
        }
        // The longest legitimate plain form still passes.
        let tiny = format!(
            "-0.{}12345678901234567890123456789012345678",
            "0".repeat(92)
        );
        assert_eq!(plain(&tiny), tiny);
        // A zero may ask for a large scale only through its exponent, bounded to 1000.
        assert_eq!(plain("0E-1000").len(), 1002);
        assert!(canonical_number("0E-1001").is_err());
    }
}
