"""The failpoints used by the fault-injection tests (issue 8)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cds.faults import POINTS, _parse


def test_parse_names_and_passes() -> None:
    assert _parse("") == {}
    assert _parse("pipeline.encoded=kill, delivery.sent=kill@3") == {
        "pipeline.encoded": 1,
        "delivery.sent": 3,
    }


@pytest.mark.parametrize("bad", ["nowhere=kill", "pipeline.encoded=pause", "delivery.sent"])
def test_unknown_failpoint_or_action_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="unknown failpoint or action"):
        _parse(bad)


def test_every_failpoint_is_in_the_code() -> None:
    """Each name in POINTS is called somewhere, so a test arming it really can crash."""
    root = os.path.join(os.path.dirname(__file__), "..", "cds")
    text = ""
    for folder, _, files in os.walk(root):
        for f in files:
            if f.endswith(".py") and f != "faults.py":
                with open(os.path.join(folder, f), encoding="utf-8") as fh:
                    text += fh.read()
    for name in POINTS:
        assert f'failpoint("{name}")' in text, name


def test_an_armed_failpoint_kills_the_process_on_the_asked_pass() -> None:
    code = (
        "from cds.faults import failpoint\n"
        "failpoint('delivery.sent'); print('first pass', flush=True)\n"
        "failpoint('delivery.sent'); print('second pass', flush=True)\n"
    )
    env = {**os.environ, "CDS_FAILPOINTS": "delivery.sent=kill@2"}
    p = subprocess.run(
        [sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True
    )
    assert p.returncode == -9
    assert p.stdout == "first pass\n"
