"""issue 14 'Hardening': ``POST /api/route/explain`` reads only what the node may read.

A security probe made the endpoint read /dev/zero for ever, walk a home folder after
its client had gone, list the working folder for ``""`` and answer a 5,000-character
path with a plain-text 500. Against the real node over HTTP: files are read only under
``routing.explain_roots`` (links resolved), never a device or a FIFO, within
``routing.explain_limits``, and the walk stops when the client goes away. Every refusal
is a JSON 4xx naming the problem, and comes at once.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import pytest

from cds.orchestrator import Node
from cds.routing.files import ReadBudget

from ..admin.helpers import send_study, serving, wait_for
from ..conftest import DICOM, make_settings
from ..test_pipeline import ROUTING

HEAD_CT = DICOM / "ct" / "dcm_qa_ct_GE_HiSpeedDual_series"
MR_SMALL = DICOM / "mr" / "MR_small.dcm"
PROMPT_S = 2.0  # every answer here comes within this


@dataclass
class Explainer:
    base: str
    root: Path
    node: Node

    def post(self, body: Any, timeout: float = 10.0) -> httpx.Response:
        """POST the body; the answer must come within PROMPT_S."""
        start = time.monotonic()
        r = httpx.post(f"{self.base}/api/route/explain", json=body, timeout=timeout)
        assert time.monotonic() - start < PROMPT_S, "the explain did not answer promptly"
        return r


@contextmanager
def explainer(tmp_path: Path, roots: bool = True, **limits: float) -> Iterator[Explainer]:
    """The node with its HTTP API; roots: a fresh folder and the corpus."""
    root = tmp_path / "root"
    root.mkdir()
    rules = tmp_path / "routing.yaml"
    rules.write_text(ROUTING)
    routing = {
        "file": str(rules),
        "explain_roots": [str(root), str(DICOM)] if roots else [],
        "explain_limits": limits,
    }
    settings = make_settings(tmp_path / "home", routing=routing)
    with serving(settings) as node:
        yield Explainer(f"http://127.0.0.1:{settings.http.port}", root, node)


@pytest.fixture
def ex(tmp_path: Path) -> Iterator[Explainer]:
    with explainer(tmp_path) as e:
        yield e


def refused(r: httpx.Response, status: int, *words: str) -> str:
    """The answer is a JSON error with this status whose message has these words."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    detail = r.json()["detail"]
    text = detail if isinstance(detail, str) else json.dumps(detail)
    for w in words:
        assert w in text, f"{w!r} not in {text!r}"
    return text


def test_device_files_and_proc_are_refused_at_once(ex: Explainer) -> None:
    """/dev/zero made the node grow to 6.6 GB and never answer: now 403, not opened."""
    for path in ("/dev/zero", "/proc/self/environ", "/etc/passwd"):
        text = refused(ex.post({"paths": [path]}), 403, "paths[0]", "routing.explain_roots")
        assert path not in text  # the request's value is not quoted back
    # a link inside a root to a device is judged by where it leads
    (ex.root / "zero").symlink_to("/dev/zero")
    refused(ex.post({"paths": [str(ex.root / "zero")]}), 403, "outside routing.explain_roots")


def test_a_fifo_is_never_opened(ex: Explainer) -> None:
    """Opening a FIFO for reading blocks until a writer comes: it is never opened, given
    by name (422) or met in a folder (passed over, the rest explained)."""
    os.mkfifo(ex.root / "pipe")
    shutil.copy(MR_SMALL, ex.root / "mr.dcm")
    refused(ex.post({"paths": [str(ex.root / "pipe")]}), 422, "paths[0]", "not a regular file")
    r = ex.post({"paths": [str(ex.root)]})
    assert r.status_code == 200, r.text
    assert r.json()["skipped"] == [f"{ex.root / 'pipe'}: not a regular file"]
    assert len(r.json()["studies"]) == 1


def test_empty_and_relative_paths_are_refused(ex: Explainer) -> None:
    """``""`` listed the node's working folder file by file."""
    refused(ex.post({"paths": [""]}), 422, "paths[0] is empty")
    refused(ex.post({"paths": [str(MR_SMALL), "  "]}), 422, "paths[1] is empty")
    for rel in (".", "cds", "../shared/dicom"):
        refused(ex.post({"paths": [rel]}), 422, "paths[0] is relative")
    refused(ex.post({"paths": [str(ex.root) + "/\x00x"]}), 422, "NUL")


def test_over_long_paths_and_junk_are_422_not_500(ex: Explainer) -> None:
    """A 5,000-character path gave a plain-text 500."""
    text = refused(ex.post({"paths": ["/" + "a" * 4999]}), 422, "4096")
    assert "aaaa" not in text  # the value is not quoted back
    # under the 4096 but a 300-character name (the file system's limit is 255)
    refused(ex.post({"paths": [str(ex.root / ("a" * 300))]}), 422, "paths[0] cannot be read")
    for body in (
        {"paths": [1, 2]},
        {"paths": "/etc"},
        {"paths": [{"a": 1}]},
        {"paths": [str(MR_SMALL)] * 65},
        {"study_key": "../../etc"},
        {"study_key": 7},
        {"paths": [str(MR_SMALL)], "calling_ae_title": "X" * 17},
        [1, 2],
        "junk",
    ):
        text = refused(ex.post(body), 422)
        for quoted in ("etc", "XXX", "MR_small"):  # no value is quoted back
            assert quoted not in text
    refused(ex.post({}), 422, "give study_key or paths")


def test_paths_outside_the_roots_are_refused(ex: Explainer, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(MR_SMALL, outside / "mr.dcm")
    for path in (outside, outside / "mr.dcm", tmp_path, "/", str(ex.root) + "/../outside"):
        refused(ex.post({"paths": [str(path)]}), 403, "outside routing.explain_roots")
    # the second path is refused even though the first is good
    refused(ex.post({"paths": [str(MR_SMALL), str(outside)]}), 403, "paths[1]")


def test_links_escaping_a_root_are_not_followed(ex: Explainer, tmp_path: Path) -> None:
    """A link inside a root that leads out of it: refused by name (403), passed over in a
    walk, where the DICOM file it leads to is not read."""
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(MR_SMALL, outside / "mr.dcm")
    (ex.root / "out").symlink_to(outside)
    (ex.root / "mr.dcm").symlink_to(outside / "mr.dcm")
    for path in (ex.root / "out", ex.root / "out" / "mr.dcm", ex.root / "mr.dcm"):
        refused(ex.post({"paths": [str(path)]}), 403, "outside routing.explain_roots")
    r = ex.post({"paths": [str(ex.root)]})
    assert r.status_code == 200, r.text
    assert r.json() == {
        "studies": [],
        "skipped": [
            f"{ex.root / name}: link leads outside routing.explain_roots (not followed)"
            for name in ("mr.dcm", "out")
        ],
    }
    # a link that stays inside the roots is followed
    (ex.root / "mr.dcm").unlink()
    (ex.root / "mr.dcm").symlink_to(MR_SMALL)
    assert len(ex.post({"paths": [str(ex.root)]}).json()["studies"]) == 1


def test_more_files_than_the_bound_is_413_naming_it(tmp_path: Path) -> None:
    with explainer(tmp_path, max_files=50) as ex:
        big = ex.root / "big"
        big.mkdir()
        for i in range(51):
            (big / f"{i}.dcm").write_bytes(b"")
        refused(
            ex.post({"paths": [str(big)]}),
            413,
            "routing.explain_limits.max_files (50)",
            "after 0 file(s) read",
            "name fewer or smaller folders",
        )
        (big / "50.dcm").unlink()  # at the bound: answered
        assert ex.post({"paths": [str(big)]}).status_code == 200


def test_more_bytes_than_the_bound_is_413_naming_it(tmp_path: Path) -> None:
    with explainer(tmp_path, max_total_mb=1) as ex:
        refused(ex.post({"paths": [str(HEAD_CT)]}), 413, "routing.explain_limits.max_total_mb (1)")


def test_unknown_study_key_is_404(ex: Explainer) -> None:
    text = refused(ex.post({"study_key": "0123456789abcdef"}), 404, "no spooled study")
    assert "0123456789abcdef" not in text


def test_without_roots_paths_are_refused_and_study_key_works(tmp_path: Path) -> None:
    with explainer(tmp_path, roots=False) as ex:
        refused(
            ex.post({"paths": [str(MR_SMALL)]}),
            403,
            "no folder is open to explain",
            "routing.explain_roots",
        )
        sent = send_study(ex.node, n=2)
        r = ex.post({"study_key": sent.key})
        assert r.status_code == 200, r.text
        (plan,) = r.json()["studies"]
        assert plan["study_uid"] == sent.uid
        assert plan["rules"][0]["matched"] is True


def test_good_explain_inside_a_root(ex: Explainer) -> None:
    r = ex.post({"paths": [str(HEAD_CT), str(MR_SMALL)], "calling_ae_title": "CT1"})
    assert r.status_code == 200, r.text
    plans = r.json()["studies"]
    assert len(plans) == 2
    ct = next(p for p in plans if p["rules"][0]["matched"])
    rule = ct["rules"][0]
    assert rule["rule"] == "head CT"
    assert [p["model"] for p in rule["plans"]] == ["cds-ref-ct-bone", "cds-ref-blob-detect"]
    assert rule["plans"][0]["destinations"] == ["pacs (ORTHANC@127.0.0.1:4242)"]
    mr = next(p for p in plans if not p["rules"][0]["matched"])
    assert mr["rules"][0]["series"][0]["reasons"] == ["Modality is 'MR', not equal to 'CT'"]
    assert r.json()["skipped"] == []
    # the same files through a copy in the other root, and a link inside the roots
    shutil.copytree(HEAD_CT, ex.root / "ct")
    (ex.root / "mr.dcm").symlink_to(MR_SMALL)
    again = ex.post({"paths": [str(ex.root)]}).json()
    assert sorted(p["study_uid"] for p in again["studies"]) == sorted(p["study_uid"] for p in plans)


def test_a_client_that_goes_away_stops_the_walk(
    tmp_path: Path, json_logs: StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The walk of a home folder went on for minutes after its client had gone. 4,000
    small DICOM files; the client gives up after 0.3 s; the walk stops and says so,
    having read only part of the tree.

    Deterministic on any machine speed: the 10th file's read waits until the walk is
    cancelled (or 10 s, when nothing cancels it, and then every file is read)."""
    total = 4000
    real_open = ReadBudget.open

    def slow_open(self: ReadBudget, f: Path) -> BinaryIO:
        if self.files_read == 9:
            self.cancel.wait(10)
        return real_open(self, f)

    monkeypatch.setattr(ReadBudget, "open", slow_open)
    with explainer(tmp_path, max_seconds=600) as ex:
        src = tmp_path / "mr.dcm"
        shutil.copy(MR_SMALL, src)
        tree = ex.root / "tree"
        for i in range(total // 100):
            (tree / f"{i:02d}").mkdir(parents=True)
            for j in range(100):
                os.link(src, tree / f"{i:02d}" / f"{j:03d}.dcm")
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{ex.base}/api/route/explain", json={"paths": [str(tree)]}, timeout=0.3)

        def stopped() -> list[dict[str, Any]]:
            lines = (json.loads(x) for x in json_logs.getvalue().splitlines())
            return [x for x in lines if x["event"] == "routing.explain_stopped"]

        wait_for(lambda: bool(stopped()), timeout=10, what="the walk to stop")
        (event,) = stopped()
        assert event["reason"] == "cancelled"
        assert event["files_read"] == 9 < total
