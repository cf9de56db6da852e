"""A real pynetdicom Storage SCP on loopback that records what it receives.

pynetdicom's own tests start real servers the same way; it is a peer we did not write.
``refuse`` maps a SOP class UID to the status to answer instead of Success, and
``fail_first`` answers the given status for the first N stores of any object.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    Comprehensive3DSRStorage,
    KeyObjectSelectionDocumentStorage,
    SecondaryCaptureImageStorage,
    SegmentationStorage,
)

RESULT_CLASSES = (
    Comprehensive3DSRStorage,
    KeyObjectSelectionDocumentStorage,
    SecondaryCaptureImageStorage,
    SegmentationStorage,
)


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class StorageSCP:
    port: int = field(default_factory=free_port)
    ae_title: str = "TESTPACS"
    refuse: dict[str, int] = field(default_factory=dict)
    fail_first: tuple[int, int] | None = None  # (count, status)
    delay_s: float = 0.0  # a slow link: each store answers after this long
    received: Counter[str] = field(default_factory=Counter)
    classes: dict[str, str] = field(default_factory=dict)
    _server: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _calls: int = 0

    def _on_store(self, event: Any) -> int:
        if self.delay_s:
            time.sleep(self.delay_s)
        ds = event.dataset
        sop_class = str(ds.SOPClassUID)
        with self._lock:
            self._calls += 1
            if self.fail_first and self._calls <= self.fail_first[0]:
                return self.fail_first[1]
            if sop_class in self.refuse:
                return self.refuse[sop_class]
            self.received[str(ds.SOPInstanceUID)] += 1
            self.classes[str(ds.SOPInstanceUID)] = sop_class
        return 0x0000

    def start(self) -> StorageSCP:
        ae = AE(ae_title=self.ae_title)
        ae.supported_contexts = AllStoragePresentationContexts
        for uid in RESULT_CLASSES:
            if not any(cx.abstract_syntax == uid for cx in ae.supported_contexts):
                ae.add_supported_context(uid)
        self._server = ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)]
        )
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
