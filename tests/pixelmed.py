"""pixelmed's DICOM SR validator for the tests: many files per JVM, errors told from warnings.

pixelmed (Debian package libpixelmed-java, installed by .ci/run) checks an SR against
the IOD and the PS3.16 templates of its release (2022-06-18 in Debian 12):
``Error:`` lines are violations, ``Warning:`` lines are content items its templates do
not list. Its own command line validates one file per JVM, and each JVM start with
the compilation of its templates costs seconds, so ``validate`` runs
``PixelmedSrValidator.java`` on every file at once.

Missing java, javac (Java runs the harness from source) or the jar skips a test, and
fails it on CI (``CI=true``), where .ci/run installs them and a skip would hide a
broken check.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

JAR = Path("/usr/share/java/pixelmed.jar")
HARNESS = Path(__file__).with_name("PixelmedSrValidator.java")
#: Java 17's XSLT stops pixelmed's templates at its default XPath limits
_NO_XPATH_LIMITS = [
    "-Djdk.xml.xpathExprGrpLimit=0",
    "-Djdk.xml.xpathExprOpLimit=0",
    "-Djdk.xml.xpathTotalOpLimit=0",
]
_MARK = re.compile(r"^@@@ (\d+) (begin|end)$")

_GROUP = (
    r'/CONTAINER \(126000,DCM,"Imaging Measurement Report"\)'
    r'/CONTAINER \(126010,DCM,"Imaging Measurements"\)'
    r'/CONTAINER \(125007,DCM,"Measurement Group"\)'
)
#: the warnings pixelmed 2022 gives on cds's SRs, each with why it stays: pattern -> reason
KNOWN_WARNINGS: dict[str, str] = {
    _GROUP + r'/TEXT \(122405,DCM,"Algorithm Manufacturer"\): Content Item not in template': (
        "TID 4019 Algorithm Manufacturer: a row of the current standard that pixelmed's "
        "2022 templates predate; it names the model's vendor"
    ),
    _GROUP + r'/CODE \([^,]+,[^,]+,".*"\): Content Item not in template': (
        "the qualitative evaluation (concept: the finding's code, value: Present or "
        "Absent): a CODE row of TID 1501 that pixelmed's TID 1501 (like its 1410 and "
        "1411) does not list"
    ),
    _GROUP + r'/TEXT \(121106,DCM,"Comment"\): Content Item not in template': (
        "the label a viewer shows (OHIF takes the group's first Comment) and what the "
        "rectangle means: TEXT qualitative evaluations of TID 1501, a row pixelmed's "
        "TID 1501 does not list"
    ),
}
_KNOWN = [re.compile(rf"^Warning: [\d.]+: {p}$") for p in KNOWN_WARNINGS]


@dataclass(frozen=True)
class Report:
    """What pixelmed says of one file: its error and warning lines."""

    errors: list[str]
    warnings: list[str]

    def unknown_warnings(self) -> list[str]:
        """The warnings that are none of ``KNOWN_WARNINGS``."""
        return [w for w in self.warnings if not any(k.match(w) for k in _KNOWN)]


def missing() -> str | None:
    """What is missing to run the validator (None: nothing)."""
    if not JAR.is_file():
        return f"{JAR} (Debian package libpixelmed-java)"
    for tool in ("java", "javac"):  # javac: java runs the harness from source
        if shutil.which(tool) is None:
            return f"{tool} (Debian package openjdk-17-jdk-headless)"
    return None


def require() -> None:
    """Skip the test when the validator cannot run; fail it on CI."""
    if (what := missing()) is not None:
        _missing(what)


def _missing(what: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI: {what} missing: .ci/run installs it")
    pytest.skip(f"pixelmed's SR validator cannot run: {what} missing")


def validate(paths: Sequence[Path], timeout: float = 600) -> list[Report]:
    """pixelmed's report on each of ``paths``, in order, from one JVM."""
    if not paths:
        return []
    java = shutil.which("java") or "java"
    cmd = [java, *_NO_XPATH_LIMITS, "-cp", str(JAR), str(HARNESS), *map(str, paths)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    lines: dict[int, list[str]] = {}
    current: int | None = None
    for line in proc.stdout.splitlines():
        if mark := _MARK.match(line):
            n, what = int(mark.group(1)), mark.group(2)
            current = n if what == "begin" else None
            lines.setdefault(n, [])
        elif current is not None:
            lines[current].append(line)
    if proc.returncode != 0 or len(lines) != len(paths):
        raise RuntimeError(
            f"pixelmed's SR validator stopped (exit status {proc.returncode}) after "
            f"{len(lines)} of {len(paths)} files: {proc.stderr[-2000:]}"
        )
    return [
        Report(
            errors=[x for x in lines[i] if x.startswith("Error")],
            warnings=[x for x in lines[i] if x.startswith("Warning")],
        )
        for i in range(len(paths))
    ]
