"""A RIS for the tests: hl7apy's own MLLP server (``hl7apy.mllp.MLLPServer``), answering
each ORU^R01 with the next acknowledgment code in line (AA when none is left)."""

from __future__ import annotations

import threading
import time
from typing import Any

from hl7apy.mllp import AbstractHandler, MLLPServer

from cds.delivery.hl7v2 import END, START, control_id_of

#: an answer code that sends no ACK at all (the client's timeout runs out)
SILENT = "silent"


class Ris:
    """Records every message received; ``answers``: the ACK codes to give, in order."""

    def __init__(self, port: int = 0, answers: list[str] | None = None) -> None:
        self.messages: list[str] = []
        self.answers = list(answers or [])
        self._lock = threading.Lock()
        self._closing = threading.Event()
        ris = self

        class Handler(AbstractHandler):  # type: ignore[misc]
            def reply(self) -> str:
                message = str(self.incoming_message)
                with ris._lock:
                    ris.messages.append(message)
                    code = ris.answers.pop(0) if ris.answers else "AA"
                if code == SILENT:
                    ris._closing.wait(10)
                    return ""
                ack = (
                    "MSH|^~\\&|RIS|HOSP|cds||20250101000000||ACK^R01^ACK|"
                    f"A{len(ris.messages)}|P|2.5.1\rMSA|{code}|{control_id_of(message)}\r"
                )
                return (START + ack.encode() + END).decode()

        self.server = MLLPServer("127.0.0.1", port, {"ORU^R01^ORU_R01": (Handler,)}, timeout=5)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def control_ids(self) -> list[str]:
        with self._lock:
            return [control_id_of(m) for m in self.messages]

    def wait_for(self, n: int, timeout_s: float = 20.0) -> list[str]:
        """The messages once ``n`` have arrived (AssertionError at the deadline)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.messages) >= n:
                    return list(self.messages)
            time.sleep(0.02)
        raise AssertionError(f"{len(self.messages)} message(s) arrived, not {n}")

    def close(self) -> None:
        self._closing.set()
        self.server.shutdown()
        self.server.server_close()


def target(port: int, **extra: Any) -> dict[str, Any]:
    """A ``notifications`` entry for this RIS."""
    return {"format": "hl7v2", "host": "127.0.0.1", "port": port, **extra}
