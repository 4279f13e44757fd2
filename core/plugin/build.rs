//! Builds the WebAssembly plugins with a nested cargo for wasm32-wasip2:
//! - `plugins/` (the stock plugins), embedded in the binary as `builtin:NAME`;
//! - `tests/plugins/` (misbehaving plugins for the test suite) and
//!   `examples/custom-filter`, whose paths the tests get through
//!   `SPOUT_TEST_WASM_DIR` (this crate's, and the server's through
//!   `DEP_SPOUT_PLUGIN_TEST_WASM_DIR`).
//!
//! The nested cargo gets its own target directory under `OUT_DIR` (sharing
//! the outer one deadlocks on cargo's lock) and an environment cleared of
//! the outer build's flags, so `cargo clippy` or coverage runs do not leak
//! into the guest build.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const TARGET: &str = "wasm32-wasip2";

/// Workspaces to build, relative to the repository root, and whether their
/// cdylibs are embedded as built-in plugins.
const WORKSPACES: &[(&str, bool)] = &[
    ("plugins", true),
    ("tests/plugins", false),
    ("examples/custom-filter", false),
];

fn main() {
    let manifest = PathBuf::from(env("CARGO_MANIFEST_DIR"));
    let root = manifest
        .parent()
        .and_then(Path::parent)
        .expect("core/plugin sits two levels below the repository root")
        .to_path_buf();
    let out = PathBuf::from(env("OUT_DIR"));
    let target_dir = out.join("wasm");

    ensure_target();
    // The SDK takes its topic matcher from here.
    watch(&root.join("core/topic"));

    let mut builtin = Vec::new();
    for (ws, embed) in WORKSPACES {
        let dir = root.join(ws);
        watch(&dir);
        build(&dir, &target_dir);
        if *embed {
            for name in cdylib_members(&dir) {
                let file = target_dir
                    .join(TARGET)
                    .join("release")
                    .join(format!("{}.wasm", name.replace('-', "_")));
                assert!(
                    file.exists(),
                    "plugin {name} was not built: {}",
                    file.display()
                );
                builtin.push((name, file));
            }
        }
    }

    let mut src = String::from(
        "/// Built-in plugins: (name, component bytes), embedded at build time.\n\
         pub static BUILTIN: &[(&str, &[u8])] = &[\n",
    );
    for (name, file) in &builtin {
        src.push_str(&format!(
            "    ({name:?}, include_bytes!({:?})),\n",
            file.display().to_string()
        ));
    }
    src.push_str("];\n");
    std::fs::write(out.join("builtin_plugins.rs"), src).expect("write builtin_plugins.rs");
    let wasm_dir = target_dir.join(TARGET).join("release");
    println!("cargo:rustc-env=SPOUT_TEST_WASM_DIR={}", wasm_dir.display());
    // For the server crate's build script (`links = "spout_plugin"`): its
    // tests load the same test plugins.
    println!("cargo:test_wasm_dir={}", wasm_dir.display());
}

fn env(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| panic!("{key} is not set"))
}

/// Installs the wasm32-wasip2 standard library through rustup when the
/// toolchain lacks it (rust-toolchain.toml lists it, but rustup only adds
/// targets when it installs a toolchain).
fn ensure_target() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let libdir = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", TARGET])
        .output()
        .ok()
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if libdir.as_deref().is_some_and(Path::exists) {
        return;
    }
    let mut cmd = Command::new("rustup");
    cmd.args(["target", "add", TARGET]);
    if let Ok(tc) = std::env::var("RUSTUP_TOOLCHAIN") {
        cmd.args(["--toolchain", &tc]);
    }
    match cmd.stdout(Stdio::null()).status() {
        Ok(s) if s.success() => {}
        other => panic!(
            "the {TARGET} target is missing and `rustup target add {TARGET}` failed ({other:?}); install it to build Spout's plugins"
        ),
    }
}

fn build(dir: &Path, target_dir: &Path) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(dir)
        .args(["build", "--release", "--target", TARGET, "--target-dir"])
        .arg(target_dir)
        // Our stdout is read by cargo as build-script directives.
        .stdout(Stdio::from(std::io::stderr()));
    for (key, _) in std::env::vars() {
        let drop = matches!(
            key.as_str(),
            "CARGO_ENCODED_RUSTFLAGS"
                | "RUSTFLAGS"
                | "CARGO_BUILD_RUSTFLAGS"
                | "CARGO_TARGET_DIR"
                | "CARGO_BUILD_TARGET"
                | "RUSTC_WORKSPACE_WRAPPER"
                | "RUSTC_WRAPPER"
                | "CLIPPY_ARGS"
                | "CARGO_MANIFEST_DIR"
                | "CARGO_PRIMARY_PACKAGE"
        ) || key.starts_with("CARGO_PROFILE_")
            || key.starts_with("CARGO_LLVM_COV")
            || key.starts_with("CARGO_FEATURE_")
            || key.starts_with("CARGO_CFG_")
            || key.starts_with("DEP_");
        if drop {
            cmd.env_remove(&key);
        }
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo for {}: {e}", dir.display()));
    assert!(
        status.success(),
        "building the plugins in {} failed",
        dir.display()
    );
}

/// Workspace members (or the single package) that build a cdylib.
fn cdylib_members(dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return names;
    };
    let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for member in entries {
        let Ok(toml) = std::fs::read_to_string(member.join("Cargo.toml")) else {
            continue;
        };
        if !toml.contains("cdylib") {
            continue;
        }
        let name = toml
            .lines()
            .find_map(|l| l.trim().strip_prefix("name = \""))
            .and_then(|rest| rest.split('"').next());
        if let Some(name) = name {
            names.push(name.to_owned());
        }
    }
    names
}

/// Reruns this script when sources of the workspace change (not its target).
fn watch(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name();
        // sdk-js/sdk-py are no Rust plugins (and hold node_modules, venvs).
        if name == "target" || name == "Cargo.lock" || name == "sdk-js" || name == "sdk-py" {
            continue;
        }
        println!("cargo:rerun-if-changed={}", path.display());
    }
}
