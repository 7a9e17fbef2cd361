"""One shard's /metrics body, kept between scrapes as text or, once a client asked for
gzip, as its gzip stream."""

from __future__ import annotations

import zlib
from typing import Any

GZIP_LEVEL = 1
"""zlib's fastest level: a 29 MB shard in about 0.1 s, to 1.3 MB (level 6: 0.4 s, 1.0 MB)."""


class Body:
    """One shard's exposition as last rendered, kept until one of its agents changes: the
    text, or once a client asked for gzip, only its gzip stream (a 29 MB shard in 1.3 MB),
    compressed off the event loop."""

    def __init__(self, stamp: object, fleet: bytes) -> None:
        self.stamp = stamp
        self._text: bytes | None = fleet
        """Everything but the server's own metrics (shard 0), which change at any time."""
        self._gzip: tuple[bytes, Any, bytes] | None = None
        """The gzip stream of the text so far, the compressor to go on with, and the stream
        of the text alone."""

    def text(self, own: bytes) -> bytes:
        fleet = self._text
        if fleet is None:  # kept compressed only
            assert self._gzip is not None
            fleet = zlib.decompress(self._gzip[2], 16 + zlib.MAX_WBITS)
        return fleet + own if own else fleet

    def gzip_ready(self) -> bool:
        return self._gzip is not None

    def compress(self) -> None:
        """Compress the text, and forget it (in any thread: zlib lets go of the GIL)."""
        text = self._text
        if self._gzip is None and text is not None:
            compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
            head = compressor.compress(text)
            self._gzip = (head, compressor, head + compressor.copy().flush())
            self._text = None

    def gzipped(self, own: bytes) -> bytes:
        """The gzip stream of `text(own)`; `compress` must have run."""
        assert self._gzip is not None
        head, compressor, alone = self._gzip
        if not own:
            return alone
        rest = compressor.copy()  # the kept state goes on serving the next scrapes
        return head + rest.compress(own) + rest.flush()
