"""Decode a copy of a compressed body for parsing, leaving the original bytes alone.

The integrations see bodies as they travel (``Content-Encoding`` still applied) and
decode their own copy. ``body_decoder`` returns a function from an encoded piece to the
decoded bytes in pieces of at most ``MAX_PIECE`` bytes, or ``None`` when the encoding is
not one we can decode here (the body is then not parsed). gzip/deflate pieces are
produced lazily, so a decompression bomb costs time proportional to its size, never
memory; brotli (optional) decodes each input piece at once, then splits it.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final

__all__ = ["MAX_PIECE", "Decoder", "body_decoder", "identity"]

Decoder = Callable[[bytes], Iterable[bytes]]

MAX_PIECE: Final = 1 << 20


def identity(data: bytes) -> Iterable[bytes]:
    """The decoder of an uncompressed body: the piece itself."""
    return (data,)


class _Zlib:
    __slots__ = ("_d", "_first", "_wbits")

    def __init__(self, wbits: int) -> None:
        self._wbits = wbits
        self._d = zlib.decompressobj(wbits)
        self._first = True

    def __call__(self, data: bytes) -> Iterator[bytes]:
        if self._first:
            self._first = False
            try:
                out = self._d.decompress(data, MAX_PIECE)
            except zlib.error:
                if self._wbits != zlib.MAX_WBITS:
                    raise
                # "deflate" is sometimes sent raw, without the zlib header (httpx allows it).
                self._d = zlib.decompressobj(-zlib.MAX_WBITS)
                out = self._d.decompress(data, MAX_PIECE)
        else:
            out = self._d.decompress(data, MAX_PIECE)
        if out:
            yield out
        while self._d.unconsumed_tail:
            out = self._d.decompress(self._d.unconsumed_tail, MAX_PIECE)
            if out:
                yield out


class _Brotli:
    __slots__ = ("_process",)

    def __init__(self, module: Any) -> None:
        d = module.Decompressor()
        self._process = d.process if hasattr(d, "process") else d.decompress

    def __call__(self, data: bytes) -> Iterable[bytes]:
        out: bytes = self._process(data)
        return (out[i : i + MAX_PIECE] for i in range(0, len(out), MAX_PIECE))


def _brotli() -> Decoder | None:
    try:
        import brotli  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return None
    return _Brotli(brotli)


def body_decoder(content_encoding: str | None) -> Decoder | None:
    """A decoder for ``content_encoding`` (``None``/``identity``, ``gzip``, ``deflate``,
    ``br`` when the ``brotli`` package is installed); ``None`` when unsupported, including
    stacked encodings such as ``gzip, br``."""
    if not content_encoding:
        return identity
    coding = content_encoding.strip().lower()
    if coding in ("", "identity"):
        return identity
    if coding in ("gzip", "x-gzip"):
        return _Zlib(zlib.MAX_WBITS | 16)
    if coding == "deflate":
        return _Zlib(zlib.MAX_WBITS)
    if coding == "br":
        return _brotli()
    return None
