"""A real Orthanc PACS for tests, in its own network namespace.

Orthanc cannot bind to loopback only (DESIGN.md section 6), so each instance runs in a
private namespace ``crt-<random>`` reached from the host over a veth pair on a random
169.254.x.y/30 link that only this test uses. Nothing outside the machine can reach it.

Use the ``orthanc`` fixture (function scope) or :func:`orthanc_peer` directly::

    def test_x(orthanc):
        orthanc.address, orthanc.dicom_port, orthanc.ae_title
        orthanc.sop_instance_uids()     # what arrived
        orthanc.stop(); orthanc.start()  # simulate an outage

Missing Orthanc: the fixture skips with the reason (fails under ``CI=true``; see
``tests.conftest.require``). Where ``ip netns`` / veth is not permitted, Orthanc runs on
the host instead with its HTTP server disabled (nothing but DICOM is exposed, on a random
port) and the reason is printed; arrivals are then read from its Lua reception log.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require

ORTHANC = shutil.which("Orthanc")
IP = shutil.which("ip")


# Orthanc calls OnStoredInstance for every instance it stores, duplicates included (with
# OverwriteInstances), so this log counts receptions, not distinct instances.
_COUNT_LUA = """
function OnStoredInstance(instanceId, tags, metadata, origin)
  local f = io.open("@LOG@", "a")
  f:write(tags["SOPInstanceUID"] .. "\\n")
  f:close()
end
"""


def _ip(*args: str) -> None:
    assert IP is not None
    subprocess.run([IP, *args], check=True, capture_output=True, text=True)


@dataclass
class OrthancPeer:
    """One Orthanc process in namespace ``netns`` (None: on the host), at ``address``."""

    workdir: Path
    netns: str | None
    host_if: str | None
    address: str
    host_address: str
    ae_title: str = "ORTHANC"
    dicom_port: int = 4242
    http_port: int = 8042
    #: Merged into the configuration at start (e.g. DicomModalities for a test).
    extra_config: dict[str, Any] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.http_port}"

    @property
    def has_http(self) -> bool:
        # Outside a private namespace Orthanc would expose its REST API on every
        # interface, so the fallback runs without it.
        return self.netns is not None

    def config(self) -> dict[str, Any]:
        return {
            "Name": f"countyread-test-{self.netns or self.dicom_port}",
            "HttpServerEnabled": self.has_http,
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "index"),
            "DicomAet": self.ae_title,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": True,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowStore": True,
            "UnknownSopClassAccepted": True,
            # A re-sent instance is stored again and logged as a new change, so a test
            # counting NewInstance changes sees every duplicate our outbox would send.
            "OverwriteInstances": True,
            "StorageCompression": False,
            "SaveJobs": False,
            "Plugins": [],
            "StableAge": 3600,
            "LuaScripts": [str(self.workdir / "count.lua")],
            **self.extra_config,
        }

    def start(self, timeout_s: float = 30.0) -> None:
        if self.proc is not None:
            return
        assert ORTHANC is not None
        conf = self.workdir / "orthanc.json"
        conf.write_text(json.dumps(self.config()), encoding="utf-8")
        (self.workdir / "count.lua").write_text(
            _COUNT_LUA.replace("@LOG@", str(self.workdir / "stored.log")), encoding="utf-8"
        )
        log = open(self.workdir / "orthanc.log", "ab")  # noqa: SIM115 - owned by the process
        command = [ORTHANC, str(conf)]
        if self.netns is not None:
            assert IP is not None
            command = [IP, "netns", "exec", self.netns, *command]
        self.proc = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = (self.workdir / "orthanc.log").read_text(errors="replace")[-2000:]
                self.proc = None
                raise RuntimeError(f"Orthanc exited at start-up:\n{tail}")
            if self._answers():
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("Orthanc did not answer within the timeout")

    def _answers(self) -> bool:
        with contextlib.suppress(OSError):
            if self.has_http:
                self.get("/system")
            else:
                socket.create_connection((self.address, self.dicom_port), timeout=1).close()
            return True
        return False

    def stop(self) -> None:
        """Stop by PID (ip netns exec execs Orthanc, so the PID is Orthanc's)."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=5) as resp:
            return json.loads(resp.read().decode("utf-8"))

    def post(self, path: str, body: Any) -> Any:
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode("utf-8"),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read().decode("utf-8"))

    def file(self, instance_id: str) -> bytes:
        """The stored DICOM file of one instance, as Orthanc keeps it."""
        url = f"{self.url}/instances/{instance_id}/file"
        with urllib.request.urlopen(url, timeout=10) as resp:
            return bytes(resp.read())

    def instance_ids(self) -> list[str]:
        return list(self.get("/instances"))

    def sop_instance_uids(self) -> list[str]:
        """SOP Instance UIDs stored now (REST API; the reception log without HTTP)."""
        if not self.has_http:
            return sorted(self.receptions())
        found = []
        for iid in self.instance_ids():
            tags = self.get(f"/instances/{iid}")["MainDicomTags"]
            found.append(str(tags["SOPInstanceUID"]))
        return found

    def receptions(self) -> Counter[str]:
        """How many times each SOP Instance UID was stored, duplicates included."""
        log = self.workdir / "stored.log"
        if not log.exists():
            return Counter()
        return Counter(line for line in log.read_text().splitlines() if line)


def _create_namespace() -> tuple[str, str, str, str]:
    tag = secrets.token_hex(3)
    netns, host_if, ns_if = f"crt-{tag}", f"crh{tag}", f"crn{tag}"
    a = secrets.choice([n for n in range(1, 254) if n != 169])
    b = secrets.randbelow(63) * 4
    host_addr, ns_addr = f"169.254.{a}.{b + 1}", f"169.254.{a}.{b + 2}"
    _ip("netns", "add", netns)
    try:
        _ip("-n", netns, "link", "set", "lo", "up")
        _ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        _ip("link", "set", ns_if, "netns", netns)
        _ip("addr", "add", f"{host_addr}/30", "dev", host_if)
        _ip("link", "set", host_if, "up")
        _ip("-n", netns, "addr", "add", f"{ns_addr}/30", "dev", ns_if)
        _ip("-n", netns, "link", "set", ns_if, "up")
    except subprocess.CalledProcessError:
        _delete_namespace(netns, host_if)
        raise
    return netns, host_if, host_addr, ns_addr


def _delete_namespace(netns: str, host_if: str) -> None:
    assert IP is not None
    # Deleting one end of a veth pair removes both; deleting the namespace frees the rest.
    subprocess.run([IP, "link", "del", host_if], capture_output=True)
    subprocess.run([IP, "netns", "del", netns], capture_output=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def orthanc_peer(
    workdir: Path, *, start: bool = True, namespace: bool = True
) -> Iterator[OrthancPeer]:
    """Create the namespace (unless ``namespace`` is False) and start Orthanc; tear down."""
    if namespace:
        netns, host_if, host_addr, ns_addr = _create_namespace()
        peer = OrthancPeer(
            workdir=workdir, netns=netns, host_if=host_if, address=ns_addr, host_address=host_addr
        )
    else:
        peer = OrthancPeer(
            workdir=workdir,
            netns=None,
            host_if=None,
            address="127.0.0.1",
            host_address="127.0.0.1",
            dicom_port=_free_port(),
        )
    try:
        if start:
            peer.start()
        yield peer
    finally:
        peer.stop()
        if peer.netns is not None and peer.host_if is not None:
            _delete_namespace(peer.netns, peer.host_if)


def _namespaces_usable() -> tuple[bool, str]:
    """Probe a namespace and a veth pair, exactly what the fixture needs."""
    if IP is None:
        return False, "iproute2 'ip' is not installed"
    try:
        netns, host_if, _, _ = _create_namespace()
    except subprocess.CalledProcessError as exc:
        return False, f"'ip {' '.join(exc.cmd[1:3])}' is not permitted: {exc.stderr.strip()}"
    _delete_namespace(netns, host_if)
    return True, ""


@pytest.fixture()
def orthanc(tmp_path: Path) -> Iterator[OrthancPeer]:
    """A started Orthanc in a private namespace (or, failing that, on the host, no HTTP)."""
    require(ORTHANC is not None, "Orthanc is not installed (apt-get install orthanc)")
    usable, reason = _namespaces_usable()
    if not usable:
        print(f"Orthanc fixture: {reason}; running Orthanc on the host, HTTP disabled")
    workdir = tmp_path / "orthanc"
    workdir.mkdir()
    with orthanc_peer(workdir, namespace=usable) as peer:
        yield peer
