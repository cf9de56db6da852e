"""Buffered reads from an association's socket: PDU headers, small bodies, PDV values.

One reusable receive buffer per association; ``recv_into`` fills it with whatever the
kernel has, and PDV values are handed to their sink as memoryview slices of it, so a
data set fragment is copied once, from the socket into the buffer, before its write.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable

from dicom_node.fastpath.pdu import PduError

_HEADER = struct.Struct(">BBL")
_PDV = struct.Struct(">LBB")

#: Control PDUs (A-ASSOCIATE-RQ, release, abort) larger than this are refused; 128
#: presentation contexts with ten transfer syntaxes each stay far below it.
MAX_CONTROL_PDU = 256 * 1024


class PeerClosed(Exception):
    """The peer closed the TCP connection."""


class SocketReader:
    def __init__(self, sock: socket.socket, size: int = 1 << 20) -> None:
        self.sock = sock
        self._buf = bytearray(size)
        self._mv = memoryview(self._buf)
        self._start = 0
        self._end = 0

    def _recv(self) -> None:
        if self._start == self._end:
            self._start = self._end = 0
        got = self.sock.recv_into(self._mv[self._end:])
        if not got:
            raise PeerClosed
        self._end += got

    def _fill(self, n: int) -> None:
        """Make ``n`` (<= buffer size) contiguous bytes available at ``_start``."""
        while self._end - self._start < n:
            if len(self._buf) - self._start < n:
                avail = self._end - self._start
                # Same-size slice assignment: allowed while memoryviews are exported.
                self._buf[:avail] = self._buf[self._start:self._end]
                self._start, self._end = 0, avail
            self._recv()

    def pdu_header(self) -> tuple[int, int]:
        """(type, length) of the next PDU (PS3.8 9.3.1)."""
        self._fill(6)
        kind, _, length = _HEADER.unpack_from(self._buf, self._start)
        self._start += 6
        return kind, length

    def body(self, length: int) -> bytes:
        """A whole control PDU body."""
        if length > MAX_CONTROL_PDU:
            raise PduError(f"control PDU of {length} bytes")
        self._fill(length)
        out = bytes(self._buf[self._start:self._start + length])
        self._start += length
        return out

    def pdv_header(self) -> tuple[int, int, int]:
        """(value length, presentation context ID, message control header) of a PDV."""
        self._fill(6)
        item_len, context_id, mch = _PDV.unpack_from(self._buf, self._start)
        self._start += 6
        if item_len < 2:
            raise PduError("PDV item shorter than its header")
        return item_len - 2, context_id, mch

    def stream(self, n: int, sink: Callable[[memoryview], None]) -> None:
        """Hand the next ``n`` bytes to ``sink`` in slices of the receive buffer."""
        while n:
            if self._start == self._end:
                self._recv()
            take = min(n, self._end - self._start)
            sink(self._mv[self._start:self._start + take])
            self._start += take
            n -= take

    def drain(self) -> None:
        """Read and drop until the peer closes (after A-RELEASE-RP or A-ASSOCIATE-RJ)."""
        self._start = self._end = 0
        while True:
            self._recv()
            self._start = self._end = 0
