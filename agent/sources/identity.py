"""Who a file is: (device, inode) plus a fingerprint of its first bytes, and tail hashes.

Pure functions over bytes; the caller reads them. Policies that live here:

* **Fingerprint** = blake2b-128 of the first ``min(size, FINGERPRINT_BYTES)`` bytes, fixed when a
  file is first seen with at least one byte. A file shorter than the window is fingerprinted
  over what it has; ``fingerprint_len`` records how much, so the comparison can be repeated when it
  has grown. An empty file has no identity yet.
* **Generations.** When a file is rewritten in place (truncated, shrunk, or its bytes changed)
  its next content is a new *generation* and must get a new identity key: the sink drops lines
  below the committed offset of a key, so reusing a key would lose the new lines. If the new
  head is byte-identical to the old one over the old window, the new generation is fingerprinted
  over one byte fewer (a different digest). On restart several checkpoints of one (dev, ino) can
  then match the file; the one over the fewest bytes is the newest generation.
* **Tail hash** = blake2b-64 of the up to ``TAIL_BYTES`` bytes just before an offset. A checkpoint
  whose tail hash no longer matches the file's bytes means the file was rewritten in place: it
  is read again from offset 0.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from agent.model import Checkpoint, FileIdentity

FINGERPRINT_BYTES = 1024
TAIL_BYTES = 64
# Tail hash given for an offset whose bytes are gone (the file was rewritten before the sink asked):
# it never equals a digest, so a checkpoint carrying it is never trusted blindly on restart.
REWRITTEN = "rewritten"
# Tail hash that says "not verifiable": a matching identity is trusted at its offset.
UNKNOWN = ""


def fingerprint(head: bytes) -> str:
    """Hex digest identifying a file by its first bytes."""
    return hashlib.blake2b(head, digest_size=16).hexdigest()


def tail_hash(data: bytes) -> str:
    """Hex digest of the last ``TAIL_BYTES`` bytes of ``data`` (the bytes before an offset)."""
    return hashlib.blake2b(data[-TAIL_BYTES:], digest_size=8).hexdigest()


def identify(dev: int, ino: int, head: bytes, predecessor: FileIdentity | None = None) -> FileIdentity:
    """Identity of a file whose first bytes are ``head`` (non-empty).

    ``predecessor`` is the identity of the previous generation on the same inode, if any: when
    the heads agree, the window shrinks by one byte so that the key differs.
    """
    n = min(len(head), FINGERPRINT_BYTES)
    if predecessor is not None and (predecessor.dev, predecessor.ino) == (dev, ino) and matches(
        predecessor, head
    ):
        n = min(n, predecessor.fingerprint_len) - 1
        if n < 1:  # a one-byte file rewritten with the same byte: nothing left to tell apart
            n = min(len(head), FINGERPRINT_BYTES)
    return FileIdentity(dev=dev, ino=ino, fingerprint=fingerprint(head[:n]), fingerprint_len=n)


def matches(identity: FileIdentity, head: bytes) -> bool:
    """Whether a file starting with ``head`` has the content ``identity`` fingerprinted."""
    n = identity.fingerprint_len
    return len(head) >= n and fingerprint(head[:n]) == identity.fingerprint


def same_head(a: bytes, b: bytes) -> bool:
    """Whether two files agree over the bytes both have (and have at least one)."""
    n = min(len(a), len(b))
    return n > 0 and a[:n] == b[:n]


def newest_match(checkpoints: Iterable[Checkpoint], head: bytes) -> Checkpoint | None:
    """The checkpoint of the newest generation whose fingerprint matches ``head``."""
    found = [c for c in checkpoints if matches(c.identity, head)]
    return min(found, key=lambda c: c.identity.fingerprint_len) if found else None


def tail_ok(expected: str, before: bytes) -> bool:
    """Whether ``before`` (the bytes before an offset) agrees with a checkpoint's tail hash."""
    return expected == UNKNOWN or tail_hash(before) == expected
