"""issue 17 (item 3): the groups of an SR a viewer saved after the radiologist edited our
findings are matched to our findings: by tracking UID when the viewer kept it, else by
image, label or code and outline (OHIF 3.13 gives every group a new tracking UID); the
verdict is accept (unchanged), correct (new code or outline, in source pixels) or reject
(left out)."""

from __future__ import annotations

from dataclasses import replace

from cds.domain import FeedbackAction, ImageBox
from cds.feedback.edited import Group, derived_from, judge, match

IMG, OTHER = "1.2.3.1", "1.2.3.2"
CODE = ("99CDS", "CDS-0003")


def box(x0: float, y0: float, x1: float, y1: float, sop: str = IMG) -> ImageBox:
    return ImageBox(sop, 1, x0, y0, x1, y1)


def ours() -> list[Group]:
    """Five boxes as cds writes them: two share a label (same score), one is elsewhere."""
    return [
        Group("2.25.1", CODE, "Focal hyperdensity", "AI · Focal hyperdensity · 1.00",
              box(55.53, 90.40, 63.00, 97.87)),
        Group("2.25.2", CODE, "Focal hyperdensity", "AI · Focal hyperdensity · 1.00",
              box(5.73, 56.53, 13.20, 64.00)),
        Group("2.25.3", CODE, "Focal hyperdensity", "AI · Focal hyperdensity · 0.99",
              box(31.63, 32.62, 39.10, 40.09)),
        Group("2.25.4", CODE, "Focal hyperdensity", "AI · Focal hyperdensity · 0.98",
              box(70.97, 21.67, 78.44, 29.14)),
        Group("2.25.5", CODE, "Focal hyperdensity", "AI · Focal hyperdensity · 0.97",
              box(19.18, 69.98, 26.65, 77.45, sop=OTHER)),
    ]  # fmt: skip


def ohif_copy(groups: list[Group]) -> list[Group]:
    """What OHIF writes for kept groups: a new tracking UID each, the rest as it was (to
    float32 precision)."""
    return [
        replace(
            g,
            tracking_uid=f"2.25.9{i}",
            box=box(g.box.x0 + 1e-5, g.box.y0, g.box.x1, g.box.y1 - 1e-5, g.box.sop_uid)
            if g.box
            else None,
        )
        for i, g in enumerate(groups)
    ]


def verdicts(ours_: list[Group], theirs: list[Group]) -> dict[str, tuple[FeedbackAction, str]]:
    return {v.tracking_uid: (v.action, v.why) for v in judge(ours_, theirs, "edited SR 1.2")}


def test_resized_box_is_a_correction_with_its_new_outline_and_a_deleted_box_a_rejection() -> None:
    mine = ours()
    theirs = ohif_copy([mine[0], mine[2], mine[3], mine[4]])  # the second box deleted
    resized = box(55.53, 90.40, 65.99, 99.80)  # bottom-right corner dragged by (+3, +2)
    theirs[0] = replace(theirs[0], box=resized)
    said = {v.tracking_uid: v for v in judge(mine, theirs, "edited SR 1.2")}
    assert said["2.25.1"].action is FeedbackAction.CORRECT
    assert said["2.25.1"].box == resized
    assert said["2.25.1"].code is None  # the finding itself was kept
    assert "outline changed" in said["2.25.1"].why
    assert "matched by image and label" in said["2.25.1"].why
    assert said["2.25.2"].action is FeedbackAction.REJECT
    assert {said[u].action for u in ("2.25.3", "2.25.4", "2.25.5")} == {FeedbackAction.ACCEPT}
    assert all(said[u].box is None for u in ("2.25.3", "2.25.4", "2.25.5"))


def test_equal_labels_are_told_apart_by_their_outlines() -> None:
    """The two 1.00 boxes: the first deleted, the second moved by a few pixels; the
    moved one is matched to the second, not to the deleted first."""
    mine = ours()
    theirs = ohif_copy(mine[1:])
    theirs[0] = replace(theirs[0], box=box(8.0, 58.0, 15.5, 65.5))
    said = verdicts(mine, theirs)
    assert said["2.25.1"][0] is FeedbackAction.REJECT
    assert said["2.25.2"][0] is FeedbackAction.CORRECT


def test_kept_tracking_uids_match_first_and_a_new_code_is_a_correction() -> None:
    mine = ours()
    theirs = list(mine)  # a viewer that keeps our UIDs; the order does not matter
    theirs.reverse()
    theirs[0] = replace(theirs[0], code=("SCT", "82650004"), meaning="Calcification", label="")
    said = {v.tracking_uid: v for v in judge(mine, theirs, "edited SR 1.2")}
    assert said["2.25.5"].action is FeedbackAction.CORRECT
    assert said["2.25.5"].code == ("SCT", "82650004")
    assert said["2.25.5"].meaning == "Calcification"
    assert said["2.25.5"].box is None
    assert "matched by tracking UID" in said["2.25.5"].why
    assert {said[u].action for u in ("2.25.1", "2.25.2", "2.25.3", "2.25.4")} == {
        FeedbackAction.ACCEPT
    }


def test_the_radiologists_own_measurements_are_not_ours() -> None:
    """A box the radiologist drew (no label, no code), or one on another image, matches
    nothing: our finding there is left out."""
    mine = ours()[:1]
    drawn = Group("2.25.77", None, "", "", box(55.53, 90.40, 63.00, 97.87))
    elsewhere = replace(ohif_copy(mine)[0], box=box(55.53, 90.40, 63.00, 97.87, sop=OTHER))
    assert match(mine, [drawn, elsewhere]) == {}
    assert verdicts(mine, [drawn, elsewhere])["2.25.1"][0] is FeedbackAction.REJECT


def test_a_relabelled_box_is_still_ours_by_its_finding_code() -> None:
    mine = ours()[:1]
    theirs = [replace(ohif_copy(mine)[0], label="confirmed")]
    ((uid, (_, how)),) = match(mine, theirs).items()
    assert (uid, how) == ("2.25.1", "image and finding code")
    assert verdicts(mine, theirs)["2.25.1"][0] is FeedbackAction.ACCEPT


def test_a_copy_is_recognised_without_a_reference_by_our_label_on_our_image() -> None:
    mine = ours()
    assert derived_from(mine, ohif_copy(mine[2:3]))
    assert derived_from(mine, [replace(mine[0], label="", code=None, box=None)])  # our UID
    assert not derived_from(mine, [Group("2.25.77", None, "", "", box(1, 1, 5, 5))])
    moved_image = replace(ohif_copy(mine[:1])[0], box=box(55.53, 90.40, 63.0, 97.87, sop=OTHER))
    assert not derived_from(mine, [moved_image])
