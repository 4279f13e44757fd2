//! Mercure topic selectors (`*`, exact topics, RFC 6570 URI templates). The
//! input is lines: the first is the selector, the rest are topics. Compiling
//! and matching never panic, and
//! - every selector matches its own text, `*` matches everything;
//! - a selector that names one exact topic (`exact()`) matches that topic
//!   and nothing else — what the hub relies on when it files Mercure
//!   subscribers by exact topic instead of scanning them;
//! - a template that compiled matches its expansion with the variable
//!   filled in by a plain segment (`{id}` ← `42`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use spout_proto::template::TopicSelector;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let Some(selector) = lines.next() else {
        return;
    };
    let s = TopicSelector::new(selector);
    assert!(s.matches(selector), "{selector:?} does not match itself");
    assert_eq!(s.as_str(), selector);
    for topic in lines {
        let m = s.matches(topic);
        if selector == "*" {
            assert!(m);
        }
        if let Some(exact) = s.exact() {
            assert_eq!(m, topic == exact, "exact {exact:?} vs {topic:?}");
        }
        // A template that compiled (not exact, not `*`): `{id}` filled with
        // a plain segment is matched.
        let template = s.exact().is_none() && selector != "*";
        if let Some((head, tail)) = selector.split_once("{id}").filter(|_| template) {
            if !head.contains(['{', '}']) && !tail.contains(['{', '}']) {
                let plain = topic
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                if plain && !topic.is_empty() {
                    let filled = format!("{head}{topic}{tail}");
                    assert!(
                        TopicSelector::new(selector).matches(&filled),
                        "{selector:?} does not match {filled:?}"
                    );
                }
            }
        }
    }
});
