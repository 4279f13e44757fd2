#!/usr/bin/env python3
"""SIGKILL loop: the long form of tests/integrity.rs's crash test.

Runs TRIALS times: start `spout serve` on one data directory, one live
subscriber, 4 publishers sending arrays of 50 as fast as they can, SIGKILL
after 0.2-2 s, restart. Every id a publisher was given or a subscriber saw
is recorded with its payload; an id seen for two different payloads is a
reused id. At the end it reports acknowledged, lost (acknowledged but not
stored; only `fsync = "batch"`/"never" may lose) and reused ids.

    cargo build --release
    python3 docs/crash-loop.py --bin target/release/spout --fsync batch --trials 100

Only the standard library is used.
"""
import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request


def start(binary, cfg, data):
    proc = subprocess.Popen(
        [binary, "serve", "--config", cfg, "--listen", "127.0.0.1:0", "--data-dir", data],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in proc.stderr:
        if "listening on http://" in line:
            addr = line.split("listening on http://")[1].strip()
            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
            return proc, addr
    raise SystemExit("spout did not start: exit %s" % proc.wait())


def publisher(addr, tag, out, stop):
    n = 0
    while not stop.is_set():
        payloads = ["%s-%d-%d" % (tag, n, i) for i in range(50)]
        body = json.dumps([{"topic": "crash", "data": p} for p in payloads]).encode()
        try:
            req = urllib.request.Request(
                "http://%s/publish" % addr, data=body, headers={"content-type": "application/json"}
            )
            ids = json.load(urllib.request.urlopen(req, timeout=5))["ids"]
        except Exception:
            return
        out.extend(zip(ids, payloads))
        n += 1


def subscriber(addr, last_id, out):
    host, port = addr.rsplit(":", 1)
    try:
        s = socket.create_connection((host, int(port)), timeout=10)
        s.sendall(
            ("GET /events?topic=crash HTTP/1.1\r\nHost: x\r\nLast-Event-ID: %d\r\n\r\n" % last_id).encode()
        )
        buf, event_id = b"", None
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                line = line.rstrip(b"\r").decode(errors="replace")
                if line.startswith("id: "):
                    event_id = int(line[4:])
                elif line.startswith("data: ") and event_id is not None:
                    out.append((event_id, line[6:]))
                elif line == "":
                    event_id = None
    except OSError:
        return


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/spout")
    ap.add_argument("--fsync", default="batch", choices=["always", "batch", "never"])
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--publishers", type=int, default=4)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="spout-crash-")
    cfg = os.path.join(work, "config.toml")
    with open(cfg, "w") as f:
        # Retention off (in effect): every acknowledged event must be found.
        f.write('[log]\nfsync = "%s"\n[log.retention]\nmax_events = 1000000000\nmax_age = "30d"\n' % args.fsync)
    data = os.path.join(work, "data")
    given, reused, acked_all = {}, 0, []
    last_seen = 0
    for trial in range(args.trials):
        proc, addr = start(args.bin, cfg, data)
        seen, acked, stop = [], [], threading.Event()
        sub = threading.Thread(target=subscriber, args=(addr, last_seen, seen), daemon=True)
        sub.start()
        pubs = [
            threading.Thread(target=publisher, args=(addr, "t%dp%d" % (trial, p), acked, stop), daemon=True)
            for p in range(args.publishers)
        ]
        for p in pubs:
            p.start()
        time.sleep(random.uniform(0.2, 2.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        stop.set()
        for p in pubs:
            p.join()
        sub.join(timeout=5)
        for source in (acked, seen):
            for id_, payload in source:
                old = given.setdefault(id_, payload)
                if old != payload:
                    reused += 1
        acked_all.extend(acked)
        if seen:
            last_seen = seen[-1][0]
        print("trial %d: %d acknowledged, %d seen live" % (trial + 1, len(acked), len(seen)), file=sys.stderr)
    proc, addr = start(args.bin, cfg, data)
    stored, after = {}, 0
    while True:
        page = json.load(urllib.request.urlopen("http://%s/poll?topic=crash&after=%d&limit=1000" % (addr, after)))
        for e in page["events"]:
            stored[e["id"]] = e["data"]
            if given.setdefault(e["id"], e["data"]) != e["data"]:
                reused += 1
        if page["next"] == after:
            break
        after = page["next"]
    proc.send_signal(signal.SIGTERM)
    proc.wait()
    lost = sum(1 for id_, p in acked_all if stored.get(id_) != p)
    print(
        json.dumps(
            {"fsync": args.fsync, "trials": args.trials, "acknowledged": len(acked_all),
             "stored": len(stored), "lost": lost, "reused_ids": reused}
        )
    )
    return 1 if reused or (args.fsync == "always" and lost) else 0


if __name__ == "__main__":
    sys.exit(main())
