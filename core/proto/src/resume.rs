//! The resume point a reconnecting client sends: the `Last-Event-ID` header
//! (or a query parameter standing in for it, since `EventSource` cannot set
//! headers on its first connection).
//!
//! The HTTP layer hands the header's raw bytes to [`parse_header`], or the
//! percent-decoded query value to [`parse_value`]; both answer "no resume
//! point" for an empty (or all-whitespace) value, which is what browsers send
//! before they have seen an id.

/// Why a `Last-Event-ID` was refused; the HTTP layer answers 400 with
/// [`ResumeError::code`] and the error's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResumeError {
    /// The header holds a byte outside visible ASCII and tab (what
    /// `http::HeaderValue::to_str` refuses).
    #[error("Last-Event-ID is not ASCII")]
    NotAscii,
    /// The (trimmed) value is not a decimal `u64`.
    #[error("Last-Event-ID {0:?} is not an event id (a non-negative integer)")]
    NotAnId(String),
}

impl ResumeError {
    /// The machine-readable error code of the 400 response.
    pub fn code(&self) -> &'static str {
        "invalid_last_event_id"
    }
}

/// Whether `b` may appear in a header value read as text: visible ASCII or
/// tab, exactly `http::HeaderValue::to_str`'s rule.
fn is_header_text(b: u8) -> bool {
    (32..127).contains(&b) || b == b'\t'
}

/// The header value as text, refused like `http::HeaderValue::to_str` does
/// (any byte outside visible ASCII and tab). Mercure uses this alone, since it
/// resumes from publisher-chosen ids as well as numbers.
pub fn header_text(raw: &[u8]) -> Result<&str, ResumeError> {
    if raw.iter().all(|&b| is_header_text(b)) {
        // Only ASCII bytes, so always valid UTF-8.
        std::str::from_utf8(raw).map_err(|_| ResumeError::NotAscii)
    } else {
        Err(ResumeError::NotAscii)
    }
}

/// Parses a resume point given as text (the `?lastEventId=` parameter):
/// surrounding whitespace (`str::trim`) is ignored, empty means `None`, and
/// anything else must be what `u64::from_str` accepts (decimal digits, an
/// optional leading `+`, leading zeros allowed, at most `u64::MAX`).
pub fn parse_value(value: &str) -> Result<Option<u64>, ResumeError> {
    match value.trim() {
        "" => Ok(None),
        v => v
            .parse::<u64>()
            .map(Some)
            .map_err(|_| ResumeError::NotAnId(v.to_owned())),
    }
}

/// Parses the raw `Last-Event-ID` header: [`header_text`], then
/// [`parse_value`].
pub fn parse_header(raw: &[u8]) -> Result<Option<u64>, ResumeError> {
    parse_value(header_text(raw)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_means_no_resume_point() {
        assert_eq!(parse_header(b""), Ok(None));
        assert_eq!(parse_header(b" \t "), Ok(None));
        assert_eq!(parse_value(""), Ok(None));
        assert_eq!(parse_value("\u{3000}\n"), Ok(None));
    }

    #[test]
    fn decimal_ids() {
        assert_eq!(parse_header(b"0"), Ok(Some(0)));
        assert_eq!(parse_header(b" 42\t"), Ok(Some(42)));
        assert_eq!(parse_header(b"007"), Ok(Some(7)));
        // `u64::from_str` takes a leading `+`; the server always did too.
        assert_eq!(parse_header(b"+5"), Ok(Some(5)));
        assert_eq!(parse_header(b"18446744073709551615"), Ok(Some(u64::MAX)));
        assert_eq!(parse_value("\u{a0}9\u{2028}"), Ok(Some(9)));
    }

    #[test]
    fn refusals() {
        for bad in [
            "-1",
            "-0",
            "+",
            "1.0",
            "0x10",
            "1 2",
            "abc",
            "18446744073709551616",
        ] {
            assert_eq!(
                parse_header(bad.as_bytes()),
                Err(ResumeError::NotAnId(bad.into())),
                "{bad:?}"
            );
        }
        assert_eq!(parse_header(b" x "), Err(ResumeError::NotAnId("x".into())));
        assert_eq!(parse_value("١٢"), Err(ResumeError::NotAnId("١٢".into())));
        let e = parse_header(b"x").unwrap_err();
        assert_eq!(e.code(), "invalid_last_event_id");
        assert_eq!(
            e.to_string(),
            "Last-Event-ID \"x\" is not an event id (a non-negative integer)"
        );
    }

    #[test]
    fn header_bytes_like_http_to_str() {
        assert_eq!(header_text(b"a\tb ~"), Ok("a\tb ~"));
        for bad in [
            &b"1\x00"[..],
            b"\x7f",
            b"\n",
            b"\r1",
            "é".as_bytes(),
            b"\xff",
        ] {
            assert_eq!(parse_header(bad), Err(ResumeError::NotAscii), "{bad:?}");
        }
        assert_eq!(
            ResumeError::NotAscii.to_string(),
            "Last-Event-ID is not ASCII"
        );
    }
}
