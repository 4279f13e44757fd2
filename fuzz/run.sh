#!/usr/bin/env bash
# Bounded fuzzing, as CI runs it: builds every cargo-fuzz target once, then
# runs each for SPOUT_FUZZ_SECONDS (default 30) on a temporary copy of its
# seed corpus (the repo is never written to), and fails if any target finds
# a crash, a hang or a blow-up. See README.md here for each target's checks.
#
#   bash fuzz/run.sh                        # all targets, 30 s each
#   SPOUT_FUZZ_SECONDS=300 bash fuzz/run.sh topic config
#   SPOUT_FUZZ_SANITIZER=address bash fuzz/run.sh   # ASan (slower, see README)
#
# Works on the stable toolchain from rust-toolchain.toml: without a sanitizer
# cargo-fuzz passes no unstable flag. ASan needs `-Zsanitizer`, so that mode
# sets RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "$0")"

CARGO_FUZZ_VERSION=0.13.2
seconds=${SPOUT_FUZZ_SECONDS:-30}
sanitizer=${SPOUT_FUZZ_SANITIZER:-none}
# Fixed limits, so a run means the same everywhere: inputs up to 8 KiB (the
# largest seed is ~3 KiB), 2 GiB of memory, 10 s for any one input.
max_len=8192
rss_limit_mb=2048
timeout_s=10

if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
    echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi
if [ "$sanitizer" != none ]; then
    export RUSTC_BOOTSTRAP=1
fi

if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi
[ ${#targets[@]} -gt 0 ] || { echo "fuzz: no targets" >&2; exit 1; }

# One build for all targets: release, debug assertions and overflow checks on.
cargo fuzz build --sanitizer "$sanitizer" --debug-assertions
bin=target/x86_64-unknown-linux-gnu/release

work=$(mktemp -d "${TMPDIR:-/tmp}/spout-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT

passed=0
failed=()
for t in "${targets[@]}"; do
    mkdir -p "$work/corpus/$t" "$work/artifacts/$t"
    cp -R "corpus/$t/." "$work/corpus/$t/"
    args=(
        -max_total_time="$seconds"
        -max_len="$max_len"
        -rss_limit_mb="$rss_limit_mb"
        -timeout="$timeout_s"
        -print_final_stats=1
        -artifact_prefix="$work/artifacts/$t/"
    )
    [ -f "dict/$t.dict" ] && args+=(-dict="dict/$t.dict")
    echo "fuzz: $t for ${seconds}s ($sanitizer sanitizer)"
    start=$(date +%s)
    if "$bin/$t" "${args[@]}" "$work/corpus/$t" >"$work/$t.log" 2>&1; then
        # Last status line and the totals, e.g. "#812345 DONE cov: ... exec/s: 27000".
        grep -E '^#[0-9]+[[:space:]]+DONE' "$work/$t.log" | tail -1 || true
        grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "$work/$t.log" || true
        echo "fuzz: $t ok in $(($(date +%s) - start))s"
        passed=$((passed + 1))
    else
        code=$?
        failed+=("$t")
        echo "fuzz: $t FAILED (libFuzzer exit $code); the end of its log:"
        tail -n 60 "$work/$t.log"
        mkdir -p "artifacts/$t"
        for a in "$work/artifacts/$t"/*; do
            [ -f "$a" ] || continue
            cp "$a" "artifacts/$t/"
            echo "fuzz: $t input $(basename "$a") (kept in fuzz/artifacts/$t/), base64:"
            base64 -w0 "$a" | head -c 20000
            echo
            echo "fuzz: reproduce with: cargo fuzz run $t fuzz/artifacts/$t/$(basename "$a") --sanitizer none"
        done
    fi
done

echo "fuzz: ${passed} passed, ${#failed[@]} failed"
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: failing targets: ${failed[*]}" >&2
    exit 1
fi
