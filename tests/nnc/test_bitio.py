# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Bit-level descriptors: exact patterns from the fact sheet, round trips, and reader errors."""

from __future__ import annotations

import random
import struct
from collections.abc import Callable

import pytest

from nnrconv.core._errors import BitstreamError
from nnrconv.nnc import BitReader, BitWriter


def bitstring(write: Callable[[BitWriter], None]) -> str:
    """The bits `write` produces, as a string of 0 and 1 (no padding)."""
    w = BitWriter()
    write(w)
    n = w.bit_position
    if n % 8:
        w.u(8 - n % 8, 0)
    return "".join(f"{b:08b}" for b in w.getvalue())[:n]


@pytest.mark.parametrize(
    ("k", "value", "bits"),
    [
        (1, 0, "10"),
        (1, 1, "11"),
        (1, 2, "0100"),
        (1, 5, "0111"),
        (1, 6, "001000"),
        (7, 2, "10000010"),
        (7, 127, "11111111"),
        (7, 128, "0100000000"),
        (0, 0, "1"),
        (0, 1, "010"),
        (0, 2, "011"),
        (0, 3, "00100"),
        (11, 0, "1" + "0" * 11),
    ],
)
def test_ue_patterns(k: int, value: int, bits: str) -> None:
    assert bitstring(lambda w: w.ue(k, value)) == bits
    assert BitReader(_pad(bits)).ue(k) == value


@pytest.mark.parametrize(("value", "mapped"), [(0, 0), (1, 1), (-1, 2), (2, 3), (-2, 4), (5, 9), (-5, 10)])
def test_ie_maps_signed_to_unsigned(value: int, mapped: int) -> None:
    for k in (0, 2, 7):
        assert bitstring(lambda w, k=k: w.ie(k, value)) == bitstring(lambda w, k=k: w.ue(k, mapped))
        assert BitReader(_pad(bitstring(lambda w, k=k: w.ie(k, value)))).ie(k) == value


def test_u_and_i_patterns() -> None:
    assert bitstring(lambda w: w.u(3, 5)) == "101"
    assert bitstring(lambda w: w.u(0, 0)) == ""
    assert bitstring(lambda w: w.i(13, 0)) == "0" * 13
    assert bitstring(lambda w: w.i(13, -1)) == "1" * 13
    assert bitstring(lambda w: w.i(4, -8)) == "1000"
    assert bitstring(lambda w: w.i(4, 7)) == "0111"
    r = BitReader(bytes([0b11111111, 0b11111000]))
    assert r.i(13) == -1
    assert BitReader(bytes([0b10000000])).i(4) == -8


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda w: w.u(3, 8), r"u\(3\)"),
        (lambda w: w.u(3, -1), r"u\(3\)"),
        (lambda w: w.i(4, 8), r"i\(4\)"),
        (lambda w: w.i(4, -9), r"i\(4\)"),
        (lambda w: w.ue(1, -1), r"ue\(1\)"),
        (lambda w: w.st("a\0b"), "NUL"),
    ],
)
def test_writer_rejects_values_that_do_not_fit(call: Callable[[BitWriter], None], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(BitWriter())


def test_byte_alignment_always_writes_a_one() -> None:
    w = BitWriter()
    w.byte_alignment()
    assert w.getvalue() == b"\x80"
    w = BitWriter()
    w.u(3, 0b101)
    w.byte_alignment()
    assert w.getvalue() == bytes([0b10110000])
    w = BitWriter()
    w.u(7, 0)
    w.byte_alignment()
    assert w.getvalue() == b"\x01"


def test_flt_is_little_endian_float32() -> None:
    w = BitWriter()
    w.flt(1.0)
    assert w.getvalue() == bytes.fromhex("0000803f")
    w = BitWriter()
    w.u(4, 0)
    w.flt(-2.5)  # unaligned: each byte goes through u(8)
    w.u(4, 0)
    data = w.getvalue()
    r = BitReader(data)
    r.u(4)
    assert r.flt() == -2.5
    assert int.from_bytes(data, "big") >> 4 & 0xFFFFFFFF == int.from_bytes(struct.pack("<f", -2.5), "big")


def test_st_and_raw_bytes_need_alignment() -> None:
    w = BitWriter()
    w.st("ab")
    w.st("")
    w.st("ünï")
    assert w.getvalue() == b"ab\0\0" + "ünï".encode() + b"\0"
    r = BitReader(w.getvalue())
    assert (r.st(), r.st(), r.st()) == ("ab", "", "ünï")
    w = BitWriter()
    w.u(1, 1)
    with pytest.raises(ValueError, match="aligned"):
        w.st("x")
    with pytest.raises(ValueError, match="aligned"):
        w.getvalue()


def test_queries() -> None:
    w = BitWriter()
    assert w.is_byte_aligned and w.bit_position == 0
    w.u(5, 3)
    assert not w.is_byte_aligned and w.bit_position == 5
    r = BitReader(b"\x00\xff\x10", start=1, end=3)
    assert (r.bit_position, r.byte_position, r.bits_left, r.bytes_left, r.end) == (8, 1, 16, 2, 3)
    r.u(3)
    assert not r.is_byte_aligned and r.bits_left == 13


def test_random_round_trip() -> None:
    rng = random.Random(1234)
    ops: list[tuple[str, int, int | float | str | bytes]] = []
    w = BitWriter()
    for _ in range(3000):
        kind = rng.choice(["u", "i", "ue", "ie", "flt", "st", "raw", "align"])
        if kind == "u":
            n = rng.randint(1, 64)
            value = rng.getrandbits(n)
            w.u(n, value)
        elif kind == "i":
            n = rng.randint(1, 40)
            value = rng.randint(-(1 << (n - 1)), (1 << (n - 1)) - 1)
            w.i(n, value)
        elif kind == "ue":
            n = rng.randint(0, 11)
            value = rng.getrandbits(rng.randint(1, 30))
            w.ue(n, value)
        elif kind == "ie":
            n = rng.randint(0, 7)
            value = rng.randint(-(10**6), 10**6)
            w.ie(n, value)
        elif kind == "flt":
            n = 32
            value = struct.unpack("<f", struct.pack("<f", rng.uniform(-1e6, 1e6)))[0]
            w.flt(value)
        elif kind in ("st", "raw"):
            w.byte_alignment()
            ops.append(("align", 0, 0))
            n = 0
            if kind == "st":
                value = "".join(rng.choice("abcä€😀") for _ in range(rng.randint(0, 5)))
                w.st(value)
            else:
                value = rng.randbytes(rng.randint(0, 5))
                w.raw_bytes(value)
        else:
            n = 0
            value = 0
            w.byte_alignment()
        ops.append((kind, n, value))
    w.byte_alignment()
    r = BitReader(w.getvalue())
    for kind, n, value in ops:
        if kind == "u":
            assert r.u(n) == value
        elif kind == "i":
            assert r.i(n) == value
        elif kind == "ue":
            assert r.ue(n) == value
        elif kind == "ie":
            assert r.ie(n) == value
        elif kind == "flt":
            assert r.flt() == value
        elif kind == "st":
            assert r.st() == value
        elif kind == "raw":
            assert bytes(r.raw_bytes(len(value))) == value  # type: ignore[arg-type]
        else:
            r.byte_alignment()
    r.byte_alignment()
    assert r.bits_left == 0


# -- reader errors ------------------------------------------------------------------------------


def test_reading_past_the_end_names_the_byte_offset() -> None:
    r = BitReader(b"\x00\x01\x02", start=1)
    r.u(12)
    with pytest.raises(BitstreamError) as info:
        r.u(8)
    assert info.value.byte_offset == 2
    assert "end of data" in str(info.value)


@pytest.mark.parametrize(
    ("data", "call"),
    [
        (b"\x00\x00\x00", lambda r: r.ue(1)),
        (b"\x00\x01", lambda r: r.ue(7)),
        (b"\x00\x00\x00", lambda r: r.ie(7)),
        (b"\x01\x02\x03", lambda r: r.flt()),
        (b"\x01\x02\x03", lambda r: r.st()),
        (b"\x00" * 8, lambda r: r.raw_bytes(9)),
        (b"\x00" * 8, lambda r: r.u(65)),
        (b"\x00" * 8, lambda r: r.require_bits(65, "a thing")),
    ],
)
def test_reader_raises_bitstream_error_on_short_data(data: bytes, call: Callable[[BitReader], object]) -> None:
    with pytest.raises(BitstreamError):
        call(BitReader(data))


def test_ue_refuses_long_prefixes() -> None:
    with pytest.raises(BitstreamError, match="leading zero"):
        BitReader(b"\x00" * 5 + b"\xff" * 8).ue(0)
    # 32 leading zeros are still fine
    w = BitWriter()
    w.ue(0, (1 << 32) - 1)
    w.byte_alignment()
    assert BitReader(w.getvalue()).ue(0) == (1 << 32) - 1


def test_st_errors() -> None:
    with pytest.raises(BitstreamError, match="unterminated"):
        BitReader(b"abc").st()
    with pytest.raises(BitstreamError, match="UTF-8"):
        BitReader(b"\xff\xfe\x00").st()
    r = BitReader(b"\x80a\x00")
    r.u(1)
    with pytest.raises(BitstreamError, match="aligned"):
        r.st()
    long_name = "x" * 5000
    assert BitReader(long_name.encode() + b"\0").st() == long_name


def test_st_stops_at_the_window_end() -> None:
    with pytest.raises(BitstreamError, match="unterminated"):
        BitReader(b"abc\x00", end=3).st()


def test_byte_alignment_reader_checks_bits() -> None:
    BitReader(b"\x80").byte_alignment()
    with pytest.raises(BitstreamError, match="equal_to_one"):
        BitReader(b"\x00").byte_alignment()
    with pytest.raises(BitstreamError, match="non-zero"):
        BitReader(b"\x81").byte_alignment()
    r = BitReader(b"\xb0")
    r.u(3)
    r.byte_alignment()
    assert r.bits_left == 0


def test_reader_accepts_memoryviews_without_copying() -> None:
    data = bytearray(b"\x12\x34")
    r = BitReader(memoryview(data))
    view = r.raw_bytes(2)
    data[0] = 0x99
    assert view[0] == 0x99


def _pad(bits: str) -> bytes:
    bits = bits + "0" * (-len(bits) % 8)
    return bytes(int(bits[i : i + 8], 2) for i in range(0, len(bits), 8)) or b"\0"
