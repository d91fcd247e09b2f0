"""What a study's quiet time is used for: reading its series ahead (issue 19, item 2).

When a sender's association ends, the study may be complete but the node waits for its
quiet time before routing it for good. Meanwhile ``read_ahead`` routes it as it stands
(the same rules, models and declared use as ``cds.pipeline``) and hands the files of
every series a pipeline would run a model on to the executor's ``PreRead``, which reads
and decodes them in the background, then makes the model's batches of each series. The
job that follows takes them instead of reading and preprocessing again
(``cds.compute.process_series``). Routing here decides nothing and records nothing:
the study is routed again when complete, and a file not read ahead, or changed since,
is read by its job as before.
"""

from __future__ import annotations

from cds.inference.preread import Prep, SeriesPlan
from cds.pipeline import Node, study_series
from cds.routing.router import route


def files_to_read(node: Node, study_key: str) -> list[SeriesPlan]:
    """The series (each its files, in order) a pipeline would run a model on now, and
    the first such model's batches to make of it (a model of slices: a volume is sorted
    by its job). Only the first job of a series takes what was read ahead: the others
    read their files, so only its model's batches are worth making."""
    if node.routing.path is None:
        return []
    series = study_series(node, study_key)
    plan = route(
        series,
        node.routing.rules,
        disabled_models=node.routing.disabled(),
        loaded_models={m.name for m in node.models.all() if m.status == "ready"},
        declared_use=node.models.declared_use(),
    )
    first: dict[str, str] = {}  # series UID -> the model of its first pipeline
    for verdict, p in plan.runs:
        if p.status == "run":
            for uid in verdict.selected:
                if uid not in p.outside:
                    first.setdefault(uid, p.model)
    return [
        SeriesPlan(list(s.files), _preps(node, first[s.series_uid]))
        for s in series
        if s.series_uid in first
    ]


def _preps(node: Node, model_name: str) -> list[Prep]:
    model = node.models.get(model_name)
    manifest = model.manifest if model is not None else None
    if manifest is None or manifest.input.kind == "volume":
        return []
    return [Prep(manifest.digest(), manifest.input)]


def read_ahead(node: Node, study_keys: list[str]) -> None:
    """Read the studies' series ahead, when the executor keeps them (thread kind)."""
    preread = node.compute.preread
    if preread is None or preread.budget_bytes <= 0:
        return
    for key in study_keys:
        preread.submit(key, lambda key=key: files_to_read(node, key))  # type: ignore[misc]
