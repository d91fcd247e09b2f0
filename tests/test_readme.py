"""issue 14: what the README tells a new user is what the code does."""

from __future__ import annotations

import re
from pathlib import Path

from cds.config import Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def test_readme_opens_with_the_two_fresh_machine_commands() -> None:
    blocks = re.findall(r"```sh\n(.*?)```", README, flags=re.S)
    assert "pip install -q . && .venv/bin/cds serve" in blocks[0]
    assert "bash .ci/run" in blocks[1]
    # what command 2 needs is said before anything else
    needs = README[: README.index("## What cds is")]
    for need in ("python3-venv", "root", "../shared/dicom", "../shared/viewer", "npm", "PyPI"):
        assert need in needs, need


def test_readme_states_the_listening_defaults_the_settings_have() -> None:
    s = Settings()
    assert s.dicom.host == "0.0.0.0"
    assert f"binds `{s.dicom.host}`" in README
    assert s.http.host == "127.0.0.1"
    assert f"HTTP on {s.http.host}:{s.http.port} only" in README
    assert f'AE "{s.dicom.ae_title}" on\n#    port {s.dicom.port}' in README


def test_readme_status_speaks_of_what_is_built_in_the_present() -> None:
    for stale in ("come next", "will be marked advisory"):
        assert stale not in README, stale
