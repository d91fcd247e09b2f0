"""The models the node knows: every package found in the configured folders.

A broken package never stops the node: it is listed with status ``broken``
and its problems, and skipped. A ready package holds a warmed-up session.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cds.inference import manifest as mf
from cds.inference.constraints import HeaderCheck, header_check
from cds.inference.session import DeviceSlots, ProviderChoice, Session
from cds.inference.validate import GoldenRunner, validate_package
from cds.logging import get_logger

log = get_logger("cds.inference")


@dataclass
class LoadedModel:
    path: Path
    status: str  # ready | broken
    manifest: mf.Manifest | None
    sha256: str | None
    provider: str | None  # provider really in use (CPU, CUDA, TensorRT)
    errors: list[str] = field(default_factory=list)
    session: Session | None = None
    load_seconds: float = 0.0

    @property
    def name(self) -> str:
        return self.manifest.name if self.manifest else self.path.name

    @property
    def version(self) -> str:
        return self.manifest.version if self.manifest else "?"


#: longest reason shown for a broken model (``cds model list`` shows every error in full)
_REASON_CHARS = 200


@dataclass(frozen=True)
class ModelProblem:
    """A model the routing rules send studies to, that cannot run them."""

    model: str
    status: str  # broken | missing
    pipelines: list[str]  # the routed pipelines that name it
    reason: str  # brief; no path but the package folder's name, never data values


def _brief(model: LoadedModel) -> str:
    """The first error of a broken package, its folder path shortened to the folder name."""
    if not model.errors:
        return "failed to load"
    first = model.errors[0].replace(str(model.path), model.path.name)
    if len(first) > _REASON_CHARS:
        first = first[: _REASON_CHARS - 3] + "..."
    more = len(model.errors) - 1
    return first + (f" (+{more} more: cds model list)" if more else "")


def find_packages(dirs: Iterable[Path]) -> list[Path]:
    """Folders holding a manifest, directly in each configured folder (or the folder itself)."""
    found: list[Path] = []
    for d in dirs:
        if (d / mf.MANIFEST_NAME).is_file():
            found.append(d)
        elif d.is_dir():
            found.extend(sorted(p.parent for p in d.glob(f"*/{mf.MANIFEST_NAME}")))
    return found


def declared_use_of(dirs: Iterable[Path]) -> dict[str, HeaderCheck]:
    """Model name -> declared-use check, from the manifests alone (no model is loaded):
    for ``cds route explain`` on local files. Unreadable manifests are left out."""
    out: dict[str, HeaderCheck] = {}
    for path in find_packages(dirs):
        try:
            m = mf.load_manifest(path)
        except mf.ManifestError:
            continue
        out.setdefault(m.name, header_check(m.input))
    return out


def warm_up(model: LoadedModel) -> None:
    """One run on zeros, so the first study does not pay for lazy initialisation."""
    if model.session is None or model.manifest is None:
        raise ValueError(f"{model.path}: not loaded")
    spec = model.manifest.input.tensor
    shape = [1 if (isinstance(d, str) or d < 0) else d for d in spec.shape]
    model.session.run({spec.name: np.zeros(shape, dtype=spec.dtype)})


class ModelRegistry:
    def __init__(
        self,
        dirs: Iterable[Path],
        providers: ProviderChoice = "auto",
        slots: DeviceSlots | None = None,
        warm: bool = True,
        *,
        golden: GoldenRunner | None = None,
    ) -> None:
        """``golden``: the runner of each package's golden cases (``cds.golden.run_golden``,
        handed in by the wiring): a package whose golden case fails is broken."""
        self._dirs = list(dirs)
        self._golden = golden
        self._providers = providers
        self._warm = warm
        self.slots = slots or DeviceSlots(per_gpu=1, per_cpu=1)
        self._models: dict[str, LoadedModel] = {}
        self._lock = threading.Lock()

    def load(self) -> list[LoadedModel]:
        loaded: dict[str, LoadedModel] = {}
        for path in find_packages(self._dirs):
            # files, graph, test vector, and the golden cases when a runner is handed in; its
            # session on the least loaded GPU id (inference.gpus), none: as onnxruntime says
            placed = (m.session.device for m in loaded.values() if m.session is not None)
            report = validate_package(
                path,
                self._providers,
                keep_session=True,
                golden=self._golden,
                device_id=self.slots.place(placed),
            )
            model = LoadedModel(
                path=path,
                status="ready" if report.ok else "broken",
                manifest=report.manifest,
                sha256=report.sha256,
                provider=report.provider,
                errors=report.errors,
                session=report.session if report.ok else None,
                load_seconds=report.seconds,
            )
            if model.status == "ready" and self._warm:
                try:
                    warm_up(model)
                except Exception as exc:  # onnxruntime raises its own types
                    model.status, model.session = "broken", None
                    model.errors.append(f"{path}: warm-up failed: {exc}")
            key = model.name if model.name not in loaded else f"{model.name}@{path}"
            loaded[key] = model
            if model.status == "ready":
                log.info(
                    "inference.model_loaded",
                    model=model.name,
                    version=model.version,
                    sha256=model.sha256,
                    provider=model.provider,
                    fell_back=report.fell_back,
                    seconds=round(report.seconds, 3),
                )
            else:
                log.error("inference.model_broken", package=str(path), errors=model.errors)
        with self._lock:
            self._models = loaded
        return list(loaded.values())

    def all(self) -> list[LoadedModel]:
        with self._lock:
            return list(self._models.values())

    def get(self, name: str) -> LoadedModel | None:
        with self._lock:
            return self._models.get(name)

    def declared_use(self) -> dict[str, HeaderCheck]:
        """Model name -> the check of a series header against its declared use, for the
        ready models (routing skips a pipeline whose series is outside it)."""
        return {
            m.name: header_check(m.manifest.input)
            for m in self.all()
            if m.status == "ready" and m.manifest is not None
        }

    def problems(self, routed: Mapping[str, Sequence[str]]) -> list[ModelProblem]:
        """The routed models (model name -> pipelines) that are broken or not found."""
        out = []
        for name, pipelines in sorted(routed.items()):
            model = self.get(name)
            if model is None:
                reason = "no package of this name in inference.model_dirs"
                out.append(ModelProblem(name, "missing", list(pipelines), reason))
            elif model.status != "ready":
                out.append(ModelProblem(name, model.status, list(pipelines), _brief(model)))
        return out
