"""The sources stage: discover, identify and tail log files; the only stage that touches files.

It takes committed checkpoints as input and emits complete lines with raw byte offsets, one
:class:`~agent.model.Block` per read of a file (not an object per line). Modules, in the order data flows through them:

* :mod:`.discovery` - include/exclude globs, stat, folders to watch;
* :mod:`.identity` - (device, inode) + fingerprint, generations, tail hashes (pure);
* :mod:`.matching` - which checkpoint, generation or copy a newly seen inode continues;
* :mod:`.reader` - bytes to blocks of lines: partial lines held back, oversize lines bounded (pure);
* :mod:`.tracked` / :mod:`.files` - per-file state, the descriptor budget, acks;
* :mod:`.rotation` / :mod:`.startup` - rename, copytruncate, delete, rewrite; what left the
  globs while the agent was down;
* :mod:`.scanner` / :mod:`.tailer` / :mod:`.watch` - the step, the async loop, event wake-ups.

Policies (each module's docstring says why):

* **Rewrite detection.** Before each read the bytes just before the read offset are compared
  with what was read there; at every rescan too, for files that did not grow. A file shorter than
  the read offset, or with different bytes there, was rewritten in place.
* **Rewritten / shrunk files** (truncate-and-rewrite, shrink to a non-zero size) are read again
  from offset 0 as a new *generation* with its own identity key, after looking for a
  copytruncate copy to finish the old content in. A shrink that kept a prefix therefore emits
  that prefix again: skipping it would lose the lines of a fast truncate-and-rewrite, which
  looks the same. A rewrite that reproduces exactly the bytes before the read offset is
  invisible by content and is read as a continuation.
* **Restart.** A checkpoint resumes its file when (dev, ino) and fingerprint match and the tail
  hash at its offset agrees; otherwise the file is read from 0. Tail hash ``REWRITTEN`` (the
  bytes were gone before the sink asked) never agrees; ``""`` (unknown file) trusts the identity.
  A checkpoint no globbed file continues is looked for in its folder: its inode under another
  name (renamed away), else a copytruncate copy with its fingerprint and tail hash - whatever
  became of the original (truncated, renamed, deleted, its inode number reused by a new file).
* **Inode reuse.** A file the agent saw end (deleted, moved away, rewritten) retires its
  identity: a new file on that inode number is the inode's next generation with a new key, even
  when its first bytes are the same (a banner, a config dump). While the agent was stopped, the
  checkpoint's tail hash at its offset (and the file's size) decide instead.
* **Grace.** An unterminated last line is held until its newline, or - only for a rotated file
  (renamed, moved out, deleted, a copy) - until it has been quiet for ``rotate_grace_s``: then it
  is released as a line ending at the last byte. A truncated file's held line is released at once
  unless a copy continues it.
* **Probable copies.** A new file whose first bytes equal a live file's is held back for up to
  ``rotate_grace_s`` (without growth) waiting for the original's truncation; after that it is an
  ordinary file and is read from 0.
* **Nothing silently dropped.** Bytes that can no longer be read are reported with their count
  (``rotation.unread_outside_globs``); oversize lines come out as ``oversize`` blocks.
"""

from agent.sources.identity import REWRITTEN, UNKNOWN, fingerprint, tail_hash
from agent.sources.options import COMPRESSED_SUFFIXES, FileStatus, SourceSpec, TailOptions
from agent.sources.reader import MAX_BLOCK_LINES
from agent.sources.tailer import Tailer

__all__ = [
    "COMPRESSED_SUFFIXES",
    "MAX_BLOCK_LINES",
    "REWRITTEN",
    "UNKNOWN",
    "FileStatus",
    "SourceSpec",
    "TailOptions",
    "Tailer",
    "fingerprint",
    "tail_hash",
]
