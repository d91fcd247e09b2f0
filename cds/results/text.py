"""Compatibility: the advisory texts now live in ``cds.i18n`` (issue 18).

Only ``cds.results.seg`` and ``cds.results.sr_groups`` still import them from here;
new code imports ``cds.i18n`` (``advisory(lang)``, ``AdvisoryTexts``, ``LANGS``, ``Lang``).

The job's summary (``job_summary``: the node's 'inferred' event, process.json) says of
each label what the SR states of it (``statement``, issue 16), in English or French.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cds.i18n import LABEL_SEPARATOR, LANGS, AdvisoryTexts, Lang, section
from cds.i18n import advisory as texts

if TYPE_CHECKING:
    from cds.inference.postprocess import Finding
    from cds.inference.runner import InferenceResult

__all__ = ["LABEL_SEPARATOR", "LANGS", "AdvisoryTexts", "Lang", "job_summary", "statement", "texts"]

#: the threshold of a ``normal`` class that names none (``sr_groups.DEFAULT_THRESHOLD``)
NORMAL_THRESHOLD = 0.5


def statement(finding: Finding, kind: str) -> bool | None:
    """What the SR states of ``finding`` of a ``kind`` model (``cds.results.sr_groups``):
    True Present, False Absent, None nothing. A ``normal`` class is Present when its score
    reaches its threshold (never a finding); an informational classification score
    (threshold null) states nothing; any other label is Present when reported."""
    label = finding.label
    if label.normal:
        threshold = label.threshold if label.threshold is not None else NORMAL_THRESHOLD
        return finding.score >= threshold
    if label.threshold is None and kind == "classification":
        return None
    return finding.present


def job_summary(result: InferenceResult, lang: str = "en") -> str:
    """The run (model, version, SHA-256, provider, images, time), then each label as the
    SR states it, in ``lang``: 'Adequate contrast present (0.96; normal state, not a
    finding)', 'Nodule absent (0.12)', 'Pneumothorax: score 0.34, no decision'."""
    words = section(texts(lang).lang, "summary")  # the words, in cds.i18n

    def number(value: float) -> str:
        return texts(lang).number(value)

    def said(f: Finding) -> str:
        stated = statement(f, result.kind)
        name, score = f.label.display.get(lang), number(f.score)
        if stated is None:
            return words["informational"].format(name=name, score=score)
        score += words["normal"] if f.label.normal else ""
        return words["present" if stated else "absent"].format(name=name, score=score)

    rec = result.record
    run = words["run"].format(
        model=rec.model,
        version=rec.version,
        sha=rec.sha256[:12],
        provider=rec.provider,
        images=rec.images,
        seconds=number(rec.seconds),
    )
    return run + ", ".join(said(f) for f in result.findings)
