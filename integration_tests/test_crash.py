"""Issue 6: Success is answered only after fsync. kill -9 the node in the middle of a
transfer; after a restart on the same home every acknowledged instance is there and
the study goes on to complete."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest

from integration_tests.conftest import CdsNode
from integration_tests.support import (
    require_dcmtk,
    run_tool,
    spooled_files,
    tool_env,
    write_ct_series,
)

pytestmark = pytest.mark.integration

COUNT = 200
KILL_AFTER = 60  # acknowledged instances
QUIET_S = 2.0


def storescu_killing(node: CdsNode, files: list[Path], kill_after: int) -> tuple[set[Path], str]:
    """Run ``storescu -v`` over ``files``; SIGKILL the node once ``kill_after`` are acked.

    Returns the files storescu saw a Success response for, and its output.
    """
    proc = subprocess.Popen(
        [
            require_dcmtk("storescu"),
            "-v",
            "-aec",
            node.ae_title,
            "127.0.0.1",
            str(node.dicom_port),
            *(str(f) for f in files),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=tool_env(),
    )
    acked: set[Path] = set()
    lines = []
    current: Path | None = None
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("I: Sending file: "):
                current = Path(line.removeprefix("I: Sending file: ").strip())
            elif line.startswith("I: Received Store Response (Success)"):
                assert current is not None
                acked.add(current)
                if len(acked) == kill_after and node.running:
                    node.kill9()
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return acked, "".join(lines)


def spooled_sops(node: CdsNode) -> set[str]:
    """SOP Instance UIDs of every spooled file (name: <SOP UID>.<sha256[:12]>.dcm)."""
    return {p.name.rsplit(".", 2)[0] for p in (node.home / "spool" / "studies").glob("*/*/*.dcm")}


def test_i2_r6_kill9_mid_transfer_keeps_every_acknowledged_instance(
    node_factory: Callable[..., CdsNode], tmp_path: Path
) -> None:
    """issue 2, req. 6: kill -9 while storescu sends 200 instances; after restart every
    acknowledged SOP Instance is spooled and counted, the study completes, and a full
    re-send by the modality ends with exactly 200 instances."""
    node = node_factory({"assembly": {"quiet_time_s": QUIET_S}})
    series = write_ct_series(tmp_path / "series", COUNT, rows=128)
    sop_of = dict(series)
    files = [path for path, _ in series]
    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)

    acked, out = storescu_killing(node, files, KILL_AFTER)
    assert not node.running, "the node was not killed"
    assert KILL_AFTER <= len(acked) < COUNT, f"not killed mid-transfer ({len(acked)} acked)"
    assert "Received Store Response (Success)" in out
    print(f"{len(acked)} of {COUNT} acknowledged before kill -9")

    node.start()
    assert not list((node.home / "spool" / "tmp").iterdir()), "partial writes left in tmp"
    on_disk = spooled_sops(node)
    missing = {sop_of[f] for f in acked} - on_disk
    assert not missing, f"{len(missing)} acknowledged instances lost"

    study = node.study_by_uid(study_uid)
    assert study is not None, "study lost"
    assert study["instance_count"] == len(on_disk) >= len(acked)
    done = node.wait_study(
        study_uid, lambda s: s["state"] == "complete", QUIET_S + 10, "study complete after restart"
    )
    assert done["instance_count"] == len(on_disk)

    # the modality retries the whole series: duplicates change nothing, the rest arrive
    r = run_tool(
        [
            require_dcmtk("storescu"),
            "-aec",
            node.ae_title,
            "127.0.0.1",
            str(node.dicom_port),
            *(str(f) for f in files),
        ]
    )
    assert r.returncode == 0, r.stdout[-3000:]
    final = node.wait_study(
        study_uid, lambda s: s["state"] == "complete" and s["instance_count"] == COUNT, QUIET_S + 10
    )
    assert final["series_count"] == 1
    assert spooled_sops(node) == set(sop_of.values())
    for sop in sop_of.values():
        assert len(spooled_files(node.home, sop)) == 1, sop
    assert not node.log_problems()
