"""UUIDv7 (RFC 9562): time-ordered, so new keys land at the right edge of B-tree indexes."""

import os
import threading
import time
import uuid

_lock = threading.Lock()
_last_ms = 0
_counter = 0
_entropy = b""
_entropy_used = 0
_ENTROPY_CHUNK = 8 * 512  # one os.urandom() call per 512 ids


def uuid7() -> uuid.UUID:
    """48-bit Unix time in ms, a 12-bit counter (RFC 9562 method 1), 62 random bits.

    Ids made by one process are strictly increasing, even within one millisecond, so
    ordering by key is ordering by creation. The random bits come from os.urandom().
    """
    global _last_ms, _counter, _entropy, _entropy_used
    with _lock:
        now_ms = time.time_ns() // 1_000_000
        if now_ms > _last_ms:
            _last_ms, _counter = now_ms, 0
        else:  # same millisecond (or the clock went back): count on from the last id
            _counter += 1
            if _counter > 0xFFF:
                _last_ms, _counter = _last_ms + 1, 0
        if _entropy_used == len(_entropy):
            _entropy, _entropy_used = os.urandom(_ENTROPY_CHUNK), 0
        random = int.from_bytes(_entropy[_entropy_used : _entropy_used + 8])
        _entropy_used += 8
        unix_ms, counter = _last_ms, _counter
    rand_b = random & 0x3FFF_FFFF_FFFF_FFFF
    return uuid.UUID(int=unix_ms << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | rand_b)
