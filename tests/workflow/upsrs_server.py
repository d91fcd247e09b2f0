"""A minimal UPS-RS server (DICOM PS3.18 section 11, "Worklist Service") to test the
performer against: ours, written for these tests, because no open UPS-RS server is
packaged in Debian. It plays the task manager (the UPS SCP).

What it implements, with the PS3.4 Annex CC state table's refusals:

- create ``POST /workitems{?workitem}``: 201 + Location; 400 not SCHEDULED or no
  UID; 409 the UID exists;
- search ``GET /workitems?tag=value``: 200 the matches; 204 none;
- retrieve ``GET /workitems/{uid}``: 200; 404;
- update ``POST /workitems/{uid}?transaction=``: 200; 400 no Transaction UID (IN
  PROGRESS) or the state or Transaction UID in the body; 409 a wrong Transaction UID
  (C301) or a final state (C300);
- change state ``PUT /workitems/{uid}/state``: 200 (B304/B306: 200 with a Warning);
  400 no Transaction UID, not a state, to SCHEDULED (C303); 409 already IN PROGRESS
  (C302), a wrong Transaction UID (C301), not yet IN PROGRESS (C310), a final state
  (C300), the final state's requirements not met (C304);
- subscribe ``POST /workitems/{uid}/subscribers/{AE}``: 201; 403 when built with
  ``refuse_subscriptions``.

Search matches the tags given (``00741000=SCHEDULED``, and ``a.b=value`` into the
first level of a sequence). The Transaction UID is never returned. Each request is
recorded in ``requests`` (method, path, status) for the tests to read.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

STATE = "00741000"
TUID = "00081195"
SOP_UID = "00080018"
PROGRESS_SEQ = "00741002"
PERFORMED_SEQ = "00741216"
OUTPUT_SEQ = "00404033"
GLOBAL = "1.2.840.10008.5.1.4.34.5"
FINAL = ("COMPLETED", "CANCELED")


def _value(ds: dict[str, Any], tag: str) -> Any:
    el = ds.get(tag)
    if not isinstance(el, dict):
        return None
    values = el.get("Value")
    return values[0] if isinstance(values, list) and values else None


@dataclass
class Answer:
    status: int
    body: Any = None
    warning: str | None = None
    location: str | None = None


@dataclass
class UpsStore:
    """The workitems, their Transaction UIDs and subscribers (one lock for all)."""

    refuse_subscriptions: bool = False
    workitems: dict[str, dict[str, Any]] = field(default_factory=dict)
    transactions: dict[str, str] = field(default_factory=dict)
    subscribers: set[tuple[str, str]] = field(default_factory=set)
    requests: list[tuple[str, str, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def state(self, uid: str) -> str | None:
        with self.lock:
            item = self.workitems.get(uid)
            return None if item is None else str(_value(item, STATE))

    def get(self, uid: str) -> dict[str, Any]:
        with self.lock:
            return json.loads(json.dumps(self.workitems[uid]))

    # --- the operations ----------------------------------------------------
    def create(self, body: Any, uid_param: str | None) -> Answer:
        if not isinstance(body, list) or len(body) != 1 or not isinstance(body[0], dict):
            return Answer(400, warning="299 upsrs: the payload is not one data set")
        ds = body[0]
        uid = uid_param or _value(ds, SOP_UID)
        if not uid:
            return Answer(400, warning="299 upsrs: no workitem UID")
        if _value(ds, STATE) != "SCHEDULED":
            return Answer(400, warning="299 upsrs: a workitem is created SCHEDULED")
        if TUID in ds:
            return Answer(400, warning="299 upsrs: a Transaction UID is not created with it")
        with self.lock:
            if uid in self.workitems:
                return Answer(409, warning="299 upsrs: the workitem exists")
            ds[SOP_UID] = {"vr": "UI", "Value": [uid]}
            self.workitems[uid] = ds
        return Answer(201, location=f"/workitems/{uid}")

    def search(self, query: list[tuple[str, str]]) -> Answer:
        filters = [(k, v) for k, v in query if k not in ("limit", "offset", "includefield")]
        with self.lock:
            found = [
                json.loads(json.dumps(ds))
                for ds in self.workitems.values()
                if all(_matches(ds, k, v) for k, v in filters)
            ]
        return Answer(200, found) if found else Answer(204)

    def retrieve(self, uid: str) -> Answer:
        with self.lock:
            ds = self.workitems.get(uid)
            if ds is None:
                return Answer(404)
            return Answer(200, [json.loads(json.dumps(ds))])

    def update(  # noqa: PLR0911 (one answer per refusal of the standard)
        self, uid: str, transaction: str | None, body: Any
    ) -> Answer:
        if not isinstance(body, list) or len(body) != 1 or not isinstance(body[0], dict):
            return Answer(400, warning="299 upsrs: the payload is not one data set")
        changes = body[0]
        if STATE in changes or TUID in changes:
            return Answer(400, warning="299 upsrs: state and Transaction UID change by /state")
        with self.lock:
            ds = self.workitems.get(uid)
            if ds is None:
                return Answer(404)
            state = _value(ds, STATE)
            if state in FINAL:
                return Answer(409, warning="299 upsrs: C300 the UPS may no longer be updated")
            if state == "IN PROGRESS":
                if not transaction:
                    return Answer(400, warning="299 upsrs: the Transaction UID is missing")
                if transaction != self.transactions.get(uid):
                    return Answer(409, warning="299 upsrs: C301 wrong Transaction UID")
            ds.update(changes)
        return Answer(200)

    def change_state(self, uid: str, body: Any) -> Answer:  # noqa: PLR0911, PLR0912 (the CC table)
        if not isinstance(body, list) or len(body) != 1 or not isinstance(body[0], dict):
            return Answer(400, warning="299 upsrs: the payload is not one data set")
        wanted, tuid = _value(body[0], STATE), _value(body[0], TUID)
        if not tuid:
            return Answer(400, warning="299 upsrs: the Transaction UID is missing")
        if wanted == "SCHEDULED":
            return Answer(400, warning="299 upsrs: C303 only N-CREATE makes a UPS SCHEDULED")
        if wanted not in ("IN PROGRESS", *FINAL):
            return Answer(400, warning="299 upsrs: not a UPS state")
        with self.lock:
            ds = self.workitems.get(uid)
            if ds is None:
                return Answer(404)
            state = _value(ds, STATE)
            if wanted == "IN PROGRESS":
                if state == "IN PROGRESS":
                    return Answer(409, warning="299 upsrs: C302 the UPS is already IN PROGRESS")
                if state in FINAL:
                    return Answer(409, warning="299 upsrs: C300 the UPS may no longer be updated")
                self.transactions[uid] = tuid
                ds[STATE] = {"vr": "CS", "Value": ["IN PROGRESS"]}
                return Answer(200)
            if state == "SCHEDULED":
                return Answer(409, warning="299 upsrs: C310 the UPS is not yet IN PROGRESS")
            if tuid != self.transactions.get(uid):
                return Answer(409, warning="299 upsrs: C301 wrong Transaction UID")
            if state == wanted:
                code = "B306" if wanted == "COMPLETED" else "B304"
                return Answer(200, warning=f"299 upsrs: {code} already {wanted}")
            if state in FINAL:
                return Answer(409, warning="299 upsrs: C300 the UPS may no longer be updated")
            missing = _final_state_missing(ds, wanted)
            if missing:
                return Answer(409, warning=f"299 upsrs: C304 final state needs {missing}")
            ds[STATE] = {"vr": "CS", "Value": [wanted]}
        return Answer(200)

    def subscribe(self, uid: str, ae: str) -> Answer:
        if self.refuse_subscriptions:
            return Answer(403, warning="299 upsrs: subscriptions are not accepted")
        with self.lock:
            if uid != GLOBAL and uid not in self.workitems:
                return Answer(404)
            self.subscribers.add((uid, ae))
        return Answer(201)


def _matches(ds: dict[str, Any], key: str, wanted: str) -> bool:
    if "." in key:
        seq, tag = key.split(".", 1)
        el = ds.get(seq)
        items = el.get("Value", []) if isinstance(el, dict) else []
        return any(isinstance(i, dict) and _value(i, tag) == wanted for i in items)
    return _value(ds, key) == wanted


def _final_state_missing(ds: dict[str, Any], wanted: str) -> str:  # noqa: PLR0911
    """What PS3.4 CC.2.5.1.1 requires of the final state that the workitem lacks."""
    performed = _value(ds, PERFORMED_SEQ)
    if not isinstance(performed, dict):
        return "Unified Procedure Step Performed Procedure Sequence"
    if _value(performed, "00404051") is None:
        return "Performed Procedure Step End DateTime"
    if wanted == "COMPLETED":
        if _value(performed, "00404050") is None:
            return "Performed Procedure Step Start DateTime"
        if OUTPUT_SEQ not in performed:
            return "Output Information Sequence"
        return ""
    progress = _value(ds, PROGRESS_SEQ)
    if not isinstance(progress, dict) or _value(progress, "00404052") is None:
        return "Procedure Step Cancellation DateTime"
    return ""


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return None

    def _send(self, answer: Answer) -> None:
        self.server.store.requests.append((self.command, self.path, answer.status))
        payload = b"" if answer.body is None else json.dumps(answer.body).encode()
        self.send_response(answer.status)
        if answer.warning:
            self.send_header("Warning", answer.warning)
        if answer.location:
            self.send_header("Location", answer.location)
        if payload:
            self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _parts(self) -> tuple[list[str], list[tuple[str, str]]]:
        url = urlsplit(self.path)
        return [p for p in url.path.split("/") if p], parse_qsl(url.query)

    def do_GET(self) -> None:
        parts, query = self._parts()
        store = self.server.store
        if parts == ["workitems"]:
            self._send(store.search(query))
        elif len(parts) == 2 and parts[0] == "workitems":
            self._send(store.retrieve(parts[1]))
        else:
            self._send(Answer(404))

    def do_POST(self) -> None:
        parts, query = self._parts()
        store, q = self.server.store, dict(query)
        if parts == ["workitems"]:
            self._send(store.create(self._body(), q.get("workitem")))
        elif len(parts) == 2 and parts[0] == "workitems":
            self._send(store.update(parts[1], q.get("transaction"), self._body()))
        elif len(parts) == 4 and parts[0] == "workitems" and parts[2] == "subscribers":
            self._send(store.subscribe(parts[1], parts[3]))
        else:
            self._send(Answer(404))

    def do_PUT(self) -> None:
        parts, _ = self._parts()
        if len(parts) == 3 and parts[0] == "workitems" and parts[2] == "state":
            self._send(self.server.store.change_state(parts[1], self._body()))
        else:
            self._send(Answer(404))


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, store: UpsStore) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.store = store


class UpsServer:
    """The server on a free loopback port, in a thread: ``url`` is its service root."""

    def __init__(self, *, refuse_subscriptions: bool = False) -> None:
        self.store = UpsStore(refuse_subscriptions=refuse_subscriptions)
        self._server = _Server(self.store)
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> UpsServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def workitem(
    uid: str,
    study_uid: str,
    series_uids: tuple[str, ...] = (),
    code: str = "CDS-AI",
    station: str = "CDS",
) -> list[dict[str, Any]]:
    """A SCHEDULED workitem's create payload, with the patient attributes a task manager
    sends (synthetic values, which the performer must never log)."""

    def code_item(value: str, meaning: str) -> dict[str, Any]:
        return {
            "00080100": {"vr": "SH", "Value": [value]},
            "00080102": {"vr": "SH", "Value": ["99TEST"]},
            "00080104": {"vr": "LO", "Value": [meaning]},
        }

    inputs = [
        {
            "0040E020": {"vr": "CS", "Value": ["DICOM"]},
            "0020000D": {"vr": "UI", "Value": [study_uid]},
            "0020000E": {"vr": "UI", "Value": [s]},
        }
        for s in series_uids
    ] or [
        {
            "0040E020": {"vr": "CS", "Value": ["DICOM"]},
            "0020000D": {"vr": "UI", "Value": [study_uid]},
        }
    ]
    return [
        {
            "00080016": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.34.6.1"]},
            SOP_UID: {"vr": "UI", "Value": [uid]},
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": "WORKFLOW^SECRETNAME"}]},
            "00100020": {"vr": "LO", "Value": ["PID-WF-0042"]},
            "00080050": {"vr": "SH", "Value": ["ACC-WF-0042"]},
            STATE: {"vr": "CS", "Value": ["SCHEDULED"]},
            "00741200": {"vr": "CS", "Value": ["MEDIUM"]},
            "00741204": {"vr": "LO", "Value": ["AI analysis"]},
            "00404018": {"vr": "SQ", "Value": [code_item(code, "AI analysis")]},
            "00404025": {"vr": "SQ", "Value": [code_item(station, "cds node")]},
            "00404041": {"vr": "CS", "Value": ["READY"]},
            "00404021": {"vr": "SQ", "Value": inputs},
        }
    ]


#: values in ``workitem`` that must never reach a log line
SECRETS = ("SECRETNAME", "PID-WF-0042", "ACC-WF-0042")
