"""The DICOM node: C-ECHO, C-STORE and MPPS SCP.

Two protocol engines serve the same handlers (setting ``dicom_engine``): ``fast``, our
own upper layer (:mod:`dicom_node.fastpath`), which writes each C-STORE data set to a
spool file as its fragments arrive and renames that file into the store, and
``pynetdicom``, the reference implementation it is tested against.

Association acceptance (PS3.8 7.1.1): a calling AE title that is not a known, active
node is refused with A-ASSOCIATE-RJ (rejected-permanent, service-user, "calling AE title
not recognised") unless ``accept_any_ae`` is set. Presentation contexts cover the
storage SOP classes and transfer syntaxes of :mod:`dicom_node.sop`; anything else is
refused at negotiation, so the scanner knows before it sends a byte.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import weakref
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.transport import ThreadedAssociationServer

from countyread.context import AppContext
from countyread.errors import ConfigurationError
from countyread.nodes import find_by_ae
from dicom_node import status as st
from dicom_node.commitment import STORAGE_COMMITMENT_SOP_CLASS, CommitmentReporter, CommitmentScp
from dicom_node.fast_services import NodeServices
from dicom_node.fastpath.association import Timeouts
from dicom_node.fastpath.server import FastServer
from dicom_node.ingest import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION,
    Ingestor,
    StoreRequest,
)
from dicom_node.mpps import MppsScp
from dicom_node.sop import (
    EXPLICIT_VR_BE,
    EXPLICIT_VR_LE,
    IMPLICIT_VR_LE,
    MPPS_SOP_CLASS,
    STORAGE_SOP_CLASSES,
    TRANSFER_SYNTAXES,
    VERIFICATION_SOP_CLASS,
)

logger = logging.getLogger(__name__)

# A-ASSOCIATE-RJ parameters, PS3.8 9.3.4: result, source, reason/diag.
_REJECTED_PERMANENT = 0x01
_SERVICE_USER = 0x01
_CALLING_AE_NOT_RECOGNISED = 0x03


def _outcome_ds(outcome: st.DimseOutcome) -> Dataset | int:
    if outcome.comment is None:
        return outcome.status
    ds = Dataset()
    ds.Status = outcome.status
    ds.ErrorComment = outcome.comment
    return ds


class DicomNode:
    """One listening AE; ``start()`` returns at once, ``stop()`` closes it."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.ingestor = Ingestor(ctx)
        self.mpps = MppsScp(ctx)
        self.commitment = CommitmentScp(ctx)
        self.reporter = CommitmentReporter(ctx)
        self._server: ThreadedAssociationServer | None = None
        self._fast: FastServer | None = None
        self._ae: AE | None = None
        # node id per association, resolved once at acceptance
        self._nodes: weakref.WeakKeyDictionary[Any, int | None] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    @property
    def port(self) -> int:
        if self._fast is not None:
            return self._fast.server_address[1]
        if self._server is None:
            raise RuntimeError("the node is not started")
        return int(self._server.server_address[1])

    @property
    def engine(self) -> str:
        return self.ctx.settings.dicom_engine

    @property
    def ae_title(self) -> str:
        return self.ctx.settings.ae_title

    def _make_ae(self) -> AE:
        s = self.ctx.settings
        ae = AE(ae_title=s.ae_title)
        # PS3.8 D.1: 0 announces "no maximum"; peers then send large PDUs, fewer syscalls.
        ae.maximum_pdu_size = 0
        ae.maximum_associations = s.max_associations
        ae.dimse_timeout = s.dimse_timeout_s
        ae.network_timeout = max(s.dimse_timeout_s, 60.0)
        for sop in STORAGE_SOP_CLASSES:
            ae.add_supported_context(sop, list(TRANSFER_SYNTAXES))
        ae.add_supported_context(
            VERIFICATION_SOP_CLASS, [EXPLICIT_VR_LE, IMPLICIT_VR_LE, EXPLICIT_VR_BE]
        )
        ae.add_supported_context(MPPS_SOP_CLASS, [EXPLICIT_VR_LE, IMPLICIT_VR_LE])
        ae.add_supported_context(STORAGE_COMMITMENT_SOP_CLASS, [EXPLICIT_VR_LE, IMPLICIT_VR_LE])
        return ae

    def _ssl_context(self) -> ssl.SSLContext | None:
        s = self.ctx.settings
        if s.tls_cert is None or s.tls_key is None:
            return None
        try:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(certfile=str(s.tls_cert), keyfile=str(s.tls_key))
            if s.tls_ca is not None:
                # PS3.15 B.1: with a CA configured, peers authenticate with certificates.
                ctx.load_verify_locations(cafile=str(s.tls_ca))
                ctx.verify_mode = ssl.CERT_REQUIRED
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(f"TLS certificate or key unusable: {exc}") from exc
        return ctx

    def start(self) -> None:
        """Bind and serve in background threads."""
        # Before the first association: stores a crash interrupted (ingest.py).
        completed, removed = self.ingestor.recover_spool()
        if completed or removed:
            logger.info("interrupted stores examined", extra={"completed": completed,
                                                                "removed": removed})
        if self.engine == "fast":
            self._start_fast()
        else:
            self._start_pynetdicom()
        self.reporter.start()
        s = self.ctx.settings
        logger.info("DICOM node listening", extra={"ae_title": s.ae_title, "port": self.port,
                                                    "tls": s.tls_cert is not None,
                                                    "engine": self.engine})

    def _start_fast(self) -> None:
        s = self.ctx.settings
        ssl_context = self._ssl_context()
        services = NodeServices(self)
        try:
            server = FastServer(
                (s.dicom_host, s.dicom_port), services,
                timeouts=Timeouts(artim_s=30.0, network_s=max(s.dimse_timeout_s, 60.0)),
                max_associations=s.max_associations, impl_uid=IMPLEMENTATION_CLASS_UID,
                impl_version=IMPLEMENTATION_VERSION, ssl_context=ssl_context,
            )
        except OSError as exc:
            raise ConfigurationError(
                f"cannot listen on {s.dicom_host}:{s.dicom_port}: {exc.strerror or exc}"
            ) from exc
        server.start()
        self._fast = server

    def _start_pynetdicom(self) -> None:
        s = self.ctx.settings
        ae = self._make_ae()
        handlers: list[Any] = [
            (evt.EVT_CONN_OPEN, self._on_conn_open),
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_N_CREATE, self.mpps.on_create),
            (evt.EVT_N_SET, self.mpps.on_set),
            (evt.EVT_N_ACTION, self._on_action),
        ]
        try:
            server = ae.start_server(
                (s.dicom_host, s.dicom_port), block=False, evt_handlers=handlers,
                ssl_context=self._ssl_context(),
            )
        except OSError as exc:
            raise ConfigurationError(
                f"cannot listen on {s.dicom_host}:{s.dicom_port}: {exc.strerror or exc}"
            ) from exc
        assert server is not None
        self._ae, self._server = ae, server

    def stop(self) -> None:
        self.reporter.stop()
        if self._fast is not None:
            self._fast.shutdown()
            self._fast = None
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        if self._ae is not None:
            self._ae.shutdown()
            self._ae = None

    # -- event handlers: none of them may raise (an exception would drop the association)

    def _on_conn_open(self, event: Any) -> None:
        try:
            sock = event.assoc.dul.socket.socket
            # Without it Nagle + delayed ACK stall every small C-STORE-RSP (DESIGN.md 6).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (AttributeError, OSError):
            logger.debug("could not set TCP_NODELAY")

    def admit(self, calling: str, peer: str) -> tuple[bool, int | None]:
        """(accepted, node id) for a calling AE title: the allow-list (PS3.8 7.1.1)."""
        try:
            node = find_by_ae(self.ctx.db, calling) if calling else None
        except Exception:
            logger.exception("node lookup failed")
            node = None
        node_id = node.id if node is not None and node.active else None
        if node_id is not None or self.ctx.settings.accept_any_ae:
            return True, node_id
        logger.warning("association rejected: calling AE title not recognised",
                       extra={"calling_ae": calling[:16], "peer": peer})
        return False, None

    def _on_requested(self, event: Any) -> None:
        assoc = event.assoc
        calling = str(assoc.requestor.primitive.calling_ae_title or "").strip()
        accepted, node_id = self.admit(calling, str(assoc.requestor.address))
        with self._lock:
            self._nodes[assoc] = node_id
        if accepted:
            return
        assoc.acse.send_reject(_REJECTED_PERMANENT, _SERVICE_USER, _CALLING_AE_NOT_RECOGNISED)
        # As pynetdicom's own rejection path does: wait until the DUL has sent the
        # A-ASSOCIATE-RJ and the peer closed, else the socket is shut before it leaves.
        evt.trigger(assoc, evt.EVT_REJECTED, {})
        assoc.kill()

    def _on_echo(self, event: Any) -> int:
        return st.SUCCESS

    def _on_action(self, event: Any) -> tuple[Dataset | int, Dataset | None]:
        """N-ACTION: Storage Commitment requests (dicom_node/commitment.py)."""
        try:
            with self._lock:
                node_id = self._nodes.get(event.assoc)
            calling = str(event.assoc.requestor.ae_title or "").strip()
            info = event.action_information
        except Exception:  # an undecodable action information data set
            logger.exception("N-ACTION request unreadable")
            return st.PROCESSING_FAILURE, None
        return self.commitment.on_action(calling, node_id, event.action_type, info)

    def _on_store(self, event: Any) -> Dataset | int:
        try:
            req = event.request
            cx = event.context
            with self._lock:
                node_id = self._nodes.get(event.assoc)
            calling = str(event.assoc.requestor.ae_title or "").strip()
            outcome = self.ingestor.ingest(StoreRequest(
                data=req.DataSet.getvalue() if req.DataSet is not None else b"",
                transfer_syntax=str(cx.transfer_syntax),
                sop_class_uid=str(req.AffectedSOPClassUID or ""),
                sop_instance_uid=str(req.AffectedSOPInstanceUID or ""),
                calling_ae=calling or None,
                node_id=node_id,
            ))
        except Exception:
            logger.exception("C-STORE handler failed")
            outcome = st.DimseOutcome(st.PROCESSING_FAILURE, "internal error")
        return _outcome_ds(outcome)
