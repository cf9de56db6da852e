"""The listening socket: one thread per association, TLS optional, a cap on associations."""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading

from dicom_node.fastpath.association import Association, Services, Timeouts

logger = logging.getLogger(__name__)


class FastServer:
    """``start()`` binds and returns; ``shutdown()`` stops accepting and closes connections."""

    def __init__(self, address: tuple[str, int], services: Services, *, timeouts: Timeouts,
                 max_associations: int, impl_uid: str, impl_version: bytes,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.services = services
        self.timeouts = timeouts
        self.max_associations = max_associations
        self._impl = (impl_uid, impl_version)
        self._ssl = ssl_context
        self._listener = socket.create_server(address, reuse_port=False, backlog=64)
        self._lock = threading.Lock()
        self._active: dict[int, socket.socket] = {}
        self._threads: set[threading.Thread] = set()
        self._stopping = threading.Event()
        self._acceptor = threading.Thread(target=self._accept_loop, name="dicom-accept",
                                          daemon=True)

    @property
    def server_address(self) -> tuple[str, int]:
        host, port = self._listener.getsockname()[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._acceptor.start()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                sock, addr = self._listener.accept()
            except OSError:
                if self._stopping.is_set():
                    return
                logger.exception("accept failed")
                continue
            # DESIGN.md 6: without it Nagle + delayed ACK stall every small C-STORE-RSP.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            t = threading.Thread(target=self._serve, args=(sock, f"{addr[0]}:{addr[1]}"),
                                 name="dicom-assoc", daemon=True)
            with self._lock:
                self._threads.add(t)
                self._active[id(t)] = sock
            t.start()

    def _over_capacity(self) -> bool:
        with self._lock:
            return len(self._active) > self.max_associations

    def _serve(self, sock: socket.socket, address: str) -> None:
        me = threading.current_thread()
        try:
            if self._ssl is not None:
                sock.settimeout(self.timeouts.artim_s)
                try:
                    sock = self._ssl.wrap_socket(sock, server_side=True)
                except (OSError, ssl.SSLError) as exc:
                    logger.warning("TLS handshake failed", extra={"peer": address,
                                                                  "error": str(exc)[:120]})
                    with contextlib.suppress(OSError):
                        sock.close()
                    return
                with self._lock:
                    self._active[id(me)] = sock
            Association(sock, address, self.services, self.timeouts, self._over_capacity,
                        *self._impl).run()
        finally:
            with self._lock:
                self._active.pop(id(me), None)
                self._threads.discard(me)

    def shutdown(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() on Linux
        with contextlib.suppress(OSError):
            self._listener.close()
        self._acceptor.join(timeout)
        with self._lock:
            socks = list(self._active.values())
            threads = list(self._threads)
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        for t in threads:
            t.join(timeout)
