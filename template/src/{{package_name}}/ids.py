"""UUIDv7 (RFC 9562): time-ordered, so new keys land at the right edge of B-tree indexes.

The generator is `uuid-utils` (Rust, maintained, returns standard `uuid.UUID` objects):
ids made by one process are strictly increasing, even within one millisecond, and a forked
child (gunicorn `--preload`, Celery prefork, `multiprocessing`) never repeats its parent's
or a sibling's ids (`tests/test_ids.py` forks to prove it). Python 3.14's `uuid.uuid7` is
the drop-in replacement once the project's lowest Python is 3.14.
"""

from uuid_utils.compat import uuid7

__all__ = ["uuid7"]
