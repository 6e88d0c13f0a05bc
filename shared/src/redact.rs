//! Credentials out of what Ferry prints: every URL or connection string that can reach a log
//! line, an error or a report (the target and ledger URLs, the Pushgateway URL, the `[aws]
//! endpoint_url`) goes through here first.
//!
//! - [`url`] takes one URL (`postgres://`, `http(s)://`, …) or libpq `key=value` string: the
//!   password of its userinfo becomes `***` (`postgres://ferry:***@db.internal/app`, the user
//!   stays), and so does the value of every parameter whose name says it is a secret
//!   (`password=`, `sslpassword=`, `token=`, `secret=`, `X-Amz-Signature=`, …).
//! - [`text`] does the same to every URL and secret parameter inside free text (an error message
//!   of a library that quotes the URL it failed on).
//!
//! Both are idempotent and leave text without credentials unchanged.

/// What replaces a credential.
pub const MASK: &str = "***";

/// `url` with its credentials masked (see the module docs).
pub fn url(url: &str) -> String {
    text(url)
}

/// `text` with the credentials of every URL and secret `name=value` parameter in it masked.
pub fn text(text: &str) -> String {
    secret_parameters(&userinfo_passwords(text))
}

/// Whether a parameter of this name holds a secret.
fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "password",
        "passwd",
        "pwd",
        "secret",
        "token",
        "signature",
        "credential",
    ]
    .iter()
    .any(|word| name.contains(word))
        || matches!(name.as_str(), "pass" | "apikey" | "api_key" | "api-key")
}

/// Masks the password of every `scheme://user:password@host` in `text`.
fn userinfo_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        // The authority: up to the path, the query, the fragment or the end of the URL in text
        // (a userinfo may hold any of RFC 3986's sub-delimiters, `,;()` among them).
        let end = after
            .find(|c: char| {
                matches!(c, '/' | '?' | '#' | '"' | '\'' | '<' | '>' | '`') || c.is_whitespace()
            })
            .unwrap_or(after.len());
        let authority = &after[..end];
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                match userinfo.find(':') {
                    Some(colon) if &userinfo[colon + 1..] != MASK => {
                        out.push_str(&userinfo[..colon + 1]);
                        out.push_str(MASK);
                    }
                    _ => out.push_str(userinfo),
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// Masks the value of every `name=value` whose name says it is a secret: URL query parameters
/// (`?password=…&`) and libpq key/value pairs (`password=… `, `password='a b'`).
fn secret_parameters(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'=' {
            i += 1;
            continue;
        }
        // The name: the word before `=` (letters, digits, `_`, `-`, `.`), and optional spaces
        // before `=` as libpq allows.
        let mut name_end = i;
        while name_end > 0 && bytes[name_end - 1] == b' ' {
            name_end -= 1;
        }
        let mut name_start = name_end;
        while name_start > 0
            && (bytes[name_start - 1].is_ascii_alphanumeric()
                || matches!(bytes[name_start - 1], b'_' | b'-' | b'.'))
        {
            name_start -= 1;
        }
        let name = &text[name_start..name_end];
        if name.is_empty() || !is_secret_name(name) {
            i += 1;
            continue;
        }
        // The value: after optional spaces, quoted ('…' with \' escapes) or up to a delimiter.
        let mut start = i + 1;
        while start < bytes.len() && bytes[start] == b' ' {
            start += 1;
        }
        let end = if bytes.get(start) == Some(&b'\'') {
            let mut j = start + 1;
            while j < bytes.len() && bytes[j] != b'\'' {
                j += if bytes[j] == b'\\' { 2 } else { 1 };
            }
            (j + 1).min(bytes.len())
        } else {
            let mut j = start;
            while j < bytes.len()
                && !bytes[j].is_ascii_whitespace()
                && !matches!(
                    bytes[j],
                    b'&' | b'#' | b'"' | b'\'' | b',' | b';' | b')' | b'>'
                )
            {
                j += 1;
            }
            j
        };
        out.push_str(&text[copied..start]);
        if end > start {
            out.push_str(MASK);
        }
        copied = end;
        i = end.max(i + 1);
    }
    out.push_str(&text[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_userinfo_passwords_are_masked_and_the_rest_kept() {
        let cases = [
            (
                "postgres://ferry:s3cr%40t@db.internal:5432/app",
                "postgres://ferry:***@db.internal:5432/app",
            ),
            // An unencoded `@` in the password: the last `@` ends the userinfo.
            (
                "postgresql://u:p@ss@h1:5432,h2:5433/db?application_name=x",
                "postgresql://u:***@h1:5432,h2:5433/db?application_name=x",
            ),
            // RFC 3986 lets a userinfo hold `,;()`.
            ("postgres://u:pa,s(s)@h/db", "postgres://u:***@h/db"),
            (
                "http://metrics:hunter2@gw.monitoring:9091",
                "http://metrics:***@gw.monitoring:9091",
            ),
            (
                "https://admin:pw@gw:9091/metrics/job/ferry-worker/instance/pod-1",
                "https://admin:***@gw:9091/metrics/job/ferry-worker/instance/pod-1",
            ),
            // No password: unchanged.
            (
                "postgres://ferry@db.internal/app?sslmode=verify-full&sslrootcert=/etc/ca.pem",
                "postgres://ferry@db.internal/app?sslmode=verify-full&sslrootcert=/etc/ca.pem",
            ),
            ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
            ("s3://bucket/prefix/", "s3://bucket/prefix/"),
            // Query parameters and libpq strings.
            (
                "postgres://u@h/db?password=s3cret&sslmode=require",
                "postgres://u@h/db?password=***&sslmode=require",
            ),
            (
                "host=db.internal user=ferry password=s3cret dbname=app",
                "host=db.internal user=ferry password=*** dbname=app",
            ),
            (
                "host=h password = 'a b\\' c' sslpassword=k dbname=app",
                "host=h password = *** sslpassword=*** dbname=app",
            ),
            (
                "https://s3.example/b/k?X-Amz-Signature=abc123&X-Amz-Security-Token=tok&x=1",
                "https://s3.example/b/k?X-Amz-Signature=***&X-Amz-Security-Token=***&x=1",
            ),
        ];
        for (raw, want) in cases {
            let masked = url(raw);
            assert_eq!(masked, want, "{raw}");
            assert_eq!(url(&masked), masked, "idempotent: {raw}");
        }
    }

    #[test]
    fn urls_inside_text_are_masked() {
        let message = "error sending request for url (http://u:hunter2@gw:9091/metrics/job/j): \
             connection refused; target \"postgres://ferry:s3cret@db/app\", ledger postgres://a:b@l/x";
        let masked = text(message);
        for secret in ["hunter2", "s3cret", ":b@"] {
            assert!(!masked.contains(secret), "{masked}");
        }
        assert_eq!(
            masked,
            "error sending request for url (http://u:***@gw:9091/metrics/job/j): \
             connection refused; target \"postgres://ferry:***@db/app\", ledger postgres://a:***@l/x"
        );
        let plain = "no URL here: key=value, 3 = 4, password";
        assert_eq!(text(plain), plain);
        assert_eq!(text(""), "");
    }

    #[test]
    fn config_and_aws_errors_never_quote_a_password() {
        let err = crate::config::load_settings_from(
            None,
            vec![(
                "FERRY_METRICS__PUSHGATEWAY_URL".into(),
                "ftp://metrics:hunter2@gw:9091".into(),
            )],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("metrics.pushgateway_url"), "{err}");
        assert!(err.contains("ftp://metrics:***@gw:9091"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");

        // An SDK error quoting the `[aws] endpoint_url` it could not reach.
        let sdk = std::io::Error::other(
            "dispatch failure: error trying to connect to http://minio:s3cret@10.0.0.9:9000/bucket",
        );
        let text = crate::aws::error_text(&sdk);
        assert!(
            text.contains("http://minio:***@10.0.0.9:9000/bucket"),
            "{text}"
        );
        assert!(!text.contains("s3cret"), "{text}");
        let err = crate::aws::request_error("GetObject", "s3://b/k", &sdk).to_string();
        assert!(!err.contains("s3cret"), "{err}");
    }
}
