//! `Last-Event-ID` / `?lastEventId=`: the input is the value, as raw header
//! bytes and (when UTF-8) as a decoded query value. The resume parser never
//! panics, agrees exactly (value and error text) with what the HTTP layer did
//! before it moved to `spout_proto::resume`, and round-trips every `u64`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spout_proto::resume::{header_text, parse_header, parse_value, ResumeError};

/// The server's `last_event_id` before the extraction, for one value:
/// `HeaderValue::to_str` (header only), `str::trim`, empty means none,
/// else `u64::from_str`, with the same error texts. `None` when `http`
/// cannot hold the bytes as a header value at all.
fn oracle(header: bool, raw: &[u8]) -> Option<Result<Option<u64>, String>> {
    let text = if header {
        let v = http::HeaderValue::from_bytes(raw).ok()?;
        match v.to_str() {
            Ok(s) => s.to_owned(),
            Err(_) => return Some(Err("Last-Event-ID is not ASCII".into())),
        }
    } else {
        std::str::from_utf8(raw).ok()?.to_owned()
    };
    Some(match text.trim() {
        "" => Ok(None),
        v => v.parse::<u64>().map(Some).map_err(|_| {
            format!("Last-Event-ID {v:?} is not an event id (a non-negative integer)")
        }),
    })
}

fn check(header: bool, raw: &[u8]) -> Option<u64> {
    let got = if header {
        parse_header(raw)
    } else {
        parse_value(std::str::from_utf8(raw).ok()?)
    };
    if let Err(e) = &got {
        assert_eq!(e.code(), "invalid_last_event_id");
    }
    match oracle(header, raw) {
        Some(want) => assert_eq!(got.clone().map_err(|e| e.to_string()), want, "{raw:?}"),
        // A value no header can hold (a control byte): refused.
        None => assert_eq!(got, Err(ResumeError::NotAscii), "{raw:?}"),
    }
    if header {
        if let Ok(text) = header_text(raw) {
            assert_eq!(text.as_bytes(), raw);
            assert!(text
                .bytes()
                .all(|b| b == b'\t' || (b' '..=b'~').contains(&b)));
        }
    }
    got.ok().flatten()
}

fuzz_target!(|raw: &[u8]| {
    let from_header = check(true, raw);
    let from_query = check(false, raw);
    // Whatever the header accepts, the query accepts the same way.
    if from_header.is_some() {
        assert_eq!(from_query, from_header);
    }
    // Round trip: any accepted id, and the u64 the first 8 bytes spell,
    // written plainly, padded, with leading zeros and with a '+'.
    let mut le = [0u8; 8];
    let n = raw.len().min(8);
    le[..n].copy_from_slice(&raw[..n]);
    for id in from_header.into_iter().chain([u64::from_le_bytes(le)]) {
        for text in [
            id.to_string(),
            format!(" \t{id}\t "),
            format!("000{id}"),
            format!("+{id}"),
        ] {
            assert_eq!(parse_header(text.as_bytes()), Ok(Some(id)), "{text:?}");
            assert_eq!(parse_value(&text), Ok(Some(id)), "{text:?}");
        }
        assert_eq!(parse_value(&format!("\u{3000}{id}\n")), Ok(Some(id)));
    }
});
