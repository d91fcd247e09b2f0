"""Shared by the admin tests: a node with the admin routes, a study sent over DICOM."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from cds.api.app import create_app
from cds.config import Settings
from cds.domain import StudyState
from cds.orchestrator import Node

from ..ingest.test_scp import connect, ct


def admin_app(settings: Settings, node: Node | None = None) -> FastAPI:
    """create_app: it includes the admin routes (including them again here doubled every
    route and its OpenAPI operation id)."""
    return create_app(settings, node)


@dataclass
class SentStudy:
    key: str
    uid: str
    datasets: list[Dataset]


def send_study(node: Node, n: int = 3, replace_first: bool = True) -> SentStudy:
    """n CT instances of one new study; the first sent again with other pixels
    (newest wins: one superseded version kept)."""
    study, series = generate_uid(), generate_uid()
    datasets = [ct(study=study, SeriesInstanceUID=series, InstanceNumber=i) for i in range(n)]
    a = connect(node)
    assert a.is_established
    for ds in datasets:
        assert a.send_c_store(ds).Status == 0
    if replace_first:
        datasets[0].PixelData = b"\x02\x00" * 16
        assert a.send_c_store(datasets[0]).Status == 0
    a.release()
    return SentStudy(node.receiver.key(study), study, datasets)


def wait_for(check: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        time.sleep(0.02)


def wait_state(node: Node, key: str, state: StudyState) -> None:
    def reached() -> bool:
        d = node.store.get_study(key)
        return d is not None and d.summary.state is state

    wait_for(reached, what=f"study {key} {state.value}")


def spooled(node: Node, key: str) -> list[str]:
    return node.spool.study_files(key)


@contextmanager
def serving(settings: Settings) -> Iterator[Node]:
    """The node with its HTTP API on settings.http.port, as `cds serve` runs it."""
    app = admin_app(settings)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=settings.http.port,
            log_config=None,
            access_log=False,
            proxy_headers=False,  # as cds serve: X-Forwarded-For is cds's to read
        )
    )
    thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, what="the HTTP server")
        yield app.state.node
    finally:
        server.should_exit = True
        thread.join(timeout=10)
