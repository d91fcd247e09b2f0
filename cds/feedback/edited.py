"""Which measurement group of an edited SR is which of our findings, and the verdict.

A radiologist edits our findings in a viewer and saves: the viewer stores a new
SR (TID 1500) with one measurement group per measurement it kept. What OHIF 3.13
writes when it saves hydrated measurements (checked: docs/feedback-from-viewers.md):

- a *new* Tracking Unique Identifier for every group (ours are lost), the same
  tracking identifier (``Cornerstone3DTools@^0.1.0:RectangleROI``);
- our finding code (DCM 121071) and our label as the group's first Comment
  (DCM 121106: 'AI · Focal hyperdensity · 0.93');
- the rectangle as a SCOORD inside its own Area NUM, on the same source image: a
  box left alone keeps our coordinates (to float32 precision), a moved or resized
  one has the new ones; a deleted box has no group;
- Predecessor Documents naming our SR when it is saved into our SR's series
  (OHIF's default), nothing of ours at all when saved as a new series.

So a group is matched to one of our findings by its tracking UID when the viewer
kept it, else by what the viewer keeps: the same image, the same label or
finding code, and the nearest outline (see ``match``). A matched finding whose
code and outline are unchanged is accepted; a changed code or outline corrects
it (with the new code and box); a finding with no group is rejected. Groups
that match none of ours (the radiologist's own measurements) say nothing of ours.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from pydicom.dataset import Dataset

from cds.domain import FeedbackAction, ImageBox

_TRACKING_UID = ("DCM", "112040")
_MEASUREMENT_GROUP = ("DCM", "125007")
_FINDING = ("DCM", "121071")
_COMMENT = ("DCM", "121106")
#: an outline is unchanged when every edge is within this of ours (source pixels): a
#: float32 round trip through the viewer's world coordinates moves it by ~1e-5
SAME_OUTLINE_PX = 0.5


@dataclass(frozen=True, slots=True)
class Group:
    """One measurement group of an SR, as far as matching needs it."""

    tracking_uid: str  # "" when the group has none
    code: tuple[str, str] | None  # the finding (scheme, value)
    meaning: str  # the finding's code meaning
    label: str  # the group's first Comment: what a viewer shows as its label
    box: ImageBox | None  # bounding box of the group's first image SCOORD


@dataclass(frozen=True, slots=True)
class Verdict:
    """What an edited SR says of one of our findings."""

    tracking_uid: str  # ours
    action: FeedbackAction
    why: str
    code: tuple[str, str] | None = None  # the corrected finding code, when changed
    meaning: str = ""
    box: ImageBox | None = None  # the corrected outline, when changed


def _code(item: Dataset, key: str) -> tuple[str, str] | None:
    seq = item.get(key)
    if not seq:
        return None
    return str(seq[0].get("CodingSchemeDesignator", "")), str(seq[0].get("CodeValue", ""))


def _walk(seq: Sequence[Dataset]) -> Iterator[Dataset]:
    for item in seq:
        yield item
        yield from _walk(item.get("ContentSequence", []))


def referenced_frame(ref: Dataset) -> int:
    """The frame a reference item (ReferencedSOPSequence, ...) points at: the first of its
    Referenced Frame Numbers, 1 when it names none (a single-frame image)."""
    frames = ref.get("ReferencedFrameNumber")
    if frames is None or frames == "":
        return 1
    first = frames[0] if isinstance(frames, Sequence) and not isinstance(frames, str) else frames
    return max(1, int(first))


def _box(group: Dataset) -> ImageBox | None:
    """The bounding box of the group's first 2D SCOORD selected from an image."""
    for item in _walk(group.get("ContentSequence", [])):
        if item.get("ValueType") != "SCOORD":
            continue
        data = [float(v) for v in item.get("GraphicData", [])]
        if len(data) < 2:
            continue
        for child in item.get("ContentSequence", []):
            for ref in child.get("ReferencedSOPSequence", []):
                xs, ys = data[0::2], data[1::2]
                return ImageBox(
                    str(ref.ReferencedSOPInstanceUID),
                    referenced_frame(ref),
                    min(xs),
                    min(ys),
                    max(xs),
                    max(ys),
                )
    return None


def read_groups(sr: Dataset) -> list[Group]:
    """The measurement groups of ``sr``, in document order."""
    found = []
    for item in _walk(sr.get("ContentSequence", [])):
        children = list(item.get("ContentSequence", []))
        uid = next(
            (
                str(c.UID)
                for c in children
                if c.get("ValueType") == "UIDREF"
                and _code(c, "ConceptNameCodeSequence") == _TRACKING_UID
            ),
            None,
        )
        if uid is None and not (
            item.get("ValueType") == "CONTAINER"
            and _code(item, "ConceptNameCodeSequence") == _MEASUREMENT_GROUP
        ):
            continue
        finding = next(
            (
                c
                for c in children
                if c.get("ValueType") == "CODE" and _code(c, "ConceptNameCodeSequence") == _FINDING
            ),
            None,
        )
        label = next(
            (
                str(c.get("TextValue", ""))
                for c in children
                if c.get("ValueType") == "TEXT" and _code(c, "ConceptNameCodeSequence") == _COMMENT
            ),
            "",
        )
        found.append(
            Group(
                tracking_uid=uid or "",
                code=_code(finding, "ConceptCodeSequence") if finding is not None else None,
                meaning=str(finding.ConceptCodeSequence[0].get("CodeMeaning", ""))
                if finding is not None and finding.get("ConceptCodeSequence")
                else "",
                label=label,
                box=_box(item),
            )
        )
    return found


def same_outline(a: ImageBox, b: ImageBox) -> bool:
    return (a.sop_uid, a.frame) == (b.sop_uid, b.frame) and all(
        abs(p - q) <= SAME_OUTLINE_PX
        for p, q in ((a.x0, b.x0), (a.y0, b.y0), (a.x1, b.x1), (a.y1, b.y1))
    )


def _iou(a: ImageBox, b: ImageBox) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    inter = max(0.0, w) * max(0.0, h)
    union = (a.x1 - a.x0) * (a.y1 - a.y0) + (b.x1 - b.x0) * (b.y1 - b.y0) - inter
    return inter / union if union > 0 else 0.0


def _distance(a: ImageBox, b: ImageBox) -> float:
    return float(((a.x0 + a.x1 - b.x0 - b.x1) ** 2 + (a.y0 + a.y1 - b.y0 - b.y1) ** 2) ** 0.5 / 2)


def _same_label(a: Group, b: Group) -> bool:
    return bool(a.label) and a.label == b.label


def _candidate(ours: Group, theirs: Group) -> tuple[bool, bool, float, float] | None:
    """How well ``theirs`` fits ``ours`` (higher is better), or None when it cannot be
    ours: it must be on the same image and keep our label or our finding code."""
    if ours.box is None or theirs.box is None:
        return None
    if (ours.box.sop_uid, ours.box.frame) != (theirs.box.sop_uid, theirs.box.frame):
        return None
    same_label = _same_label(ours, theirs)
    if not same_label and (ours.code is None or theirs.code != ours.code):
        return None
    return (
        same_outline(ours.box, theirs.box),
        same_label,
        _iou(ours.box, theirs.box),
        -_distance(ours.box, theirs.box),
    )


def match(ours: Sequence[Group], theirs: Sequence[Group]) -> dict[str, tuple[Group, str]]:
    """Our tracking UID -> (the group of ``theirs`` that is that finding, how it was matched).

    First by tracking UID; the rest pair by the best fit (``_candidate``: an unchanged
    outline first, then the same label, the largest overlap, the nearest centre), each
    group and each finding at most once, ties in document order."""
    paired: dict[str, tuple[Group, str]] = {}
    by_uid = {g.tracking_uid: g for g in ours if g.tracking_uid}
    used: set[int] = set()
    for j, t in enumerate(theirs):
        if t.tracking_uid in by_uid and t.tracking_uid not in paired:
            paired[t.tracking_uid] = (t, "tracking UID")
            used.add(j)
    fits = [
        (fit, i, j)
        for i, o in enumerate(ours)
        if o.tracking_uid not in paired
        for j, t in enumerate(theirs)
        if j not in used and (fit := _candidate(o, t)) is not None
    ]
    # best fit first; a stable sort keeps equal fits in document order
    for _, i, j in sorted(fits, key=lambda f: f[0], reverse=True):
        o = ours[i]
        if o.tracking_uid in paired or j in used:
            continue
        how = "image and label" if _same_label(o, theirs[j]) else "image and finding code"
        paired[o.tracking_uid] = (theirs[j], how)
        used.add(j)
    return paired


def judge(ours: Sequence[Group], theirs: Sequence[Group], why: str) -> list[Verdict]:
    """One verdict per finding of ``ours`` (see the module's docstring)."""
    paired = match(ours, theirs)
    verdicts = []
    for o in ours:
        if o.tracking_uid not in paired:
            verdicts.append(
                Verdict(o.tracking_uid, FeedbackAction.REJECT, f"{why}: finding left out")
            )
            continue
        t, how = paired[o.tracking_uid]
        code = t.code if t.code is not None and t.code != o.code else None
        box = (
            t.box
            if o.box is not None and t.box is not None and not same_outline(o.box, t.box)
            else None
        )
        changed = [what for what, new in (("finding", code), ("outline", box)) if new is not None]
        if not changed:
            verdicts.append(
                Verdict(
                    o.tracking_uid, FeedbackAction.ACCEPT, f"{why}: finding kept (matched by {how})"
                )
            )
            continue
        verdicts.append(
            Verdict(
                o.tracking_uid,
                FeedbackAction.CORRECT,
                f"{why}: {' and '.join(changed)} changed (matched by {how})",
                code=code,
                meaning=(t.meaning or code[1])[:64] if code else "",
                box=box,
            )
        )
    return verdicts


def derived_from(ours: Sequence[Group], theirs: Sequence[Group]) -> bool:
    """Whether ``theirs`` (an SR that names none of our objects) is a copy of ours:
    one of its groups keeps one of our tracking UIDs, or our label on our image."""
    uids = {g.tracking_uid for g in ours if g.tracking_uid}
    if any(t.tracking_uid in uids for t in theirs):
        return True
    return any(
        _same_label(o, t)
        and o.box is not None
        and t.box is not None
        and (o.box.sop_uid, o.box.frame) == (t.box.sop_uid, t.box.frame)
        for o in ours
        for t in theirs
    )
