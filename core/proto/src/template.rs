//! Mercure topic-selector matching: `*`, exact topics and RFC 6570 URI templates.
//!
//! Templates become an anchored regex built like `Template.Regexp()` of Go's
//! `github.com/yosida95/uritemplate/v3` (as the Mercure hub does); invalid ones match by equality.

use regex::{Regex, RegexBuilder};

/// Selectors longer than this (in bytes) are never compiled and match only by equality.
const MAX_TEMPLATE_LEN: usize = 2048;

/// Upper bound on the compiled program size of one selector's regex: about 480 simple
/// expressions fit; larger (hostile) templates are not compiled and match only by equality.
const REGEX_SIZE_LIMIT: usize = 1 << 18;

/// Upper bound on the lazy-DFA cache of one selector's regex.
const REGEX_DFA_SIZE_LIMIT: usize = 1 << 20;

/// RFC 3986 `unreserved`, as a character-class body (yosida95's `reUnreserved`).
const UNRESERVED: &str = r"\x2d\x2e\x30-\x39\x41-\x5a\x5f\x61-\x7a\x7e";

/// RFC 3986 `reserved`, as a character-class body (yosida95's `reReserved`).
const RESERVED: &str = r"\x21\x23\x24\x26-\x2c\x2f\x3a\x3b\x3d\x3f\x40\x5b\x5d";

/// A compiled Mercure topic selector.
///
/// A selector matches a topic when it is `*`, when it equals the topic, or when it
/// is a valid RFC 6570 URI template whose regular expression matches the topic.
/// A selector that is not a valid template matches only by string equality.
#[derive(Debug, Clone)]
pub struct TopicSelector {
    raw: String,
    regex: Option<Regex>,
}

impl TopicSelector {
    /// Compiles a selector (`*`, an exact topic, or an RFC 6570 template); never fails.
    pub fn new(selector: &str) -> TopicSelector {
        let regex =
            if selector == "*" || selector.len() > MAX_TEMPLATE_LEN || !selector.contains('{') {
                None
            } else {
                parse_template(selector).and_then(|parts| compile(&parts))
            };
        TopicSelector {
            raw: selector.to_owned(),
            regex,
        }
    }

    /// The selector text as given.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The one topic it selects when it selects exactly one (neither `*`
    /// nor a template): what an index can file it under.
    pub fn exact(&self) -> Option<&str> {
        (self.raw != "*" && self.regex.is_none()).then_some(self.raw.as_str())
    }

    /// Whether `topic` is selected.
    pub fn matches(&self, topic: &str) -> bool {
        if self.raw == "*" || self.raw == topic {
            return true;
        }
        self.regex.as_ref().is_some_and(|re| re.is_match(topic))
    }
}

/// RFC 6570 expression operators (level 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Simple,
    Plus,
    Crosshatch,
    Dot,
    Slash,
    Semicolon,
    Question,
    Ampersand,
}

/// How an operator's expansion looks: prefix, separator, named, reserved chars allowed.
struct OpSpec {
    first: &'static str,
    sep: &'static str,
    named: bool,
    reserved: bool,
}

impl Op {
    fn spec(self) -> OpSpec {
        let (first, sep, named, reserved) = match self {
            Op::Simple => ("", ",", false, false),
            Op::Plus => ("", ",", false, true),
            Op::Crosshatch => ("#", ",", false, true),
            Op::Dot => (".", ".", false, false),
            Op::Slash => ("/", "/", false, false),
            Op::Semicolon => (";", ";", true, false),
            Op::Question => ("?", "&", true, false),
            Op::Ampersand => ("&", "&", true, false),
        };
        OpSpec {
            first,
            sep,
            named,
            reserved,
        }
    }
}

/// One parsed piece of a template.
#[derive(Debug)]
enum Part<'a> {
    Literal(&'a str),
    /// An expression: its operator and, per variable, whether it is exploded.
    /// Prefix lengths are validated but, like yosida95's `Regexp()`, not enforced.
    Expr(Op, Vec<bool>),
}

fn is_hex(b: u8) -> bool {
    b.is_ascii_hexdigit()
}

/// Whether `t[pos..]` starts with a `%XX` triplet.
fn is_pct_triplet(t: &[u8], pos: usize) -> bool {
    t.len() >= pos + 3 && t[pos] == b'%' && is_hex(t[pos + 1]) && is_hex(t[pos + 2])
}

/// RFC 6570 `literals` (with the erratum 6937 that admits `'`), minus `%` and `{`.
fn is_literal_char(c: char) -> bool {
    matches!(c as u32,
        0x21 | 0x23..=0x24 | 0x26..=0x3B | 0x3D | 0x3F..=0x5B | 0x5D | 0x5F | 0x61..=0x7A | 0x7E
        | 0xA0..=0xD7FF | 0xE000..=0xF8FF | 0xF900..=0xFDCF | 0xFDF0..=0xFFEF
        | 0x1_0000..=0x1_FFFD | 0x2_0000..=0x2_FFFD | 0x3_0000..=0x3_FFFD | 0x4_0000..=0x4_FFFD
        | 0x5_0000..=0x5_FFFD | 0x6_0000..=0x6_FFFD | 0x7_0000..=0x7_FFFD | 0x8_0000..=0x8_FFFD
        | 0x9_0000..=0x9_FFFD | 0xA_0000..=0xA_FFFD | 0xB_0000..=0xB_FFFD | 0xC_0000..=0xC_FFFD
        | 0xD_0000..=0xD_FFFD | 0xE_1000..=0xE_FFFD | 0xF_0000..=0xF_FFFD | 0x10_0000..=0x10_FFFD)
}

/// RFC 6570 `varchar` without `pct-encoded`.
fn is_varchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// A varname is non-empty, does not start or end with `.`, and has no `..`.
fn is_valid_varname(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && !name.ends_with('.') && !name.contains("..")
}

/// Parses a template like yosida95/uritemplate's parser; `None` when it is invalid.
fn parse_template(t: &str) -> Option<Vec<Part<'_>>> {
    let bytes = t.as_bytes();
    let mut parts = Vec::new();
    let mut lit_start = 0;
    let mut pos = 0;
    while pos < bytes.len() {
        match bytes[pos] {
            b'{' => {
                if pos > lit_start {
                    parts.push(Part::Literal(&t[lit_start..pos]));
                }
                let (expr, end) = parse_expression(bytes, pos + 1)?;
                parts.push(expr);
                pos = end;
                lit_start = pos;
            }
            b'%' => {
                if !is_pct_triplet(bytes, pos) {
                    return None;
                }
                pos += 3;
            }
            _ => {
                let c = t[pos..].chars().next()?;
                if !is_literal_char(c) {
                    return None;
                }
                pos += c.len_utf8();
            }
        }
    }
    if pos > lit_start {
        parts.push(Part::Literal(&t[lit_start..pos]));
    }
    Some(parts)
}

/// Parses an expression body starting right after `{`; returns it and the index after `}`.
fn parse_expression(t: &[u8], mut pos: usize) -> Option<(Part<'static>, usize)> {
    let op = match *t.get(pos)? {
        b'+' => Op::Plus,
        b'#' => Op::Crosshatch,
        b'.' => Op::Dot,
        b'/' => Op::Slash,
        b';' => Op::Semicolon,
        b'?' => Op::Question,
        b'&' => Op::Ampersand,
        // op-reserved
        b'=' | b',' | b'!' | b'@' | b'|' => return None,
        _ => Op::Simple,
    };
    if op != Op::Simple {
        pos += 1;
    }

    let mut explodes = Vec::new();
    loop {
        // varname
        let start = pos;
        loop {
            match *t.get(pos)? {
                b':' | b'*' | b',' | b'}' => break,
                b'%' => {
                    if !is_pct_triplet(t, pos) {
                        return None;
                    }
                    pos += 3;
                }
                b'.' => {
                    if pos == start || t[pos - 1] == b'.' {
                        return None;
                    }
                    pos += 1;
                }
                b if is_varchar(b) => pos += 1,
                _ => return None,
            }
        }
        let name = std::str::from_utf8(&t[start..pos]).ok()?;
        if !is_valid_varname(name) {
            return None;
        }

        // modifier
        let mut explode = false;
        match t[pos] {
            b'*' => {
                explode = true;
                pos += 1;
            }
            b':' => {
                pos += 1;
                let mut maxlen: u32 = 0;
                loop {
                    let b = *t.get(pos)?;
                    if !b.is_ascii_digit() {
                        break;
                    }
                    maxlen = maxlen * 10 + u32::from(b - b'0');
                    if maxlen == 0 || maxlen > 9999 {
                        return None;
                    }
                    pos += 1;
                }
                if maxlen == 0 {
                    return None;
                }
            }
            _ => {}
        }
        explodes.push(explode);

        // variable-list continuation
        match *t.get(pos)? {
            b',' => pos += 1,
            b'}' => return Some((Part::Expr(op, explodes), pos + 1)),
            _ => return None,
        }
    }
}

/// Appends the pattern of one variable value: allowed characters or `%XX`, any number.
fn push_value_class(out: &mut String, reserved: bool, named: bool) {
    out.push_str("(?:[");
    if !reserved {
        out.push_str(r"\x2c");
        if named {
            out.push_str(r"\x3d");
        }
    }
    out.push_str(UNRESERVED);
    if reserved {
        out.push_str(RESERVED);
    }
    out.push_str("]|%[0-9A-Fa-f][0-9A-Fa-f])*");
}

/// Appends the pattern of one expression, mirroring yosida95's `expression.regexp`.
fn push_expression(out: &mut String, op: Op, explodes: &[bool]) {
    let spec = op.spec();
    let first_explode = explodes.first().copied().unwrap_or(false);
    let any_explode = explodes.iter().any(|&e| e);

    out.push_str("(?:");
    out.push_str(&regex::escape(spec.first));
    push_value_class(out, spec.reserved, spec.named || first_explode);
    if explodes.len() > 1 || first_explode {
        out.push_str("(?:");
        out.push_str(&regex::escape(spec.sep));
        push_value_class(out, spec.reserved, spec.named || any_explode);
        out.push(')');
        if any_explode {
            out.push('*');
        } else {
            out.push_str(&format!("{{0,{}}}", explodes.len() - 1));
        }
    }
    out.push_str(")?");
}

/// Builds the anchored regex for parsed parts; `None` if it exceeds the size limits.
fn compile(parts: &[Part<'_>]) -> Option<Regex> {
    let mut pattern = String::from("^");
    for part in parts {
        match part {
            Part::Literal(lit) => pattern.push_str(&regex::escape(lit)),
            Part::Expr(op, explodes) => push_expression(&mut pattern, *op, explodes),
        }
    }
    pattern.push('$');
    RegexBuilder::new(&pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_DFA_SIZE_LIMIT)
        .build()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(selector: &str, topic: &str) -> bool {
        TopicSelector::new(selector).matches(topic)
    }

    fn is_template(selector: &str) -> bool {
        TopicSelector::new(selector).regex.is_some()
    }

    #[test]
    fn brief_examples() {
        let books = "https://example.com/books/{id}";
        assert!(m(books, "https://example.com/books/1"));
        assert!(m(books, "https://example.com/books/abc"));
        assert!(!m(books, "https://example.com/books/1/reviews"));
        assert!(!m(books, "https://example.com/authors/1"));

        assert!(m(
            "https://example.com/{+path}",
            "https://example.com/a/b/c"
        ));

        let fmt = "https://example.com/books/{id}{?format}";
        assert!(m(fmt, "https://example.com/books/1?format=json"));
        assert!(m(fmt, "https://example.com/books/1"));

        assert!(m("/users/{user}/orders/{order}", "/users/ann/orders/42"));

        assert!(m("*", "anything at all"));
        assert!(m("*", ""));
        assert!(m("*", "https://example.com/books/1"));

        assert!(m("{id}", "abc"));
        assert!(!m("{id}", "a/b"));
    }

    #[test]
    fn exact_and_plain_selectors() {
        let s = TopicSelector::new("https://example.com/books/1");
        assert!(s.regex.is_none());
        assert!(s.matches("https://example.com/books/1"));
        assert!(!s.matches("https://example.com/books/2"));
        assert!(!s.matches("https://example.com/books/1/"));
        assert_eq!(s.as_str(), "https://example.com/books/1");

        assert_eq!(s.exact(), Some("https://example.com/books/1"));

        let star = TopicSelector::new("*");
        assert!(star.regex.is_none());
        assert_eq!(star.as_str(), "*");
        assert_eq!(star.exact(), None);
        assert_eq!(
            TopicSelector::new("https://example.com/books/{id}").exact(),
            None
        );

        // A plain string that is not a valid template (space) still matches itself.
        assert!(m("not a uri", "not a uri"));
        assert!(!m("not a uri", "not a ur"));
        // `*` inside a longer selector is literal, not a wildcard.
        assert!(!m("https://example.com/*", "https://example.com/a"));
        assert!(m("https://example.com/*", "https://example.com/*"));
    }

    #[test]
    fn template_matches_itself_by_equality() {
        let sel = "https://example.com/{id}/{+rest}";
        assert!(m(sel, sel));
    }

    #[test]
    fn simple_operator() {
        // unreserved, comma and pct-encoded; no other reserved characters.
        assert!(m("x/{v}", "x/aZ09-._~"));
        assert!(m("x/{v}", "x/a,b"));
        assert!(m("x/{v}", "x/Hello%20World%21"));
        assert!(m("x/{v}", "x/%2f%2F"));
        assert!(m("x/{v}", "x/"));
        assert!(!m("x/{v}", "x/a=b"));
        assert!(!m("x/{v}", "x/a:b"));
        assert!(!m("x/{v}", "x/a?b"));
        assert!(!m("x/{v}", "x/a#b"));
        assert!(!m("x/{v}", "x/a b"));
        assert!(!m("x/{v}", "x/caf\u{e9}"));
        assert!(!m("x/{v}", "x/%2"));
        assert!(!m("x/{v}", "x/%zz"));
        // Anchored at both ends, no trailing-newline leniency.
        assert!(!m("x/{v}", "x/abc\n"));
        assert!(!m("x/{v}", "yx/abc"));
    }

    #[test]
    fn plus_operator() {
        assert!(m("{+v}", "http://example.com/home/index?a=b&c=d;e"));
        assert!(m("{+v}", "!$&'()*+,;=:@/?#[]"));
        assert!(m("{+v}", "50%25"));
        assert!(!m("{+v}", "a b"));
        assert!(!m("{+v}", "a\"b"));
        assert!(!m("{+v}", "a{b"));
        assert!(!m("{+v}", "a%g0"));
        assert!(m(
            "https://example.com/{+path}/here",
            "https://example.com/foo/bar/here"
        ));
    }

    #[test]
    fn crosshatch_operator() {
        assert!(m("foo{#frag}", "foo#a/b?c"));
        assert!(m("foo{#frag}", "foo#"));
        assert!(m("foo{#frag}", "foo"));
        assert!(!m("foo{#frag}", "foo/a"));
        assert!(!m("foo{#frag}", "foo#a b"));
    }

    #[test]
    fn dot_operator() {
        assert!(m("file{.ext}", "file.json"));
        assert!(m("file{.ext}", "file"));
        assert!(m("file{.ext}", "file.tar.gz")); // `.` is unreserved
        assert!(!m("file{.ext}", "filejson"));
        assert!(!m("file{.ext}", "file.a/b"));
        assert!(m("www{.dom*}", "www.example.com"));
    }

    #[test]
    fn slash_operator() {
        assert!(m("/api{/seg}", "/api/users"));
        assert!(m("/api{/seg}", "/api"));
        assert!(!m("/api{/seg}", "/api/users/1"));
        assert!(m("/api{/a,b}", "/api/x/y"));
        assert!(m("/api{/a,b}", "/api/x"));
        assert!(!m("/api{/a,b}", "/api/x/y/z"));
        assert!(m("/api{/segs*}", "/api/a/b/c/d"));
        assert!(m("/api{/segs*}", "/api/k=v/x"));
        assert!(!m("/api{/segs*}", "/api/a?b"));
    }

    #[test]
    fn semicolon_operator() {
        assert!(m("/p{;x,y}", "/p;x=1024;y=768"));
        assert!(m("/p{;x,y}", "/p;x"));
        assert!(!m("/p{;x,y}", "/p;x=1;y=2;z=3"));
        assert!(m("/p{;list*}", "/p;list=red;list=green;list=blue"));
        assert!(!m("/p{;x}", "/p?x=1"));
    }

    #[test]
    fn question_operator() {
        let sel = "https://example.com/search{?q,lang}";
        assert!(m(sel, "https://example.com/search?q=rust&lang=en"));
        assert!(m(sel, "https://example.com/search?q=rust"));
        assert!(m(sel, "https://example.com/search?"));
        assert!(m(sel, "https://example.com/search"));
        assert!(!m(sel, "https://example.com/search?q=a&lang=en&x=1"));
        assert!(!m(sel, "https://example.com/searchq=a"));
        assert!(!m(sel, "https://example.com/search?q=a/b"));
        assert!(m("/s{?list*}", "/s?a=1&b=2&c=3&d=4"));
        // Not a match merely because the literal is a prefix.
        assert!(!m(
            "https://example.com/foo{?bar}",
            "https://example.com/foobaz"
        ));
    }

    #[test]
    fn ampersand_operator() {
        assert!(m("/s?fixed=yes{&x}", "/s?fixed=yes&x=1024"));
        assert!(m("/s?fixed=yes{&x}", "/s?fixed=yes"));
        assert!(!m("/s?fixed=yes{&x}", "/s?fixed=yes&x=1&y=2"));
        assert!(m("/s?fixed=yes{&x*}", "/s?fixed=yes&x=1&y=2"));
    }

    #[test]
    fn variable_lists() {
        assert!(m("{x,y}", "1024,768"));
        assert!(m("{x,y,z}", "a,b,c,d,e")); // commas are allowed inside simple values
        assert!(m("{+x,y}/here", "/foo/bar,1024/here"));
        assert!(m("{#x,y}", "#1,2"));
        assert!(m("X{.a,b,c}", "X.1.2.3"));
        assert!(m("X{.a,b,c}", "X.1.2.3.4")); // `.` is unreserved, so values may hold dots
        assert!(!m("X{.a,b,c}", "X.1/2"));
        assert!(m("X{.a,b*}", "X.1.2.3.4"));
    }

    #[test]
    fn prefix_modifier() {
        // Like yosida95's Regexp(), the prefix length is validated but not enforced.
        assert!(is_template("{var:3}"));
        assert!(m("{var:3}", "val"));
        assert!(m("{var:3}", "value"));
        assert!(m("X{.var:3}", "X.val"));
        assert!(m(
            "https://example.com/dictionary/{term:1}/{term}",
            "https://example.com/dictionary/c/cat"
        ));
        assert!(!m(
            "https://example.com/dictionary/{term:1}/{term}",
            "https://example.com/dictionary/c/a/cat"
        ));
        assert!(m("{/var:1,var}", "/v/value"));
        assert!(is_template("{var:9999}"));
        for bad in [
            "{var:0}",
            "{var:03}",
            "{var:10000}",
            "{var:}",
            "{var:3*}",
            "{var:x}",
            "{var:3",
        ] {
            assert!(!is_template(bad), "{bad} must be invalid");
            assert!(m(bad, bad));
            assert!(!m(bad, "val"));
        }
    }

    #[test]
    fn explode_modifier() {
        assert!(m("{list*}", "red,green,blue"));
        assert!(m("{keys*}", "semi=%3B,dot=.,comma=%2C"));
        assert!(!m("{keys}", "semi=%3B"));
        assert!(m("{/list*,path:4}", "/red/green/blue/%2Ffoo"));
        assert!(m("{?list*}", "?list=red&list=green&list=blue"));
        assert!(m("{&keys*}", "&semi=%3B&dot=.&comma=%2C"));
    }

    #[test]
    fn percent_encoded() {
        // In values, any `%XX` triplet is accepted, upper or lower case hex.
        assert!(m("/t/{v}", "/t/%E2%82%AC"));
        assert!(m("/t/{v}", "/t/%e2%82%ac"));
        assert!(!m("/t/{v}", "/t/%E2%82%A"));
        // In literals, pct-encoded triplets are matched literally.
        assert!(is_template("/caf%C3%A9/{id}"));
        assert!(m("/caf%C3%A9/{id}", "/caf%C3%A9/1"));
        assert!(!m("/caf%C3%A9/{id}", "/caf%c3%a9/1"));
        assert!(!m("/caf%C3%A9/{id}", "/caf\u{e9}/1"));
        // Pct-encoded triplets are allowed in variable names.
        assert!(is_template("/x/{na%20me}"));
        assert!(m("/x/{na%20me}", "/x/abc"));
        // A bad triplet makes the template invalid.
        assert!(!is_template("/50%/{id}"));
        assert!(!is_template("/x/{na%2}"));
    }

    #[test]
    fn literal_characters_are_escaped() {
        let sel = "https://example.com/a.b/(x)+[y]$/{id}";
        assert!(is_template(sel));
        assert!(m(sel, "https://example.com/a.b/(x)+[y]$/1"));
        assert!(!m(sel, "https://example.com/aXb/(x)+[y]$/1"));
        assert!(!m(sel, "https://example.com/a.b/xx+[y]$/1"));
        // Non-ASCII literals (ucschar) are allowed and matched as is.
        assert!(m(
            "https://example.com/caf\u{e9}/{id}",
            "https://example.com/caf\u{e9}/1"
        ));
        // `'` is accepted as a literal (RFC 6570 erratum 6937).
        assert!(m("'{count}'", "'one,two,three'"));
    }

    #[test]
    fn invalid_templates_fall_back_to_equality() {
        let invalid = [
            "https://example.com/{id",
            "https://example.com/id}",
            "https://example.com/{id}}",
            "https://example.com/{{id}}",
            "https://example.com/{}",
            "https://example.com/{=id}",
            "https://example.com/{!id}",
            "https://example.com/{@id}",
            "https://example.com/{|id}",
            "https://example.com/{,id}",
            "https://example.com/{id,}",
            "https://example.com/{a b}",
            "https://example.com/{a-b}",
            "https://example.com/{.a.}",
            "https://example.com/{a..b}",
            "https://example.com/{.}",
            "https://example.com/{id*x}",
            "https://example.com/{id} x",
            "https://example.com/<{id}>",
            "https://example.com/\u{fffd}/{id}",
            "{",
        ];
        for sel in invalid {
            let s = TopicSelector::new(sel);
            assert!(s.regex.is_none(), "{sel} must not compile");
            assert!(s.matches(sel), "{sel} must match itself");
            assert!(
                !s.matches("https://example.com/1"),
                "{sel} must not match a topic"
            );
            assert_eq!(s.as_str(), sel);
        }
        // Dotted variable names are valid.
        assert!(is_template("/x/{a.b}"));
    }

    #[test]
    fn rfc6570_expansions_match_their_templates() {
        // The RFC 6570 examples yosida95/uritemplate checks its Regexp() against.
        let cases = [
            ("'{count}'", "'one,two,three'"),
            ("{count}", "one,two,three"),
            ("{count*}", "one,two,three"),
            ("{/count}", "/one,two,three"),
            ("{/count*}", "/one/two/three"),
            ("{;count}", ";count=one,two,three"),
            ("{;count*}", ";count=one;count=two;count=three"),
            ("{?count}", "?count=one,two,three"),
            ("{?count*}", "?count=one&count=two&count=three"),
            ("{&count*}", "&count=one&count=two&count=three"),
            ("{var}", "value"),
            ("{hello}", "Hello%20World%21"),
            ("{half}", "50%25"),
            ("O{empty}X", "OX"),
            ("O{undef}X", "OX"),
            ("{x,y}", "1024,768"),
            ("{x,hello,y}", "1024,Hello%20World%21,768"),
            ("?{x,empty}", "?1024,"),
            ("?{x,undef}", "?1024"),
            ("?{undef,y}", "?768"),
            ("{var:3}", "val"),
            ("{var:30}", "value"),
            ("{list}", "red,green,blue"),
            ("{list*}", "red,green,blue"),
            ("{keys}", "semi,%3B,dot,.,comma,%2C"),
            ("{keys*}", "semi=%3B,dot=.,comma=%2C"),
            ("{+var}", "value"),
            ("{+hello}", "Hello%20World!"),
            ("{+half}", "50%25"),
            ("{base}index", "http%3A%2F%2Fexample.com%2Fhome%2Findex"),
            ("{+base}index", "http://example.com/home/index"),
            ("O{+empty}X", "OX"),
            ("O{+undef}X", "OX"),
            ("{+path}/here", "/foo/bar/here"),
            ("here?ref={+path}", "here?ref=/foo/bar"),
            ("up{+path}{var}/here", "up/foo/barvalue/here"),
            ("{+x,hello,y}", "1024,Hello%20World!,768"),
            ("{+path,x}/here", "/foo/bar,1024/here"),
            ("{+path:6}/here", "/foo/b/here"),
            ("{+list}", "red,green,blue"),
            ("{+list*}", "red,green,blue"),
            ("{+keys}", "semi,;,dot,.,comma,,"),
            ("{+keys*}", "semi=;,dot=.,comma=,"),
            ("{#var}", "#value"),
            ("{#hello}", "#Hello%20World!"),
            ("{#half}", "#50%25"),
            ("foo{#empty}", "foo#"),
            ("foo{#undef}", "foo"),
            ("{#x,hello,y}", "#1024,Hello%20World!,768"),
            ("{#path,x}/here", "#/foo/bar,1024/here"),
            ("{#path:6}/here", "#/foo/b/here"),
            ("{#list}", "#red,green,blue"),
            ("{#list*}", "#red,green,blue"),
            ("{#keys}", "#semi,;,dot,.,comma,,"),
            ("{#keys*}", "#semi=;,dot=.,comma=,"),
            ("{.who}", ".fred"),
            ("{.who,who}", ".fred.fred"),
            ("{.half,who}", ".50%25.fred"),
            ("www{.dom*}", "www.example.com"),
            ("X{.var}", "X.value"),
            ("X{.empty}", "X."),
            ("X{.undef}", "X"),
            ("X{.var:3}", "X.val"),
            ("X{.list}", "X.red,green,blue"),
            ("X{.list*}", "X.red.green.blue"),
            ("X{.keys}", "X.semi,%3B,dot,.,comma,%2C"),
            ("X{.keys*}", "X.semi=%3B.dot=..comma=%2C"),
            ("X{.empty_keys}", "X"),
            ("X{.empty_keys*}", "X"),
            ("{/who}", "/fred"),
            ("{/who,who}", "/fred/fred"),
            ("{/half,who}", "/50%25/fred"),
            ("{/who,dub}", "/fred/me%2Ftoo"),
            ("{/var}", "/value"),
            ("{/var,empty}", "/value/"),
            ("{/var,undef}", "/value"),
            ("{/var,x}/here", "/value/1024/here"),
            ("{/var:1,var}", "/v/value"),
            ("{/list}", "/red,green,blue"),
            ("{/list*}", "/red/green/blue"),
            ("{/list*,path:4}", "/red/green/blue/%2Ffoo"),
            ("{/keys}", "/semi,%3B,dot,.,comma,%2C"),
            ("{/keys*}", "/semi=%3B/dot=./comma=%2C"),
            ("{;who}", ";who=fred"),
            ("{;half}", ";half=50%25"),
            ("{;empty}", ";empty"),
            ("{;v,empty,who}", ";v=6;empty;who=fred"),
            ("{;v,bar,who}", ";v=6;who=fred"),
            ("{;x,y}", ";x=1024;y=768"),
            ("{;x,y,empty}", ";x=1024;y=768;empty"),
            ("{;x,y,undef}", ";x=1024;y=768"),
            ("{;hello:5}", ";hello=Hello"),
            ("{;list}", ";list=red,green,blue"),
            ("{;list*}", ";list=red;list=green;list=blue"),
            ("{;keys}", ";keys=semi,%3B,dot,.,comma,%2C"),
            ("{;keys*}", ";semi=%3B;dot=.;comma=%2C"),
            ("{?who}", "?who=fred"),
            ("{?half}", "?half=50%25"),
            ("{?x,y}", "?x=1024&y=768"),
            ("{?x,y,empty}", "?x=1024&y=768&empty="),
            ("{?x,y,undef}", "?x=1024&y=768"),
            ("{?var:3}", "?var=val"),
            ("{?list}", "?list=red,green,blue"),
            ("{?list*}", "?list=red&list=green&list=blue"),
            ("{?keys}", "?keys=semi,%3B,dot,.,comma,%2C"),
            ("{?keys*}", "?semi=%3B&dot=.&comma=%2C"),
            ("{&who}", "&who=fred"),
            ("{&half}", "&half=50%25"),
            ("?fixed=yes{&x}", "?fixed=yes&x=1024"),
            ("{&x,y,empty}", "&x=1024&y=768&empty="),
            ("{&x,y,undef}", "&x=1024&y=768"),
            ("{&var:3}", "&var=val"),
            ("{&list}", "&list=red,green,blue"),
            ("{&list*}", "&list=red&list=green&list=blue"),
            ("{&keys}", "&keys=semi,%3B,dot,.,comma,%2C"),
            ("{&keys*}", "&semi=%3B&dot=.&comma=%2C"),
            ("{special_chars}", "2001%3Adb8%3A%3A35"),
        ];
        for (template, expansion) in cases {
            assert!(is_template(template), "{template} must compile");
            assert!(m(template, expansion), "{template} must match {expansion}");
        }
    }

    #[test]
    fn length_cap_and_hostile_templates() {
        // Over the cap: equality only.
        let long = format!(
            "https://example.com/{}/{{id}}",
            "a".repeat(MAX_TEMPLATE_LEN)
        );
        let s = TopicSelector::new(&long);
        assert!(s.regex.is_none());
        assert!(s.matches(&long));
        assert!(!s.matches(&format!(
            "https://example.com/{}/1",
            "a".repeat(MAX_TEMPLATE_LEN)
        )));

        // Realistic templates with many expressions compile.
        let realistic = format!("https://example.com{}{{?a,b,c,d}}", "/{seg}".repeat(50));
        let s = TopicSelector::new(&realistic);
        assert!(s.regex.is_some());
        assert!(s.matches(&format!("https://example.com{}?a=1&d=4", "/x".repeat(50))));
        assert!(!s.matches(&format!("https://example.com{}", "/x".repeat(51))));

        // Hostile templates right at the length cap exceed the regex size limit: no
        // panic, no expensive program, just equality.
        let hostile = [
            "{a}".repeat(MAX_TEMPLATE_LEN / 3),
            "{+a*}".repeat(MAX_TEMPLATE_LEN / 5),
            format!("{{{}}}", vec!["a"; MAX_TEMPLATE_LEN / 2 - 1].join(",")),
        ];
        for sel in &hostile {
            assert!(sel.len() <= MAX_TEMPLATE_LEN);
            let s = TopicSelector::new(sel);
            assert!(s.regex.is_none());
            assert!(s.matches(sel));
            assert!(!s.matches("abc"));
        }
    }

    #[test]
    fn clone_keeps_behaviour() {
        let s = TopicSelector::new("https://example.com/books/{id}");
        let c = s.clone();
        assert_eq!(c.as_str(), s.as_str());
        assert!(c.matches("https://example.com/books/7"));
        assert!(!c.matches("https://example.com/books/7/x"));
    }
}
