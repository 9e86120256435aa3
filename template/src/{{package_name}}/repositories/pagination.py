"""Keyset pagination: a page of rows and the opaque cursor that continues after it.

A cursor is the base64url text of a version byte, the public id (UUIDv7) of the last row
served and a 4-byte BLAKE2b checksum over both and the model's name. The next page starts
strictly after that key (`WHERE public_id > key`), so rows inserted or deleted between two
requests never make a client skip or repeat a row, and a deep page costs what the first
one costs (an index range scan, no OFFSET).

The checksum detects any edited, truncated or padded cursor, and a cursor of another list;
it is not a secret. A client that forges a valid cursor only chooses where its scan
starts: the list's filters (its owner, the soft-delete filter) still apply, so it can see
nothing it could not reach by paging.
"""

import base64
import binascii
import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import InvalidOperationError

_VERSION = 1
_KEY_SIZE = 16
_CHECK_SIZE = 4


class InvalidCursorError(InvalidOperationError):
    """The cursor was not issued for this list, or was altered (422 over HTTP)."""


@dataclass(frozen=True, slots=True)
class Page[T]:
    """`items` in key order; `next_cursor` continues after them, None on the last page."""

    items: Sequence[T]
    next_cursor: str | None


def _check(listing: str, payload: bytes) -> bytes:
    return hashlib.blake2b(listing.encode() + b"\x00" + payload, digest_size=_CHECK_SIZE).digest()


def encode_cursor(listing: str, key: uuid.UUID) -> str:
    """The cursor that continues `listing` (a model's name) after the row whose key is `key`."""
    payload = bytes([_VERSION]) + key.bytes
    return base64.urlsafe_b64encode(payload + _check(listing, payload)).decode("ascii")


def decode_cursor(listing: str, cursor: str) -> uuid.UUID:
    """The key a cursor of `listing` continues after; `InvalidCursorError` saying why not."""
    try:
        raw = base64.urlsafe_b64decode(cursor.encode("ascii"))
    except (UnicodeEncodeError, binascii.Error):
        raw = b""
    # Decoding skips characters outside the alphabet: only the canonical text is accepted.
    if not raw or base64.urlsafe_b64encode(raw).decode("ascii") != cursor:
        raise InvalidCursorError("Invalid cursor: not a cursor this API issued (malformed).")
    payload, check = raw[:-_CHECK_SIZE], raw[-_CHECK_SIZE:]
    if len(payload) != 1 + _KEY_SIZE or payload[0] != _VERSION:
        raise InvalidCursorError("Invalid cursor: truncated, or of an unknown version.")
    if check != _check(listing, payload):
        raise InvalidCursorError("Invalid cursor: altered, or issued for another list.")
    return uuid.UUID(bytes=payload[1:])
