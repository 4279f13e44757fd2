//! The stock plugins, compiled by `core/build.rs` and embedded in the binary.

include!(concat!(env!("OUT_DIR"), "/builtin_plugins.rs"));

/// The embedded component named `name` (`builtin:NAME`).
pub fn get(name: &str) -> Option<&'static [u8]> {
    BUILTIN.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
}

/// Names of the embedded plugins, comma-separated (for error messages).
pub fn names() -> String {
    BUILTIN
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}
