"""One check of a certification: its verdict, its evidence and the requirement it proves;
and the external validators every emitted object goes through.

A validator that is not installed makes its check ``not_run`` (never a pass): dicom3tools'
``dciodvfy`` (every object), DCMTK's ``dcmpschk`` (presentation states) and pixelmed's
``DicomSRValidator`` (SR, PS3.16 templates; Debian package libpixelmed-java and a JDK).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

#: ``warn``: a requirement the subject does not meet that the run was not asked to
#: require (``cds certify pacs`` without ``--require-iocm``); it never fails the run
Status = Literal["pass", "fail", "warn", "not_applicable", "not_run"]

PIXELMED_JAR = Path("/usr/share/java/pixelmed.jar")
#: Java 17's XSLT stops pixelmed's templates at its default XPath limits
_NO_XPATH_LIMITS = (
    "-Djdk.xml.xpathExprGrpLimit=0",
    "-Djdk.xml.xpathExprOpLimit=0",
    "-Djdk.xml.xpathTotalOpLimit=0",
)
_TOOL_TIMEOUT_S = 300


@dataclass
class Check:
    """``id`` names the check and its texts (``cds.i18n``, part ``certify``:
    ``<id>`` its title, ``<id>_req`` the requirement it maps to)."""

    id: str
    status: Status
    evidence: list[str] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ToolResult:
    """What a validator said of one file: its error and warning lines."""

    path: Path
    errors: list[str]
    warnings: list[str]


def _run(cmd: Sequence[str]) -> str:
    proc = subprocess.run(
        list(cmd), capture_output=True, text=True, timeout=_TOOL_TIMEOUT_S, check=False
    )
    return proc.stdout + proc.stderr


def dciodvfy(paths: Sequence[Path]) -> list[ToolResult] | None:
    """dicom3tools' IOD check of each file (``Error`` lines); None: not installed."""
    tool = shutil.which("dciodvfy")
    if tool is None:
        return None
    out = []
    for p in paths:
        lines = _run([tool, str(p)]).splitlines()
        out.append(
            ToolResult(
                p,
                [x for x in lines if x.startswith("Error")],
                [x for x in lines if x.startswith("Warn")],
            )
        )
    return out


def dcmpschk(paths: Sequence[Path]) -> list[ToolResult] | None:
    """DCMTK's presentation state check of each file (``E:`` lines); None: not installed."""
    tool = shutil.which("dcmpschk")
    if tool is None:
        return None
    out = []
    for p in paths:
        lines = _run([tool, str(p)]).splitlines()
        out.append(
            ToolResult(
                p,
                [x for x in lines if x.startswith("E:")],
                [x for x in lines if x.startswith("W:")],
            )
        )
    return out


def pixelmed_missing() -> str | None:
    """What pixelmed's SR validator lacks to run (None: nothing)."""
    if not PIXELMED_JAR.is_file():
        return f"{PIXELMED_JAR} (Debian package libpixelmed-java)"
    if shutil.which("java") is None:
        return "java (Debian package openjdk-17-jre-headless)"
    return None


def pixelmed_sr(paths: Sequence[Path]) -> list[ToolResult] | None:
    """pixelmed's SR validator (IOD and PS3.16 templates) on each file, one JVM a file
    (``Error`` lines); None: not installed."""
    java = shutil.which("java")
    if pixelmed_missing() is not None or java is None:
        return None
    out = []
    for p in paths:
        cmd = [java, *_NO_XPATH_LIMITS, "-cp", str(PIXELMED_JAR)]
        lines = _run([*cmd, "com.pixelmed.validate.DicomSRValidator", str(p)]).splitlines()
        out.append(
            ToolResult(
                p,
                [x for x in lines if x.startswith("Error")],
                [x for x in lines if x.startswith("Warning")],
            )
        )
    return out


def tool_check(
    check_id: str,
    tool: str,
    results: list[ToolResult] | None,
    root: Path,
    what: str,
) -> Check:
    """The verdict of a validator on the files it was given (``what``: their kind)."""
    if results is None:
        return Check(check_id, "not_run", [f"not run: tool missing ({tool})"])
    if not results:
        return Check(check_id, "not_applicable", [f"not applicable: no {what} emitted"])
    evidence = []
    failed = False
    for r in results:
        name = r.path.relative_to(root).as_posix()
        if r.errors:
            failed = True
            evidence += [f"{name}: {e}" for e in r.errors]
        else:
            evidence.append(f"{name}: no error ({len(r.warnings)} warning(s))")
    return Check(check_id, "fail" if failed else "pass", evidence)
