"""issue 23 (item 2): deploy/systemd/cds.service is a hardened unit that systemd itself
accepts: ``systemd-analyze verify`` reports nothing about it.

verify refuses a unit whose ExecStart binary is missing, and /opt/cds is not installed
here: the unit is checked, unchanged, inside a throw-away root (``--root``) that holds
the system's own units, a stub /opt/cds/bin/cds and our unit in /etc/systemd/system."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

UNIT = Path(__file__).resolve().parent.parent / "deploy" / "systemd" / "cds.service"
SYSTEM_UNITS = Path("/usr/lib/systemd/system")
ANALYZE = shutil.which("systemd-analyze")


def _service() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys keep their case
    parser.read_string(UNIT.read_text(encoding="utf-8"))
    return parser["Service"]


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze missing (Debian: apt install systemd)")
def test_i23_unit_verifies_without_a_warning(tmp_path: Path) -> None:
    assert ANALYZE is not None
    root = tmp_path / "root"
    (root / "usr" / "lib" / "systemd").mkdir(parents=True)
    # a copy, not a link: the units' own links must resolve inside the root
    shutil.copytree(SYSTEM_UNITS, root / "usr" / "lib" / "systemd" / "system", symlinks=True)
    units = root / "etc" / "systemd" / "system"
    units.mkdir(parents=True)
    shutil.copy(UNIT, units / "cds.service")
    stub = root / "opt" / "cds" / "bin" / "cds"
    stub.parent.mkdir(parents=True)
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)

    def verify() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [ANALYZE, "verify", "--man=no", f"--root={root}", "cds.service"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    done = verify()
    ours = [ln for ln in (done.stdout + done.stderr).splitlines() if "cds.service" in ln]
    assert (done.returncode, ours) == (0, []), done.stdout + done.stderr

    # the check can fail: a misspelt directive is reported (and passes silently otherwise)
    text = UNIT.read_text(encoding="utf-8")
    (units / "cds.service").write_text(text.replace("NoNewPrivileges=", "NoNewPrivilege="))
    assert "Unknown key 'NoNewPrivilege'" in verify().stderr


def test_i23_unit_runs_as_cds_confined_to_its_state_folder() -> None:
    service = _service()
    expected = {
        "User": "cds",
        "Group": "cds",
        "ExecStart": "/opt/cds/bin/cds serve --config /etc/cds/cds.yaml --home /var/lib/cds",
        "WorkingDirectory": "/var/lib/cds",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ReadWritePaths": "/var/lib/cds",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
        "AmbientCapabilities": "CAP_NET_BIND_SERVICE",
        "CapabilityBoundingSet": "CAP_NET_BIND_SERVICE",
        "StandardOutput": "journal",
        "StandardError": "journal",
        "Restart": "on-failure",
    }
    assert {k: service.get(k) for k in expected} == expected
    assert "PrivateDevices" not in service  # it would hide the GPUs from onnxruntime
