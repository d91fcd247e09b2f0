"""What the node really supports, read from the code and the default settings.

Nothing here is written by hand: the acceptor's presentation contexts come from the
listener's own AE (``DicomListener._make_ae``, as ``cds serve`` builds it), the SOP
classes, transfer syntaxes and character sets sent come from result objects made now by
the bundled reference models (``cds process``'s path) and offered as the delivery stage
offers them (``cds.delivery.scu``), the settings from their typed defaults and
descriptions, the DICOMweb service from the API's routes. ``conformance_md`` renders them.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from pydantic import BaseModel
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import DEFAULT_TRANSFER_SYNTAXES, _config
from pynetdicom.sop_class import _STORAGE_CLASSES

from cds.certify.emit import golden_inputs, process, written_files
from cds.config import DicomSettings, Settings
from cds.config.bundled import BUNDLED_MODELS
from cds.config.settings import DeliverySettings, HttpSettings
from cds.delivery.scu import _contexts
from cds.domain import ResultRef
from cds.inference import manifest as mf
from cds.ingest.archive import QUERY_RETRIEVE
from cds.ingest.instance import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from cds.ingest.receiver import Receiver
from cds.ingest.scp import DicomListener
from cds.ingest.tls import BCP195_CIPHERS
from cds.results.encode import write_results
from cds.results.kos import build_rejection_kos

#: the bundled packages whose golden cases make every kind of result object
#: (a segmentation: SEG, SR, SC; a detection: GSPS, SR, SC)
EMITTERS = ("cds-ref-ct-bone", "cds-ref-blob-detect")


@dataclass(frozen=True)
class Context:
    """One presentation context the acceptor supports (or proposes, as SCU)."""

    sop_class: str
    transfer_syntaxes: tuple[str, ...]
    role: str


@dataclass(frozen=True)
class Sent:
    """A SOP class the node sends: how its objects are written and offered."""

    sop_class: str
    kind: str
    transfer_syntaxes: tuple[str, ...]
    charset: str


@dataclass(frozen=True)
class Setting:
    key: str
    default: str
    description: str


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    summary: str
    responses: tuple[tuple[str, str], ...]


@dataclass
class Facts:
    """Everything the generated parts of the statement say."""

    assoc_implementation: tuple[str, str] = ("", "")
    spool_implementation: tuple[str, str] = ("", "")
    file_implementation: tuple[str, str] = ("", "")
    scp: list[Context] = field(default_factory=list)
    any_storage: bool = False
    storage_classes: list[tuple[str, str]] = field(default_factory=list)
    sent: list[Sent] = field(default_factory=list)
    ae_settings: list[Setting] = field(default_factory=list)
    limits: list[Setting] = field(default_factory=list)
    tls: list[Setting] = field(default_factory=list)
    ciphers: list[str] = field(default_factory=list)
    delivery: list[Setting] = field(default_factory=list)
    stow: list[Route] = field(default_factory=list)
    stow_settings: list[Setting] = field(default_factory=list)
    query_retrieve: list[tuple[str, str]] = field(default_factory=list)  # (UID, use)
    query_retrieve_syntaxes: tuple[str, ...] = ()


def _show(value: Any) -> str:
    if isinstance(value, BaseModel):
        return "(section)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def settings_of(section: BaseModel, prefix: str, *, skip: tuple[str, ...] = ()) -> list[Setting]:
    """Each field of ``section``: its key, its default and its description."""
    rows = []
    for name, info in type(section).model_fields.items():
        if name in skip:
            continue
        value = getattr(section, name)
        rows.append(Setting(f"{prefix}.{name}", _show(value), info.description or ""))
    return rows


def _acceptor(dicom: DicomSettings) -> tuple[list[Context], bool, tuple[str, str]]:
    """The listener's AE as ``cds serve`` makes it (no socket is opened)."""
    settings = Settings.model_construct(dicom=dicom)
    # the listener keeps the receiver for its handlers only: none runs here
    listener = DicomListener(settings, cast(Receiver, None))
    ae = listener.ae
    contexts = [
        Context(
            str(cx.abstract_syntax),
            tuple(str(ts) for ts in cx.transfer_syntax),
            "SCU and SCP" if cx.scu_role and cx.scp_role else ("SCU" if cx.scu_role else "SCP"),
        )
        for cx in ae.supported_contexts
    ]
    implementation = (str(ae.implementation_class_uid), str(ae.implementation_version_name))
    return contexts, bool(_config.UNRESTRICTED_STORAGE_SERVICE), implementation


def _emitted(workdir: Path) -> list[Dataset]:
    """Objects the bundled reference models make of their golden input, and a rejection
    note (KOS) withdrawing the first of them, as a newer run would."""
    objects: list[Dataset] = []
    for name in EMITTERS:
        package = BUNDLED_MODELS / name
        m = mf.load_manifest(package)
        inputs = golden_inputs(package, m)[:1]
        out = workdir / name
        process(package, m, [i.folder for i in inputs], out)
        objects.extend(dcmread(f) for f in written_files(out))
    if objects:
        first = objects[0]
        ref = ResultRef(
            str(first.StudyInstanceUID),
            str(first.SeriesInstanceUID),
            str(first.SOPInstanceUID),
            str(first.SOPClassUID),
        )
        kos = build_rejection_kos(first, [ref], "en", model="m", version="1", sha256="0" * 64)
        (path,) = write_results(workdir, "kos", [kos])
        objects.append(dcmread(path))
    return objects


def _sent(objects: list[Dataset]) -> tuple[list[Sent], tuple[str, str]]:
    by_class: dict[str, Sent] = {}
    for ds in objects:
        sop = str(ds.SOPClassUID)
        if sop in by_class:
            continue
        (cx,) = _contexts([ds])
        by_class[sop] = Sent(
            sop,
            str(ds.Modality),
            tuple(str(ts) for ts in cx.transfer_syntax),
            str(ds.get("SpecificCharacterSet", "ISO_IR 6 (default)")),
        )
    meta = objects[0].file_meta if objects else Dataset()
    implementation = (
        str(meta.get("ImplementationClassUID", "")),
        str(meta.get("ImplementationVersionName", "")),
    )
    return sorted(by_class.values(), key=lambda s: s.sop_class), implementation


def _stow() -> list[Route]:
    from cds.api.routes.dicomweb import router  # noqa: PLC0415 - FastAPI only for this part

    routes = []
    for r in router.routes:
        path = str(getattr(r, "path", ""))
        for method in sorted(getattr(r, "methods", ()) or ()):
            responses = tuple(
                (str(code), str(info.get("description", "")))
                for code, info in sorted(getattr(r, "responses", {}).items(), key=str)
            )
            routes.append(Route(method, path, str(getattr(r, "summary", "")), responses))
    return routes


def collect() -> Facts:
    """Read every fact of the statement (about 2 s: the reference models run once)."""
    dicom = DicomSettings()
    facts = Facts()
    facts.scp, facts.any_storage, facts.assoc_implementation = _acceptor(dicom)
    facts.spool_implementation = (IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME)
    if facts.any_storage:
        facts.storage_classes = sorted(
            ((str(uid), str(UID(uid).name)) for uid in _STORAGE_CLASSES.values()),
            key=lambda row: [int(p) for p in row[0].split(".")],
        )
    with tempfile.TemporaryDirectory(prefix="cds-conformance-") as tmp:
        facts.sent, facts.file_implementation = _sent(_emitted(Path(tmp)))
    facts.ae_settings = settings_of(dicom, "dicom", skip=("tls", "limits", "sources"))
    facts.limits = settings_of(dicom.limits, "dicom.limits")
    facts.tls = settings_of(dicom.tls, "dicom.tls")
    facts.ciphers = BCP195_CIPHERS.split(":")
    facts.delivery = settings_of(DeliverySettings(), "delivery")
    facts.stow = _stow()
    facts.query_retrieve = list(QUERY_RETRIEVE)
    facts.query_retrieve_syntaxes = tuple(str(ts) for ts in DEFAULT_TRANSFER_SYNTAXES)
    http = HttpSettings()
    facts.stow_settings = [
        s for s in settings_of(http, "http") if s.key in {"http.max_stow_bytes", "http.port"}
    ]
    return facts
