"""A model package's golden input through the path ``cds process`` takes (cds/offline.py).

The objects are made exactly as the node makes them (``process_series``) and written as
it writes them (``write_results``), so what a check reads here is what a PACS receives.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cds.golden import load_case
from cds.inference import manifest as mf
from cds.inference.session import ProviderChoice
from cds.offline import Outcome, Request, run


@dataclass(frozen=True)
class GoldenInput:
    """One golden case's input folder (``where``: the case as the manifest names it)."""

    where: str
    folder: Path
    language: str


def golden_inputs(package: Path, m: mf.Manifest) -> list[GoldenInput]:
    """The input folder of each golden case of the package (ValueError names a bad case)."""
    inputs = []
    for rel in m.golden:
        case = load_case(package / rel)
        inputs.append(GoldenInput(rel, package / rel / case.input, case.language))
    return inputs


def process(
    package: Path,
    m: mf.Manifest,
    inputs: list[Path],
    out: Path,
    *,
    lang: str = "en",
    providers: ProviderChoice = "cpu",
    kinds: list[str] | None = None,
) -> Outcome:
    """``cds process INPUTS --out OUT --model <m.name>`` with this package only."""
    req = Request(
        paths=inputs,
        out=out,
        model_dirs=[package],
        providers=providers,
        lang=lang,
        model=m.name,
        kinds=kinds,
    )
    return run(req)


def written_files(out: Path) -> list[Path]:
    """The object files under ``out`` (``process.json`` is not one), sorted."""
    return sorted(p for p in out.rglob("*.dcm") if p.is_file())
