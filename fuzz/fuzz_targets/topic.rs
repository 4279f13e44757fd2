//! Topics and selectors. The input is lines of text: every line is tried as
//! a topic and as a selector; the first line is the requested selector, the
//! next four the allowed ones, and every line is also a filler for the
//! request's wildcards. Validation and matching never panic, and
//! - a valid topic is an exact selector that matches itself, `**` matches
//!   every valid topic and `*` every one-segment topic;
//! - a parsed selector keeps its text and its wildcards are whole segments
//!   (`**` only last); rejections give the right reason;
//! - `Selector::matches` agrees with a plain segment-by-segment reference,
//!   and matches the request's wildcards filled in with any segments;
//! - `covered` is sound: when the allowed selectors cover a request, every
//!   topic the request matches is matched by an allowed selector (`*` alone
//!   allows everything); every selector covers itself and `**` covers all.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spout_proto::topic::{
    any_matches, covered, validate_topic, Selector, TopicError, MAX_TOPIC_LEN,
};

/// The reference: a selector's segments against a topic's, one by one.
fn reference(pattern: &[&str], topic: &[&str]) -> bool {
    match pattern.split_first() {
        None => topic.is_empty(),
        Some((&"**", [])) => !topic.is_empty(),
        Some((&"*", rest)) => !topic.is_empty() && reference(rest, &topic[1..]),
        Some((lit, rest)) => topic.first() == Some(lit) && reference(rest, &topic[1..]),
    }
}

fn check_selector(text: &str) -> Option<Selector> {
    let parsed = Selector::parse(text);
    match &parsed {
        Ok(s) => {
            assert_eq!(s.as_str(), text);
            assert!(!text.is_empty() && text.len() <= MAX_TOPIC_LEN);
            assert!(text.bytes().all(|b| b.is_ascii_graphic()), "{text:?}");
            let segs: Vec<&str> = text.split('/').collect();
            for (i, seg) in segs.iter().enumerate() {
                if seg.contains('*') {
                    assert!(
                        *seg == "*" || (*seg == "**" && i == segs.len() - 1),
                        "{text:?}"
                    );
                }
            }
            assert_eq!(matches!(s, Selector::Exact(_)), !text.contains('*'));
        }
        Err(TopicError::Empty) => assert!(text.is_empty()),
        Err(TopicError::TooLong) => assert!(text.len() > MAX_TOPIC_LEN),
        Err(TopicError::BadChar(c)) => {
            assert!(!c.is_ascii_graphic() && text.contains(*c), "{text:?} {c:?}")
        }
        Err(TopicError::BadWildcard(seg)) => {
            assert!(
                seg.contains('*') && text.split('/').any(|s| s == seg),
                "{text:?}"
            )
        }
    }
    // The message goes to clients.
    if let Err(e) = &parsed {
        assert!(!e.to_string().is_empty());
    }
    parsed.ok()
}

/// The request's text with each `*` replaced by a filler's first segment
/// and a final `**` by a whole filler.
fn fill(request: &str, fillers: &[&str], skip: usize) -> String {
    let mut fillers = fillers.iter().cycle().skip(skip);
    let mut next = || fillers.next().copied().unwrap_or("x");
    request
        .split('/')
        .map(|seg| match seg {
            "*" => next().split('/').next().unwrap_or("").to_owned(),
            "**" => next().to_owned(),
            lit => lit.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

fuzz_target!(|text: &str| {
    let lines: Vec<&str> = text.lines().take(16).collect();
    let all = Selector::parse("**").unwrap();
    let one = Selector::parse("*").unwrap();

    let mut topics: Vec<String> = Vec::new();
    for t in &lines {
        check_selector(t);
        if validate_topic(t).is_ok() {
            assert!(!t.contains('*'));
            let s = Selector::parse(t).expect("a valid topic is a valid selector");
            assert!(matches!(s, Selector::Exact(_)));
            assert!(s.matches(t), "{t:?} does not match itself");
            assert!(all.matches(t), "** does not match {t:?}");
            assert_eq!(one.matches(t), !t.contains('/'), "{t:?}");
            assert!(any_matches(&[s], t));
            topics.push(t.to_string());
        } else if let Ok(Selector::Exact(_)) = Selector::parse(t) {
            panic!("{t:?} is an exact selector but not a valid topic");
        }
    }

    let requested = lines.first().and_then(|t| Selector::parse(t).ok());
    let allowed: Vec<Selector> = lines
        .iter()
        .skip(1)
        .take(4)
        .filter_map(|t| Selector::parse(t).ok())
        .collect();
    if let Some(req) = &requested {
        for skip in 0..lines.len() {
            let t = fill(req.as_str(), &lines, skip);
            if validate_topic(&t).is_ok() {
                assert!(req.matches(&t), "{:?} does not match {t:?}", req.as_str());
                topics.push(t);
            }
        }
    }
    for s in requested.iter().chain(&allowed) {
        let segs: Vec<&str> = s.as_str().split('/').collect();
        for t in &topics {
            let tsegs: Vec<&str> = t.split('/').collect();
            assert_eq!(
                s.matches(t),
                reference(&segs, &tsegs),
                "selector {:?} topic {t:?}",
                s.as_str()
            );
        }
        assert!(
            covered(std::slice::from_ref(s), s),
            "{:?} does not cover itself",
            s.as_str()
        );
        assert!(covered(std::slice::from_ref(&all), s));
    }
    if let Some(req) = &requested {
        let everything = allowed.iter().any(|a| a.as_str() == "*");
        if covered(&allowed, req) {
            for t in &topics {
                if req.matches(t) {
                    assert!(
                        everything || any_matches(&allowed, t),
                        "{:?} cover {:?} but none matches {t:?}",
                        allowed.iter().map(Selector::as_str).collect::<Vec<_>>(),
                        req.as_str()
                    );
                }
            }
        } else if let Selector::Exact(t) = req {
            assert!(!any_matches(&allowed, t));
        }
    }
});
