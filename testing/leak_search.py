"""Search blobs (Redis values, logs, HTTP answers) for secrets in every encoding a leak would take.

Shared by the no-credential-leak test and the chaos suite's after-run check. A secret is
searched raw (UTF-8 and UTF-16LE), as base64 and URL-safe base64 at every byte alignment, and
as the Basic `Authorization` value; NTLM AUTHENTICATE messages are searched too (not the
password, but a NetNTLMv2 hash that cracks to it offline). Each blob is also searched after
decoding: every string inside it as JSON, and whatever base64 among those decodes to.

    search = LeakSearch.for_secrets({"EMULATOR_PASSWORD": password}, username="LAB\\\\svc")
    assert search.report({"worker log": text, **snapshot_redis(url).blobs}) == {}
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, cast
from urllib.parse import urlsplit, urlunsplit

import redis

from testing.fixtures_emulator import EMULATOR_PASSWORD, EMULATOR_USERNAME
from testing.fixtures_pipeline import WRONG_PASSWORD

__all__ = [
    "NTLM_AUTHENTICATE_SIGNATURE",
    "SECRETS",
    "LeakSearch",
    "RedisSnapshot",
    "base64_at_every_alignment",
    "basic_authorization",
    "database_count",
    "json_strings",
    "leak_report",
    "redis_for_db",
    "snapshot_redis",
]

# [MS-NLMP] 2.2.1.3: an AUTHENTICATE_MESSAGE starts with "NTLMSSP\0" and MessageType 3.
NTLM_AUTHENTICATE_SIGNATURE: Final = b"NTLMSSP\x00\x03\x00\x00\x00"

_RESULT_META_PREFIX: Final = b"celery-task-meta-"
_BASE64_TEXT: Final = re.compile(rb"^[A-Za-z0-9+/_-]{8,}={0,2}$")
_EXPAND_DEPTH: Final = 4
# What json.loads raises on hostile text: bad syntax, bad bytes, and nesting deeper than the
# interpreter's recursion limit (a chaos run leaves such messages behind on purpose).
_UNPARSEABLE: Final = (ValueError, UnicodeDecodeError, RecursionError)


def base64_at_every_alignment(data: bytes) -> list[bytes]:
    """The base64 (standard and URL-safe) of `data` as it appears inside any longer encoded blob.

    A secret embedded at byte offset 0, 1 or 2 (mod 3) of a larger value encodes to three
    different strings; the characters fully determined by the secret are searched for.
    """
    variants: list[bytes] = []
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + data)
        start = -(-offset * 8 // 6)  # first character holding no padding bits
        end = (offset + len(data)) * 8 // 6  # last character holding only the secret's bits
        core = encoded[start:end]
        variants += [core, core.replace(b"+", b"-").replace(b"/", b"_")]
    return variants


def basic_authorization(username: str, password: str) -> bytes:
    """The value of an HTTP Basic `Authorization` header (RFC 7617)."""
    return base64.b64encode(f"{username}:{password}".encode())


@dataclass(frozen=True)
class LeakSearch:
    """Needles (byte strings whose presence means a leak), each labelled with what it encodes."""

    needles: Mapping[bytes, str]

    @classmethod
    def for_secrets(cls, secrets: Mapping[str, str], *, username: str) -> LeakSearch:
        """Needles for each named secret, its Basic value with `username`, and NTLM AUTHENTICATE."""
        needles: dict[bytes, str] = {}
        for name, secret in secrets.items():
            for encoding in ("utf-8", "utf-16-le"):
                raw = secret.encode(encoding)
                needles[raw] = f"{name} ({encoding})"
                for variant in base64_at_every_alignment(raw):
                    needles[variant] = f"{name} ({encoding}, base64)"
            needles[basic_authorization(username, secret)] = f"{name} (Basic Authorization value)"
        needles[NTLM_AUTHENTICATE_SIGNATURE] = "NTLM AUTHENTICATE message"
        for variant in base64_at_every_alignment(NTLM_AUTHENTICATE_SIGNATURE):
            needles[variant] = "NTLM AUTHENTICATE message (base64)"
        return cls(needles)

    def leaks_in(self, blob: bytes | str) -> set[str]:
        """Labels of the secrets found in `blob` or anything it decodes to."""
        data = blob.encode(errors="surrogatepass") if isinstance(blob, str) else blob
        return {label for piece in expand(data) for needle, label in self.needles.items() if needle in piece}

    def report(self, blobs: Mapping[str, bytes | str]) -> dict[str, set[str]]:
        """{where: labels} for every blob that holds a secret (empty when nothing leaks)."""
        return {where: found for where, blob in blobs.items() if (found := self.leaks_in(blob))}


def expand(blob: bytes, depth: int = _EXPAND_DEPTH) -> Iterator[bytes]:
    """`blob`, then every string inside it as JSON, then whatever base64 among those decodes to."""
    yield blob
    if depth == 0:
        return
    if _BASE64_TEXT.match(blob.strip()):
        decoded = _b64decode(blob.strip())
        if decoded is not None:
            yield from expand(decoded, depth - 1)
    try:
        parsed = json.loads(blob)
    except _UNPARSEABLE:
        return
    for text in json_strings(parsed):
        encoded = text.encode(errors="surrogatepass")
        if encoded != blob:
            yield from expand(encoded, depth - 1)


def json_strings(value: Any) -> Iterator[str]:
    """Every string in a parsed JSON document, keys included (iterative: depth is attacker-chosen)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            for key, child in item.items():
                yield str(key)
                pending.append(child)
        elif isinstance(item, list):
            pending.extend(item)


def _b64decode(text: bytes) -> bytes | None:
    padded = text + b"=" * (-len(text) % 4)
    try:
        if b"-" in text or b"_" in text:
            return base64.urlsafe_b64decode(padded)
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        return None


# -- Redis, read key by key -----------------------------------------------------------------


@dataclass
class RedisSnapshot:
    """Every key and value of every database, plus the Celery data decoded from them."""

    blobs: dict[str, bytes] = field(default_factory=dict)
    types: Counter[str] = field(default_factory=Counter)
    keys_by_db: dict[int, set[bytes]] = field(default_factory=dict)
    # kwargs of every Celery message found (queues, the 'unacked' hash), decoded from base64 JSON.
    message_kwargs: list[dict[str, Any]] = field(default_factory=list)
    # task id -> the result backend's record (celery-task-meta-*).
    results: dict[str, dict[str, Any]] = field(default_factory=dict)


def snapshot_redis(url: str) -> RedisSnapshot:
    """Read all keys with SCAN and the read command of their type (no DUMP: values as clients see them)."""
    snapshot = RedisSnapshot()
    for db in range(database_count(url)):
        client = redis_for_db(url, db)
        snapshot.keys_by_db[db] = set()
        try:
            for raw_key in client.scan_iter(count=500):
                key = _as_bytes(raw_key)
                kind = _as_bytes(client.type(key)).decode()
                values = read_key(client, key, kind)
                snapshot.types[kind] += 1
                snapshot.keys_by_db[db].add(key)
                where = f"db{db}:{key!r}"
                snapshot.blobs[f"{where} (name)"] = key
                for index, value in enumerate(values):
                    snapshot.blobs[f"{where} [{kind} #{index}]"] = value
                    collect_celery_data(snapshot, key, value)
        finally:
            client.close()
    return snapshot


def database_count(url: str) -> int:
    admin = redis.Redis.from_url(url, decode_responses=True)
    try:
        return int(str(admin.config_get("databases")["databases"]))
    finally:
        admin.close()


def redis_for_db(url: str, db: int) -> redis.Redis:
    # The URL's own /db path wins over a db= argument in redis-py: name the database in the URL.
    return redis.Redis.from_url(urlunsplit(urlsplit(url)._replace(path=f"/{db}")), decode_responses=False)


def read_key(client: redis.Redis, key: bytes, kind: str) -> list[bytes]:
    """Every member, field and value of one key (a key gone since SCAN reads as empty)."""
    reader = _READERS.get(kind)
    return [] if reader is None else reader(client, key)


def _read_string(client: redis.Redis, key: bytes) -> list[bytes]:
    value = client.get(key)
    return [] if value is None else [_as_bytes(value)]


def _read_hash(client: redis.Redis, key: bytes) -> list[bytes]:
    return [_as_bytes(part) for pair in client.hgetall(key).items() for part in pair]


def _read_list(client: redis.Redis, key: bytes) -> list[bytes]:
    return [_as_bytes(item) for item in client.lrange(key, 0, -1)]


def _read_set(client: redis.Redis, key: bytes) -> list[bytes]:
    return [_as_bytes(member) for member in client.smembers(key)]


def _read_zset(client: redis.Redis, key: bytes) -> list[bytes]:
    return [_as_bytes(pair[0]) for pair in client.zrange(key, 0, -1, withscores=True)]


def _read_stream(client: redis.Redis, key: bytes) -> list[bytes]:
    # redis-py types the reply loosely (RESP2 and RESP3 shapes); RESP2 gives [(id, {field: value})].
    entries = cast(list[tuple[bytes, dict[bytes, bytes]]], client.xrange(key, "-", "+"))
    return [_as_bytes(part) for _id, fields in entries for pair in fields.items() for part in pair]


def _as_bytes(value: object) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


_READERS: Final[dict[str, Callable[[redis.Redis, bytes], list[bytes]]]] = {
    "string": _read_string,
    "hash": _read_hash,
    "list": _read_list,
    "set": _read_set,
    "zset": _read_zset,
    "stream": _read_stream,
}


def collect_celery_data(snapshot: RedisSnapshot, key: bytes, value: bytes) -> None:
    """Decode kombu messages and result-backend records found in a value (hostile ones are skipped)."""
    try:
        parsed = json.loads(value)
    except _UNPARSEABLE:
        return
    if key.startswith(_RESULT_META_PREFIX) and isinstance(parsed, dict):
        snapshot.results[key[len(_RESULT_META_PREFIX) :].decode(errors="replace")] = parsed
        return
    # A queue holds the message itself; the 'unacked' hash holds [message, exchange, routing_key].
    message = parsed[0] if isinstance(parsed, list) and parsed else parsed
    if not (isinstance(message, dict) and "body" in message and isinstance(message.get("properties"), dict)):
        return
    body = message["body"]
    try:
        if message["properties"].get("body_encoding") == "base64":
            body = base64.b64decode(body)
        decoded = json.loads(body)
    except (*_UNPARSEABLE, binascii.Error, TypeError):
        return
    if isinstance(decoded, list) and len(decoded) == 3 and isinstance(decoded[1], dict):
        snapshot.message_kwargs.append(decoded[1])


# The test pipelines' two passwords (the emulator's, and a wrong one), for tests that search a blob.
SECRETS: Final = {"EMULATOR_PASSWORD": EMULATOR_PASSWORD, "WRONG_PASSWORD": WRONG_PASSWORD}
_TEST_SEARCH: Final = LeakSearch.for_secrets(SECRETS, username=EMULATOR_USERNAME)


def leak_report(blobs: Mapping[str, bytes | str]) -> dict[str, set[str]]:
    """Which of the test secrets each blob leaks (only blobs that leak something are listed)."""
    return _TEST_SEARCH.report(blobs)
