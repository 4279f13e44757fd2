//! Spout topics: one matcher shared by the host (re-exported as `spout_proto::topic`)
//! and by plugins (through the SDK), so the rules cannot drift apart.
//!
//! Topic names and the selectors subscribers use to pick topics.
//!
//! A topic is 1..=256 bytes of printable ASCII without spaces or `*`, split into
//! segments by `/` (so `orders/eu/42` and Mercure-style IRIs both fit). A
//! selector is an exact topic or a pattern in which a whole segment is `*`
//! (exactly one segment) or a final `**` (one or more segments).

use std::sync::Arc;

/// Longest topic or selector accepted, in bytes.
pub const MAX_TOPIC_LEN: usize = 256;

/// Why a topic or selector was rejected; the message is shown to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// The topic was the empty string.
    #[error("topic is empty")]
    Empty,
    /// The topic exceeds [`MAX_TOPIC_LEN`].
    #[error("topic is longer than {MAX_TOPIC_LEN} bytes")]
    TooLong,
    /// A character outside printable ASCII (or a space, or `*` in a topic).
    #[error("topic contains {0:?}; topics are printable ASCII without spaces or '*'")]
    BadChar(char),
    /// A `*` that is not a whole segment, or `**` that is not the last segment.
    #[error("wildcard in segment {0:?}: use '*' as a whole segment or '**' as the last one")]
    BadWildcard(String),
}

/// Checks that `topic` is a concrete topic name (no wildcards).
pub fn validate_topic(topic: &str) -> Result<(), TopicError> {
    check_chars(topic, false)
}

fn check_chars(text: &str, allow_star: bool) -> Result<(), TopicError> {
    if text.is_empty() {
        return Err(TopicError::Empty);
    }
    if text.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong);
    }
    match text
        .chars()
        .find(|&c| !(c.is_ascii_graphic() && (allow_star || c != '*')))
    {
        Some(c) => Err(TopicError::BadChar(c)),
        None => Ok(()),
    }
}

/// One segment of a [`Pattern`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(Box<str>),
    /// `*`: exactly one segment, any content.
    One,
    /// `**`: one or more segments; only ever last.
    Rest,
}

/// A wildcard selector such as `orders/*` or `orders/**`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: Arc<str>,
    segments: Vec<Segment>,
}

impl Pattern {
    /// The selector as the client wrote it; the hub indexes patterns by it.
    pub fn text(&self) -> &Arc<str> {
        &self.text
    }

    /// The literal segments before the first wildcard, e.g. `users/7` of
    /// `users/7/**` (empty when the pattern starts with one): every topic
    /// it selects starts with them, so an index keyed by them narrows the
    /// patterns an event must be matched against.
    pub fn literal_prefix(&self) -> &str {
        let literal = self
            .segments
            .iter()
            .take_while(|s| matches!(s, Segment::Literal(_)))
            .count();
        if literal == 0 {
            return "";
        }
        let end = self
            .text
            .match_indices('/')
            .nth(literal - 1)
            .map_or(self.text.len(), |(i, _)| i);
        &self.text[..end]
    }

    /// Whether `topic` is selected by this pattern.
    pub fn matches(&self, topic: &str) -> bool {
        let mut parts = topic.split('/');
        for seg in &self.segments {
            match seg {
                Segment::Rest => return parts.next().is_some(),
                Segment::One => {
                    if parts.next().is_none() {
                        return false;
                    }
                }
                Segment::Literal(lit) => {
                    if parts.next() != Some(&**lit) {
                        return false;
                    }
                }
            }
        }
        parts.next().is_none()
    }
}

impl Pattern {
    /// Whether every topic `other` selects is also selected by `self`.
    fn covers(&self, other: &Pattern) -> bool {
        let mut theirs = other.segments.iter();
        for seg in &self.segments {
            match (seg, theirs.next()) {
                (Segment::Rest, Some(_)) => return true,
                (Segment::One, Some(Segment::One | Segment::Literal(_))) => {}
                (Segment::Literal(a), Some(Segment::Literal(b))) if a == b => {}
                _ => return false,
            }
        }
        theirs.next().is_none()
    }
}

/// What a subscriber asked for: one exact topic or one pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// A concrete topic name, matched by equality.
    Exact(Arc<str>),
    /// A wildcard pattern.
    Pattern(Pattern),
}

impl Selector {
    /// Parses a selector from a query parameter or config value.
    pub fn parse(text: &str) -> Result<Selector, TopicError> {
        check_chars(text, true)?;
        if !text.contains('*') {
            return Ok(Selector::Exact(Arc::from(text)));
        }
        let parts: Vec<&str> = text.split('/').collect();
        let last = parts.len() - 1;
        let mut segments = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            segments.push(match *part {
                "*" => Segment::One,
                "**" if i == last => Segment::Rest,
                p if p.contains('*') => return Err(TopicError::BadWildcard(p.to_string())),
                p => Segment::Literal(p.into()),
            });
        }
        Ok(Selector::Pattern(Pattern {
            text: Arc::from(text),
            segments,
        }))
    }

    /// Whether `topic` is selected.
    pub fn matches(&self, topic: &str) -> bool {
        match self {
            Selector::Exact(t) => **t == *topic,
            Selector::Pattern(p) => p.matches(topic),
        }
    }

    /// The selector's text.
    pub fn as_str(&self) -> &str {
        match self {
            Selector::Exact(t) => t,
            Selector::Pattern(p) => p.text(),
        }
    }
}

/// Whether a principal allowed `allowed` may subscribe with `requested`:
/// every topic the request selects must be selected by an allowed selector.
/// `*` alone (like `**`) allows everything.
pub fn covered(allowed: &[Selector], requested: &Selector) -> bool {
    allowed.iter().any(|a| match (a, requested) {
        (Selector::Pattern(p), _) if &**p.text() == "*" => true,
        (a, Selector::Exact(t)) => a.matches(t),
        (Selector::Pattern(a), Selector::Pattern(r)) => a.covers(r),
        (Selector::Exact(_), Selector::Pattern(_)) => false,
    })
}

/// Whether any selector in `selectors` picks `topic`.
pub fn any_matches(selectors: &[Selector], topic: &str) -> bool {
    selectors.iter().any(|s| s.matches(topic))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_prefixes_end_before_the_first_wildcard() {
        let prefix = |p: &str| match Selector::parse(p).unwrap() {
            Selector::Pattern(p) => p.literal_prefix().to_owned(),
            Selector::Exact(_) => panic!("{p} is exact"),
        };
        assert_eq!(prefix("users/7/**"), "users/7");
        assert_eq!(prefix("a/*/c"), "a");
        assert_eq!(prefix("*/x"), "");
        assert_eq!(prefix("**"), "");
        assert_eq!(
            prefix("https://example.com/books/*"),
            "https://example.com/books"
        );
    }

    fn sel(s: &str) -> Selector {
        Selector::parse(s).unwrap()
    }

    #[test]
    fn coverage_of_selectors() {
        let allowed = |v: &[&str]| {
            v.iter()
                .map(|t| Selector::parse(t).unwrap())
                .collect::<Vec<_>>()
        };
        let sel = |t: &str| Selector::parse(t).unwrap();
        let a = allowed(&["orders/**", "users/alice", "feed/*"]);
        assert!(covered(&a, &sel("orders/1")));
        assert!(covered(&a, &sel("orders/*")));
        assert!(covered(&a, &sel("orders/1/**")));
        assert!(covered(&a, &sel("users/alice")));
        assert!(!covered(&a, &sel("users/bob")));
        assert!(!covered(&a, &sel("users/*")));
        assert!(covered(&a, &sel("feed/x")));
        assert!(!covered(&a, &sel("feed/**")));
        assert!(!covered(&a, &sel("orders")));
        assert!(covered(&allowed(&["**"]), &sel("a/b/c")));
        assert!(covered(&allowed(&["*"]), &sel("a/**")));
        assert!(!covered(&allowed(&[]), &sel("a")));
    }

    #[test]
    fn exact_topics() {
        assert!(sel("orders").matches("orders"));
        assert!(!sel("orders").matches("orders/1"));
        assert!(matches!(
            sel("https://example.com/books/1"),
            Selector::Exact(_)
        ));
    }

    #[test]
    fn single_segment_wildcard() {
        let p = sel("orders/*");
        assert!(p.matches("orders/1"));
        assert!(!p.matches("orders"));
        assert!(!p.matches("orders/1/2"));
        assert!(!p.matches("other/1"));
        let mid = sel("a/*/c");
        assert!(mid.matches("a/b/c"));
        assert!(!mid.matches("a/b/d"));
        assert!(sel("*").matches("x"));
        assert!(!sel("*").matches("x/y"));
    }

    #[test]
    fn multi_segment_wildcard() {
        let p = sel("orders/**");
        assert!(p.matches("orders/1"));
        assert!(p.matches("orders/1/2/3"));
        assert!(!p.matches("orders"));
        assert!(!p.matches("ordersx/1"));
        assert!(sel("**").matches("a/b"));
    }

    #[test]
    fn rejects_bad_selectors_and_topics() {
        assert_eq!(Selector::parse(""), Err(TopicError::Empty));
        assert_eq!(
            Selector::parse("or*ders"),
            Err(TopicError::BadWildcard("or*ders".into()))
        );
        assert_eq!(
            Selector::parse("**/x"),
            Err(TopicError::BadWildcard("**".into()))
        );
        assert_eq!(Selector::parse("a b"), Err(TopicError::BadChar(' ')));
        assert_eq!(validate_topic("a/*"), Err(TopicError::BadChar('*')));
        assert_eq!(validate_topic("é"), Err(TopicError::BadChar('é')));
        assert_eq!(validate_topic(&"x".repeat(257)), Err(TopicError::TooLong));
        assert!(validate_topic(&"x".repeat(256)).is_ok());
    }
}
