# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""MSB-first bit writer and reader for the descriptors of ISO/IEC 15938-17 (clause 7, syntax).

NOTE: writer and reader are separate classes on purpose: one class switched by a "reading" flag
(the NNCodec design) makes every syntax function ambiguous. Both work on whole integers and byte
slices rather than on lists of bits, so headers of large models parse in microseconds.

The writer raises `ValueError` for a value that does not fit its descriptor: that is a bug in the
caller, not a property of any bitstream. The reader raises `BitstreamError` with the byte offset for
everything a corrupt or truncated stream can cause; it never loops more often than the remaining bits
allow.
"""

from __future__ import annotations

import struct

from nnrconv.core._errors import BitstreamError

__all__ = ["BitReader", "BitWriter"]

# A ue(k) code word with more leading zeros than this cannot come from a sane encoder (its value
# would exceed 2**(k + 33)); refusing it bounds the prefix loop on corrupt data.
_MAX_UE_LEADING_ZEROS = 32

_FLOAT32_LE = struct.Struct("<f")


class BitWriter:
    """Accumulates syntax elements MSB first into a growing byte buffer.

    >>> w = BitWriter()
    >>> w.ue(1, 2)
    >>> w.byte_alignment()
    >>> w.getvalue().hex()
    '48'
    """

    __slots__ = ("_acc", "_buf", "_nacc")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._acc = 0  # pending bits, fewer than 8 after every call
        self._nacc = 0

    @property
    def bit_position(self) -> int:
        """Number of bits written so far."""
        return len(self._buf) * 8 + self._nacc

    @property
    def is_byte_aligned(self) -> bool:
        """Whether the next bit starts a new byte."""
        return self._nacc == 0

    def u(self, n: int, x: int) -> None:
        """Write `u(n)`: `x` as an n-bit unsigned integer, MSB first.

        Raises:
            ValueError: `x` is negative or needs more than `n` bits.
        """
        if x < 0 or x >> n:
            raise ValueError(f"u({n}) cannot hold {x!r}; expected 0 <= x < 2**{n}")
        acc = (self._acc << n) | x
        nacc = self._nacc + n
        if nacc >= 8:
            rem = nacc & 7
            self._buf += (acc >> rem).to_bytes(nacc >> 3, "big")
            acc &= (1 << rem) - 1
            nacc = rem
        self._acc = acc
        self._nacc = nacc

    def flag(self, value: bool) -> None:
        """Write a one-bit flag, u(1)."""
        self.u(1, 1 if value else 0)

    def i(self, n: int, x: int) -> None:
        """Write `i(n)`: `x` as an n-bit two's complement integer.

        Raises:
            ValueError: `x` is outside [-2**(n-1), 2**(n-1)).
        """
        half = 1 << (n - 1)
        if not -half <= x < half:
            raise ValueError(f"i({n}) cannot hold {x!r}; expected {-half} <= x < {half}")
        self.u(n, x & ((1 << n) - 1))

    def ue(self, k: int, x: int) -> None:
        """Write `ue(k)`, the k-th order Exp-Golomb code of a non-negative integer.

        Equivalent to the standard's loop (emit 0 and subtract 2**k while x >= 2**k, k += 1; then a 1
        and x in k bits): z leading zeros followed by `x + 2**k` written in k + z + 1 bits.

        Raises:
            ValueError: `x` is negative.
        """
        if x < 0:
            raise ValueError(f"ue({k}) cannot hold negative {x!r}")
        y = x + (1 << k)
        nbits = y.bit_length()
        if nbits - 1 - k > _MAX_UE_LEADING_ZEROS:
            raise ValueError(f"ue({k}) of {x} needs more than {_MAX_UE_LEADING_ZEROS} leading zeros; readers refuse it")
        self.u(nbits - 1 - k + nbits, y)  # (nbits - 1 - k) zeros, then y

    def ie(self, k: int, x: int) -> None:
        """Write `ie(k)`: a signed value mapped x > 0 -> 2x - 1, x <= 0 -> -2x, then `ue(k)`."""
        self.ue(k, 2 * x - 1 if x > 0 else -2 * x)

    def flt(self, x: float) -> None:
        """Write `flt(32)`: an IEEE 754 float32 as 4 bytes in little-endian order, each via u(8)."""
        for byte in _FLOAT32_LE.pack(x):
            self.u(8, byte)

    def st(self, v: str) -> None:
        """Write `st(v)`: a UTF-8 string and a terminating 0x00 byte, at a byte-aligned position.

        Raises:
            ValueError: not byte aligned, or the string contains U+0000 (it would end early).
        """
        if "\0" in v:
            raise ValueError(f"st(v) cannot carry {v!r}: it contains a NUL character")
        self.raw_bytes(v.encode("utf-8") + b"\0")

    def raw_bytes(self, data: bytes | bytearray | memoryview) -> None:
        """Append whole bytes at a byte-aligned position (raw tensors, strings, nested units).

        Raises:
            ValueError: the writer is not byte aligned.
        """
        if self._nacc:
            raise ValueError(f"raw bytes must start byte aligned; {self._nacc} bits are pending")
        self._buf += data

    def byte_alignment(self) -> None:
        """Write `byte_alignment()`: a 1 bit, then 0 bits up to the byte boundary (0x80 if aligned)."""
        self.u(1, 1)
        if self._nacc:
            self.u(8 - self._nacc, 0)

    def getvalue(self) -> bytes:
        """Return everything written.

        Raises:
            ValueError: the last byte is incomplete (every NNR structure ends byte aligned).
        """
        if self._nacc:
            raise ValueError(f"bit writer is not byte aligned ({self._nacc} bits pending)")
        return bytes(self._buf)


class BitReader:
    """Reads syntax elements MSB first from a window [start, end) of a byte buffer.

    Positions (and the byte offsets in errors) are absolute in the buffer, so a reader over one
    unit of a file reports offsets in the file.

    >>> r = BitReader(bytes([0b01001000]))
    >>> r.ue(1), r.bits_left
    (2, 4)
    """

    __slots__ = ("_data", "_end", "_pos")

    def __init__(
        self,
        data: bytes | bytearray | memoryview,
        start: int = 0,
        end: int | None = None,
    ) -> None:
        view = memoryview(data)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        if end is None:
            end = len(view)
        if not 0 <= start <= end <= len(view):
            raise ValueError(f"bad window [{start}, {end}) of a {len(view)}-byte buffer")
        self._data = view
        self._pos = start * 8
        self._end = end * 8

    # -- position queries ------------------------------------------------------------------

    @property
    def bit_position(self) -> int:
        """Absolute bit offset of the next bit to read."""
        return self._pos

    @property
    def byte_position(self) -> int:
        """Absolute offset of the byte holding the next bit."""
        return self._pos >> 3

    @property
    def bits_left(self) -> int:
        """Bits between the read position and the end of the window."""
        return self._end - self._pos

    @property
    def bytes_left(self) -> int:
        """Whole bytes left; only meaningful when byte aligned."""
        return (self._end - self._pos) >> 3

    @property
    def end(self) -> int:
        """Absolute byte offset of the end of the window."""
        return self._end >> 3

    @property
    def is_byte_aligned(self) -> bool:
        """Whether the next bit starts a byte."""
        return not self._pos & 7

    def error(self, message: str) -> BitstreamError:
        """A `BitstreamError` located at the current byte position."""
        return BitstreamError(message, byte_offset=self._pos >> 3)

    def require_bits(self, n: int, what: str) -> None:
        """Refuse a count read from the stream before looping over it.

        Raises:
            BitstreamError: fewer than `n` bits are left, so `what` cannot be complete.
        """
        if n > self._end - self._pos:
            raise self.error(
                f"{what} needs at least {n} bits but only {self._end - self._pos} remain (truncated or corrupt)"
            )

    # -- descriptors -----------------------------------------------------------------------

    def u(self, n: int) -> int:
        """Read `u(n)`.

        Raises:
            BitstreamError: fewer than `n` bits are left.
        """
        if n == 0:
            return 0
        pos = self._pos
        stop = pos + n
        if stop > self._end:
            raise self.error(f"unexpected end of data: u({n}) needs {n} bits, {self._end - pos} left")
        first = pos >> 3
        last = (stop + 7) >> 3
        value = int.from_bytes(self._data[first:last], "big")
        self._pos = stop
        return (value >> ((last << 3) - stop)) & ((1 << n) - 1)

    def flag(self) -> bool:
        """Read a one-bit flag."""
        return self.u(1) == 1

    def i(self, n: int) -> int:
        """Read `i(n)` (two's complement)."""
        value = self.u(n)
        return value - (1 << n) if value >> (n - 1) else value

    def ue(self, k: int) -> int:
        """Read `ue(k)`.

        Raises:
            BitstreamError: the code word is truncated or has more than 32 leading zeros.
        """
        pos = self._pos
        avail = min(self._end - pos, 2 * _MAX_UE_LEADING_ZEROS + 2)
        window = self._peek(pos, avail)
        zeros = avail - window.bit_length()  # leading zeros inside the window
        if zeros > _MAX_UE_LEADING_ZEROS:
            raise self.error(f"corrupt ue({k}) code: more than {_MAX_UE_LEADING_ZEROS} leading zero bits")
        if window == 0:
            raise self.error(f"unexpected end of data inside a ue({k}) prefix")
        n = k + zeros
        total = zeros + 1 + n
        if total <= avail:  # the whole code word is in the window: the usual case
            self._pos = pos + total
            return ((window >> (avail - total)) & ((2 << n) - 1)) - (1 << k)
        self._pos = pos + zeros + 1
        return ((1 << n) | self.u(n)) - (1 << k)

    def _peek(self, pos: int, n: int) -> int:
        """The n bits at bit position `pos`, without moving (n may be 0)."""
        if n <= 0:
            return 0
        stop = pos + n
        last = (stop + 7) >> 3
        value = int.from_bytes(self._data[pos >> 3 : last], "big")
        return (value >> ((last << 3) - stop)) & ((1 << n) - 1)

    def ie(self, k: int) -> int:
        """Read `ie(k)`."""
        v = self.ue(k)
        return (v + 1) >> 1 if v & 1 else -(v >> 1)

    def flt(self) -> float:
        """Read `flt(32)` (4 little-endian bytes, each via u(8))."""
        raw = self.u(32).to_bytes(4, "big")
        return _FLOAT32_LE.unpack(raw)[0]

    def _require_aligned(self, what: str) -> None:
        if self._pos & 7:
            raise self.error(f"{what} must start byte aligned but the reader is at bit {self._pos & 7}")

    def st(self) -> str:
        """Read `st(v)`: UTF-8 bytes up to a 0x00 terminator, which is consumed.

        Raises:
            BitstreamError: not aligned, no terminator before the end, or invalid UTF-8.
        """
        self._require_aligned("st(v)")
        start = self._pos >> 3
        end = self._end >> 3
        # Search in growing chunks: a name is short, but the window may be a 1 GB unit.
        chunk = 64
        at = start
        found = -1
        while at < end:
            stop = min(end, at + chunk)
            hit = bytes(self._data[at:stop]).find(0)
            if hit >= 0:
                found = at + hit
                break
            at = stop
            chunk *= 4
        if found < 0:
            raise self.error("unterminated st(v) string: no 0x00 byte before the end of the unit")
        try:
            text = str(self._data[start:found], "utf-8")
        except UnicodeDecodeError as exc:
            raise self.error(f"st(v) string is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
        self._pos = (found + 1) * 8
        return text

    def raw_bytes(self, n: int) -> memoryview:
        """Read `n` whole bytes at a byte-aligned position (a view into the buffer, not a copy).

        Raises:
            BitstreamError: not aligned or fewer than `n` bytes left.
        """
        self._require_aligned("raw bytes")
        start = self._pos >> 3
        if n < 0 or start + n > self._end >> 3:
            raise self.error(f"unexpected end of data: {n} bytes needed, {(self._end >> 3) - start} left")
        self._pos += n * 8
        return self._data[start : start + n]

    def rest(self) -> memoryview:
        """Read everything up to the end of the window (a payload that fills its unit)."""
        return self.raw_bytes((self._end - self._pos) >> 3)

    def byte_alignment(self) -> None:
        """Read `byte_alignment()`: a 1 bit, then zero bits up to the byte boundary.

        Raises:
            BitstreamError: the alignment bits are missing or not `1 0…0`.
        """
        if self.u(1) != 1:
            raise self.error("byte_alignment(): expected alignment_bit_equal_to_one")
        pad = -self._pos & 7
        if pad and self.u(pad) != 0:
            raise self.error("byte_alignment(): non-zero alignment_bit_equal_to_zero")
