"""Erasing one person (`whereby-pipeline forget`): the subject digest, the pseudonym and the set of
erasures every stage applies. Pure: no I/O.

A person is known by the `externalId` the company passes to Whereby. Erasing them replaces that id by
a stable pseudonym and removes their display names everywhere we store them; minutes and counts stay
(the pseudonym still counts as one user).

Two derived values, deliberately different:

- The **subject** is `sha256(externalId)` in lower-case hex. It is the key of the erasure record on the
  compacted dimensions topic (`erase:<subject>`), so the id itself is never in a key that the topic keeps
  forever, and it is what enrich and the sink match events and rows against. It is *unkeyed*: enrich and
  the sink need no secret to recognise an erased person, and no lost or rotated secret can ever make
  them stop recognising one (which would let the name flow into the store again). The cost: whoever can
  read the dimensions topic and already knows an id can confirm that it was erased. Only the stages and
  operators can read that topic, and they can read the raw topic (which holds the id itself) too.
- The **pseudonym** is `forgotten-` + the first 20 hex digits of `HMAC-SHA256(ERASURE_KEY, externalId)`.
  It is what BI users see in place of the id, so it is *keyed*: a company knows its users' ids (and ids
  such as `user-00042` are easy to guess), and an unkeyed digest would let anyone holding that list
  recompute the pseudonym and re-identify the erased usage. The key lives only with the operator running
  `forget`; the pseudonym is written into the erasure record, so enrich and the sink never need the key,
  and a second `forget` of the same person reuses the recorded pseudonym (stable even if the key changed).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterator
from typing import Any

PSEUDONYM_PREFIX = "forgotten-"
# 20 hex digits = 80 bits: no two people of any plausible user base share one (birthday bound ~2^40).
PSEUDONYM_HEX_DIGITS = 20
PSEUDONYM_RE = re.compile(rf"^{PSEUDONYM_PREFIX}[0-9a-f]{{{PSEUDONYM_HEX_DIGITS}}}$")
SUBJECT_RE = re.compile(r"^[0-9a-f]{64}$")
# A key shorter than this is a placeholder, not a secret (the same floor as the webhook secret).
MIN_KEY_CHARS = 16


def subject(external_id: str) -> str:
    """The erasure subject of an externalId: its SHA-256 in lower-case hex (the `erase:` record key)."""
    return hashlib.sha256(external_id.encode("utf-8")).hexdigest()


def pseudonym(external_id: str, key: str) -> str:
    """The stable pseudonym that replaces `external_id` once erased: `forgotten-<20 hex digits>` of
    HMAC-SHA256 keyed with `key` (ERASURE_KEY). Raises ValueError for a key too short to be a secret."""
    if len(key) < MIN_KEY_CHARS:
        raise ValueError(f"the erasure key must be at least {MIN_KEY_CHARS} characters")
    digest = hmac.new(key.encode("utf-8"), external_id.encode("utf-8"), hashlib.sha256).hexdigest()
    return PSEUDONYM_PREFIX + digest[:PSEUDONYM_HEX_DIGITS]


def is_pseudonym(value: str) -> bool:
    """True for a value `pseudonym` can return (what an erasure record may carry)."""
    return PSEUDONYM_RE.match(value) is not None


class ErasureSet:
    """The people erased so far: subject → pseudonym, as read from the dimensions topic.

    Enrich checks every event's externalId against it; the sink checks every stored row and every
    event it inserts. Looking an id up costs one SHA-256 (about half a microsecond), and nothing at all
    while no one has been erased. Reads and writes are single dict operations (atomic under the GIL), so
    a writer thread may read it while the event loop adds to it.
    """

    __slots__ = ("_by_subject",)

    def __init__(self) -> None:
        self._by_subject: dict[str, str] = {}

    def add(self, subject_digest: str, pseudonym_value: str) -> None:
        """Record an erasure (a later record for the same subject replaces the pseudonym)."""
        self._by_subject[subject_digest] = pseudonym_value

    def remove(self, subject_digest: str) -> None:
        """Withdraw an erasure (a tombstone on its key): later events keep their id again."""
        self._by_subject.pop(subject_digest, None)

    def pseudonym_for(self, external_id: str) -> str | None:
        """The pseudonym replacing `external_id`, or None when that person was not erased."""
        if not self._by_subject:
            return None
        return self._by_subject.get(subject(external_id))

    def pseudonym_of(self, subject_digest: str) -> str | None:
        """The pseudonym recorded for a subject digest, or None."""
        return self._by_subject.get(subject_digest)

    def __len__(self) -> int:
        return len(self._by_subject)

    def __bool__(self) -> bool:
        return bool(self._by_subject)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._by_subject))


# The fields of an enriched event that name a person and go when they are erased (with the names of
# their registered user, which the pseudonym no longer resolves to).
_NAMING_FIELDS = ("display_name", "user_id", "user_name", "user_customer_id")


def erase_event(event: dict[str, Any], erasures: ErasureSet) -> bool:
    """Apply `erasures` to one enriched event in place; True when it named an erased person.

    The one rule enrich (live events and replays) and the sink (events enriched before the erasure was
    read) both apply: the person's id becomes their pseudonym wherever it appears — as the `externalId`,
    as the user key (USER_ID_SOURCE may take it from metadata) or as a metadata value, and then the raw
    metadata text (which spells it) goes too. When the event is theirs (the id or the user key), the
    display name and the registered user go as well. Minutes, times and
    keys stay, so every count is unchanged and the pseudonym still counts as one user.
    """
    if not erasures:
        return False
    external_id, user_key = event.get("external_id"), event.get("user_key")
    by_external_id = erasures.pseudonym_for(external_id) if isinstance(external_id, str) else None
    if isinstance(user_key, str):
        by_user_key = by_external_id if user_key == external_id else erasures.pseudonym_for(user_key)
    else:
        by_user_key = None
    metadata = event.get("metadata")
    in_metadata: dict[str, str] = {}
    if isinstance(metadata, dict):
        for value in metadata.values():
            if isinstance(value, str) and (found := erasures.pseudonym_for(value)) is not None:
                in_metadata[value] = found
    if by_external_id is None and by_user_key is None and not in_metadata:
        return False
    if in_metadata and isinstance(metadata, dict):
        # Their id in someone else's metadata (or in their own): the value goes, and the raw text with it.
        event["metadata"] = {k: in_metadata.get(v, v) if isinstance(v, str) else v for k, v in metadata.items()}
        event["metadata_raw"] = None
    if by_external_id is None and by_user_key is None:
        return True  # the event is someone else's: their name and user stay
    if by_external_id is not None:
        event["external_id"] = by_external_id
    if by_user_key is not None:
        event["user_key"] = by_user_key
    for name in _NAMING_FIELDS:
        if name in event:
            event[name] = None
    event["user_resolution"] = "erased"
    return True
