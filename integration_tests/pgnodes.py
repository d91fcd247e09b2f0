"""Helpers of the tests of several ``cds serve`` nodes on one PostgreSQL store (issue 21):
a throwaway cluster, a storage SCP that counts what it receives, each node's
configuration (one spool, one results folder, one routing file for all), a second node
with the first one's key, and reads of the store."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.events import Event

from integration_tests.conftest import CdsNode
from integration_tests.support import free_port
from tests.store.pgcluster import PgCluster

REPO = Path(__file__).resolve().parent.parent


@contextmanager
def throwaway_cluster() -> Iterator[PgCluster]:
    """A throwaway PostgreSQL cluster (tests/store/pgcluster.py), removed after: a test
    may stop and start it."""
    cluster = PgCluster(free_port())
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


class Sink:
    """A storage SCP that keeps the SOP Instance UID of every instance sent to it."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[str] = []
        self._lock = threading.Lock()
        ae = AE(ae_title="SINK")
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax)
        self._server = ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on)]
        )

    def _on(self, event: Event) -> int:
        with self._lock:
            self.received.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    def uids(self) -> list[str]:
        with self._lock:
            return list(self.received)

    def close(self) -> None:
        self._server.shutdown()


def node_config(
    tmp_path: Path, url: str, sink: Sink, name: str, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A node named ``name`` on the store ``url``: the spool, results folder, routing
    file (bone model -> SEG + SR -> ``sink``) and models of ``tmp_path`` shared."""
    routing = tmp_path / "routing.yaml"
    if not routing.exists():
        routing.write_text(
            yaml.safe_dump({
                "destinations": {"sink": {"ae_title": "SINK", "host": "127.0.0.1",
                                          "port": sink.port}},
                "pipelines": {"bone": {"model": "cds-ref-ct-bone", "results": ["SEG", "SR"],
                                       "destinations": ["sink"]}},
                "rules": [{"name": "CT", "match": [{"attribute": "Modality", "equals": "CT"}],
                           "pipelines": ["bone"]}],
            }),
            encoding="utf-8",
        )  # fmt: skip
        (tmp_path / "models").mkdir()
        (tmp_path / "models" / "cds-ref-ct-bone").symlink_to(REPO / "models" / "cds-ref-ct-bone")
    config: dict[str, Any] = {
        "node": {"name": name},
        "store": {"backend": "postgresql", "url": url},
        "spool": {"path": str(tmp_path / "shared" / "spool")},  # one spool for every node
        "results": {"path": str(tmp_path / "shared" / "results")},
        "assembly": {"quiet_time_s": 2.0, "quiet_time_by_calling_ae": {}},
        "inference": {"model_dirs": [str(tmp_path / "models")], "providers": "cpu",
                      "warm_up": False},
        "routing": {"file": str(routing)},
        "delivery": {"poll_interval_s": 0.1, "backoff_initial_s": 0.5},
    }  # fmt: skip
    for section, values in (extra or {}).items():  # one level: {"node": {"lease_s": 3}}
        config[section] = {**config.get(section, {}), **values}
    return config


def second_node(
    node_factory: Callable[..., CdsNode], first: CdsNode, config: dict[str, Any], name: str
) -> CdsNode:
    """Another node with ``first``'s ``node.key`` (one study key for both), started."""
    node = node_factory(config, name=name, start=False)
    node.home.mkdir(parents=True)
    shutil.copy2(first.home / "node.key", node.home / "node.key")
    return node.start()


def rows(url: str, sql: str, args: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    """The rows of ``sql`` read from the store (a connection of the test's own)."""
    import psycopg

    with psycopg.connect(url) as db:
        return [tuple(r) for r in db.execute(sql, args).fetchall()]


def study_done(node: CdsNode, study_uid: str) -> Callable[[], dict[str, Any] | None]:
    """For ``wait_for``: the study once it is done or failed (through ``node``'s API)."""

    def check() -> dict[str, Any] | None:
        s = node.study_by_uid(study_uid)
        return s if s is not None and s["state"] in ("done", "failed") else None

    return check


def all_delivered(url: str) -> Callable[[], list[tuple[Any, ...]] | None]:
    """For ``wait_for``: (sop_uid, destination, state) of every delivery once all are
    delivered."""

    def check() -> list[tuple[Any, ...]] | None:
        found = rows(url, "SELECT sop_uid, destination, state FROM deliveries")
        return found if found and all(r[2] == "delivered" for r in found) else None

    return check
