"""The cheap checks, made on the request line and headers before a single body byte is read.

Order matters and is part of the contract: method (405), media type (415), content encoding (415),
declared size (413). The signature and the JSON come later because they need the body.
"""

from __future__ import annotations

from ingest import answers
from ingest.answers import Answer


def media_type(content_type: str | None) -> str:
    """The bare media type of a Content-Type header value, lower-cased (`application/json; charset=utf-8`
    → `application/json`); empty when there is none."""
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].strip().lower()


def is_identity(content_encoding: str | None) -> bool:
    """True when a Content-Encoding header value leaves the body as sent: absent, empty or `identity`."""
    return not content_encoding or content_encoding.strip().lower() in ("", "identity")


def check_headers(
    method: str,
    content_type: str | None,
    content_length: int | None,
    max_bytes: int,
    content_encoding: str | None = None,
) -> Answer | None:
    """The first rejection that applies to a request's method and headers, or None to go on reading."""
    if method != "POST":
        return answers.method_not_allowed(method)
    if media_type(content_type) != answers.JSON_CONTENT_TYPE:
        return answers.unsupported_media_type()
    # Whereby sends plain JSON. A compressed body would have to be inflated before it could be checked,
    # and a few kB of gzip can inflate to gigabytes: refuse it unread.
    if content_encoding and not is_identity(content_encoding):
        return answers.unsupported_encoding()
    if content_length is not None and content_length > max_bytes:
        return answers.payload_too_large(max_bytes, declared=True)
    return None
