"""A Python filter that tries to reach outside its sandbox on every call.

`keep` reads /etc/passwd, then opens a TCP connection to 127.0.0.1:6379.
Spout gives Python plugins the WASI filesystem and socket interfaces with
nothing behind them (no preopened directory, no address allowed), so both
must fail; the exception is not caught, so the call fails (counted as a
plugin error) instead of quietly deciding. Which step failed and how is
logged before it propagates.

`?try=file` or `?try=socket` on the subscription tries just that one;
`?try=none` attempts nothing and keeps every event (the control: the plugin
itself works, so a failed call is the sandbox's refusal).
Build: plugins/sdk-py/build.sh tests/plugins-py/escape.py
"""
import socket

import spout_sdk


class Escape(spout_sdk.Filter):
    name = "escape"

    def keep_batch(self, sub, events):
        what = sub.params.get("try")
        if what == "none":
            return range(len(events))
        if what not in (None, "file", "socket"):
            raise ValueError(f"escape: unknown attempt {what!r}")
        if what in (None, "file"):
            self.attempt("read /etc/passwd", read_passwd)
        if what in (None, "socket"):
            self.attempt("connect 127.0.0.1:6379", connect_redis)
        return range(len(events))  # not reached: the attempts raise

    def attempt(self, what, f):
        try:
            got = f()
        except BaseException as e:
            spout_sdk.log.warn(f"escape: {what}: {type(e).__name__}: {e}")
            raise
        raise RuntimeError(f"escape: {what} SUCCEEDED: {got!r}")


def read_passwd():
    with open("/etc/passwd") as f:
        return f.read(64)


def connect_redis():
    # A numeric address: no name lookup (socket.create_connection would fail
    # earlier, on the `idna` codec, which is not in the component unless
    # imported at build time).
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(1)
    s.connect(("127.0.0.1", 6379))
    s.sendall(b"PING\r\n")
    return s.recv(64)


WitWorld, Lifecycle = spout_sdk.export(Escape)
