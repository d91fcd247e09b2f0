"""What the SR states of each label, and the job's summary that says it (issue 16).

``statement`` is the SR's word on a finding (``cds.results.sr_groups``): present, absent
or no decision. A ``normal`` class that reaches its threshold is present, the normal
state, never a finding; every page or report that shows a label says what it says.

``job_summary`` (the node's 'inferred' event, process.json) says of each label what the
SR states of it, in English or French. The texts themselves live in ``cds.i18n``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cds.i18n import advisory, section
from cds.results.sr_groups import DEFAULT_THRESHOLD

if TYPE_CHECKING:
    from cds.findings import Finding, InferenceResult, Label

__all__ = ["NORMAL_THRESHOLD", "job_summary", "label_statement", "said", "statement"]

#: the threshold of a ``normal`` class that names none: the SR's own
NORMAL_THRESHOLD = DEFAULT_THRESHOLD


def statement(finding: Finding, kind: str) -> bool | None:
    """What the SR states of ``finding`` of a ``kind`` model (``cds.results.sr_groups``):
    True Present, False Absent, None nothing (see ``label_statement``)."""
    return label_statement(finding.label, finding.score, present=finding.present, kind=kind)


def label_statement(label: Label, score: float, *, present: bool, kind: str) -> bool | None:
    """``statement`` of a label with ``score``, ``present`` as the model reported it: a
    ``normal`` class is Present when its score reaches its threshold (never a finding);
    an informational classification score (threshold null) states nothing; any other
    label is Present when reported. For what keeps only the label and its score (a
    finding's record on the review page)."""
    if label.normal:
        threshold = label.threshold if label.threshold is not None else NORMAL_THRESHOLD
        return score >= threshold
    if label.threshold is None and kind == "classification":
        return None
    return present


def said(stated: bool | None, *, normal: bool) -> str:
    """A statement as the command line's lines and the golden cases' notes say it, in
    English as their other words: 'present', 'absent', 'no decision', and for a
    ``normal`` class that is present 'present (the normal state, not a finding)'."""
    word = "no decision" if stated is None else "present" if stated else "absent"
    return word + (" (the normal state, not a finding)" if stated and normal else "")


def job_summary(result: InferenceResult, lang: str = "en") -> str:
    """The run (model, version, SHA-256, provider, images, time), then each label as the
    SR states it, in ``lang``: 'Adequate contrast present (0.96; normal state, not a
    finding)', 'Nodule absent (0.12)', 'Pneumothorax: score 0.34, no decision'."""
    words = section(advisory(lang).lang, "summary")  # the words, in cds.i18n

    def number(value: float) -> str:
        return advisory(lang).number(value)

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
