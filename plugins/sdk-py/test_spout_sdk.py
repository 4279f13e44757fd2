"""Native tests of the SDK and the example plugins (no componentize-py
needed): python3 -m unittest discover -s plugins/sdk-py"""
import json
import os
import sys
import unittest
from types import SimpleNamespace as NS

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path[:0] = [HERE, os.path.join(HERE, "examples"),
                os.path.join(ROOT, "examples", "custom-filter", "python")]
sys.dont_write_bytecode = True

import spout_sdk  # noqa: E402


def batch(events):
    """A WIT event-batch (buf + spans) from (topic, type, data, target) tuples."""
    buf = bytearray()
    refs = []

    def span(text):
        b = text.encode()
        s = NS(offset=len(buf), len=len(b))
        buf.extend(b)
        return s

    for i, (topic, kind, data, target) in enumerate(events, 1):
        refs.append(NS(id=i, time_ms=1000 + i, topic=span(topic), kind=span(kind),
                       data=span(data), target=None if target is None else span(target)))
    return NS(buf=bytes(buf), events=refs)


def sub(user, params=(), claims="{}"):
    return NS(user=user, claims=claims, topics=["docs"], params=list(params))


class Decode(unittest.TestCase):
    def test_fields(self):
        b = batch([("docs", "", '{"a":1}', None), ("news", "alert", "hi", "ann")])
        e1, e2 = spout_sdk.decode_events(b)
        self.assertEqual(e1, (1, 1001, "docs", "message", '{"a":1}', None))
        self.assertEqual((e2.topic, e2.type, e2.data, e2.target), ("news", "alert", "hi", "ann"))

    def test_non_ascii_and_invalid_utf8(self):
        b = batch([("docs", "", '{"name":"Zoë"}', "ann"), ("docs", "", "x", None)])
        self.assertEqual([e.data for e in spout_sdk.decode_events(b)], ['{"name":"Zoë"}', "x"])
        b.buf = b.buf[:b.events[1].data.offset] + b"\xff"
        self.assertEqual(spout_sdk.decode_events(b)[1].data, "")


class OnlyMine(unittest.TestCase):
    def test_twin_of_the_rust_example(self):
        import only_mine
        W, L = only_mine.WitWorld, only_mine.Lifecycle
        self.assertEqual(W.world, "filter")
        self.assertEqual(json.loads(L().describe())["name"], "only-mine")
        L().init("")
        b = batch([("docs", "", '{"owner":"ann","n":1}', None),
                   ("docs", "", '{"owner":"bob","n":2}', None),
                   ("docs", "", '{"public":true,"n":3}', None)])
        self.assertEqual(W().keep(sub("ann"), b), [0, 2])
        self.assertEqual(W().keep(sub("bob"), b), [1, 2])


class Config(unittest.TestCase):
    def test_errors(self):
        class Needs(spout_sdk.Filter):
            name = "needs"

            def __init__(self, config):
                self.n = config["n"]
                if self.n < 0:
                    raise ValueError("`n` must be >= 0")

        _, L = spout_sdk.export(Needs)
        for text, msg in [("", "config: missing key 'n'"), ('{"n": -1}', "config: `n` must be >= 0")]:
            with self.assertRaises(spout_sdk._Err) as e:
                L().init(text)
            self.assertEqual(e.exception.value, msg)
        L().init('{"n": 2}')
        self.assertEqual(spout_sdk.instance().n, 2)
        self.assertTrue(L().describe().startswith('{"name":"needs","version":"0.1.0","config_schema":{"$schema":'))


class Tokens(unittest.TestCase):
    def setUp(self):
        import auth_tokens
        self.W, self.L = auth_tokens.WitWorld, auth_tokens.Lifecycle
        self.L().init(json.dumps({"tokens": {"t-ann": "ann", "t-bob": {"user": "bob", "topics": ["news/**"]}}}))

    def auth(self, headers):
        return self.W().authenticate(NS(method="GET", path="/events", query=[], headers=headers,
                                        remote_addr="127.0.0.1:1"))

    def test_accepts_bearer(self):
        p = self.auth([("Authorization", "Bearer t-ann")])
        self.assertEqual((p.user, p.topics, json.loads(p.claims)), ("ann", ["**"], {"auth": "token"}))
        self.assertEqual(self.auth([("authorization", "bearer t-bob")]).topics, ["news/**"])

    def test_denies(self):
        for headers in ([], [("authorization", "Bearer nope")], [("authorization", "Basic t-ann")]):
            with self.assertRaises(spout_sdk._Err) as e:
                self.auth(headers)
            self.assertEqual(e.exception.value.status, 401)

    def test_bad_config(self):
        for cfg in ["", '{"tokens": {}}', '{"tokens": {"a": "ann"}, "x": 1}', '{"tokens": {"a": {"user": ""}}}']:
            with self.assertRaises(spout_sdk._Err):
                self.L().init(cfg)


if __name__ == "__main__":
    unittest.main()
