"""What a study's quiet time is used for: reading its series ahead (issue 19, item 2).

When a sender's association ends, the study may be complete but the node waits for its
quiet time before routing it for good. Meanwhile ``read_ahead`` routes it as it stands
(the same rules, models and declared use as ``cds.pipeline``) and hands the files of
every series a pipeline would run a model on to the executor's ``PreRead``, which reads
and decodes them in the background. The job that follows takes them instead of reading
them (``cds.compute.process_series``). Routing here decides nothing and records nothing:
the study is routed again when complete, and a file not read ahead, or changed since,
is read by its job as before.
"""

from __future__ import annotations

from pathlib import Path

from cds.pipeline import Node, study_series
from cds.routing.router import route


def files_to_read(node: Node, study_key: str) -> list[list[Path]]:
    """The series (each its files, in order) a pipeline would run a model on now."""
    if node.routing.path is None:
        return []
    series = study_series(node, study_key)
    loaded = {m.name for m in node.models.all() if m.status == "ready"}
    plan = route(
        series,
        node.routing.rules,
        disabled_models=node.routing.disabled(),
        loaded_models=loaded,
        declared_use=node.models.declared_use(),
    )
    wanted: set[str] = set()
    for verdict, p in plan.runs:
        if p.status == "run":
            wanted.update(u for u in verdict.selected if u not in p.outside)
    return [list(s.files) for s in series if s.series_uid in wanted]


def read_ahead(node: Node, study_keys: list[str]) -> None:
    """Read the studies' series ahead, when the executor keeps them (thread kind)."""
    preread = node.compute.preread
    if preread is None or preread.budget_bytes <= 0:
        return
    for key in study_keys:
        preread.submit(key, lambda key=key: files_to_read(node, key))  # type: ignore[misc]
