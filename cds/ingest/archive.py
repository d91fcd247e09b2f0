"""Query/retrieve SCU: find studies in a DIMSE archive and have it send them to us.

- ``find_studies``: C-FIND at STUDY level of the Study Root model, matching a study
  date range and optionally the modalities in the study and the study description.
  Only the keys cds needs are asked for (Study Instance UID, Study Date, Modalities in
  Study, Number of Study Related Instances): no patient attribute is requested or read.
- ``move_study``: C-MOVE of one study to the node's own AE title; the archive opens an
  association to the node's C-STORE receiver (it must know that AE title, host and
  port), so retrieved instances get the same checks and durability as any other.
- ``get_study``: C-GET on the same association, for an archive that does not move
  (``retrieve: get``); each instance is handed to ``sink`` (the node's receiver) and
  answered with the status it returns.

TLS when the archive says so. Nothing here raises for a network or peer problem but
``ArchiveError``, whose message names the archive and never a data value.
"""

from __future__ import annotations

import logging
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import build_role, evt
from pynetdicom.presentation import StoragePresentationContexts
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from cds.destinations import DimseArchive
from cds.errors import CdsError, error_text
from cds.requestor import PauseSafeAE

#: one instance retrieved by C-GET: (SOP Class UID, SOP Instance UID, transfer syntax,
#: the data set as received) -> the C-STORE status to answer (0x0000: stored)
InstanceSink = Callable[[str, str, str, bytes], int]

_PENDING = {0xFF00, 0xFF01}
_MODALITY = re.compile(r"^[A-Z0-9_]{1,16}$")
#: at most 128 presentation contexts: the Get model's and 127 storage ones
_GET_STORAGE = [str(cx.abstract_syntax) for cx in StoragePresentationContexts[:127]]
#: the Query/Retrieve SOP Classes an archive is asked by (the conformance statement's
#: table: ``cds conformance``), each with what it is used for
QUERY_RETRIEVE: tuple[tuple[str, str], ...] = (
    (
        str(StudyRootQueryRetrieveInformationModelFind),
        "C-FIND at STUDY level: study date range, modality, study description",
    ),
    (
        str(StudyRootQueryRetrieveInformationModelMove),
        "C-MOVE of one study to the node's own AE title (`retrieve: move`, the default)",
    ),
    (
        str(StudyRootQueryRetrieveInformationModelGet),
        f"C-GET of one study on the same association (`retrieve: get`); the first "
        f"{len(_GET_STORAGE)} standard storage SOP Classes proposed with the SCP role",
    ),
)
_TRANSPORT_LOG = logging.getLogger("pynetdicom.transport")


class ArchiveError(CdsError):
    """The archive cannot be queried or cannot send a study (named, no data value)."""


@dataclass(frozen=True, slots=True)
class StudyQuery:
    """A study-level query: a date range (inclusive), and optional matches."""

    since: date
    until: date
    modality: str | None = None  # matched against Modalities in Study
    description: str | None = None  # Study Description, may hold * and ? wildcards

    def __post_init__(self) -> None:
        if self.since > self.until:
            raise ValueError(f"--since {self.since} is after --until {self.until}")
        if self.modality is not None and not _MODALITY.match(self.modality):
            raise ValueError("--modality: a DICOM modality such as CT, MR or DX (A-Z, 0-9, _)")
        if self.description is not None and (
            len(self.description) > 64 or "\\" in self.description
        ):
            raise ValueError("--description: at most 64 characters, without '\\'")

    def identifier(self) -> Dataset:
        """The C-FIND identifier: the matching keys and the return keys asked for."""
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        ds.StudyInstanceUID = ""
        ds.StudyDate = f"{self.since:%Y%m%d}-{self.until:%Y%m%d}"
        ds.ModalitiesInStudy = self.modality or ""
        ds.StudyDescription = self.description or ""
        ds.NumberOfStudyRelatedInstances = ""
        return ds


@dataclass(frozen=True, slots=True)
class FoundStudy:
    study_uid: str
    study_date: str
    instances: int | None


@dataclass(frozen=True, slots=True)
class Retrieved:
    """How a C-MOVE or C-GET of one study ended."""

    ok: bool
    completed: int = 0
    failed: int = 0
    warning: int = 0
    detail: str = ""


def _tls(archive: DimseArchive) -> tuple[ssl.SSLContext, str] | None:
    if not archive.tls.enabled:
        return None
    ctx = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH,
        cafile=str(archive.tls.ca_file) if archive.tls.ca_file else None,
    )
    if archive.tls.cert_file is not None:
        key = str(archive.tls.key_file) if archive.tls.key_file else None
        ctx.load_cert_chain(str(archive.tls.cert_file), key)
    return ctx, archive.host


def _one_line_tls_failure(record: logging.LogRecord) -> bool:
    """pynetdicom logs a failed TLS handshake at ERROR with a traceback: keep the line
    (the reason: an untrusted certificate, a refused one), not the traceback."""
    exc = record.exc_info[1] if record.exc_info else None
    if isinstance(exc, ssl.SSLError):
        record.exc_info = None
        record.exc_text = None
    return True


class ArchiveClient:
    """The SCU side of the routing file's archive ``name``, calling as ``calling_ae``."""

    def __init__(
        self, archive: DimseArchive, calling_ae: str, timeout_s: float = 30.0, name: str = ""
    ) -> None:
        self.archive = archive
        self.calling_ae = calling_ae
        self.timeout_s = timeout_s
        self.field = f"archives.{name}" if name else "the archive"
        if archive.tls.enabled and _one_line_tls_failure not in _TRANSPORT_LOG.filters:
            _TRANSPORT_LOG.addFilter(_one_line_tls_failure)

    def _associate(self, contexts: list[str], **extra: Any) -> Any:
        ae = PauseSafeAE(ae_title=self.calling_ae)
        for uid in contexts:
            ae.add_requested_context(uid)
        # each pending response of a C-MOVE/C-GET restarts the DIMSE timer
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout_s
        ae.connection_timeout = self.timeout_s
        kwargs: dict[str, Any] = dict(extra)
        if (tls := _tls(self.archive)) is not None:
            kwargs["tls_args"] = tls
        try:
            assoc = ae.associate(
                self.archive.host, self.archive.port, ae_title=self.archive.ae_title, **kwargs
            )
        except (OSError, ssl.SSLError) as exc:
            raise ArchiveError(f"{self.archive.describe()}: {error_text(exc)}") from None
        if not assoc.is_established:
            why = "rejected the association" if assoc.is_rejected else "could not be reached"
            if not assoc.is_rejected and self.archive.tls.enabled:
                why += (
                    f", or the TLS handshake failed (check {self.field}.tls: ca_file for its "
                    "certificate, cert_file and key_file for ours)"
                )
            raise ArchiveError(f"archive {self.archive.describe()} {why}")
        return assoc

    def find_studies(self, query: StudyQuery) -> list[FoundStudy]:
        """Every study the archive matches, in the order it answered."""
        assoc = self._associate([StudyRootQueryRetrieveInformationModelFind])
        found: list[FoundStudy] = []
        try:
            for status, ident in assoc.send_c_find(
                query.identifier(), StudyRootQueryRetrieveInformationModelFind
            ):
                code = int(status.Status) if status and "Status" in status else None
                if code is None:
                    raise ArchiveError(
                        f"archive {self.archive.describe()}: no C-FIND response (timeout or abort)"
                    )
                if code in _PENDING and ident is not None:
                    uid = str(ident.get("StudyInstanceUID", "") or "").strip()
                    if uid:
                        count = ident.get("NumberOfStudyRelatedInstances")
                        found.append(
                            FoundStudy(
                                uid,
                                str(ident.get("StudyDate", "") or ""),
                                int(count) if count not in (None, "") else None,
                            )
                        )
                elif code not in _PENDING and code != 0x0000:
                    raise ArchiveError(
                        f"archive {self.archive.describe()}: C-FIND failed with status 0x{code:04X}"
                    )
        finally:
            if assoc.is_established:
                assoc.release()
        return found

    @staticmethod
    def _study(study_uid: str) -> Dataset:
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        ds.StudyInstanceUID = study_uid
        return ds

    def move_study(self, study_uid: str, move_destination: str) -> Retrieved:
        """C-MOVE one study to ``move_destination`` (the node's AE title)."""
        assoc = self._associate([StudyRootQueryRetrieveInformationModelMove])
        try:
            responses = assoc.send_c_move(
                self._study(study_uid),
                move_destination,
                StudyRootQueryRetrieveInformationModelMove,
            )
            return _final(responses, self.archive.describe(), "C-MOVE")
        finally:
            if assoc.is_established:
                assoc.release()

    def get_study(self, study_uid: str, sink: InstanceSink) -> Retrieved:
        """C-GET one study; every instance goes to ``sink`` on this association."""

        def on_store(event: Any) -> int:
            req = event.request
            return sink(
                str(req.AffectedSOPClassUID),
                str(req.AffectedSOPInstanceUID),
                str(event.context.transfer_syntax),
                req.DataSet.getvalue(),
            )

        roles = [build_role(uid, scp_role=True) for uid in _GET_STORAGE]
        assoc = self._associate(
            [StudyRootQueryRetrieveInformationModelGet, *_GET_STORAGE],
            ext_neg=roles,
            evt_handlers=[(evt.EVT_C_STORE, on_store)],
        )
        try:
            responses = assoc.send_c_get(
                self._study(study_uid), StudyRootQueryRetrieveInformationModelGet
            )
            return _final(responses, self.archive.describe(), "C-GET")
        finally:
            if assoc.is_established:
                assoc.release()


def _final(responses: Any, where: str, what: str) -> Retrieved:
    """The last response of a C-MOVE/C-GET: its sub-operation counts and status."""
    last: Dataset | None = None
    for status, _ in responses:
        if not status or "Status" not in status:
            return Retrieved(False, detail=f"{what}: no response from {where} (timeout or abort)")
        last = status
        if int(status.Status) not in _PENDING:
            break
    if last is None:
        return Retrieved(False, detail=f"{what}: no response from {where}")
    code = int(last.Status)
    done = int(last.get("NumberOfCompletedSuboperations", 0) or 0)
    failed = int(last.get("NumberOfFailedSuboperations", 0) or 0)
    warned = int(last.get("NumberOfWarningSuboperations", 0) or 0)
    ok = code == 0x0000 or (code == 0xB000 and failed == 0)
    detail = f"{what} status 0x{code:04X}: {done} sent, {failed} failed, {warned} warning"
    if code == 0xA801:
        detail += f" (the archive does not know the move destination: add it to {where})"
    return Retrieved(ok, done, failed, warned, detail)
