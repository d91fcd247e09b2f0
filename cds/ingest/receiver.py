"""Accept one instance: check, spool durably, record. No pynetdicom in here.

The C-STORE handler (``scp.py``) and start-up reconciliation both go through
``Receiver``; what it returns is only ever produced after the instance is
fsync'd on disk and recorded in the state store (its row committed with those of
concurrent associations: cds.store.group).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext

from cds.audit import AuditEvent, AuditOutcome, AuditTrail, NullAuditTrail
from cds.config import Settings
from cds.domain import InstanceRecord, RecordResult, StoreOutcome
from cds.errors import IngestError, StoreError, safe_message
from cds.ingest.header_scan import scan_header
from cds.ingest.instance import (
    DEFLATED,
    EXPLICIT_LE,
    STATUS_INVALID_UID,
    STATUS_SOP_CLASS_MISMATCH,
    STATUS_TOO_DEEP,
    STATUS_TOO_LARGE,
    STATUS_UID_MISMATCH,
    Header,
    check_nesting,
    encode_file_meta,
    inflate,
    is_valid_uid,
    may_be_un_alias,
    read_header,
)
from cds.ingest.spool import STATUS_OUT_OF_RESOURCES, PendingFile, Spool
from cds.logging import get_logger, study_key
from cds.store.base import InstanceStore
from cds.store.group import GroupCommit

log = get_logger("cds.ingest")

#: called after an instance is recorded NEW or REPLACED (not for duplicates)
InstanceListener = Callable[[InstanceRecord, RecordResult], None]


class Receiver:
    def __init__(
        self,
        settings: Settings,
        spool: Spool,
        store: InstanceStore,
        secret: bytes,
        listeners: list[InstanceListener] | None = None,
        *,
        audit: AuditTrail | None = None,
    ) -> None:
        self._settings = settings
        self._spool = spool
        self._store = store
        self.rows = GroupCommit(store)  # instance rows, group-committed
        self._secret = secret
        self._listeners = listeners or []
        self._audit = audit if audit is not None else NullAuditTrail()

    def add_listener(self, fn: InstanceListener) -> None:
        self._listeners.append(fn)

    def key(self, uid: str) -> str:
        return study_key(self._secret, uid)

    def receive(
        self,
        *,
        sop_class_uid: str,
        sop_uid: str,
        transfer_syntax_uid: str,
        dataset: bytes,
        calling_ae: str,
        received_at: float | None = None,
    ) -> RecordResult:
        """Spool and record one data set, as received in a C-STORE request.

        Raises IngestError carrying the DIMSE status to answer.
        """
        sop_class_uid = sop_class_uid.strip()
        sop_uid = sop_uid.strip()
        _check_request(sop_uid, sop_class_uid)
        self._check_size(len(dataset))
        bounded, (sop_class_uid, sop_uid) = self._identity(
            dataset, transfer_syntax_uid, (sop_class_uid, sop_uid), calling_ae
        )
        meta = encode_file_meta(sop_class_uid, sop_uid, transfer_syntax_uid, calling_ae)
        low_space = self._check_space(sop_uid, dataset)
        header_meta, plain = bounded or self._bounded_or_quarantine(
            meta, dataset, transfer_syntax_uid, (sop_class_uid, sop_uid), calling_ae
        )
        # Overlapped, as they do not depend on each other: the SHA-256 on a worker
        # thread (hashlib releases the GIL), the write-back of the file by the
        # kernel, the header parse here and then the file's fsync (the digest names
        # the file, so the rename and the folder's fsync wait for it). Errors are
        # still raised in the same order as when each step ran after the one before.
        hashing = _hasher().submit(_sha256, dataset)
        try:
            known = self._store.find_instance(sop_uid)
            known_error: StoreError | None = None
        except StoreError as exc:
            known, known_error = None, exc
        # An SOP Instance UID seen before may be an identical re-send: written
        # only once the digest says it is not.
        first = known is None and known_error is None
        with self._spool.begin(meta, dataset) if first else nullcontext() as began:
            try:
                header = _checked_header(header_meta, plain, sop_uid, sop_class_uid)
            except IngestError as exc:
                if exc.status == STATUS_TOO_DEEP:  # the parser's own recursion limit
                    self._quarantine(exc, meta, dataset, calling_ae, sop_class_uid, sop_uid)
                raise
            if began is not None:
                began.sync()  # the file's fsync while the digest is computed
            digest = hashing.result()
            if known_error is not None:  # nothing written; the handler answers 0xA700
                raise known_error
            skey = self.key(header.study_uid)
            rel = self._spool.relative_path(skey, self.key(header.series_uid), sop_uid, digest)
            if known is not None and known[0] == digest and self._spool.exists(known[1]):
                rel = known[1]  # an identical re-send: nothing to write
            else:
                self._commit(began, meta, dataset, rel, low_space=low_space)

        rec = InstanceRecord(
            study_uid=header.study_uid,
            series_uid=header.series_uid,
            sop_uid=sop_uid,
            sop_class_uid=sop_class_uid,
            transfer_syntax_uid=transfer_syntax_uid,
            modality=header.modality,
            series_number=header.series_number,
            study_key=skey,
            path=rel,
            size=len(dataset),
            sha256=digest,
            calling_ae=calling_ae.strip(),
            received_at=time.time() if received_at is None else received_at,
            quiet_time_s=self._settings.quiet_time_for(calling_ae),
        )
        try:
            result = self.rows.record(rec)  # with the rows of concurrent associations
        except StoreError as exc:
            # Not a Success: the sender sends it again. The file stays: complete and
            # durable, and perhaps recorded after all (a commit whose answer was lost);
            # the same bytes sent again land on the same name and are recorded then,
            # and start-up re-indexes it (``Node.reconcile``) if they never come.
            raise store_unavailable(exc, skey) from exc

        if result.outcome is StoreOutcome.DUPLICATE:
            log.info("ingest.duplicate_ignored", study_key=skey, sop_uid=sop_uid)
            return result
        if result.outcome is StoreOutcome.REPLACED:
            log.info(
                "ingest.instance_replaced",
                study_key=skey,
                sop_uid=sop_uid,
                version=result.version,
            )
        if result.reopened:
            log.info("assembly.study_reopened", study_key=skey, calling_ae=rec.calling_ae)
        for fn in self._listeners:
            fn(rec, result)
        return result

    def _check_space(self, sop_uid: str, dataset: bytes) -> IngestError | None:
        """Raise 0xA700 if storing ``dataset`` would pass the disk watermark, unless
        exactly these bytes are spooled already as the current version of ``sop_uid``
        (an identical re-send: Success, nothing written); then return that 0xA700, for
        the caller to raise should it have to write after all."""
        try:
            self._spool.check_space(len(dataset))
        except IngestError as low_space:
            try:
                known = self._store.find_instance(sop_uid)
            except StoreError:
                raise low_space from None
            if known is None or known[0] != _sha256(dataset) or not self._spool.exists(known[1]):
                raise
            return low_space
        return None

    def _commit(
        self,
        began: PendingFile | None,
        meta: bytes,
        dataset: bytes,
        rel: str,
        *,
        low_space: IngestError | None,
    ) -> None:
        """Write durably (fsync, rename, directory fsync): never below the watermark
        (``low_space``: an identical re-send whose spooled copy went meanwhile)."""
        if low_space is not None:
            raise low_space
        with began or self._spool.begin(meta, dataset) as pending:
            pending.commit(rel)

    def _check_size(self, size: int) -> None:
        limit_mb = self._settings.dicom.limits.max_dataset_mb
        if size > limit_mb * 2**20:
            # not quarantined: keeping what is too big to keep would defeat the limit
            raise IngestError(
                STATUS_TOO_LARGE, f"data set over dicom.limits.max_dataset_mb ({limit_mb} MiB)"
            )

    def _identity(
        self,
        dataset: bytes,
        transfer_syntax_uid: str,
        request_uids: tuple[str, str],
        calling_ae: str,
    ) -> tuple[tuple[bytes, bytes] | None, tuple[str, str]]:
        """(the bounded data set if it had to be read, (SOP Class UID, SOP Instance
        UID)) of the instance: the request's, but for a DCMTK-based sender's request
        for a data set whose UIDs are UN (``Header.sop_uid_alias``): then the data
        set's own, which the instance is stored and known by."""
        if not any(may_be_un_alias(uid) for uid in request_uids):
            return None, request_uids
        meta = encode_file_meta(*request_uids, transfer_syntax_uid, calling_ae)
        bounded = self._bounded_or_quarantine(
            meta, dataset, transfer_syntax_uid, request_uids, calling_ae
        )
        resolved = _un_identity(*bounded, *request_uids)
        if resolved != request_uids:
            log.info("ingest.uid_read_as_un", calling_ae=calling_ae.strip())
        return bounded, resolved

    def _bounded_or_quarantine(
        self,
        meta: bytes,
        dataset: bytes,
        transfer_syntax_uid: str,
        request_uids: tuple[str, str],
        calling_ae: str,
    ) -> tuple[bytes, bytes]:
        """``_bounded``; a data set past a bound is quarantined, then refused."""
        try:
            return self._bounded(
                meta,
                dataset,
                transfer_syntax_uid=transfer_syntax_uid,
                request_uids=request_uids,
                calling_ae=calling_ae,
            )
        except IngestError as exc:
            self._quarantine(exc, meta, dataset, calling_ae, *request_uids)
            raise

    def _bounded(
        self,
        meta: bytes,
        dataset: bytes,
        *,
        transfer_syntax_uid: str,
        request_uids: tuple[str, str],
        calling_ae: str,
    ) -> tuple[bytes, bytes]:
        """Bound what a hostile data set can cost before any recursive parse reads it.

        Inflates a deflated data set (capped) and checks the nesting of sequences.
        Every later read of the spooled file (assembly, routing, the pipelines, the
        API) meets only what passed here. Returns the File Meta and data set bytes
        to read the header from (inflated, for a deflated transfer syntax).
        """
        limits = self._settings.dicom.limits
        ts = transfer_syntax_uid.strip()
        if ts == DEFLATED:
            dataset = inflate(dataset, limits.max_inflated_mb * 2**20)
            ts = EXPLICIT_LE
            meta = encode_file_meta(*request_uids, ts, calling_ae)
        check_nesting(meta, dataset, ts, limits.max_sequence_depth)
        return meta, dataset

    def _quarantine(  # noqa: PLR0917 (a private helper; every argument is needed)
        self,
        exc: IngestError,
        meta: bytes,
        dataset: bytes,
        calling_ae: str,
        sop_class_uid: str,
        sop_uid: str,
    ) -> None:
        """Keep a refused hostile data set aside (never in the store), with a sidecar."""
        try:
            name = self._spool.quarantine(
                meta,
                dataset,
                reason=str(exc),
                status=exc.status,
                calling_ae=calling_ae.strip(),
                sop_class_uid=sop_class_uid,
                sop_uid=sop_uid,
                max_bytes=self._settings.dicom.limits.max_quarantine_mb * 2**20,
            )
        except OSError as err:  # the refusal stands even if it cannot be kept
            log.error("ingest.quarantine_failed", error_type=type(err).__name__, reason=str(exc))
            return
        log.warning(
            "ingest.instance_quarantined",
            file=name,
            status=f"0x{exc.status:04X}",
            reason=str(exc),
            calling_ae=calling_ae.strip(),
        )
        self._audit.record(
            AuditEvent.SECURITY_ALERT,
            who=f"AE:{calling_ae.strip()}",
            outcome=AuditOutcome.MINOR_FAILURE,
            detail={
                "what": "instance quarantined",
                "status": f"0x{exc.status:04X}",
                "reason": str(exc),
                "file": str(name),
            },
        )


def store_unavailable(exc: StoreError, skey: str | None = None) -> IngestError:
    """0xA700 for a state store that cannot record (down, unreachable, unwritable):
    logged with the store's own words, answered with none (they may quote values)."""
    log.error("ingest.store_failed", study_key=skey, error=safe_message(exc))
    err = IngestError(STATUS_OUT_OF_RESOURCES, "state store unavailable")
    err.__cause__ = exc
    return err


def _check_request(sop_uid: str, sop_class_uid: str) -> None:
    if not is_valid_uid(sop_uid):
        raise IngestError(STATUS_INVALID_UID, "invalid Affected SOP Instance UID in request")
    if not is_valid_uid(sop_class_uid):
        raise IngestError(STATUS_INVALID_UID, "invalid Affected SOP Class UID in request")


def _un_identity(meta: bytes, dataset: bytes, sop_class_uid: str, sop_uid: str) -> tuple[str, str]:
    """(SOP Class UID, SOP Instance UID) of the instance: the data set's own where the
    request gives DCMTK's rendering of the UN-encoded UID (``Header.sop_uid_alias``),
    else the request's. A UID that differs otherwise is refused later (0xC222, 0xA900)."""
    try:
        header = read_header(meta, dataset)
    except IngestError:
        return sop_class_uid, sop_uid  # the header check that follows answers it
    if header.sop_class_alias == sop_class_uid and is_valid_uid(header.sop_class_uid):
        sop_class_uid = header.sop_class_uid
    if header.sop_uid_alias == sop_uid:
        sop_uid = header.sop_uid  # read_header checked it is a valid UID
    return sop_class_uid, sop_uid


def _checked_header(meta: bytes, dataset: bytes, sop_uid: str, sop_class_uid: str) -> Header:
    """The data set's header, checked against the C-STORE request."""
    header = scan_header(meta, dataset) or read_header(meta, dataset)
    if header.sop_uid != sop_uid:
        raise IngestError(
            STATUS_UID_MISMATCH,
            "(0008,0018) SOPInstanceUID differs from the C-STORE request",
        )
    if header.sop_class_uid and header.sop_class_uid != sop_class_uid:
        raise IngestError(
            STATUS_SOP_CLASS_MISMATCH,
            "(0008,0016) SOPClassUID differs from the C-STORE request",
        )
    return header


_HASHER: ThreadPoolExecutor | None = None
_HASHER_LOCK = threading.Lock()


def _hasher() -> ThreadPoolExecutor:
    global _HASHER  # noqa: PLW0603 (one pool per process, made on first use)
    with _HASHER_LOCK:
        if _HASHER is None:
            _HASHER = ThreadPoolExecutor(max_workers=4, thread_name_prefix="cds-ingest-sha256")
        return _HASHER


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
