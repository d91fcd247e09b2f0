"""C-STORE SCU: send a batch of result files to one destination over one association.

Every outcome is per file, with a reason a PACS admin can act on: the
association refused (and by whom), the SOP Class not accepted, a failure
status with its Error Comment, or the connection lost. Warning statuses
(B000, B006, B007) mean the PACS kept the object: they count as delivered.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.presentation import PresentationContext, build_context

from cds.destinations import Destination
from cds.errors import error_text
from cds.requestor import PauseSafeAE

#: C-STORE warning statuses: the object was stored (coerced, or elements discarded)
_WARNINGS = {0xB000, 0xB006, 0xB007}
#: pynetdicom proposes at most this many presentation contexts in one association
_MAX_CONTEXTS = 128


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    detail: str  # the status (and its comment) or why nothing was sent
    permanent: bool = False  # trying again cannot help (e.g. the file is unreadable)


def describe(dest: Destination) -> str:
    return dest.describe()


def _tls_args(dest: Destination) -> tuple[ssl.SSLContext, str] | None:
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


def _contexts(datasets: Sequence[Dataset]) -> list[PresentationContext]:
    """One context per SOP Class, offering the file's transfer syntax first."""
    offered: dict[str, list[str]] = {}
    for ds in datasets:
        ts = str(ds.file_meta.TransferSyntaxUID)
        syntaxes = offered.setdefault(str(ds.SOPClassUID), [])
        for uid in (ts, ExplicitVRLittleEndian, ImplicitVRLittleEndian):
            if uid not in syntaxes:
                syntaxes.append(uid)
    return [build_context(sop, syntaxes) for sop, syntaxes in offered.items()]


def _read(files: Sequence[Path], outcomes: list[Outcome | None]) -> list[tuple[int, Dataset]]:
    datasets: list[tuple[int, Dataset]] = []
    for i, f in enumerate(files):
        try:
            datasets.append((i, dcmread(f)))
        except (OSError, ValueError) as exc:
            outcomes[i] = Outcome(
                False, f"result file unreadable: {error_text(exc)}", permanent=True
            )
    return datasets


def store_batch(
    files: Sequence[Path], dest: Destination, calling_ae: str, timeout_s: float
) -> list[Outcome]:
    """Send ``files`` to ``dest``; one Outcome per file, in order. Never raises for a
    network or peer problem (that is an outcome); a file that cannot be read fails alone."""
    outcomes: list[Outcome | None] = [None] * len(files)
    datasets = _read(files, outcomes)
    if datasets:
        contexts = _contexts([ds for _, ds in datasets])
        if len(contexts) > _MAX_CONTEXTS:  # cannot happen with our handful of result kinds
            raise ValueError(f"{len(contexts)} SOP Classes in one batch (max {_MAX_CONTEXTS})")
        # pynetdicom's AE can lose a C-STORE response to its own reactor under load (then
        # wait out the timeout and abort a batch the PACS stored): cds.requestor
        ae = PauseSafeAE(ae_title=calling_ae)
        ae.requested_contexts = contexts
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
        ae.connection_timeout = timeout_s
        kwargs = {"tls_args": tls} if (tls := _tls_args(dest)) is not None else {}
        assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title, **kwargs)  # type: ignore[arg-type]
        if not assoc.is_established:
            why = (
                f"association rejected by {describe(dest)}"
                if assoc.is_rejected
                else f"could not open an association with {describe(dest)} "
                "(connection refused, timed out or aborted)"
            )
            for i, _ in datasets:
                outcomes[i] = Outcome(False, why)
        else:
            try:
                for i, ds in datasets:
                    outcomes[i] = _send_one(assoc, ds, dest)
                    if not assoc.is_established:
                        break
            finally:
                if assoc.is_established:
                    assoc.release()
            for i, _ in datasets:
                if outcomes[i] is None:
                    outcomes[i] = Outcome(False, f"association with {describe(dest)} was lost")
    return [o if o is not None else Outcome(False, "not sent") for o in outcomes]


def _send_one(assoc: object, ds: Dataset, dest: Destination) -> Outcome:
    accepted = {cx.abstract_syntax for cx in assoc.accepted_contexts}  # type: ignore[attr-defined]
    if str(ds.SOPClassUID) not in accepted:
        return Outcome(
            False,
            f"{describe(dest)} does not accept SOP Class {ds.SOPClassUID} "
            f"({getattr(ds.SOPClassUID, 'name', '?')})",
        )
    try:
        status = assoc.send_c_store(ds)  # type: ignore[attr-defined]
    except (ValueError, RuntimeError, OSError) as exc:
        return Outcome(False, f"C-STORE could not be sent: {error_text(exc)}")
    if not status or "Status" not in status:
        return Outcome(False, f"no C-STORE response from {describe(dest)} (timeout or abort)")
    code = int(status.Status)
    comment = str(status.get("ErrorComment", "") or "")
    if code == 0x0000:
        return Outcome(True, "0000 Success")
    if code in _WARNINGS:
        return Outcome(True, f"{code:04X} Warning (stored){': ' + comment if comment else ''}")
    return Outcome(
        False, f"{describe(dest)} answered {code:04X}{': ' + comment if comment else ''}"
    )
