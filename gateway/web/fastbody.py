"""The body of a request on the fast door: one Content-Length, counted off the client's bytes.

The door feeds it every byte after the request's head until `left` is 0; what is past the body
goes back to the door as the next request's. The forward takes the body whole when it is all
here and small (`whole`), or piece by piece as it arrives (`read`, b"" at its end). Pieces are
kept as they arrived, so a streamed piece goes upstream uncopied and a large body is never
copied whole. A body the forward never read is dropped as it arrives while the door lingers
(`linger`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class Body:
    """The current request's body on one fast-door connection."""

    __slots__ = ("_loop", "_pieces", "_taken", "_waiter", "gone", "left", "lingering", "size")

    def __init__(self, loop: asyncio.AbstractEventLoop, taken: Callable[[], None]) -> None:
        self.left = 0  # bytes still to come from the client
        self.size = 0  # bytes held for the forward
        self.lingering = False  # dropping the rest of an answered request's body
        self.gone = False  # the client left
        self._loop = loop
        self._pieces: list[bytes] = []
        self._taken = taken  # called once held bytes were taken: the door may read again
        self._waiter: asyncio.Future[None] | None = None

    def start(self, first: bytes, length: int) -> None:
        """A body of `length` bytes, `first` of them already read with its head."""
        if first:  # never an empty piece: read's b"" is the body's end
            self._pieces.append(first)
        self.size = len(first)
        self.left = length - len(first)

    @property
    def unread(self) -> bool:
        """Some of the body was never taken by the forward."""
        return bool(self.left or self._pieces)

    def feed(self, data: bytes) -> bytes:
        """Count `data` (never empty) off the body, held or dropped; the bytes past its end."""
        left = self.left
        part, rest = (data, b"") if len(data) <= left else (data[:left], data[left:])
        self.left = left - len(part)
        if not self.lingering:
            self._pieces.append(part)
            self.size += len(part)
            self._wake()
        return rest

    def whole(self, limit: int) -> bytes | None:
        """The body, taken, if all of it is here and at most `limit` bytes; else None (`read`
        streams it)."""
        if self.left or self.size > limit:
            return None
        chunk = b"".join(self._pieces)  # one piece is itself, not a copy
        self.clear()
        return chunk

    async def read(self) -> bytes:
        """The body's next bytes as they arrive; b"" once all were read. ConnectionResetError if
        the client left first."""
        while not self._pieces:
            if not self.left:
                return b""
            if self.gone:
                raise ConnectionResetError("the client closed the connection mid-body")
            waiter = self._waiter = self._loop.create_future()
            await waiter
        chunk = self._pieces.pop(0)
        self.size -= len(chunk)
        self._taken()
        return chunk

    def linger(self) -> None:
        """Answered before the body was all read: what is held, and what is still to come, is dropped."""
        self.clear()
        self.lingering = self.left > 0

    def clear(self) -> None:
        self._pieces.clear()
        self.size = 0

    def lost(self) -> None:
        self.gone = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
