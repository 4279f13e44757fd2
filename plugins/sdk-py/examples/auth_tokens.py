"""auth-tokens: accept `Authorization: Bearer <token>` from a token -> user map.

    [plugins.tokens]
    use = "auth-tokens.wasm"       # plugins/sdk-py/build.sh plugins/sdk-py/examples/auth_tokens.py
    limits = { memory = "32MiB" }
    config.topics = ["**"]         # what a token reaches unless it says otherwise
    config.tokens.s3cret-ann = "ann"
    config.tokens.s3cret-bob = { user = "bob", topics = ["docs", "news/**"], claims = { role = "editor" } }

The principal is {user, topics, claims}; claims always carry `auth = "token"`.
Any other request gets 401. Tokens are kept as SHA-256 digests only, and the
presented token is hashed before it is looked up.
"""
import hashlib

import spout_sdk


def _digest(token):
    return hashlib.sha256(token.encode()).digest()


class TokenAuth(spout_sdk.Auth):
    name = "auth-tokens"
    version = "0.1.0"
    config_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["tokens"],
        "properties": {
            "topics": {
                "description": "Topic selectors a token reaches unless its entry says otherwise.",
                "type": "array", "items": {"type": "string"}, "default": ["**"],
            },
            "tokens": {
                "description": "Token -> user id, or -> {user, topics, claims}.",
                "type": "object", "minProperties": 1,
                "additionalProperties": {"oneOf": [
                    {"type": "string", "minLength": 1},
                    {"type": "object", "required": ["user"], "additionalProperties": False,
                     "properties": {
                         "user": {"type": "string", "minLength": 1},
                         "topics": {"type": "array", "items": {"type": "string"}},
                         "claims": {"type": "object"},
                     }},
                ]},
            },
        },
    }

    def __init__(self, config):
        unknown = set(config) - {"topics", "tokens"}
        if unknown:
            raise ValueError(f"unknown key {sorted(unknown)[0]!r} (known: tokens, topics)")
        topics = _selectors(config.get("topics", ["**"]), "topics")
        tokens = config["tokens"]
        if not isinstance(tokens, dict) or not tokens:
            raise ValueError("`tokens` must map at least one token to a user")
        self.principals = {}
        for n, (token, entry) in enumerate(tokens.items(), 1):
            if not token.strip():
                raise ValueError(f"token #{n} is empty")
            if isinstance(entry, str):
                entry = {"user": entry}
            if not isinstance(entry, dict) or not isinstance(entry.get("user"), str) or not entry["user"]:
                raise ValueError(f"token #{n}: give a user id, or a table with `user`")
            extra = set(entry) - {"user", "topics", "claims"}
            if extra:
                raise ValueError(f"token #{n}: unknown key {sorted(extra)[0]!r}")
            claims = dict(entry.get("claims", {}), auth="token")
            self.principals[_digest(token)] = spout_sdk.Principal(
                entry["user"], _selectors(entry.get("topics", topics), f"token #{n} topics"), claims)

    def authenticate(self, req):
        token = req.bearer()
        if token is None:
            raise spout_sdk.Denied(401, "missing bearer token")
        principal = self.principals.get(_digest(token))
        if principal is None:
            raise spout_sdk.Denied(401, "unknown token")
        return principal


def _selectors(value, what):
    if not isinstance(value, list) or not all(isinstance(s, str) and s for s in value):
        raise ValueError(f"`{what}` must be a list of topic selectors")
    return value


WitWorld, Lifecycle = spout_sdk.export(TokenAuth)
