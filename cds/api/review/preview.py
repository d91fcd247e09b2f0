"""The review page's picture of one finding: its source image from the spool, with
the region, box or segment the model drew on it (``render``), as a PNG.
``NoPreview`` says, in words, why there is none."""

from __future__ import annotations

from pathlib import Path

from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from cds.api.review.basis import Basis, ImageRef, Region, read_basis
from cds.api.review.render import Mask, NotRenderable, render_png, segment_frame
from cds.domain import FindingRecord
from cds.orchestrator import Node


class NoPreview(Exception):
    """Why a finding has no picture (answered as a 404 the page shows as "no preview")."""


def _target(node: Node, f: FindingRecord) -> tuple[ImageRef, Mask | None, Basis]:
    """The image to show for a finding, the segment's mask on it, and its basis."""
    objects = {r.sop_uid: r for r in node.store.list_results(f.study_key)}
    sr = objects.get(f.result_sop_uid)
    if sr is None or sr.modality != "SR":
        raise NoPreview("this finding's result is not an SR: no image region to show")
    try:
        basis = read_basis(node.settings.results_path / sr.path, f.tracking_uid)
    except (OSError, InvalidDicomError):
        raise NoPreview("the result's SR is no longer on this node") from None
    if basis is None:
        raise NoPreview("the finding's measurement group is not in its SR")
    # a segmentation's SR also outlines its key slice (for viewers that draw SR regions);
    # the mask itself says more, so the segment comes first
    if basis.segments:
        ref = basis.segments[0]
        seg = objects.get(ref.seg_sop_uid)
        try:
            if seg is None:
                raise OSError(ref.seg_sop_uid)
            found = segment_frame(dcmread(node.settings.results_path / seg.path), ref.segment)
        except (OSError, InvalidDicomError):
            raise NoPreview("the segmentation of this finding is not on this node") from None
        if found is None:
            raise NoPreview("the segment covers no image")
        return ImageRef(found[0], found[1]), found[2], basis
    if basis.regions:
        return basis.regions[0].image, None, basis
    if basis.images:
        return basis.images[0], None, basis
    raise NoPreview("this finding has no image region")


def _whole(region: Region, size: tuple[int, int]) -> bool:
    """Whether ``region`` outlines the whole image (columns, rows), to within a pixel."""
    xs = [x for x, _ in region.points]
    ys = [y for _, y in region.points]
    cols, rows = size
    return (
        bool(xs) and min(xs) <= 1 and min(ys) <= 1 and max(xs) >= cols - 1 and max(ys) >= rows - 1
    )


def preview_png(node: Node, f: FindingRecord, banner: str) -> bytes:
    """The PNG of one finding (NoPreview says why there is none)."""
    image, mask, basis = _target(node, f)
    where = node.store.find_instance(image.sop_uid)
    if where is None:
        raise NoPreview("the source image is no longer on this node (purged?)")
    try:
        source = dcmread(Path(node.spool.root) / where[1])
        size = (int(source.get("Columns", 0)), int(source.get("Rows", 0)))
        return render_png(
            source,
            image.frame,
            # an image-level result's region is the whole image (so that viewers show
            # the finding): drawing it would frame the picture and say nothing
            regions=[r for r in basis.regions if r.image == image and not _whole(r, size)],
            mask=mask,
            banner=banner,
        )
    except (OSError, InvalidDicomError):
        raise NoPreview("the source image cannot be read") from None
    except NotRenderable as exc:
        raise NoPreview(str(exc)) from None
