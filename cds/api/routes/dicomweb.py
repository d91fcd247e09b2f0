"""STOW-RS in (PS3.18 10.5): ``POST /dicomweb/studies`` and ``/dicomweb/studies/{study}``.

Each part goes through the same ``Receiver.receive`` as a C-STORE (cds/ingest/receiver.py):
the same bounds (``dicom.limits``: size, inflated size, nesting, quarantine), fsync'd on
disk and recorded before the answer says "stored", counted toward the study's assembly
like an association's instances (and, as an association's end does, a batch that
completes a routing rule's required series starts it at once). Parts are recorded with
the calling AE title ``DICOMWEB`` (``STOW_AE``): routing rules and per-sender quiet times
may name it.

The answer is the Store Instances Response (``application/dicom+json``): 200 every
instance stored, 202 some refused, 409 / 400 / 503 none stored; refused instances are in
its FailedSOPSequence with their FailureReason (the C-STORE status the receiver would
answer), and a ``Warning`` header says why, per part, without quoting any value.

Admin only: sending studies starts pipelines and deliveries, as steering the node does.
The body is bounded by ``http.max_stow_bytes`` before it is read (cds/api/hardening.py).
"""

from __future__ import annotations

from collections import Counter
from io import BytesIO
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from pydicom import dcmread
from starlette.concurrency import run_in_threadpool

from cds.api.auth import AdminUser, client_address
from cds.api.deps import get_node
from cds.api.dicomweb import (
    STATUS_STUDY_MISMATCH,
    BadRequest,
    InstanceOutcome,
    Part,
    Part10,
    boundary_of,
    http_status,
    read_part10,
    response_body,
    split_multipart,
    warnings,
)
from cds.audit import AuditEvent, AuditOutcome
from cds.delivery.dicomweb import DICOM_JSON
from cds.errors import IngestError, StoreError, safe_message
from cds.ingest.header_scan import scan_header
from cds.ingest.instance import STATUS_PROCESSING_FAILURE, check_file, is_valid_uid
from cds.ingest.receiver import store_unavailable
from cds.logging import get_logger
from cds.orchestrator import Node

log = get_logger("cds.ingest")

#: the calling AE title STOW-RS instances are recorded with
STOW_AE = "DICOMWEB"

router = APIRouter(prefix="/dicomweb", tags=["dicomweb"])
NodeDep = Annotated[Node, Depends(get_node)]

_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"description": "every instance stored", "content": {DICOM_JSON: {}}},
    202: {"description": "some instances refused (FailedSOPSequence)"},
    400: {"description": "no instance stored: the body or every part unreadable"},
    409: {"description": "no instance stored: every one refused (FailedSOPSequence)"},
    413: {"description": "body over http.max_stow_bytes"},
    415: {"description": 'not multipart/related; type="application/dicom"'},
    503: {"description": "no instance stored: out of resources (disk, state store)"},
}


@router.post("/studies", summary="STOW-RS: store instances", responses=_RESPONSES)
async def store_instances(request: Request, node: NodeDep, user: AdminUser) -> JSONResponse:
    return await _stow(request, node, user.who, None)


@router.post(
    "/studies/{study}", summary="STOW-RS: store instances of one study", responses=_RESPONSES
)
async def store_study_instances(
    study: str, request: Request, node: NodeDep, user: AdminUser
) -> JSONResponse:
    if not is_valid_uid(study):
        raise HTTPException(400, "the study in the URL is not a valid Study Instance UID")
    return await _stow(request, node, user.who, study)


async def _stow(request: Request, node: Node, who: str, study: str | None) -> JSONResponse:
    try:
        boundary = boundary_of(request.headers.get("content-type", ""))
        parts = split_multipart(await request.body(), boundary)
    except BadRequest as exc:
        raise HTTPException(exc.status, str(exc)) from None
    outcomes, keys = await run_in_threadpool(_store_all, node, parts, study)
    _after(request, node, who, outcomes, keys)
    status = http_status(outcomes)
    headers = {"Warning": ", ".join(w)} if (w := warnings(outcomes)) else None
    return JSONResponse(response_body(outcomes), status, headers=headers, media_type=DICOM_JSON)


def _store_all(
    node: Node, parts: list[Part], study: str | None
) -> tuple[list[InstanceOutcome], list[tuple[str, bool]]]:
    """Each part through the receiver, in order; (outcomes, (study key, duplicate) of
    each stored instance)."""
    outcomes: list[InstanceOutcome] = []
    stored: list[tuple[str, bool]] = []
    for number, part in enumerate(parts, 1):
        p10: Part10 | None = None
        try:
            p10 = read_part10(part)
            if study is not None:
                _check_study(p10, part, study, node)
            result = node.receiver.receive(
                sop_class_uid=p10.sop_class_uid,
                sop_uid=p10.sop_uid,
                transfer_syntax_uid=p10.transfer_syntax_uid,
                dataset=p10.dataset,
                calling_ae=STOW_AE,
            )
        except (IngestError, StoreError) as exc:
            refused = exc if isinstance(exc, IngestError) else store_unavailable(exc)
            outcomes.append(_refused(p10, number, refused.status, _words(refused)))
        except Exception as exc:  # a bug must not lose the other parts' answers
            log.error("ingest.handler_failed", error_type=type(exc).__name__, part=number)
            reason = f"internal error: {type(exc).__name__}"
            outcomes.append(_refused(p10, number, STATUS_PROCESSING_FAILURE, reason))
        else:
            outcomes.append(InstanceOutcome(p10.sop_class_uid, p10.sop_uid))
            stored.append((result.study_key, result.outcome.value == "duplicate"))
    return outcomes, stored


def _words(exc: IngestError) -> str:
    """The receiver's reason, said of a STOW-RS part (whose File Meta is the request)."""
    return safe_message(exc).replace("the C-STORE request", "the part's File Meta")


def _refused(p10: Part10 | None, number: int, status: int, reason: str) -> InstanceOutcome:
    log.warning(
        "ingest.instance_refused",
        status=f"0x{status:04X}",
        reason=reason,
        calling_ae=STOW_AE,
        part=number,
    )
    if p10 is None:
        return InstanceOutcome("", "", status, reason)
    return InstanceOutcome(p10.sop_class_uid, p10.sop_uid, status, reason)


def _check_study(p10: Part10, part: Part, study: str, node: Node) -> None:
    """Refuse (PS3.18 10.5.1) an instance of another study than the URL's, before it is
    stored: read without pydicom where plain, else after the ingest bounds."""
    header = scan_header(p10.file_meta, p10.dataset)
    if header is not None:
        found = header.study_uid
    else:
        limits = node.settings.dicom.limits
        check_file(
            part.content,
            max_inflated_bytes=limits.max_inflated_mb * 2**20,
            max_sequence_depth=limits.max_sequence_depth,
        )
        try:
            ds = dcmread(
                BytesIO(part.content), stop_before_pixels=True, specific_tags=["StudyInstanceUID"]
            )
            found = str(ds.get("StudyInstanceUID", "") or "").strip()
        except Exception:  # unreadable: the receiver answers it with its own status
            return
    if found != study:
        raise IngestError(
            STATUS_STUDY_MISMATCH, "(0020,000D) StudyInstanceUID differs from the study in the URL"
        )


def _after(
    request: Request,
    node: Node,
    who: str,
    outcomes: list[InstanceOutcome],
    stored: list[tuple[str, bool]],
) -> None:
    """As an association's end: the audit record per study, and the early start of rules
    whose required series are now all present."""
    failed = sum(o.failure is not None for o in outcomes)
    instances = Counter(key for key, dup in stored if not dup)
    duplicates = Counter(key for key, dup in stored if dup)
    keys = list(dict.fromkeys(key for key, _ in stored))
    log.info(
        "ingest.stow_received",
        parts=len(outcomes),
        stored=len(stored) - sum(duplicates.values()),
        duplicates=sum(duplicates.values()),
        failed=failed,
        studies=len(keys),
    )
    https = request.url.scheme == "https"
    where = client_address(request)
    for key in keys:
        detail: dict[str, object] = {
            "instances": instances[key],
            "duplicates": duplicates[key],
            "failed": failed,
            "stow_rs": True,
            "tls": https,
        }
        _audit(node, who, where=where, key=key, outcome=AuditOutcome.SUCCESS, detail=detail)
    if not keys and failed:
        detail = {"instances": 0, "duplicates": 0, "failed": failed, "stow_rs": True, "tls": https}
        _audit(node, who, where=where, key=None, outcome=AuditOutcome.MINOR_FAILURE, detail=detail)
    hook = node.listener.on_association_end
    if keys and hook is not None:
        try:
            hook(keys)
        except Exception as exc:  # as for an association: logged, the answer stands
            log.error("ingest.association_end_hook_failed", error_type=type(exc).__name__)


def _audit(
    node: Node,
    who: str,
    *,
    where: str | None,
    key: str | None,
    outcome: AuditOutcome,
    detail: dict[str, object],
) -> None:
    try:
        node.audit.record(
            AuditEvent.INSTANCES_RECEIVED,
            who=who,
            outcome=outcome,
            where=where,
            study_key=key,
            detail=detail,
        )
    except Exception as exc:  # the instances are stored: an audit failure must not hide it
        log.error(
            "ingest.audit_failed", audit_event="instances_received", error_type=type(exc).__name__
        )
