"""One association, acceptor side (PS3.8 section 9 and Annex D state machine, in short).

Sta2 (awaiting A-ASSOCIATE-RQ, ARTIM running) -> negotiation -> Sta6 (data transfer)
-> A-RELEASE-RQ answered with A-RELEASE-RP -> wait for the peer to close (ARTIM). Any
PDU out of place, a malformed PDU or a silent peer gets an A-ABORT. Messages are served
one at a time (we announce no asynchronous operations window, PS3.7 D.3.3.3), so each
C-STORE-RSP leaves only after the service answered, i.e. after the instance is durable.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from dicom_node.fastpath import dimse
from dicom_node.fastpath import pdu as p
from dicom_node.fastpath.reader import PeerClosed, SocketReader
from dicom_node.fastpath.spool import Spool

logger = logging.getLogger(__name__)

SUCCESS = 0x0000
PROCESSING_FAILURE = 0x0110  # PS3.7 C.4.1


@dataclass(frozen=True, slots=True)
class Reply:
    """A service's answer to one request."""

    status: int
    comment: str | None = None
    error_id: int | None = None
    dataset: bytes | None = None  # encoded in the context's transfer syntax


@dataclass(frozen=True, slots=True)
class Admission:
    accepted: bool
    node_id: int | None = None


@dataclass(frozen=True, slots=True)
class Peer:
    """Who is on the other end, as settled at association acceptance."""

    calling_ae: str
    address: str
    node_id: int | None


class Services(Protocol):
    """What the node provides to the protocol engine; no method may raise."""

    @property
    def spool_dir(self) -> Path: ...

    @property
    def supported(self) -> Mapping[str, frozenset[str]]:
        """Abstract syntax -> the transfer syntaxes accepted for it."""

    def admit(self, rq: p.AssociateRequest, address: str) -> Admission: ...

    def file_meta(self, peer: Peer, cmd: dimse.Command, transfer_syntax: str) -> bytes: ...

    def store(self, peer: Peer, cmd: dimse.Command, transfer_syntax: str,
              spool: Spool | None) -> Reply: ...

    def n_request(self, peer: Peer, cmd: dimse.Command, transfer_syntax: str,
                  data: bytes) -> Reply: ...


@dataclass(frozen=True, slots=True)
class Timeouts:
    artim_s: float  # PS3.8 9.1.5: waiting for A-ASSOCIATE-RQ, or for the close after RP/RJ
    network_s: float  # silence during an established association


class Association:
    def __init__(self, sock: socket.socket, address: str, services: Services,
                 timeouts: Timeouts, over_capacity: Callable[[], bool],
                 impl_uid: str, impl_version: bytes) -> None:
        self.sock = sock
        self.address = address
        self.services = services
        self.timeouts = timeouts
        self._over_capacity = over_capacity
        self._impl = (impl_uid, impl_version)
        self.reader = SocketReader(sock)
        self.peer = Peer("", address, None)
        self._max_pdu = 0
        self._contexts: dict[int, p.ContextResult] = {}
        self._cmd = bytearray()
        self._cmd_ctx: int | None = None
        self._pending: tuple[dimse.Command, int] | None = None
        self._spool: Spool | None = None
        self._data = bytearray()
        self._data_sink: Callable[[memoryview], None] = self._data_write

    def run(self) -> None:
        """Serve the connection until release, abort or error; never raises."""
        try:
            self.sock.settimeout(self.timeouts.artim_s)
            kind, length = self.reader.pdu_header()
            if kind != p.A_ASSOCIATE_RQ:
                raise p.PduError(f"PDU 0x{kind:02X} before A-ASSOCIATE-RQ")
            if self._negotiate(p.parse_associate_rq(self.reader.body(length))):
                self.sock.settimeout(self.timeouts.network_s)
                self._serve()
        except PeerClosed:
            logger.debug("peer closed the connection", extra={"peer": self.address})
        except (p.PduError, dimse.CommandError) as exc:
            logger.warning("association aborted: protocol error",
                           extra={"peer": self.address, "error": str(exc)[:120]})
            self._send_quietly(p.encode_abort(p.ABORT_SOURCE_PROVIDER,
                                              p.ABORT_INVALID_PARAMETER))
        except TimeoutError:
            logger.warning("association aborted: peer silent", extra={"peer": self.address})
            if self._contexts:  # PS3.8 AA-2: before association, ARTIM just closes
                self._send_quietly(p.encode_abort())
        except OSError as exc:
            logger.debug("connection error", extra={"peer": self.address, "error": str(exc)})
        finally:
            if self._spool is not None:
                self._spool.discard()
            with contextlib.suppress(OSError):
                self.sock.close()

    # -- negotiation (PS3.8 7.1.1, 9.3.2 - 9.3.4)

    def _reject(self, result: int, source: int, reason: int) -> bool:
        self.sock.sendall(p.encode_associate_rj(result, source, reason))
        self._linger()
        return False

    def _negotiate(self, rq: p.AssociateRequest) -> bool:
        if not rq.protocol_version & 0x0001:
            return self._reject(p.RJ_PERMANENT, p.RJ_SOURCE_ACSE, p.RJ_ACSE_PROTOCOL_VERSION)
        if rq.application_context != p.APPLICATION_CONTEXT:
            return self._reject(p.RJ_PERMANENT, p.RJ_SOURCE_USER, p.RJ_USER_APP_CONTEXT)
        if self._over_capacity():
            return self._reject(p.RJ_TRANSIENT, p.RJ_SOURCE_PRESENTATION,
                                p.RJ_PRESENTATION_LOCAL_LIMIT)
        admission = self.services.admit(rq, self.address)
        if not admission.accepted:
            return self._reject(p.RJ_PERMANENT, p.RJ_SOURCE_USER, p.RJ_USER_CALLING_AE)
        self.peer = Peer(rq.calling_ae, self.address, admission.node_id)
        self._max_pdu = rq.max_pdu
        results = [self._choose(pc) for pc in rq.contexts]
        self._contexts = {r.context_id: r for r in results if r.result == p.PC_ACCEPTANCE}
        self.sock.sendall(p.encode_associate_ac(rq, results, *self._impl))
        logger.debug("association accepted", extra={"calling_ae": rq.calling_ae[:16],
                                                    "contexts": len(self._contexts)})
        return True

    def _choose(self, pc: p.ProposedContext) -> p.ContextResult:
        """PS3.8 9.3.3.2: accept the first proposed transfer syntax we support."""
        first = pc.transfer_syntaxes[0] if pc.transfer_syntaxes else ""
        ours = self.services.supported.get(pc.abstract_syntax)
        if ours is None:
            return p.ContextResult(pc.context_id, p.PC_ABSTRACT_SYNTAX_NOT_SUPPORTED,
                                   pc.abstract_syntax, first)
        for ts in pc.transfer_syntaxes:
            if ts in ours:
                return p.ContextResult(pc.context_id, p.PC_ACCEPTANCE, pc.abstract_syntax, ts)
        return p.ContextResult(pc.context_id, p.PC_TRANSFER_SYNTAXES_NOT_SUPPORTED,
                               pc.abstract_syntax, first)

    # -- data transfer

    def _serve(self) -> None:
        reader = self.reader
        while True:
            kind, length = reader.pdu_header()
            if kind == p.P_DATA_TF:
                self._pdata(length)
            elif kind == p.A_RELEASE_RQ:
                reader.body(length)
                self.sock.sendall(p.encode_release_rp())
                self._linger()
                return
            elif kind == p.A_ABORT:
                logger.info("association aborted by the peer", extra={"peer": self.address})
                return
            else:
                raise p.PduError(f"unexpected PDU 0x{kind:02X} during data transfer")

    def _pdata(self, length: int) -> None:
        remaining = length
        reader = self.reader
        while remaining:
            if remaining < 6:
                raise p.PduError("P-DATA-TF ends inside a PDV header")
            n, ctx, mch = reader.pdv_header()
            remaining -= 6 + n
            if remaining < 0:
                raise p.PduError("PDV overruns its P-DATA-TF")
            if ctx not in self._contexts:
                raise p.PduError(f"presentation context {ctx} was not accepted")
            if mch & 0x01:
                if self._pending is not None or self._cmd_ctx not in (None, ctx):
                    raise p.PduError("command fragment out of sequence")
                self._cmd_ctx = ctx
                reader.stream(n, self._cmd_write)
                if mch & 0x02:
                    self._command_done(ctx)
            else:
                if self._pending is None or self._pending[1] != ctx:
                    raise p.PduError("data set fragment without its command")
                reader.stream(n, self._data_sink)
                if mch & 0x02:
                    cmd, _ = self._pending
                    self._pending = None
                    self._dispatch(cmd, ctx)

    def _cmd_write(self, view: memoryview) -> None:
        self._cmd += view

    def _data_write(self, view: memoryview) -> None:
        self._data += view

    def _command_done(self, ctx: int) -> None:
        cmd = dimse.parse_command(self._cmd)
        self._cmd.clear()
        self._cmd_ctx = None
        if not cmd.has_dataset:
            self._dispatch(cmd, ctx)
            return
        self._pending = (cmd, ctx)
        if cmd.command_field == dimse.C_STORE_RQ:
            ts = self._contexts[ctx].transfer_syntax
            self._spool = Spool(self.services.spool_dir,
                                self.services.file_meta(self.peer, cmd, ts))
            self._data_sink = self._spool.write
        else:
            self._data.clear()
            self._data_sink = self._data_write

    def _dispatch(self, cmd: dimse.Command, ctx: int) -> None:
        ts = self._contexts[ctx].transfer_syntax
        field = cmd.command_field
        sop_class, sop_instance = cmd.affected_sop_class, cmd.affected_sop_instance or None
        spool, self._spool = self._spool, None
        try:
            if field == dimse.C_ECHO_RQ:
                reply = Reply(SUCCESS)
            elif field == dimse.C_STORE_RQ:
                reply = self.services.store(self.peer, cmd, ts, spool)
            elif field in (dimse.N_CREATE_RQ, dimse.N_SET_RQ, dimse.N_ACTION_RQ):
                if field != dimse.N_CREATE_RQ:  # N-SET / N-ACTION name the requested object
                    sop_class = cmd.requested_sop_class
                    sop_instance = cmd.requested_sop_instance or None
                reply = self.services.n_request(self.peer, cmd, ts, bytes(self._data))
            elif field == dimse.C_CANCEL_RQ:
                return
            else:
                reply = Reply(dimse.UNRECOGNIZED_OPERATION, "operation not supported")
        except Exception:  # a service bug costs one request a failure, not the association
            logger.exception("DIMSE service failed", extra={"command": f"0x{field:04X}"})
            reply = Reply(PROCESSING_FAILURE, "internal error")
        finally:
            if spool is not None:
                spool.discard()
            self._data.clear()
        command = dimse.encode_response(
            cmd, status=reply.status, sop_class=sop_class, sop_instance=sop_instance,
            error_comment=reply.comment, error_id=reply.error_id,
            has_dataset=reply.dataset is not None)
        out = p.encode_pdata(ctx, command, command=True, max_pdu=self._max_pdu)
        if reply.dataset is not None:
            out += p.encode_pdata(ctx, reply.dataset, command=False, max_pdu=self._max_pdu)
        self.sock.sendall(out)

    # -- helpers

    def _linger(self) -> None:
        """Let our last PDU reach the peer: half-close, then wait (ARTIM) for its close.

        Closing at once could reset the connection with the A-ASSOCIATE-RJ or
        A-RELEASE-RP still unread on the peer's side.
        """
        with contextlib.suppress(OSError, PeerClosed):
            self.sock.settimeout(self.timeouts.artim_s)
            self.sock.shutdown(socket.SHUT_WR)
            self.reader.drain()

    def _send_quietly(self, data: bytes) -> None:
        with contextlib.suppress(OSError):
            self.sock.settimeout(5.0)
            self.sock.sendall(data)
