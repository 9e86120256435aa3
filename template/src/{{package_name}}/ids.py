"""UUIDv7 (RFC 9562): time-ordered, so new keys land at the right edge of B-tree indexes."""

import os
import time
import uuid


def uuid7() -> uuid.UUID:
    """48-bit Unix time in milliseconds, version 7, variant 10xx, 74 random bits."""
    unix_ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (unix_ms & 0xFFFF_FFFF_FFFF) << 80
    value |= 0x7 << 76  # version
    value |= ((rand >> 62) & 0xFFF) << 64  # rand_a: 12 bits
    value |= 0b10 << 62  # variant
    value |= rand & 0x3FFF_FFFF_FFFF_FFFF  # rand_b: 62 bits
    return uuid.UUID(int=value)
