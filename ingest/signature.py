"""The `Whereby-Signature` check (shared reference §1.7), as pure functions.

Header: `t=<unix seconds>,v1=<hex hmac-sha256>`. Signed payload: the timestamp string exactly as in
the header, a `.`, then the raw body bytes. Comparison is constant-time against every configured secret
(rotation) and every `v1` value in the header.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.failures import Failure

_V1 = re.compile(r"[0-9a-f]{64}")
# The header exactly as Whereby sends it: parsed by one match; anything else takes the general parser.
_COMMON = re.compile(r"t=([0-9]{1,12}),v1=([0-9a-f]{64})")


class SignatureError(Failure):
    """Why a signature was rejected (answered 401, never dead-lettered: an unsigned body is not ours to
    keep). `reason` is a bounded code; the detail never reveals expected values."""


@dataclass(frozen=True)
class ParsedHeader:
    timestamp: str
    signatures: tuple[str, ...]


def parse_header(header: str | None) -> ParsedHeader:
    """Split the header into its timestamp and `v1` values; unknown keys are ignored."""
    if header:
        common = _COMMON.fullmatch(header)
        if common is not None:
            return ParsedHeader(common[1], (common[2],))
    if not header or not header.strip():
        raise SignatureError("missing_header", "Whereby-Signature header is missing")
    timestamp: str | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            timestamp = value.strip()
        elif key == "v1":
            sig = value.strip().lower()
            if _V1.fullmatch(sig):
                signatures.append(sig)
    if timestamp is None or not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        raise SignatureError("malformed_header", "Whereby-Signature has no valid t=<unix seconds>")
    if not signatures:
        raise SignatureError("malformed_header", "Whereby-Signature has no valid v1=<64 hex characters>")
    return ParsedHeader(timestamp, tuple(signatures))


@functools.lru_cache(maxsize=64)
def _keyed(secret: str) -> hmac.HMAC:
    """An HMAC-SHA256 already keyed with `secret` (copied per message: the key schedule is done once)."""
    return hmac.new(secret.encode("utf-8"), digestmod=hashlib.sha256)


def compute(secret: str, timestamp: str, body: bytes) -> str:
    """Lower-case hex HMAC-SHA256 of `<timestamp>.<body>` keyed by the secret's UTF-8 bytes."""
    mac = _keyed(secret).copy()
    mac.update(timestamp.encode("ascii"))
    mac.update(b".")
    mac.update(body)
    return mac.hexdigest()


def sign(body: bytes, secret: str, timestamp: int | None = None) -> str:
    """The header value Whereby would send for `body` (used by tests and `whereby-pipeline sign`)."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    return f"t={ts},v1={compute(secret, ts, body)}"


def verify(
    header: str | None,
    body: bytes,
    secrets: Sequence[str],
    *,
    tolerance_s: int = 300,
    now: float | None = None,
) -> None:
    """Return if `header` is a valid signature of `body` under any secret, else raise SignatureError."""
    parsed = parse_header(header)
    current = time.time() if now is None else now
    if abs(current - int(parsed.timestamp)) > tolerance_s:
        raise SignatureError("timestamp", f"timestamp outside tolerance of {tolerance_s}s")
    matched = False
    for secret in secrets:
        expected = compute(secret, parsed.timestamp, body)
        for candidate in parsed.signatures:
            # Evaluate every pair: the time taken must not depend on which secret or value matched.
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise SignatureError("no_match", "no signature matches the body")
