"""Storage Commitment (PS3.4 Annex J) with a pynetdicom scanner as the real peer.

The scanner stores three slices, asks us to commit them plus one we never received,
and listens for our N-EVENT-REPORT on its own port, as a township CT does before it
deletes its local copy.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from sqlalchemy import select

from countyread.context import AppContext
from countyread.db import commitments
from countyread.nodes import add_node
from dicom_node.commitment import (
    EVENT_SOME_FAILED,
    FAILURE_CLASS_INSTANCE_CONFLICT,
    FAILURE_NO_SUCH_OBJECT,
    STORAGE_COMMITMENT_INSTANCE,
    STORAGE_COMMITMENT_SOP_CLASS,
    CommitmentReporter,
)
from dicom_node.scp import DicomNode
from dicom_node.scu import send_paths
from tests.dicom_node.conftest import make_ctx
from tests.dicom_node.synth import write_ct_series
from tests.peers.storage_scp import free_port

SCANNER = "CTSCANNER1"
CT = "1.2.840.10008.5.1.4.1.1.2"


class Scanner:
    """A modality's Storage Commitment SCU: sends N-ACTION, receives N-EVENT-REPORT."""

    def __init__(self) -> None:
        self.port = free_port()
        self.reports: list[tuple[int, Dataset]] = []
        self.got = threading.Event()
        ae = AE(ae_title=SCANNER)
        ae.add_supported_context(STORAGE_COMMITMENT_SOP_CLASS, scu_role=False, scp_role=True)
        self.ae = ae
        self.server = ae.start_server(("127.0.0.1", self.port), block=False,
                                      evt_handlers=[(evt.EVT_N_EVENT_REPORT, self._on_report)])

    def _on_report(self, event: Any) -> tuple[int, None]:
        self.reports.append((int(event.event_type), event.event_information))
        self.got.set()
        return 0x0000, None

    def request(self, port: int, transaction: str, refs: list[tuple[str, str]],
                action_type: int = 1) -> int:
        ae = AE(ae_title=SCANNER)
        ae.add_requested_context(STORAGE_COMMITMENT_SOP_CLASS)
        assoc = ae.associate("127.0.0.1", port, ae_title="COUNTYREAD")
        assert assoc.is_established
        ds = Dataset()
        ds.TransactionUID = transaction
        items = []
        for cls, inst in refs:
            item = Dataset()
            item.ReferencedSOPClassUID = cls
            item.ReferencedSOPInstanceUID = inst
            items.append(item)
        ds.ReferencedSOPSequence = items
        status, _ = assoc.send_n_action(ds, action_type, STORAGE_COMMITMENT_SOP_CLASS,
                                        STORAGE_COMMITMENT_INSTANCE)
        assoc.release()
        return int(status.Status)

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture()
def scanner() -> Iterator[Scanner]:
    s = Scanner()
    yield s
    s.stop()


@pytest.fixture()
def site(tmp_path: Path, engine: str) -> Iterator[tuple[AppContext, DicomNode]]:
    ctx = make_ctx(tmp_path / "var", dicom_engine=engine)
    node = DicomNode(ctx)
    node.start()
    yield ctx, node
    node.stop()
    ctx.close()


def _stored(ctx: AppContext, node: DicomNode, tmp_path: Path) -> list[tuple[str, str]]:
    paths = write_ct_series(tmp_path / "ct", n=3, size=64)
    results = send_paths("127.0.0.1", node.port, "COUNTYREAD", paths, calling_ae=SCANNER)
    assert all(r.status == 0 for r in results), results
    return [(CT, str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID))
            for p in paths]


def test_committed_and_missing_instances_are_reported_to_the_scanner(
    site: tuple[AppContext, DicomNode], scanner: Scanner, tmp_path: Path
) -> None:
    ctx, node = site
    add_node(ctx.db, name="城关镇 CT", ae_title=SCANNER, host="127.0.0.1", port=scanner.port)
    stored = _stored(ctx, node, tmp_path)
    never_sent = (CT, generate_uid())
    wrong_class = ("1.2.840.10008.5.1.4.1.1.1.1", stored[0][1])  # right UID, wrong class
    transaction = generate_uid()
    assert scanner.request(node.port, transaction, [*stored, never_sent, wrong_class]) == 0
    assert scanner.got.wait(20), "no N-EVENT-REPORT arrived"
    event_type, info = scanner.reports[0]
    assert event_type == EVENT_SOME_FAILED
    assert info.TransactionUID == transaction
    assert {(i.ReferencedSOPClassUID, i.ReferencedSOPInstanceUID)
            for i in info.ReferencedSOPSequence} == set(stored)
    failed = {i.ReferencedSOPInstanceUID: int(i.FailureReason) for i in info.FailedSOPSequence}
    assert failed == {never_sent[1]: FAILURE_NO_SUCH_OBJECT,
                      wrong_class[1]: FAILURE_CLASS_INSTANCE_CONFLICT}
    deadline = time.monotonic() + 10  # the row is updated just after the peer answered
    while True:
        with ctx.db.begin() as conn:
            row = conn.execute(select(commitments)).mappings().one()
        if row["state"] != "pending" or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert row["state"] == "sent" and row["attempts"] == 1


def test_bad_requests_get_a_status_and_nothing_is_recorded(
    site: tuple[AppContext, DicomNode], scanner: Scanner
) -> None:
    ctx, node = site
    add_node(ctx.db, name="CT", ae_title=SCANNER, host="127.0.0.1", port=scanner.port)
    assert scanner.request(node.port, "not-a-uid", [(CT, generate_uid())]) == 0x0115
    assert scanner.request(node.port, generate_uid(), [(CT, generate_uid())],
                           action_type=7) == 0x0123
    with ctx.db.begin() as conn:
        assert conn.execute(select(commitments)).first() is None


def test_a_scanner_that_is_down_gets_its_report_when_it_is_back(
    site: tuple[AppContext, DicomNode], tmp_path: Path
) -> None:
    ctx, node = site
    node.reporter.stop()  # drive the reporter by hand below
    port = free_port()
    add_node(ctx.db, name="CT", ae_title=SCANNER, host="127.0.0.1", port=port)
    stored = _stored(ctx, node, tmp_path)
    requester = Scanner()
    try:
        transaction = generate_uid()
        assert requester.request(node.port, transaction, stored) == 0
    finally:
        requester.stop()
    reporter = CommitmentReporter(ctx)
    assert reporter.tick() == 1  # nobody listens on the registered port
    with ctx.db.begin() as conn:
        row = conn.execute(select(commitments)).mappings().one()
    assert row["state"] == "pending" and row["last_error"]
    back = Scanner()
    back.port = port
    back.server.shutdown()
    back.server = back.ae.start_server(("127.0.0.1", port), block=False,
                                       evt_handlers=[(evt.EVT_N_EVENT_REPORT, back._on_report)])
    try:
        with ctx.db.begin() as conn:
            conn.execute(commitments.update().values(next_attempt_at=row["created_at"]))
        assert reporter.tick() == 1
        assert back.got.wait(10)
        event_type, info = back.reports[0]
        assert event_type == 1 and "FailedSOPSequence" not in info
    finally:
        back.stop()
    time.sleep(0.1)
