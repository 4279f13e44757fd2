#!/usr/bin/env bash
# Build a Python Spout plugin into a wasm component with componentize-py.
#
#   plugins/sdk-py/build.sh [--world W] [-p DIR]... PLUGIN.py [-o OUT.wasm]
#   plugins/sdk-py/build.sh --bindings DIR [--world W]   # stubs for editors
#
# --world   filter, auth, ... (default: what the module's spout_sdk.export says)
# -p DIR    extra directory on the plugin's Python path (pure-Python packages,
#           e.g. `pip install --target DIR pkg`); the plugin's own directory
#           and this SDK are always on it
# -o FILE   output (default: PLUGIN's directory, `_` in its name made `-`)
#
# componentize-py is installed (hash-pinned, requirements.txt) into a venv,
# by default target/sdk-py-venv in the repository, reused while
# requirements.txt is unchanged. Env: PYTHON (default python3), SPOUT_PY_VENV.
set -euo pipefail

SDK=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SDK/../.." && pwd)
WIT="$ROOT/plugins/wit"
VENV=${SPOUT_PY_VENV:-$ROOT/target/sdk-py-venv}
PY=${PYTHON:-python3}

die() { echo "build.sh: $*" >&2; exit 2; }
usage() { sed -n '2,/^set -e/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//' >&2; exit 2; }

world="" out="" src="" bindings="" paths=()
while [ $# -gt 0 ]; do
  case "$1" in
    -w|--world) world=${2:?}; shift 2 ;;
    -o|--output) out=${2:?}; shift 2 ;;
    -p|--python-path) paths+=("$(cd "${2:?}" && pwd)"); shift 2 ;;
    --bindings) bindings=${2:?}; shift 2 ;;
    -h|--help) usage ;;
    -*) die "unknown option $1" ;;
    *) [ -z "$src" ] || die "one plugin module at a time"; src=$1; shift ;;
  esac
done

# The venv, (re)made when requirements.txt changes.
want=$(sha256sum "$SDK/requirements.txt" | cut -d' ' -f1)
if [ "$(cat "$VENV/.requirements.sha256" 2>/dev/null)" != "$want" ]; then
  echo "build.sh: installing componentize-py into $VENV" >&2
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --require-hashes \
    -r "$SDK/requirements.txt"
  echo "$want" > "$VENV/.requirements.sha256"
fi
CPY="$VENV/bin/componentize-py"

if [ -n "$bindings" ]; then
  [ -z "$src" ] || die "--bindings takes no plugin module"
  "$CPY" -d "$WIT" -w "${world:-filter}" bindings "$bindings"
  echo "build.sh: bindings for world ${world:-filter} in $bindings (add it and $SDK to your editor's Python path)" >&2
  exit 0
fi

[ -n "$src" ] || usage
[ -f "$src" ] || die "no such file: $src"
case "$src" in *.py) ;; *) die "expected a .py module: $src" ;; esac
dir=$(cd "$(dirname "$src")" && pwd)
mod=$(basename "$src" .py)
case "$mod" in
  auth|filter|transform|batch|compress|source|base|wit_world|spout_sdk|componentize_py_*)
    die "rename $src: a module named \`$mod\` clashes with the generated bindings or the SDK" ;;
esac
[ -n "$out" ] || out="$dir/${mod//_/-}.wasm"

if [ -z "$world" ]; then
  # Import the module natively (the SDK works without the bindings) and ask
  # spout_sdk.export which world it made.
  if ! world=$(cd "$dir" && PYTHONPATH="$dir:$SDK${PYTHONPATH:+:$PYTHONPATH}" PYTHONDONTWRITEBYTECODE=1 \
      "$VENV/bin/python" -c "import $mod as m; print(m.WitWorld.world)" 2>"$VENV/.detect.err"); then
    tail -n 5 "$VENV/.detect.err" >&2
    die "cannot tell the world of $src (is it \`WitWorld, Lifecycle = spout_sdk.export(...)\`?): pass --world"
  fi
fi

pp=(-p "$dir" -p "$SDK")
for p in "${paths[@]+"${paths[@]}"}"; do pp+=(-p "$p"); done
tmp="$out.tmp.$$"
# The CPython inside componentize-py writes .pyc files next to what it
# imports; drop the __pycache__ folders this build made.
clean=()
for d in "$dir" "$SDK"; do [ -e "$d/__pycache__" ] || clean+=("$d/__pycache__"); done
trap 'rm -f "$tmp"; rm -rf "${clean[@]+"${clean[@]}"}"' EXIT
# VIRTUAL_ENV: componentize-py adds that venv's site-packages to the path
# (nothing of it is imported, so nothing of it is bundled); without it, it
# would look for whatever `python` on PATH has installed.
VIRTUAL_ENV="$VENV" PYTHONDONTWRITEBYTECODE=1 RUST_BACKTRACE=0 RUST_LIB_BACKTRACE=0 \
  "$CPY" -q -d "$WIT" -w "$world" componentize "${pp[@]}" "$mod" -o "$tmp"
# Replace the output in one step: Spout reloads a plugin when its file changes.
mv -f "$tmp" "$out"
echo "build.sh: $out ($world, $(du -h "$out" | cut -f1))" >&2
