//! Hands the folder of the test plugins (built by `spout-plugin`'s build
//! script) to the integration tests as `SPOUT_TEST_WASM_DIR`.

fn main() {
    if let Ok(dir) = std::env::var("DEP_SPOUT_PLUGIN_TEST_WASM_DIR") {
        println!("cargo:rustc-env=SPOUT_TEST_WASM_DIR={dir}");
    }
    println!("cargo:rerun-if-env-changed=DEP_SPOUT_PLUGIN_TEST_WASM_DIR");
}
