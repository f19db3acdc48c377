"""LineSplitter: offsets, partial lines, CR/BOM stripping, oversize lines with bounded memory.

Most tests look at the lines a splitter hands over one by one (:meth:`Block.lines`); the block
tests check that a run of lines comes out as one block with exact bounds."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from agent.model import NUL_RUN, Block, FileIdentity, FileRef, Line
from agent.sources.identity import tail_hash
from agent.sources.reader import BOM, LineSplitter

from .support import lines_of

REF = FileRef("s", "/x.log", FileIdentity(1, 2, "f" * 32, 10))


def feed(s: LineSplitter, data: bytes) -> list[Line]:
    return lines_of(s.feed(data))


def release(s: LineSplitter) -> Line | None:
    block = s.release()
    if block is None:
        return None
    (line,) = block.lines()  # a released partial is one line
    return line


def split(*chunks: bytes, max_line: int = 1 << 20, prefix: int = 16, pos: int = 0) -> tuple[list[Line], LineSplitter]:
    s = LineSplitter(REF, pos, max_line, prefix)
    out: list[Line] = []
    for c in chunks:
        out += feed(s, c)
    return out, s


def test_offsets_are_raw_bytes_and_end_is_after_newline() -> None:
    lines, s = split("é1\nab\n".encode())
    assert [(x.start, x.end, x.data) for x in lines] == [(0, 4, "é1".encode()), (4, 7, b"ab")]
    assert s.pos == 7 and not s.has_partial


def test_partial_line_is_held_until_its_newline() -> None:
    lines, s = split(b"one\ntw", b"o", b"\nthree")
    assert [(x.start, x.end, x.data) for x in lines] == [(0, 4, b"one"), (4, 8, b"two")]
    assert s.has_partial and s.start == 8
    released = release(s)
    assert released == Line(REF, 8, 13, b"three")
    assert release(s) is None


def blk(raw: bytes, bounds: list[int], data: list[bytes], oversize: bool = False) -> Block:
    """The block expected over the file bytes ``raw`` (read from offset 0): its tail is the hash
    of the bytes before its end."""
    return Block(REF, bounds, data, oversize, tail_hash(raw[: bounds[-1]]))


def test_a_run_of_lines_is_one_block_with_exact_bounds() -> None:
    s = LineSplitter(REF, 0, 1 << 20, 16)
    raw = b"ab\r\ncde\nfg\nh\n"
    assert s.feed(b"ab\r\ncde\nf") == [blk(raw, [0, 4, 8], [b"ab", b"cde"])]
    assert s.feed(b"g\nh\n") == [blk(raw, [8, 11], [b"fg"]), blk(raw, [11, 13], [b"h"])]
    assert s.feed(b"") == [] and s.feed(b"i") == []


def test_oversize_lines_cut_a_run_into_blocks() -> None:
    s = LineSplitter(REF, 0, 4, 2)
    raw = b"a\nb\nxxxxxx\nc\n"
    assert s.feed(raw) == [
        blk(raw, [0, 2, 4], [b"a", b"b"]), blk(raw, [4, 11], [b"xx"], True), blk(raw, [11, 13], [b"c"])]


def test_blocks_hold_at_most_block_lines_lines() -> None:
    raw = b"".join(b"%d\n" % i for i in range(10))
    for max_line in (1 << 20, 1):  # the fast path, and the checked path (every line oversize but one)
        s = LineSplitter(REF, 0, max_line if max_line > 1 else 2, 2, block_lines=4)
        blocks = s.feed(raw)
        assert [len(b.data) for b in blocks] == [4, 4, 2]
        assert [b.tail for b in blocks] == [tail_hash(raw[: b.end]) for b in blocks]
        assert lines_of(blocks) == split(raw, max_line=max_line if max_line > 1 else 2, prefix=2)[0]


def test_block_part_keeps_the_bounds_of_its_lines_and_the_tail_only_at_its_end() -> None:
    block = Block(REF, [10, 12, 15, 19], [b"a", b"bb", b"ccc"], False, "t")
    assert block.part(1, 3) == Block(REF, [12, 15, 19], [b"bb", b"ccc"], False, "t")
    assert block.part(0, 1).lines() == [Line(REF, 10, 12, b"a")]
    assert block.part(0, 2).tail == ""  # unknown inside a block
    assert (block.start, block.end) == (10, 19)


@given(st.lists(st.sampled_from([b"\0", b"\0" * 7, b"ab", b"\n", b"{}\n", b"\r\n", b"x" * 70 + b"\n",
                                 b"y" * 300]), max_size=40),
       st.lists(st.integers(min_value=1, max_value=2000), max_size=8),
       st.integers(min_value=0, max_value=100))
def test_every_block_carries_the_hash_of_the_bytes_before_its_end(pieces: list[bytes], cuts: list[int],
                                                                  pos: int) -> None:
    """Whatever the chunking, a block's tail is the hash of the up to 64 file bytes before its
    end, which a restart compares with the file (``read_before``): resuming from a file that
    already held ``pos`` bytes, with the splitter's window taken from them."""
    prior = bytes(range(65, 65 + 26)) * 4
    head = prior[:pos]
    data = b"".join(pieces)
    bounds = sorted({c for c in cuts if c < len(data)})
    chunks = [data[a:b] for a, b in zip([0, *bounds], [*bounds, len(data)], strict=True)]
    s = LineSplitter(REF, pos, 100, 10, window=head[-64:], block_lines=3)
    blocks = [b for c in chunks for b in s.feed(c)]
    last = s.release()
    whole = head + data
    for b in [*blocks, *([last] if last is not None else [])]:
        assert b.tail == tail_hash(whole[: b.end])


def test_crlf_and_bom_at_offset_zero_only() -> None:
    lines, _ = split(BOM + b"a\r\nb\r\n" + BOM + b"c\n")
    assert [x.data for x in lines] == [b"a", b"b", BOM + b"c"]
    assert lines[0].start == 0 and lines[0].end == 6


def test_bom_split_across_reads_and_cr_inside_a_line_kept() -> None:
    lines, _ = split(BOM[:2], BOM[2:] + b"x\ry\r", b"\n")
    assert lines == [Line(REF, 0, 8, b"x\ry")]


def test_resume_mid_file_does_not_strip_bom_lookalike() -> None:
    lines, _ = split(BOM + b"z\n", pos=100)
    assert lines == [Line(REF, 100, 105, BOM + b"z")]


def test_oversize_line_within_one_chunk() -> None:
    big = b"x" * 50
    lines, _ = split(b"a\n" + big + b"\nb\n", max_line=20, prefix=8)
    assert [(x.start, x.end, x.data, x.oversize) for x in lines] == [
        (0, 2, b"a", False), (2, 53, b"x" * 8, True), (53, 55, b"b", False)]


def test_oversize_line_across_chunks_keeps_only_a_prefix() -> None:
    s = LineSplitter(REF, 0, 1000, 10)
    assert feed(s, b"ok\n" + b"y" * 600) == [Line(REF, 0, 3, b"ok")]
    for _ in range(100):
        assert feed(s, b"y" * 600) == []
        assert len(s.pending) <= 10
    lines = feed(s, b"yy\nnext\n")
    assert lines == [Line(REF, 3, 3 + 600 * 101 + 3, b"y" * 10, True), Line(REF, 60606, 60611, b"next")]


def test_line_of_exactly_max_bytes_is_not_oversize() -> None:
    lines, _ = split(b"z" * 20 + b"\n", b"w" * 21 + b"\n", max_line=20)
    assert [x.oversize for x in lines] == [False, True]


def test_release_of_an_endless_line_is_oversize_and_bounded() -> None:
    s = LineSplitter(REF, 0, 100, 5)
    for _ in range(50):
        feed(s, b"q" * 99)
    assert len(s.pending) == 5
    assert release(s) == Line(REF, 0, 4950, b"qqqqq", True)


def test_random_chunking_gives_the_same_lines() -> None:
    rng = random.Random(7)
    data = b"".join(b"%d-" % i + b"\xc3\xa9" * rng.randrange(5) + (b"\r" if i % 3 else b"") + b"\n"
                    for i in range(300))
    whole, _ = split(data)
    for _ in range(20):
        cuts = sorted(rng.sample(range(1, len(data)), 30))
        chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        parts, _ = split(*chunks)
        assert parts == whole
    assert len(whole) == 300 and whole[-1].end == len(data)


def test_moved_to_continues_the_partial_in_another_file() -> None:
    s = LineSplitter(REF, 0, 100, 10)
    feed(s, b"a\npart")
    other_ref = FileRef("s", "/x.log", FileIdentity(1, 3, "f" * 32, 10))
    other = s.moved_to(other_ref)
    assert feed(other, b"ial\n") == [Line(other_ref, 2, 10, b"partial")]


# ---- NUL runs (issue 10): not part of any line, one marker Line per run ----------------------

def _shape(lines: list[Line]) -> list[tuple[int, int, bytes, bool]]:
    return [(x.start, x.end, x.data, x.oversize) for x in lines]


def test_nul_hole_before_a_line_is_one_run_and_the_line_is_whole() -> None:
    lines, s = split(b"\0" * 100 + b'{"a":1}\n')
    assert _shape(lines) == [(0, 100, NUL_RUN, True), (100, 108, b'{"a":1}', False)]
    assert not s.has_partial


def test_nul_run_across_chunks_is_still_one_run() -> None:
    lines, _ = split(b"a\n\0\0", b"\0" * 70000, b"\0b\n")
    assert _shape(lines) == [(0, 2, b"a", False), (2, 70005, NUL_RUN, True), (70005, 70007, b"b", False)]


def test_nul_run_inside_a_line_ends_the_fragment_before_it() -> None:
    lines, _ = split(b'{"cut":', b"\0\0\0", b'{"b":2}\n')
    assert _shape(lines) == [(0, 7, b'{"cut":', False), (7, 10, NUL_RUN, True), (10, 18, b'{"b":2}', False)]


def test_trailing_nul_run_is_held_and_released_as_a_run() -> None:
    lines, s = split(b"a\n\0\0\0")
    assert _shape(lines) == [(0, 2, b"a", False)]
    assert s.has_partial
    released = release(s)
    assert released is not None and _shape([released]) == [(2, 5, NUL_RUN, True)]
    assert release(s) is None


def test_nul_run_state_moves_with_a_copy() -> None:
    s = LineSplitter(REF, 0, 100, 10)
    feed(s, b"\0\0")
    other = s.moved_to(REF)
    assert _shape(feed(other, b"\0x\n")) == [(0, 3, NUL_RUN, True), (3, 5, b"x", False)]


@given(st.lists(st.sampled_from([b"\0", b"\0" * 7, b"ab", b"\n", b"{}\n", b"\r\n"]), max_size=40),
       st.lists(st.integers(min_value=1, max_value=200), max_size=8))
def test_nul_splitting_does_not_depend_on_chunking(pieces: list[bytes], cuts: list[int]) -> None:
    data = b"".join(pieces)
    whole, ws = split(data)
    bounds = sorted({c for c in cuts if c < len(data)})
    chunks = [data[a:b] for a, b in zip([0, *bounds], [*bounds, len(data)], strict=True)]
    parts, ps = split(*chunks)
    assert parts == whole
    tail = [x for x in (release(ws),) if x is not None]
    assert [x for x in (release(ps),) if x is not None] == tail
    covered = whole + tail
    # every byte is in exactly one Line, in order, and no Line but a run marker holds a NUL
    assert [x.start for x in covered] == [0, *[x.end for x in covered]][: len(covered)]
    assert not covered or covered[-1].end == len(data)
    assert all(b"\0" not in x.data or x.data == NUL_RUN for x in covered)
    for x in covered:
        if x.data == NUL_RUN and x.oversize:
            assert set(data[x.start:x.end]) == {0}
