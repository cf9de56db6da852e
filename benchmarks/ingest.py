"""Ingest benchmark: a 300-slice 512x512 CT pushed by dcmtk storescu to several receivers.

Receivers, side by side in one run:
  (a)  our node (``python -m countyread scp``), durable: fsync file + directory + SQLite
       commit (synchronous=FULL) before each Success, with the fast engine (default)
  (a0) with ``--baseline DIR``: the same node from another checkout (e.g. a git worktree
       of an earlier commit), for before/after figures measured in the same run
  (a2) the same node on the pynetdicom engine (``COUNTYREAD_DICOM_ENGINE=pynetdicom``)
  (a-), (a2-) both engines with fsync made a no-op by libeatmydata: NOT durable, a
       diagnostic of what the node costs apart from the disk's flush latency
  (a') a bare pynetdicom SCP that keeps nothing (pynetdicom's receive path alone)
  (b)  dcmtk storescp (no fsync)
  (c)  Orthanc, in a private network namespace (it cannot bind to loopback only)
  (d)  our node, fast engine, with 4 scanners sending at once (4 series of 300 slices);
  (d2) the same on the pynetdicom engine

Repeats are interleaved (every receiver once, then every receiver again), so that a
change of the machine's load hits all rows alike; each row shows its best run. Besides
wall time, each row gives the receiver's CPU time per instance (user + system, from
/proc/<pid>/stat around the push), which the load from other processes on a shared
machine disturbs far less than wall time. The header gives the disk's flush latency
(medians per 512 KB slice): file fsync, directory fsync after the rename, SQLite commit
(WAL, synchronous=FULL), the three in sequence, and the node's order (file fsync, rename,
then directory fsync and commit in parallel, dicom_node/commit.py).

Run: ``nice -n 10 python benchmarks/ingest.py [--slices 300] [--repeat 3] [--only a,b]``.
Not part of CI. Prints a table of instances/s and MB/s (MB = 10^6 bytes of files sent).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "TCP_NODELAY": "1"}  # DESIGN.md 6: dcmtk without it stalls


@cache
def dcmtk(name: str) -> str:
    for d in ["/usr/bin", "/usr/local/bin", *os.environ.get("PATH", "").split(os.pathsep)]:
        p = Path(d) / name
        if p.is_file():
            out = subprocess.run([str(p), "--version"], capture_output=True, text=True)
            if "dcmtk" in (out.stdout + out.stderr).lower():
                return str(p)
    sys.exit(f"dcmtk {name} not found (apt-get install dcmtk)")


def make_series(out: Path, n: int, size: int = 512) -> list[Path]:
    if out.is_dir() and len(list(out.glob("*.dcm"))) == n:
        return sorted(out.glob("*.dcm"))
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    study, series = generate_uid(), generate_uid()
    rng = np.random.default_rng(0)
    base = rng.integers(-1024, 1500, (size, size), dtype=np.int16)
    paths = []
    for i in range(n):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SpecificCharacterSet = "GB18030"
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.PatientName = "Bench^Mark=测^试"
        ds.PatientID = "BENCH"
        ds.Modality = "CT"
        ds.SeriesDescription = "Chest 1.0"
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [0.0, 0.0, float(-i)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [0.7, 0.7]
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = np.roll(base, i, axis=0).tobytes()
        p = out / f"ct{i:04d}.dcm"
        ds.save_as(p, enforce_file_format=True)
        paths.append(p)
    return paths


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_echo(port: int, netns: str | None = None, timeout: float = 60) -> bool:
    cmd = [dcmtk("echoscu"), "-aec", "ANY", "127.0.0.1", str(port)]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if subprocess.run(cmd, capture_output=True, env=ENV).returncode == 0:
            return True
        time.sleep(0.2)
    return False


def push(port: int, groups: list[list[Path]], aec: str, netns: str | None = None) -> float:
    """Start one storescu per group at once; return the wall time until all finished."""
    procs = []
    t0 = time.perf_counter()
    for i, files in enumerate(groups):
        cmd = [dcmtk("storescu"), "-aet", f"SCANNER{i}", "-aec", aec, "127.0.0.1", str(port),
               *map(str, files)]
        if netns:
            cmd = ["ip", "netns", "exec", netns, *cmd]
        procs.append(subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE))
    errors = [p.communicate()[1] for p in procs]
    dt = time.perf_counter() - t0
    for p, err in zip(procs, errors, strict=True):
        if p.returncode != 0:
            raise RuntimeError(f"storescu failed: {err.decode()[-500:]}")
    return dt


def eatmydata() -> str | None:
    """libeatmydata (apt-get install eatmydata): turns fsync into a no-op when preloaded."""
    for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib"):
        lib = Path(d) / "libeatmydata.so"
        if lib.is_file():
            return str(lib)
    return None


def our_node(work: Path, engine: str, preload: str | None = None, repo: Path = REPO
             ) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {**os.environ, "COUNTYREAD_DATA_DIR": str(work), "COUNTYREAD_DICOM_PORT": str(port),
           "COUNTYREAD_DICOM_ENGINE": engine, **({"LD_PRELOAD": preload} if preload else {}),
           "COUNTYREAD_DICOM_HOST": "127.0.0.1", "COUNTYREAD_ACCEPT_ANY_AE": "true",
           "COUNTYREAD_LOG_LEVEL": "WARNING", "PYTHONPATH": str(repo)}
    proc = subprocess.Popen([sys.executable, "-m", "countyread", "scp"], env=env, cwd=repo,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not wait_echo(port):
        proc.kill()
        raise RuntimeError("our node did not start")
    return proc, port


def storescp(work: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    work.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([dcmtk("storescp"), "-od", str(work), "+B", str(port)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not wait_echo(port):
        proc.kill()
        raise RuntimeError("storescp did not start")
    return proc, port


def orthanc(work: Path) -> tuple[subprocess.Popen[bytes] | None, int, str, str]:
    """Start Orthanc in a fresh netns; returns (proc, port, netns, why-not)."""
    exe = shutil.which("Orthanc")
    if exe is None:
        return None, 0, "", "Orthanc not installed"
    ns = f"crbench{os.getpid()}"
    r = subprocess.run(["ip", "netns", "add", ns], capture_output=True, text=True)
    if r.returncode != 0:
        return None, 0, "", f"ip netns add failed: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], check=True)
    work.mkdir(parents=True, exist_ok=True)
    conf = {"Name": "bench", "StorageDirectory": str(work / "db"),
            "IndexDirectory": str(work / "db"), "DicomAet": "ORTHANC", "DicomPort": 4242,
            "HttpPort": 8042, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False, "UnknownSopClassAccepted": True,
            "DicomAlwaysAllowStore": True, "DicomAlwaysAllowEcho": True,
            "StorageCompression": False, "Plugins": []}
    (work / "conf.json").write_text(json.dumps(conf))
    proc = subprocess.Popen(["ip", "netns", "exec", ns, exe, str(work / "conf.json")], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=(work / "orthanc.log").open("wb"))
    if not wait_echo(4242, netns=ns, timeout=60):
        stop(proc)
        subprocess.run(["ip", "netns", "delete", ns], capture_output=True)
        log = (work / "orthanc.log").read_text(errors="replace")[-300:]
        return None, 0, "", f"Orthanc did not answer echo: {log}"
    return proc, 4242, ns, ""


BARE_SERVER = """
import socket, sys
from pynetdicom import AE, evt, AllStoragePresentationContexts
def store(event):
    event.request.DataSet.getvalue()
    return 0
def nodelay(event):
    event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
ae = AE()
ae.maximum_pdu_size = 0
for cx in AllStoragePresentationContexts:
    ae.add_supported_context(cx.abstract_syntax, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
ae.add_supported_context("1.2.840.10008.1.1")
ae.start_server(("127.0.0.1", int(sys.argv[1])), evt_handlers=[
    (evt.EVT_C_STORE, store), (evt.EVT_CONN_OPEN, nodelay)])
"""


def bare_pynetdicom() -> tuple[subprocess.Popen[bytes], int]:
    """A pynetdicom SCP that keeps nothing: the cost of the receive path alone."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", BARE_SERVER, str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not wait_echo(port):
        proc.kill()
        raise RuntimeError("bare pynetdicom server did not start")
    return proc, port


@dataclass(frozen=True)
class Flushes:
    """Medians in ms per slice-sized file."""

    file: float  # write + fsync of a new file
    directory: float  # rename + fsync of its directory
    commit: float  # one small SQLite transaction, WAL, synchronous=FULL
    sequential: float  # the three in a row (the node before the parallel commit)
    node: float  # file fsync, rename, then directory fsync || commit (the node now)


def fsync_probe(directory: Path, size: int, n: int = 30) -> Flushes:
    """Time the flushes a durable single stream waits for, on the store's file system."""
    directory.mkdir(parents=True, exist_ok=True)
    data = os.urandom(size)
    db = sqlite3.connect(directory / "probe.db", isolation_level=None,
                         check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
    key = iter(range(1 << 30))

    def commit() -> None:
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO t VALUES (?, ?)", (next(key), "x" * 300))
        db.execute("COMMIT")

    def dir_fsync() -> None:
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        os.fsync(dfd)
        os.close(dfd)

    times: dict[str, list[float]] = {k: [] for k in
                                     ("file", "directory", "commit", "sequential", "node")}
    for i in range(n):
        for kind in times:  # interleaved, so that load changes hit every kind alike
            tmp, dst = directory / f".t{kind}{i}", directory / f"{kind}{i}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o644)
            os.write(fd, data)
            t0 = time.perf_counter()
            if kind == "commit":
                os.close(fd)
                t0 = time.perf_counter()
                commit()
            else:
                if kind != "directory":
                    os.fsync(fd)
                os.close(fd)
                if kind == "directory":
                    t0 = time.perf_counter()
                if kind != "file":
                    os.replace(tmp, dst)
                    if kind == "node":
                        th = threading.Thread(target=commit)
                        th.start()
                        dir_fsync()
                        th.join()
                    else:
                        dir_fsync()
                        if kind == "sequential":
                            commit()
            times[kind].append((time.perf_counter() - t0) * 1e3)
    db.close()
    return Flushes(**{k: statistics.median(v) for k, v in times.items()})


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass(frozen=True)
class Run:
    wall_s: float
    cpu_s: float


Starter = Callable[[Path], tuple["subprocess.Popen[bytes] | None", int, str, str]]


def measure_once(start: Starter, groups: list[list[Path]], aec: str,
                 work: Path) -> Run | str:
    """Start a fresh receiver, push, stop; the run or why it was not measured."""
    proc, port, netns, why = start(work)
    if proc is None:
        return why
    try:
        c0 = cpu_s(proc.pid)
        wall = push(port, groups, aec, netns=netns or None)
        return Run(wall, cpu_s(proc.pid) - c0)
    finally:
        stop(proc)
        if netns:
            subprocess.run(["ip", "netns", "delete", netns], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


def row(name: str, n: int, nbytes: int, runs: list[Run]) -> str:
    best = min(runs, key=lambda r: r.wall_s)
    cpu = min(r.cpu_s for r in runs) / n * 1e3
    return (f"| {name:<44} | {n:>5} | {best.wall_s:>7.2f} | {n / best.wall_s:>8.1f} | "
            f"{nbytes / 1e6 / best.wall_s:>7.1f} | {cpu:>6.2f} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=3, help="runs per receiver; best is shown")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "cr-bench")
    ap.add_argument("--skip-orthanc", action="store_true")
    ap.add_argument("--only", default="", help="comma-separated row labels, e.g. a,a0,b,c,d")
    ap.add_argument("--baseline", type=Path, default=None,
                    help="another checkout of this repository: adds row (a0), its fast engine")
    args = ap.parse_args()

    one = make_series(args.cache / "ct", args.slices)
    four = [make_series(args.cache / f"ct{i}", args.slices) for i in range(4)]
    size1 = sum(p.stat().st_size for p in one)
    size4 = sum(p.stat().st_size for g in four for p in g)
    lines = [
        "| receiver                                     | inst  | wall s  |   inst/s |   MB/s "
        "| CPU ms/inst |",
        "|----------------------------------------------|-------|---------|----------|--------"
        "|-------------|",
    ]
    notes = []
    load0 = os.getloadavg()[0]

    def ours(engine: str, preload: str | None = None, repo: Path = REPO) -> Starter:
        return lambda w: (*our_node(w, engine, preload, repo), "", "")

    def plain(fn: Callable[[Path], tuple[subprocess.Popen[bytes], int]]) -> Starter:
        return lambda w: (*fn(w), "", "")

    with tempfile.TemporaryDirectory(dir=args.cache) as tmp:
        work = Path(tmp)
        plan: list[tuple[str, Starter, list[list[Path]], str]] = [
            ("(a) CountyRead node, fast engine, durable", ours("fast"), [one], "COUNTYREAD"),
        ]
        if args.baseline is not None:
            rev = subprocess.run(["git", "-C", str(args.baseline), "rev-parse", "--short",
                                  "HEAD"], capture_output=True, text=True).stdout.strip()
            plan += [
                (f"(a0) same, baseline {rev or args.baseline.name}",
                 ours("fast", repo=args.baseline.resolve()), [one], "BASELINE"),
                (f"(d0) baseline {rev or args.baseline.name}, 4 scanners",
                 ours("fast", repo=args.baseline.resolve()), four, "BASELINE4"),
            ]
        plan += [
            ("(a2) CountyRead node, pynetdicom engine", ours("pynetdicom"), [one], "PYNETDICOM"),
        ]
        lib = eatmydata()
        if lib is None:
            notes.append("rows without flushes not measured: eatmydata not installed")
        else:
            # Diagnostic only, NOT durable: what the node does when flushes cost nothing.
            plan += [
                ("(a-) fast engine, fsync off (diagnostic)", ours("fast", lib), [one],
                 "NOSYNC"),
                ("(a2-) pynetdicom engine, fsync off (diag.)", ours("pynetdicom", lib), [one],
                 "NOSYNC2"),
            ]
        plan += [
            ("(a') bare pynetdicom SCP, keeps nothing", plain(lambda w: bare_pynetdicom()),
             [one], "BARE"),
            ("(b) dcmtk storescp (no fsync)", plain(storescp), [one], "STORESCP"),
        ]
        if args.skip_orthanc:
            notes.append("Orthanc skipped (--skip-orthanc)")
        else:
            plan.append(("(c) Orthanc (default config, netns)", orthanc, [one], "ORTHANC"))
        plan += [
            ("(d) fast engine, 4 scanners at once", ours("fast"), four, "COUNTYREAD4"),
            ("(d2) pynetdicom engine, 4 scanners at once", ours("pynetdicom"), four,
             "PYNETDICOM4"),
        ]
        if args.only:
            wanted = {w.strip() for w in args.only.split(",") if w.strip()}
            plan = [p for p in plan if p[0][1:].split(")")[0] in wanted]
        results: dict[str, list[Run]] = {}
        why_not: dict[str, str] = {}
        for r in range(args.repeat):
            for _, start, groups, aec in plan:
                if aec in why_not:
                    continue
                got = measure_once(start, groups, aec, work / f"{aec.lower()}{r}")
                if isinstance(got, str):
                    why_not[aec] = got
                else:
                    results.setdefault(aec, []).append(got)
        for name, _, groups, aec in plan:
            if aec in results:
                n = sum(len(g) for g in groups)
                lines.append(row(name, n, size1 if len(groups) == 1 else size4, results[aec]))
            else:
                notes.append(f"{name} not measured: {why_not.get(aec, '?')}")
        fl = fsync_probe(work / "probe", one[0].stat().st_size)
    load1 = os.getloadavg()[0]
    print(f"{args.slices} slices 512x512 int16, {size1 / 1e6:.1f} MB per series, "
          f"best of {args.repeat}; storescu with TCP_NODELAY=1; {os.cpu_count()} CPUs, "
          f"load average {load0:.1f} before, {load1:.1f} after")
    print(f"flushes per slice, median ms: file fsync {fl.file:.1f}, rename + directory "
          f"fsync {fl.directory:.1f}, SQLite commit {fl.commit:.1f}; in sequence "
          f"{fl.sequential:.1f}, in the node's order (directory || commit) {fl.node:.1f}")
    print("\n".join(lines))
    if "COUNTYREAD" in results and "STORESCP" in results:
        ours_best = min(r.wall_s for r in results["COUNTYREAD"])
        dcmtk_best = min(r.wall_s for r in results["STORESCP"])
        cpu = min(r.cpu_s for r in results["COUNTYREAD"]) / len(one) * 1e3
        print(f"fast engine / storescp throughput: {dcmtk_best / ours_best:.2f}; fast engine "
              f"CPU {cpu:.2f} ms + the flushes {fl.node:.1f} ms = {cpu + fl.node:.1f} ms "
              f"per slice at this disk's flush latency")
    for note in notes:
        print(note)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
