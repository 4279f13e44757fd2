"""The Python twin of ../src/lib.rs: each subscriber sees only events
addressed to it (`"owner":"<user>"` in the data) or marked `"public":true`.

Build (from the repository root):
    plugins/sdk-py/build.sh examples/custom-filter/python/only_mine.py
Run:
    cargo run --release -- --config examples/custom-filter/python/config.toml
"""
import spout_sdk


def only_mine(sub, event):
    return f'"owner":"{sub.user}"' in event.data or '"public":true' in event.data


WitWorld, Lifecycle = spout_sdk.filter_fn("only-mine", only_mine)
