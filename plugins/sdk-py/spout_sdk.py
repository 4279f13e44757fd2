"""Write Spout plugins in Python: one class (or one function) per kind.

A plugin is a module that subclasses `Filter` or `Auth` and hands the class
to `export`, which returns the two classes componentize-py looks for::

    import spout_sdk

    class OnlyErrors(spout_sdk.Filter):
        name = "only-errors"

        def keep(self, sub, event):
            return event.type == "error"

    WitWorld, Lifecycle = spout_sdk.export(OnlyErrors)

`plugins/sdk-py/build.sh` turns the module into a component
(`build.sh only_errors.py -o only-errors.wasm`). The ABI is
`plugins/wit/spout.wit`; this module hides its generated bindings
(`wit_world`, made by componentize-py at build time) the way the Rust SDK
does.

Module-level code runs once, at build time (componentize-py snapshots the
initialised interpreter); `__init__(config)` runs once per instance, when the
host calls `init` with the plugin's `config` table as JSON.
"""

import json
import sys
import time
from collections import namedtuple

try:  # The bindings componentize-py generates for the world being built.
    from componentize_py_types import Err as _Err
    from wit_world.imports import clock as _clock
    from wit_world.imports import kv as _kv
    from wit_world.imports import log as _log
    from wit_world.imports import types as _types
except ImportError:
    # Imported natively (a plugin's unit tests, build.sh finding the world):
    # log goes to stderr, clock to `time`, kv to a dict, and results take
    # the shapes of the bindings' types.
    _clock = _kv = _log = None

    class _Err(Exception):
        def __init__(self, value):
            super().__init__(value)
            self.value = value

    class _types:
        Denial = namedtuple("Denial", "status reason")
        Principal = namedtuple("Principal", "user topics claims")

__all__ = [
    "Plugin", "Filter", "Auth", "Event", "Sub", "Request", "Principal",
    "Connection", "Denied", "export", "filter_fn", "lifecycle", "instance",
    "decode_events", "log", "clock", "kv", "KvError",
]

_SCHEMA = "https://json-schema.org/draft/2020-12/schema"


# ---------------------------------------------------------------- plain types


class Event(namedtuple("Event", "id time_ms topic type data target",
                       defaults=("message", "", None))):
    """One event of a batch, decoded (a named tuple: it also unpacks).

    `id` (0 for events not yet stored), `time_ms` (when the log accepted it),
    `topic`, `type` (the SSE `event:` type; "message" when the publisher
    gave none), `data` (the payload as text; "" if it is not UTF-8) and
    `target` (the user a private event is addressed to, or None).
    """

    __slots__ = ()


# Builds an Event from a 6-tuple without a Python-level call (the hot path).
_new_event = tuple.__new__


class Sub:
    """The subscription a filter decides for (one distinct subscription key).

    `params` maps each query parameter of the subscribe request to its first
    value (all pairs: `param_list`); `claims` is the principal's claims,
    parsed from JSON on first use ({} when there are none).
    """

    __slots__ = ("user", "topics", "param_list", "_claims", "_params")

    def __init__(self, user, topics=(), claims="{}", params=()):
        self.user = user
        self.topics = list(topics)
        self.param_list = list(params)
        self._claims = claims
        self._params = None

    @property
    def claims(self):
        c = self._claims
        if isinstance(c, str):
            c = self._claims = json.loads(c) if c.strip() else {}
        return c

    @property
    def params(self):
        if self._params is None:
            self._params = _first(self.param_list)
        return self._params

    def __repr__(self):
        return f"Sub(user={self.user!r}, topics={self.topics!r}, params={self.param_list!r})"


class Request:
    """An HTTP request as an auth plugin sees it.

    `headers` and `query` map each name (header names lower-case) to its
    first value; `header_list` and `query_list` keep every pair in order.
    """

    __slots__ = ("method", "path", "remote_addr", "header_list", "query_list",
                 "headers", "query")

    def __init__(self, method="GET", path="/", query=(), headers=(), remote_addr=""):
        self.method = method
        self.path = path
        self.remote_addr = remote_addr
        self.query_list = list(query)
        self.header_list = [(k.lower(), v) for k, v in headers]
        self.headers = _first(self.header_list)
        self.query = _first(self.query_list)

    def bearer(self):
        """The token of an `Authorization: Bearer <token>` header, or None."""
        scheme, _, token = self.headers.get("authorization", "").strip().partition(" ")
        token = token.strip()
        return token if scheme.lower() == "bearer" and token else None

    def __repr__(self):
        return f"Request({self.method} {self.path} from {self.remote_addr})"


def _first(pairs):
    """Each name's first value, from (name, value) pairs."""
    d = {}
    for k, v in pairs:
        d.setdefault(k, v)
    return d


class Principal:
    """Who a request belongs to: user id, topic selectors it may reach
    (`*`/`**` for all) and further claims (a JSON-serialisable dict, passed
    on to filters as `sub.claims`)."""

    __slots__ = ("user", "topics", "claims")

    def __init__(self, user, topics, claims=None):
        if isinstance(topics, str):
            raise TypeError("Principal topics: a list of selectors, not a string")
        self.user = user
        self.topics = list(topics)
        self.claims = {} if claims is None else claims

    def __repr__(self):
        return f"Principal(user={self.user!r}, topics={self.topics!r}, claims={self.claims!r})"


class Connection:
    """A connection that has ended (`Auth.on_disconnect`)."""

    __slots__ = ("id", "user", "path")

    def __init__(self, id, user, path):
        self.id = id
        self.user = user
        self.path = path


class Denied(Exception):
    """Raise from `Auth.authenticate` to refuse a request with an HTTP status
    (401, 403, ...) and a reason the client gets."""

    def __init__(self, status=401, reason="unauthorized"):
        super().__init__(status, reason)
        self.status = int(status)
        self.reason = str(reason)


class KvError(Exception):
    """A `kv.set` / `kv.delete` the host refused (e.g. a value over 64 KiB)."""


# --------------------------------------------------------------- plugin kinds


class Plugin:
    """What every kind shares.

    Class attributes: `name` (shown by `describe` and in Spout's logs),
    `version`, and `config_schema` (a JSON Schema dict; Spout shows it, it does
    not validate against it: check in `__init__`). `__init__(config)` gets the
    `config` table of `[plugins.NAME]` as a dict ({} when there is none);
    raising there refuses the config (`ValueError("...")` reads best; a
    `KeyError` is reported as a missing key).
    """

    name = None
    version = "0.1.0"
    config_schema = {"type": "object"}

    def __init__(self, config):
        pass


class Filter(Plugin):
    """Chooses which events a subscription sees.

    Override `keep(sub, event) -> bool`; or `keep_batch(sub, events)` to do
    per-subscription work once per call (return the indices to keep,
    ascending); or `keep_raw(sub, batch)` for the undecoded WIT batch
    (`batch.buf` bytes and spans), e.g. for binary data.
    """

    def keep(self, sub, event):
        raise NotImplementedError(f"{type(self).__name__}.keep")

    def keep_batch(self, sub, events):
        keep = self.keep
        return [i for i, e in enumerate(events) if keep(sub, e)]

    def keep_raw(self, sub, batch):
        return self.keep_batch(_sub(sub), decode_events(batch))


class Auth(Plugin):
    """Decides who may connect (or publish) and what they may reach.

    Override `authenticate(req) -> Principal`; raise `Denied(status, reason)`
    to refuse. `on_disconnect(conn)` is called when a connection this plugin
    authenticated ends.
    """

    def authenticate(self, req):
        raise NotImplementedError(f"{type(self).__name__}.authenticate")

    def on_disconnect(self, conn):
        pass


# --------------------------------------------------------------- host imports


class log:
    """Lines in Spout's log, tagged with the plugin name."""

    @staticmethod
    def write(level, message):
        if _log is None:  # natively (tests): stderr
            print(f"[{level}] {message}", file=sys.stderr)
            return
        _log.write(getattr(_log.Level, level.upper()), str(message))

    @staticmethod
    def trace(message):
        log.write("trace", message)

    @staticmethod
    def debug(message):
        log.write("debug", message)

    @staticmethod
    def info(message):
        log.write("info", message)

    @staticmethod
    def warn(message):
        log.write("warn", message)

    @staticmethod
    def error(message):
        log.write("error", message)


class clock:
    """Time from the host."""

    @staticmethod
    def monotonic_ns():
        return time.monotonic_ns() if _clock is None else _clock.monotonic_ns()

    @staticmethod
    def wall_ms():
        return time.time_ns() // 1_000_000 if _clock is None else _clock.wall_ms()


class kv:
    """The plugin's own small key-value store (values are bytes; str is
    stored as UTF-8)."""

    _native = {}  # natively (tests): a dict

    @staticmethod
    def get(key):
        return kv._native.get(key) if _kv is None else _kv.get(key)

    @staticmethod
    def set(key, value):
        if isinstance(value, str):
            value = value.encode()
        if _kv is None:
            kv._native[key] = bytes(value)
            return
        try:
            _kv.set(key, bytes(value))
        except _Err as e:
            raise KvError(e.value) from None

    @staticmethod
    def delete(key):
        if _kv is None:
            kv._native.pop(key, None)
            return
        try:
            _kv.delete(key)
        except _Err as e:
            raise KvError(e.value) from None


# -------------------------------------------------------------- wire helpers


def decode_events(batch):
    """The events of a WIT `event-batch` as `Event`s."""
    buf = batch.buf
    text = None
    try:
        whole = buf.decode()
        if len(whole) == len(buf):  # ASCII: byte offsets are str offsets
            text = whole
    except UnicodeDecodeError:
        pass
    out = []
    add = out.append
    new = _new_event
    if text is not None:
        for r in batch.events:
            t, k, d, g = r.topic, r.kind, r.data, r.target
            o = d.offset
            add(new(Event, (r.id, r.time_ms, text[t.offset:t.offset + t.len],
                            text[k.offset:k.offset + k.len] if k.len else "message",
                            text[o:o + d.len],
                            None if g is None else text[g.offset:g.offset + g.len])))
    else:
        for r in batch.events:
            t, k, d, g = r.topic, r.kind, r.data, r.target
            add(new(Event, (r.id, r.time_ms, _text(buf, t),
                            _text(buf, k) if k.len else "message",
                            _text(buf, d),
                            None if g is None else _text(buf, g))))
    return out


def _text(buf, span):
    try:
        return buf[span.offset:span.offset + span.len].decode()
    except UnicodeDecodeError:
        return ""


def _sub(s):
    return Sub(s.user, s.topics, s.claims, s.params)


def parse_config(text):
    """The config JSON `init` gets, as a dict ("" and null mean {})."""
    text = text.strip()
    if text in ("", "null"):
        return {}
    return json.loads(text)


def describe(cls):
    """`describe()` JSON for a plugin class."""
    schema = {"$schema": _SCHEMA, **(cls.config_schema or {"type": "object"})}
    return json.dumps({"name": cls.name, "version": cls.version, "config_schema": schema},
                      separators=(",", ":"))


def _config_error(e):
    if isinstance(e, KeyError) and e.args:
        return f"config: missing key {e.args[0]!r}"
    msg = str(e) or type(e).__name__
    if isinstance(e, (ValueError, TypeError)) and not msg.startswith("config"):
        return f"config: {msg}"
    return msg


# --------------------------------------------------------------------- export

_state = {"plugin": None}


def _plugin():
    p = _state["plugin"]
    if p is None:
        raise RuntimeError("plugin used before init")
    return p


def instance():
    """The plugin object `init` built (for hand-written `WitWorld`s)."""
    return _plugin()


def lifecycle(cls):
    """The `Lifecycle` export for plugin class `cls`: `describe` from its
    attributes, `init` parses the config and builds `cls(config)`. For worlds
    without a helper here (transform, batch, compress, source): write
    `WitWorld` with the generated bindings and call `instance()` in it."""
    if not (isinstance(cls, type) and issubclass(cls, Plugin)):
        raise TypeError("pass a subclass of spout_sdk.Plugin (Filter, Auth, ...)")
    if not cls.name:
        raise TypeError(f"{cls.__name__} needs a `name`")

    class Lifecycle:
        def describe(self):
            return describe(cls)

        def init(self, config):
            try:
                _state["plugin"] = cls(parse_config(config))
            except Exception as e:
                raise _Err(_config_error(e)) from None

    return Lifecycle


def export(cls):
    """Returns `(WitWorld, Lifecycle)` for plugin class `cls`; assign them at
    module level: `WitWorld, Lifecycle = spout_sdk.export(MyPlugin)`."""
    Lifecycle = lifecycle(cls)
    if issubclass(cls, Filter):
        world = "filter"

        class WitWorld:
            def keep(self, sub, events):
                return list(_plugin().keep_raw(sub, events))

    elif issubclass(cls, Auth):
        world = "auth"

        class WitWorld:
            def authenticate(self, req):
                r = Request(req.method, req.path, req.query, req.headers, req.remote_addr)
                try:
                    p = _plugin().authenticate(r)
                except Denied as d:
                    raise _Err(_types.Denial(d.status, d.reason)) from None
                if not isinstance(p, Principal):
                    raise TypeError(f"authenticate returned {type(p).__name__}, not a Principal")
                claims = p.claims if isinstance(p.claims, str) else json.dumps(p.claims)
                return _types.Principal(p.user, list(p.topics), claims)

            def on_disconnect(self, conn):
                _plugin().on_disconnect(Connection(conn.id, conn.user, conn.path))

    else:
        raise TypeError("export: pass a subclass of spout_sdk.Filter or spout_sdk.Auth "
                        "(other worlds: spout_sdk.lifecycle and a hand-written WitWorld)")
    WitWorld.world = world
    return WitWorld, Lifecycle


def filter_fn(name, keep):
    """Export a stateless function `keep(sub, event) -> bool` as a filter
    (config is ignored): `WitWorld, Lifecycle = spout_sdk.filter_fn("x", f)`."""
    def keep_batch(self, sub, events):
        return [i for i, e in enumerate(events) if keep(sub, e)]

    return export(type(name, (Filter,), {"name": name, "keep_batch": keep_batch}))
