"""The fast engine at the PDU level: negotiation edge cases, fragmentation, abort, ARTIM.

A raw-socket requestor sends exactly the bytes each case needs (PS3.8 9.3), so the
acceptor sees fragmentations and mistakes no well-behaved SCU library would produce.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import select

from countyread.context import AppContext
from countyread.db import instances
from dicom_node.fastpath import pdu
from dicom_node.fastpath.association import Admission, Peer, Reply, Timeouts
from dicom_node.fastpath.server import FastServer
from dicom_node.fastpath.spool import Spool
from dicom_node.scp import DicomNode
from tests.dicom_node import synth
from tests.dicom_node.conftest import SCU_AE, make_ctx
from tests.dicom_node.test_scp_dcmtk import dataset_bytes

pytestmark = pytest.mark.integration

CT = "1.2.840.10008.5.1.4.1.1.2"
ELE = "1.2.840.10008.1.2.1"
VERIFICATION = "1.2.840.10008.1.1"


def _item(kind: int, value: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(value)) + value


def associate_rq(calling: str = SCU_AE, *, version: int = 1,
                 app_context: str = pdu.APPLICATION_CONTEXT,
                 contexts: tuple[tuple[int, str, str], ...] = ((1, CT, ELE),
                                                               (3, VERIFICATION, ELE))) -> bytes:
    items = [_item(0x10, app_context.encode())]
    for cid, abstract, ts in contexts:
        items.append(_item(0x20, bytes([cid, 0, 0, 0]) + _item(0x30, abstract.encode())
                           + _item(0x40, ts.encode())))
    items.append(_item(0x50, _item(0x51, struct.pack(">L", 16384))
                       + _item(0x52, b"1.2.3.4")))
    body = (struct.pack(">HH", version, 0) + b"COUNTYREAD".ljust(16) + calling.encode().ljust(16)
            + b"\x00" * 32 + b"".join(items))
    return struct.pack(">BBL", 1, 0, len(body)) + body


def command(field: int, sop_class: str, sop_uid: str, msg_id: int = 1) -> bytes:
    def el(elem: int, value: bytes) -> bytes:
        value += b"\x00" * (len(value) % 2)
        return struct.pack("<HHL", 0, elem, len(value)) + value

    body = (el(0x0002, sop_class.encode()) + el(0x0100, struct.pack("<H", field))
            + el(0x0110, struct.pack("<H", msg_id)) + el(0x0700, b"\x00\x00")
            + el(0x0800, b"\x00\x00") + el(0x1000, sop_uid.encode()))
    return el(0x0000, struct.pack("<L", len(body))) + body


def pdvs(cid: int, payload: bytes, size: int, *, is_command: bool) -> list[bytes]:
    """PDV items of at most ``size`` value bytes; the last carries the last-fragment bit."""
    out = []
    for i in range(0, len(payload), size):
        chunk = payload[i:i + size]
        mch = (1 if is_command else 0) | (2 if i + size >= len(payload) else 0)
        out.append(struct.pack(">LBB", len(chunk) + 2, cid, mch) + chunk)
    return out


def pdata(*items: bytes) -> bytes:
    body = b"".join(items)
    return struct.pack(">BBL", 4, 0, len(body)) + body


def read_pdu(sock: socket.socket) -> tuple[int, bytes]:
    head = _recv_exact(sock, 6)
    kind, _, length = struct.unpack(">BBL", head)
    return kind, _recv_exact(sock, length)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def store_status(body: bytes) -> int:
    """Status (0000,0900) from the command PDV of a P-DATA-TF body."""
    cmd = body[6:]
    offset = 0
    while offset < len(cmd):
        _, elem, length = struct.unpack_from("<HHL", cmd, offset)
        if elem == 0x0900:
            return int(struct.unpack_from("<H", cmd, offset + 8)[0])
        offset += 8 + length
    raise AssertionError("no Status in the response")


@pytest.fixture()
def fast_node(tmp_path: Path) -> Iterator[tuple[DicomNode, AppContext]]:
    from countyread.nodes import add_node

    ctx = make_ctx(tmp_path / "var", dicom_engine="fast")
    add_node(ctx.db, name="t", ae_title=SCU_AE)
    node = DicomNode(ctx)
    node.start()
    yield node, ctx
    node.stop()
    ctx.close()


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


@pytest.mark.parametrize(("rq", "expected"), [
    (associate_rq(version=2), (pdu.RJ_PERMANENT, pdu.RJ_SOURCE_ACSE, 2)),
    (associate_rq(app_context="1.2.3"), (pdu.RJ_PERMANENT, pdu.RJ_SOURCE_USER, 2)),
    (associate_rq(calling="STRANGER"), (pdu.RJ_PERMANENT, pdu.RJ_SOURCE_USER, 3)),
], ids=["protocol-version", "application-context", "calling-ae"])
def test_rejections(fast_node: tuple[DicomNode, AppContext], rq: bytes,
                    expected: tuple[int, int, int]) -> None:
    node, _ = fast_node
    with connect(node.port) as sock:
        sock.sendall(rq)
        kind, body = read_pdu(sock)
        assert kind == pdu.A_ASSOCIATE_RJ
        assert tuple(body[1:4]) == expected
        assert sock.recv(1) == b""  # and the acceptor closes after the peer read it


def test_pdata_before_associate_is_aborted(fast_node: tuple[DicomNode, AppContext]) -> None:
    node, _ = fast_node
    with connect(node.port) as sock:
        sock.sendall(pdata(*pdvs(1, b"\x00" * 10, 10, is_command=True)))
        kind, _ = read_pdu(sock)
        assert kind == pdu.A_ABORT


def test_fragmented_store_then_abort_mid_dataset(
    fast_node: tuple[DicomNode, AppContext], tmp_path: Path
) -> None:
    node, ctx = fast_node
    first, second = synth.write_ct_series(tmp_path / "ct", 2, size=64)
    with connect(node.port) as sock:
        sock.sendall(associate_rq())
        kind, body = read_pdu(sock)
        assert kind == pdu.A_ASSOCIATE_AC
        ds = dcmread(first, stop_before_pixels=True)
        data = dataset_bytes(first)
        cmd = command(0x0001, CT, str(ds.SOPInstanceUID))
        # Command in two PDUs; data set in 1000-byte PDVs, three PDVs per PDU.
        c1, c2 = pdvs(1, cmd, len(cmd) // 2 + 1, is_command=True)
        frags = pdvs(1, data, 1000, is_command=False)
        sock.sendall(pdata(c1) + pdata(c2))
        for i in range(0, len(frags), 3):
            sock.sendall(pdata(*frags[i:i + 3]))
        kind, body = read_pdu(sock)
        assert kind == pdu.P_DATA_TF and store_status(body) == 0x0000
        # The second instance is cut off by an A-ABORT halfway through its data set.
        ds2 = dcmread(second, stop_before_pixels=True)
        sock.sendall(pdata(*pdvs(1, command(0x0001, CT, str(ds2.SOPInstanceUID), 2), 4096,
                                 is_command=True)))
        half = dataset_bytes(second)[:5000]
        sock.sendall(pdata(struct.pack(">LBB", len(half) + 2, 1, 0) + half))
        sock.sendall(struct.pack(">BBL", 7, 0, 4) + b"\x00\x00\x00\x00")
        assert sock.recv(1) == b""
    stored = ctx.store.instance_path(ds.StudyInstanceUID, ds.SeriesInstanceUID,
                                     ds.SOPInstanceUID)
    assert dataset_bytes(stored) == data
    with ctx.db.begin() as conn:
        assert [r.sop_instance_uid for r in conn.execute(select(instances))] == [
            ds.SOPInstanceUID]
    deadline = time.monotonic() + 5
    spool_dir = ctx.settings.data_dir / "incoming"
    while list(spool_dir.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(spool_dir.iterdir()) == []


class _Stub:
    """Services that accept everyone and answer every request with Success."""

    def __init__(self, spool_dir: Path) -> None:
        self.spool_dir = spool_dir
        self.supported = {VERIFICATION: frozenset({ELE})}

    def admit(self, rq: pdu.AssociateRequest, address: str) -> Admission:
        return Admission(True)

    def file_meta(self, peer: Peer, cmd: object, transfer_syntax: str) -> bytes:
        return b""

    def store(self, peer: Peer, cmd: object, ts: str, spool: Spool | None) -> Reply:
        return Reply(0)

    def n_request(self, peer: Peer, cmd: object, ts: str, data: bytes) -> Reply:
        return Reply(0)


@pytest.fixture()
def stub_server(tmp_path: Path) -> Iterator[FastServer]:
    server = FastServer(("127.0.0.1", 0), _Stub(tmp_path), timeouts=Timeouts(0.5, 2.0),
                        max_associations=1, impl_uid="1.2.3", impl_version=b"T")
    server.start()
    yield server
    server.shutdown()


def test_artim_closes_a_silent_connection(stub_server: FastServer) -> None:
    with connect(stub_server.server_address[1]) as sock:
        t0 = time.monotonic()
        assert sock.recv(64) == b""  # closed, nothing sent: no association existed
        assert 0.3 < time.monotonic() - t0 < 5


def test_association_limit_rejects_transient(stub_server: FastServer) -> None:
    port = stub_server.server_address[1]
    with connect(port) as first:
        first.sendall(associate_rq(contexts=((1, VERIFICATION, ELE),)))
        assert read_pdu(first)[0] == pdu.A_ASSOCIATE_AC
        with connect(port) as second:
            second.sendall(associate_rq(contexts=((1, VERIFICATION, ELE),)))
            kind, body = read_pdu(second)
            assert kind == pdu.A_ASSOCIATE_RJ
            assert tuple(body[1:4]) == (pdu.RJ_TRANSIENT, pdu.RJ_SOURCE_PRESENTATION, 2)
        # A-RELEASE: answered, then the acceptor waits for our close.
        first.sendall(struct.pack(">BBL", 5, 0, 4) + b"\x00" * 4)
        assert read_pdu(first)[0] == pdu.A_RELEASE_RP


def test_silent_peer_after_association_is_aborted(stub_server: FastServer) -> None:
    with connect(stub_server.server_address[1]) as sock:
        sock.sendall(associate_rq(contexts=((1, VERIFICATION, ELE),)))
        assert read_pdu(sock)[0] == pdu.A_ASSOCIATE_AC
        t0 = time.monotonic()
        kind, _ = read_pdu(sock)  # network timeout 2 s
        assert kind == pdu.A_ABORT and 1.5 < time.monotonic() - t0 < 10


def test_shutdown_ends_open_associations(tmp_path: Path) -> None:
    server = FastServer(("127.0.0.1", 0), _Stub(tmp_path), timeouts=Timeouts(5, 60),
                        max_associations=4, impl_uid="1.2.3", impl_version=b"T")
    server.start()
    sock = connect(server.server_address[1])
    sock.sendall(associate_rq(contexts=((1, VERIFICATION, ELE),)))
    assert read_pdu(sock)[0] == pdu.A_ASSOCIATE_AC
    done = threading.Event()
    threading.Thread(target=lambda: (server.shutdown(timeout=5), done.set()), daemon=True).start()
    assert done.wait(8)
    sock.close()


def test_start_removes_spool_files_a_killed_node_left(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path / "var", dicom_engine="fast")
    incoming = ctx.settings.data_dir / "incoming"
    incoming.mkdir(parents=True)
    (incoming / ".spool-left.dcm").write_bytes(b"half a data set")
    (incoming / "keep.txt").write_text("not ours")
    node = DicomNode(ctx)
    node.start()
    try:
        assert sorted(p.name for p in incoming.iterdir()) == ["keep.txt"]
    finally:
        node.stop()
        ctx.close()
