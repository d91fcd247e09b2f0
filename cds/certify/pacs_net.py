"""The DIMSE side of ``cds certify pacs``: what the kit asks of the PACS, as cds would.

C-ECHO, C-STORE (through cds' own delivery SCU, ``cds.delivery.scu.store_batch``),
C-FIND (Study Root, STUDY, SERIES and IMAGE levels), C-GET and C-MOVE, plain or over
TLS. Every association calls the PACS with the node's AE title, the one the PACS knows.
Nothing here raises for a network or peer problem: each answer says what happened, in
words that name the DIMSE service and status, never a value of a data set.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import build_role, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from cds.delivery.scu import Outcome, store_batch
from cds.destinations import Destination
from cds.requestor import PauseSafeAE

_PENDING = {0xFF00, 0xFF01}


@dataclass(frozen=True)
class Peer:
    """The PACS as the kit reaches it, and the AE title it calls with (the node's)."""

    dest: Destination
    calling_ae: str
    timeout_s: float = 30.0

    def describe(self) -> str:
        return self.dest.describe()


@dataclass
class Answer:
    """What one DIMSE exchange gave: ``ok``, why not (``detail``), and its matches or
    retrieved data sets (with their encoded bytes as received)."""

    ok: bool
    detail: str
    matches: list[Dataset] = field(default_factory=list)
    retrieved: list[tuple[Dataset, bytes, str]] = field(default_factory=list)
    tls: str = ""


def _tls(dest: Destination) -> tuple[ssl.SSLContext, str] | None:
    if not dest.tls.enabled:
        return None
    ctx = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=str(dest.tls.ca_file) if dest.tls.ca_file else None
    )
    if dest.tls.cert_file is not None:
        ctx.load_cert_chain(
            str(dest.tls.cert_file), str(dest.tls.key_file) if dest.tls.key_file else None
        )
    return ctx, dest.host


def _associate(
    peer: Peer,
    contexts: Sequence[str],
    roles: Sequence[Any] = (),
    on_store: Any = None,
    first: str | None = None,
) -> tuple[Association | None, str]:
    """``first``: the transfer syntax to offer first (the one the object was sent in)."""
    ae = PauseSafeAE(ae_title=peer.calling_ae)
    syntaxes: list[str] = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
    if first is not None and first in syntaxes:
        syntaxes = [first, *(x for x in syntaxes if x != first)]
    for uid in contexts:
        ae.add_requested_context(uid, syntaxes)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = peer.timeout_s
    ae.connection_timeout = peer.timeout_s
    kwargs: dict[str, Any] = {}
    if (tls := _tls(peer.dest)) is not None:
        kwargs["tls_args"] = tls
    if roles:
        kwargs["ext_neg"] = list(roles)
    if on_store is not None:
        kwargs["evt_handlers"] = [(evt.EVT_C_STORE, on_store)]
    try:
        assoc = ae.associate(peer.dest.host, peer.dest.port, ae_title=peer.dest.ae_title, **kwargs)
    except (OSError, ssl.SSLError) as exc:
        return None, f"could not open an association with {peer.describe()}: {exc}"
    if assoc.is_established:
        return assoc, ""
    if assoc.is_rejected:
        return None, f"association rejected by {peer.describe()}"
    return None, (
        f"could not open an association with {peer.describe()} "
        "(connection refused, timed out, aborted or TLS handshake failed)"
    )


def _tls_of(assoc: Association) -> str:
    sock = getattr(getattr(assoc.dul, "socket", None), "socket", None)
    if isinstance(sock, ssl.SSLSocket):
        cipher = sock.cipher()
        return f"{sock.version()}, cipher {cipher[0] if cipher else '?'}"
    return ""


def _accepted(assoc: Association, sop_class: str) -> bool:
    return any(cx.abstract_syntax == sop_class for cx in assoc.accepted_contexts)


def echo(peer: Peer) -> Answer:
    """C-ECHO to the PACS (Verification SOP Class)."""
    assoc, why = _associate(peer, [Verification])
    if assoc is None:
        return Answer(False, why)
    try:
        tls = _tls_of(assoc)
        status = assoc.send_c_echo()
    finally:
        if assoc.is_established:
            assoc.release()
    if not status or "Status" not in status:
        return Answer(False, f"no C-ECHO response from {peer.describe()}", tls=tls)
    code = int(status.Status)
    return Answer(code == 0, f"C-ECHO status {code:04X}", tls=tls)


def store(peer: Peer, files: Sequence[Path]) -> list[Outcome]:
    """C-STORE ``files`` to the PACS, one Outcome per file (cds' delivery SCU)."""
    return store_batch(files, peer.dest, peer.calling_ae, peer.timeout_s)


def _query(level: str, study_uid: str, series_uid: str = "", **extra: str) -> Dataset:
    q = Dataset()
    q.QueryRetrieveLevel = level
    q.StudyInstanceUID = study_uid
    if level in ("SERIES", "IMAGE"):
        q.SeriesInstanceUID = series_uid
    if level == "SERIES":
        q.Modality = ""
        q.SeriesDescription = ""
    if level == "IMAGE":
        q.SOPInstanceUID = ""
        q.SOPClassUID = ""
    for keyword, value in extra.items():
        setattr(q, keyword, value)
    return q


def find(peer: Peer, level: str, study_uid: str, series_uid: str = "", **extra: str) -> Answer:
    """C-FIND (Study Root) at ``level`` in one study (and series); the matches."""
    assoc, why = _associate(peer, [StudyRootQueryRetrieveInformationModelFind])
    if assoc is None:
        return Answer(False, why)
    matches: list[Dataset] = []
    try:
        if not _accepted(assoc, StudyRootQueryRetrieveInformationModelFind):
            return Answer(False, f"{peer.describe()} does not accept Study Root C-FIND")
        query = _query(level, study_uid, series_uid, **extra)
        for status, ident in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
            if not status or "Status" not in status:
                return Answer(False, f"no C-FIND response from {peer.describe()}")
            code = int(status.Status)
            if code in _PENDING and ident is not None:
                matches.append(ident)
            elif code != 0:
                return Answer(False, f"C-FIND at {level} level answered {code:04X}")
    finally:
        if assoc.is_established:
            assoc.release()
    return Answer(True, f"C-FIND at {level} level: {len(matches)} match(es)", matches)


def find_instances(peer: Peer, study_uid: str) -> tuple[Answer, dict[str, str]]:
    """Every instance the PACS holds in the study: SOP Instance UID -> SOP Class UID
    (C-FIND at SERIES level, then at IMAGE level in each series)."""
    series = find(peer, "SERIES", study_uid)
    if not series.ok:
        return series, {}
    found: dict[str, str] = {}
    for s in series.matches:
        images = find(peer, "IMAGE", study_uid, str(s.SeriesInstanceUID))
        if not images.ok:
            return images, found
        for m in images.matches:
            found[str(m.get("SOPInstanceUID", ""))] = str(m.get("SOPClassUID", ""))
    return Answer(True, f"{len(series.matches)} series, {len(found)} instance(s)"), found


def get(
    peer: Peer,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    sop_class: str,
    *,
    syntax: str | None = None,
) -> Answer:
    """C-GET one instance; the data set as received, its encoded bytes and transfer syntax
    (``syntax``: the one to offer first, so that the PACS need not transcode)."""
    got: list[tuple[Dataset, bytes, str]] = []

    def on_store(event: Any) -> int:
        raw = event.request.DataSet
        data = raw.getvalue() if isinstance(raw, BytesIO) else bytes(raw or b"")
        got.append((event.dataset, data, str(event.context.transfer_syntax)))
        return 0x0000

    assoc, why = _associate(
        peer,
        [StudyRootQueryRetrieveInformationModelGet, sop_class],
        roles=[build_role(sop_class, scp_role=True)],
        on_store=on_store,
        first=syntax,
    )
    if assoc is None:
        return Answer(False, why)
    try:
        if not _accepted(assoc, StudyRootQueryRetrieveInformationModelGet):
            return Answer(False, f"{peer.describe()} does not accept Study Root C-GET")
        query = Dataset()
        query.QueryRetrieveLevel = "IMAGE"
        query.StudyInstanceUID = study_uid
        query.SeriesInstanceUID = series_uid
        query.SOPInstanceUID = sop_uid
        last = 0xFFFF
        for status, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet):
            if not status or "Status" not in status:
                return Answer(False, f"no C-GET response from {peer.describe()}")
            last = int(status.Status)
    finally:
        if assoc.is_established:
            assoc.release()
    if last != 0 or not got:
        return Answer(False, f"C-GET answered {last:04X} with {len(got)} object(s)")
    return Answer(True, "C-GET 0000", retrieved=got)


def move(peer: Peer, study_uid: str, destination_ae: str) -> Answer:
    """C-MOVE the study to ``destination_ae`` (the node): the PACS opens the association."""
    assoc, why = _associate(peer, [StudyRootQueryRetrieveInformationModelMove])
    if assoc is None:
        return Answer(False, why)
    try:
        if not _accepted(assoc, StudyRootQueryRetrieveInformationModelMove):
            return Answer(False, f"{peer.describe()} does not accept Study Root C-MOVE")
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = study_uid
        last, done, failed = 0xFFFF, 0, 0
        for status, _ in assoc.send_c_move(
            query, destination_ae, StudyRootQueryRetrieveInformationModelMove
        ):
            if not status or "Status" not in status:
                return Answer(False, f"no C-MOVE response from {peer.describe()}")
            last = int(status.Status)
            done = int(status.get("NumberOfCompletedSuboperations", done) or done)
            failed = int(status.get("NumberOfFailedSuboperations", failed) or failed)
    finally:
        if assoc.is_established:
            assoc.release()
    detail = f"C-MOVE to {destination_ae} answered {last:04X}: {done} sent, {failed} failed"
    return Answer(last == 0 and failed == 0 and done > 0, detail)
