"""kill -9 of the node while several scanners send: nothing acknowledged is lost."""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydicom import dcmread

from tests.dicom_node import synth
from tests.dicom_node.conftest import dcmtk, dcmtk_env

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
N_SENDERS = 4
N_SLICES = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_node(data_dir: Path, port: int, engine: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "COUNTYREAD_DATA_DIR": str(data_dir), "COUNTYREAD_DICOM_ENGINE": engine,
           "COUNTYREAD_DICOM_PORT": str(port), "COUNTYREAD_DICOM_HOST": "127.0.0.1",
           "COUNTYREAD_ACCEPT_ANY_AE": "true", "COUNTYREAD_STABLE_QUIET_S": "1",
           "COUNTYREAD_LOG_LEVEL": "WARNING", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "countyread", "scp"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    echo = dcmtk("echoscu")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if subprocess.run([echo, "127.0.0.1", str(port)], capture_output=True,
                          env=dcmtk_env()).returncode == 0:
            return proc
        assert proc.poll() is None, "node exited at start-up"
        time.sleep(0.3)
    proc.kill()
    raise AssertionError("node did not start")


def db_count(db: Path, sql: str) -> int:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return int(con.execute(sql).fetchone()[0])
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def acknowledged(output: str) -> set[str]:
    """Files storescu -v reports Success for: the last 'Sending file' before each response."""
    done: set[str] = set()
    current = None
    for line in output.splitlines():
        m = re.search(r"Sending file: (.+)$", line)
        if m:
            current = m.group(1).strip()
        elif "Received Store Response (Success)" in line and current:
            done.add(current)
    return done


def test_kill9_mid_transfer_loses_nothing_acknowledged(tmp_path: Path, engine: str) -> None:
    storescu = dcmtk("storescu")
    data_dir = tmp_path / "var"
    port = free_port()
    study = synth.uid("kill9-study")
    series_files = [
        synth.write_ct_series(tmp_path / f"s{i}", N_SLICES, size=256,
                              study_uid=study if i < 2 else None)
        for i in range(N_SENDERS)
    ]
    all_files = [p for files in series_files for p in files]
    sop_of = {str(p): dcmread(p, stop_before_pixels=True) for p in all_files}
    db = data_dir / "countyread.db"

    node = start_node(data_dir, port, engine)
    senders = [subprocess.Popen([storescu, "-v", "-aet", f"SCANNER{i}", "-aec", "COUNTYREAD",
                                 "127.0.0.1", str(port), *map(str, files)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=dcmtk_env())
               for i, files in enumerate(series_files)]
    deadline = time.monotonic() + 60
    while db_count(db, "select count(*) from instances") < 40 and time.monotonic() < deadline:
        time.sleep(0.02)
    node.send_signal(signal.SIGKILL)
    node.wait()
    outputs = [s.communicate(timeout=60)[0] for s in senders]
    acked = set().union(*(acknowledged(o) for o in outputs))
    # Each sender can have one instance indexed whose Success the kill cut off.
    assert 40 - N_SENDERS <= len(acked) < len(all_files), "the kill did not land mid-transfer"

    node = start_node(data_dir, port, engine)
    try:
        con = sqlite3.connect(db)
        indexed = {r[0]: r[1] for r in con.execute("select sop_instance_uid, path from instances")}
        for f in acked:
            ds = sop_of[f]
            assert ds.SOPInstanceUID in indexed, f"acknowledged but not indexed: {f}"
            stored = data_dir / "store" / indexed[ds.SOPInstanceUID]
            assert stored.read_bytes().endswith(Path(f).read_bytes()[-1000:])
        # Every index row points at a whole file; counts agree with rows.
        for path in indexed.values():
            assert (data_dir / "store" / path).is_file()
        for uid, count in con.execute("select series_uid, instance_count from series"):
            n = con.execute("select count(*) from instances where series_uid=?",
                            (uid,)).fetchone()[0]
            assert count == n
        con.close()

        # The scanners re-send everything: all Success, nothing duplicated.
        for i, files in enumerate(series_files):
            out = subprocess.run([storescu, "-aet", f"SCANNER{i}", "-aec", "COUNTYREAD",
                                  "127.0.0.1", str(port), *map(str, files)],
                                 capture_output=True, text=True, env=dcmtk_env(), timeout=120)
            assert out.returncode == 0, out.stderr
        assert db_count(db, "select count(*) from instances") == len(all_files)
        assert db_count(db, "select count(distinct sop_instance_uid) from instances") == len(
            all_files)
        assert db_count(db, "select sum(instance_count) from series") == len(all_files)
        assert db_count(db, "select count(*) from studies") == N_SENDERS - 1
        # Jobs resume: the restarted node's monitor queues each series' final generation
        # once (a series that went quiet before the re-send also has a generation-0 job).
        current = ("select count(*) from series s where s.state = 'stable' and (select "
                   "count(*) from jobs j where j.series_uid = s.series_uid and j.dedupe_key "
                   "like 'analyze:' || s.series_uid || ':%:' || s.generation) = 1")
        deadline = time.monotonic() + 30
        while db_count(db, current) < N_SENDERS and time.monotonic() < deadline:
            time.sleep(0.3)
        assert db_count(db, current) == N_SENDERS
        assert db_count(db, "select count(*) from jobs") <= 2 * N_SENDERS
    finally:
        node.send_signal(signal.SIGTERM)
        node.wait(timeout=30)
