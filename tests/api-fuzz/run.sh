#!/usr/bin/env bash
# Property-based API fuzzing of the real server from its own OpenAPI
# document (core/server/src/http/openapi.json, served at /openapi.json),
# with schemathesis (pinned with hashes in requirements.txt, installed into
# target/api-fuzz-venv, reused when present).
#
# Starts target/debug/spout (built if missing) with tests/api-fuzz/config.toml
# on 127.0.0.1:0 and a temp data dir, runs every schemathesis check against
# every operation for SPOUT_API_FUZZ_SECONDS (default 120) with the operator
# API key and a Mercure token, then fails on:
#   - any schemathesis failure: a 5xx, a status, content type, header or body
#     the document does not allow, a request the document calls invalid but
#     the server accepts (and the reverse), …;
#   - a server panic ("panicked" in its log) or a server that died;
#   - an event in the log that no accepted request put there. Method: every
#     request and response is recorded in a VCR cassette; the ids in the 2xx
#     answers of POST /publish and POST /hooks/{name} are the events those
#     requests stored, and each 2xx POST /.well-known/mercure stored one
#     event with its form's first topic and data. After the run the whole
#     log is read through GET /api/events; every stored event must be one of
#     those (ids, or topic and data of a Mercure update). Mercure's
#     subscription events (topics under /.well-known/mercure/subscriptions/)
#     are written by subscribing, not by a request body, and are left out.
#     Erasure (DELETE /api/history) only removes events, so it cannot hide
#     an extra one.
# Streams are read for at most the request timeout (or their first event).
# The cassette, schemathesis' output and the server log stay in
# target/api-fuzz/ for inspection.
set -euo pipefail
cd "$(dirname "$0")/../.."

seconds="${SPOUT_API_FUZZ_SECONDS:-120}"
venv=target/api-fuzz-venv
out=target/api-fuzz
key=spout-api-fuzz-key
secret=spout-api-fuzz-mercure-secret-0123456789abcdef

if [ ! -x "$venv/bin/schemathesis" ] || ! cmp -s tests/api-fuzz/requirements.txt "$venv/requirements.txt"; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check --require-hashes -r tests/api-fuzz/requirements.txt
    cp tests/api-fuzz/requirements.txt "$venv/requirements.txt"
fi
[ -x target/debug/spout ] || cargo build -p spout

rm -rf "$out"
mkdir -p "$out"
data=$(mktemp -d)
server_pid=
cleanup() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; fi
    rm -rf "$data"
}
trap cleanup EXIT

SPOUT_LOG=info SPOUT_PLUGIN_CACHE="$PWD/target/api-fuzz-plugin-cache" \
    target/debug/spout serve --config tests/api-fuzz/config.toml \
    --listen 127.0.0.1:0 --data-dir "$data" >"$out/server.log" 2>&1 &
server_pid=$!
addr=
for _ in $(seq 1 1200); do
    addr=$(sed -n 's/.*listening on http:\/\/\([0-9.:]*\).*/\1/p' "$out/server.log" | head -n 1)
    [ -n "$addr" ] && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$out/server.log"; echo "api-fuzz: the server did not start" >&2; exit 1; }
    sleep 0.1
done
[ -n "$addr" ] || { cat "$out/server.log"; echo "api-fuzz: no 'listening on' line" >&2; exit 1; }
echo "api-fuzz: spout on $addr, schemathesis $("$venv/bin/schemathesis" --version | awk '{print $NF}'), ${seconds}s"

# A Mercure token (HS256) that may publish and subscribe everywhere.
token=$("$venv/bin/python" - "$secret" <<'EOF'
import base64, hashlib, hmac, json, sys, time
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
claims = {"exp": int(time.time()) + 3600, "mercure": {"publish": ["*"], "subscribe": ["*"]}}
body = b64(json.dumps(claims).encode())
sig = hmac.new(sys.argv[1].encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
print(f"{head}.{body}.{b64(sig)}")
EOF
)

# Streams: read up to their first event or 3 s. A long poll may wait 30 s.
# GET /events: a Last-Event-ID header (even empty) makes the server ignore
# ?lastEventId=, so an invalid one may be answered 200.
# Valid by the document yet refused by this config: a ticket for /events
# (no auth: 400 route_without_auth) and an erasure naming neither or both of
# topic and user (400 invalid_parameters; OpenAPI cannot say "exactly one
# of these query parameters"), NDJSON text that is not JSON lines (the
# document can only call it a string), a disconnect reason over 1024 bytes
# in fewer characters, and an idempotency key reused (409 id_conflict).
# An invalid request too large to parse (e.g. thousands of `topic`
# parameters) is refused by hyper before it reaches a handler: 431 (head too
# large), 414 or 413. Those are rejections too.
cat >"$out/schemathesis.toml" <<'EOF'
request-timeout = 3
max-stream-events = 1
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "414", "415", "422", "428", "429", "431", "5xx"]
[cache]
enabled = false
[output.truncation]
max-recorded-payload-size = 0
[[operations]]
include-path = "/poll"
request-timeout = 35
checks.max_response_time = 35
[[operations]]
include-path = "/events"
checks.negative_data_rejection.expected-statuses = ["200", "400", "401", "403", "404", "429", "431"]
[[operations]]
include-path-regex = "^/(tickets|publish|api/history|api/disconnect)$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409"]
EOF
# NDJSON bodies (a string in the document) go out as the text they are.
cat >"$out/hooks.py" <<'EOF'
import schemathesis
schemathesis.serializer.alias("application/x-ndjson", "text/plain")
EOF

status=0
# One worker: Python 3.11's ast module is not thread-safe (hypothesis
# describing strategies from two threads fails with "AST constructor
# recursion depth mismatch").
PYTHONPATH="$out" SCHEMATHESIS_HOOKS=hooks \
"$venv/bin/schemathesis" --config-file "$out/schemathesis.toml" run "http://$addr/openapi.json" \
    --checks all \
    --max-time "$seconds" \
    --workers 1 \
    --header "x-api-key: $key" \
    --header "Authorization: Bearer $token" \
    --generation-database none \
    --report vcr --report-vcr-path "$out/cassette.yaml" --report-preserve-bytes \
    --no-color 2>&1 | tee "$out/schemathesis.txt" || status=1

fail() { echo "api-fuzz: $*" >&2; status=1; }
if ! kill -0 "$server_pid" 2>/dev/null; then
    fail "the server died"
fi
if grep -q "panicked" "$out/server.log"; then
    grep -n -A5 "panicked" "$out/server.log" | head -n 40 >&2
    fail "the server panicked (target/api-fuzz/server.log)"
fi
if [ ! -f "$out/cassette.yaml" ]; then
    fail "schemathesis recorded nothing (target/api-fuzz/schemathesis.txt)"
elif kill -0 "$server_pid" 2>/dev/null; then
    "$venv/bin/python" - "$addr" "$key" "$out/cassette.yaml" <<'EOF' || fail "the log holds events no accepted request stored"
import base64, json, sys, urllib.parse, urllib.request
import yaml

addr, key, cassette = sys.argv[1:]
with open(cassette) as f:
    doc = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))

def body(part):
    b = (part or {}).get("body") or {}
    if "base64_string" in b:
        return base64.b64decode(b["base64_string"])
    return (b.get("string") or "").encode()

ids, mercure, accepted = set(), [], 0
for i in doc.get("http_interactions") or []:
    resp = i.get("response")
    if not resp or not str(resp["status"]["code"]).startswith("2"):
        continue
    req = i["request"]
    path = urllib.parse.urlsplit(req["uri"]).path
    if req["method"] != "POST":
        continue
    if path == "/publish" or path.startswith("/hooks/"):
        ids.update(json.loads(body(resp))["ids"])
        accepted += 1
    elif path == "/.well-known/mercure":
        form = urllib.parse.parse_qsl(body(req).decode(), keep_blank_values=True)
        topics = [v for k, v in form if k == "topic"]
        data = [v for k, v in form if k == "data"]
        mercure.append((topics[0], data[-1] if data else ""))
        accepted += 1

def get(path):
    r = urllib.request.Request(f"http://{addr}{path}", headers={"x-api-key": key})
    with urllib.request.urlopen(r, timeout=30) as resp:
        return json.load(resp)

stored, before = [], None
while True:
    page = get("/api/events?limit=1000" + (f"&before={before}" if before else ""))
    stored += page["items"]
    before = page["next"]
    if before is None:
        break
unexplained = []
for e in stored:
    if e["id"] in ids or e["topic"].startswith("/.well-known/mercure/subscriptions/"):
        continue
    data = e["data"] if isinstance(e["data"], str) else json.dumps(e["data"])
    if (e["topic"], data) in mercure:
        mercure.remove((e["topic"], data))
        continue
    unexplained.append(e)
print(f"api-fuzz: {len(stored)} events stored by {accepted} accepted requests; "
      f"{len(unexplained)} unexplained")
for e in unexplained[:20]:
    print("  unexplained:", json.dumps(e)[:300], file=sys.stderr)
sys.exit(1 if unexplained else 0)
EOF
fi
exit $status
