"""Storage Commitment with Orthanc as the requesting modality (a real peer we did not write).

Orthanc (1.6 and later) can act as a Storage Commitment SCU: asked over its REST API,
it sends us the N-ACTION and waits for our N-EVENT-REPORT on its own DICOM port, across
the private network namespace the Orthanc fixture runs in.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

from countyread.nodes import add_node
from dicom_node.scp import DicomNode
from dicom_node.scu import send_paths
from tests.conftest import require
from tests.dicom_node.conftest import make_ctx
from tests.dicom_node.synth import write_ct_series
from tests.peers.orthanc import ORTHANC, _namespaces_usable, orthanc_peer
from tests.peers.storage_scp import free_port


def test_orthanc_gets_our_commitment_report(tmp_path: Path) -> None:
    require(ORTHANC is not None, "Orthanc is not installed (apt-get install orthanc)")
    usable, reason = _namespaces_usable()
    require(usable, f"Orthanc's REST API needs a private network namespace: {reason}")
    port = free_port()
    base = make_ctx(tmp_path / "var")
    # Orthanc calls back from its namespace: listen on every interface, on a known port.
    ctx = replace(base, settings=base.settings.model_copy(
        update={"dicom_host": "0.0.0.0", "dicom_port": port}))
    node = DicomNode(ctx)
    workdir = tmp_path / "orthanc"
    workdir.mkdir()
    with orthanc_peer(workdir, start=False) as orthanc:
        orthanc.extra_config = {
            "DicomModalities": {"countyread": ["COUNTYREAD", orthanc.host_address, port]},
        }
        orthanc.start()
        add_node(ctx.db, name="Orthanc modality", ae_title=orthanc.ae_title,
                 host=orthanc.address, port=orthanc.dicom_port)
        node.start()
        try:
            paths = write_ct_series(tmp_path / "ct", n=3, size=64)
            sent = send_paths("127.0.0.1", port, "COUNTYREAD", paths,
                              calling_ae=orthanc.ae_title)
            assert all(r.status == 0 for r in sent), sent
            stored = [[str(ds.SOPClassUID), str(ds.SOPInstanceUID)]
                      for ds in (pydicom.dcmread(p, stop_before_pixels=True) for p in paths)]
            missing = [stored[0][0], generate_uid()]
            job = orthanc.post("/modalities/countyread/storage-commitment",
                               {"DicomInstances": [*stored, missing], "Timeout": 30})
            deadline = time.monotonic() + 60
            while True:
                report = orthanc.get(job["Path"])
                if report.get("Status") != "Pending" or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
        finally:
            node.stop()
            ctx.close()
    assert report["Status"] == "Failure", report  # one instance was never sent to us
    assert sorted(i["SOPInstanceUID"] for i in report["Success"]) == sorted(
        s[1] for s in stored)
    (failure,) = report["Failures"]
    assert failure["SOPInstanceUID"] == missing[1] and failure["FailureReason"] == 0x0112
