"""One upstream response as the pool's connection receives it, and how an upstream can fail one."""

from __future__ import annotations

from collections import deque


class UpstreamError(Exception):
    """The upstream failed this request; `answered` says whether any response byte had arrived."""

    def __init__(self, message: str, *, answered: bool = True) -> None:
        super().__init__(message)
        self.answered = answered


class UpstreamConnectError(UpstreamError):
    pass


class UpstreamReadTimeout(UpstreamError):
    pass


class UpstreamConnectTimeout(UpstreamReadTimeout):
    pass


class Message:
    """One response as it arrives: the head, then body chunks waiting to be taken."""

    __slots__ = (
        "buffered",
        "chunks",
        "close_delimited",
        "complete",
        "head_done",
        "headers",
        "interim",
        "keep_alive",
        "reason",
        "status",
    )

    def __init__(self) -> None:
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_done = False
        self.complete = False
        self.interim = False
        self.keep_alive = False
        self.close_delimited = False
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
