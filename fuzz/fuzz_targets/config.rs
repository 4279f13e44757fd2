//! `config.toml`: `Config::parse` never panics on any text, and every error
//! points inside the text: line 1..=number of lines, column 1..=length of
//! that line (in characters) + 1, and the message starts `FILE:LINE:COL:`.
//! An accepted config keeps the text it came from (later errors use it).
//! An error's key is a readable TOML key path: not empty, no empty
//! segment, no serde internals.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spout_proto::config::{Config, ConfigError};
use std::path::Path;

fuzz_target!(|text: &str| {
    match Config::parse(text, Path::new("fuzz.toml")) {
        Ok(config) => {
            assert_eq!(&*config.origin.text, text);
            assert_eq!(config.origin.file, Path::new("fuzz.toml"));
        }
        Err(e) => {
            let shown = e.to_string();
            let ConfigError::Invalid {
                line,
                column,
                key,
                message,
                ..
            } = e
            else {
                panic!("parse gave a read error: {shown}");
            };
            let lines: Vec<&str> = text.split('\n').collect();
            assert!(
                (1..=lines.len()).contains(&line),
                "line {line} of {} in {shown}",
                lines.len()
            );
            let width = lines[line - 1].chars().count();
            assert!(
                (1..=width + 1).contains(&column),
                "column {column} of a {width}-character line in {shown}"
            );
            assert!(
                shown.starts_with(&format!("fuzz.toml:{line}:{column}: invalid config")),
                "{shown}"
            );
            assert!(!message.is_empty(), "{shown}");
            if let Some(key) = &key {
                assert!(
                    !key.is_empty() && !key.contains("$__"),
                    "key {key:?} in {shown}"
                );
                assert!(no_empty_segment(key), "key {key:?} in {shown}");
            }
        }
    }
});

/// Whether a dotted key path has no empty segment (`.a`, `a.`, `a..b`),
/// looking only at dots outside quoted keys (`"a..b"` is one key).
fn no_empty_segment(key: &str) -> bool {
    let (mut quoted, mut escaped, mut last) = (false, false, '.');
    for c in key.chars() {
        if quoted {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => quoted = false,
                _ => {}
            }
        } else if c == '"' {
            quoted = true;
        } else if c == '.' && last == '.' {
            return false;
        }
        last = if quoted { 'x' } else { c };
    }
    !quoted && last != '.'
}
