"""The advisory texts every result object carries, in French and English.

Both languages are first-class: builders take every text meant for people
from here, so nothing is hard-coded in one language elsewhere. Lengths fit
the DICOM value representations they go into (ContentLabel is a CS of at most
16 upper-case characters; the prefix leaves room in a 64-character LO).

Objects are UTF-8 (ISO_IR 192): French keeps its accents. Punctuation stays
ASCII where ASCII says the same ('-', not an em dash): DCMTK's checkers
(dcmpschk) read text values byte by byte as Latin-1, and the UTF-8 em dash
(E2 80 94) holds bytes they take for C1 control characters; lower-case accented
letters (é, à, è: C3 A0..BF) pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Lang = Literal["en", "fr"]
LANGS: tuple[Lang, ...] = ("en", "fr")
#: between the parts of a finding's label (U+00B7 MIDDLE DOT: UTF-8 C2 B7, no C1 byte)
LABEL_SEPARATOR = " \u00b7 "


@dataclass(frozen=True, slots=True)
class AdvisoryTexts:
    lang: Lang
    #: start of SeriesDescription (LO, 64 characters in all)
    series_prefix: str
    #: what a person must read first (ContentDescription, SR titles, overlays)
    banner: str
    #: ContentLabel (CS: A-Z, 0-9, space, underscore; at most 16 characters)
    content_label: str
    #: names the producing model: format with name, version, sha256
    produced_by: str
    #: SeriesDescription of a rejection note after the prefix: format with name, version
    superseded_series: str
    #: Key Object Description of a rejection note: format with name, version, sha256
    superseded: str
    #: the advisory word that starts every finding's label
    ai: str
    #: after the score of a finding its model did not report (score under its threshold)
    below_threshold: str
    #: what an SR outline means when it is the whole image (image-level results)
    region_image: str
    #: what an SR outline means when it bounds a mask on its largest image
    region_mask: str
    #: added to ``region_mask`` when the mask is a segment of a SEG: format with segment
    region_segment: str

    def number(self, value: float) -> str:
        """``value`` with two decimals, in the language's notation (French: decimal comma)."""
        text = f"{value:.2f}"
        return text.replace(".", ",") if self.lang == "fr" else text

    def finding_label(self, name: str, score: float, *, below_threshold: bool = False) -> str:
        """What a viewer shows beside a finding: 'AI · Focal hyperdensity · 0.93'.

        The advisory word, the finding's display name and its score (the value, for a
        measurement model), and ``below_threshold``'s words when the model did not
        report the finding.
        """
        parts = [self.ai, name, self.number(score)]
        if below_threshold:
            parts.append(self.below_threshold)
        return LABEL_SEPARATOR.join(parts)


_TEXTS: dict[str, AdvisoryTexts] = {
    "en": AdvisoryTexts(
        lang="en",
        series_prefix="AI ADVISORY - ",
        banner="AI - advisory, to be reviewed by a radiologist",
        content_label="AI_ADVISORY",
        produced_by="Produced by model {name} {version} (SHA-256 {sha256})",
        superseded_series="withdrawn, superseded by {name} {version}",
        superseded=(
            "These AI results are withdrawn: they were superseded by a newer run of "
            "model {name} version {version} (SHA-256 {sha256}). Do not use them."
        ),
        ai="AI",
        below_threshold="below threshold",
        region_image=(
            "The box is the whole image: this result is about the image as a whole, "
            "not about a place in it."
        ),
        region_mask=(
            "The box bounds the finding on the image where its area is largest; "
            "the finding may extend to other images."
        ),
        region_segment=" The finding itself is segment {segment} of the SEG.",
    ),
    "fr": AdvisoryTexts(
        lang="fr",
        series_prefix="IA INDICATIF - ",
        banner="IA - indicatif, à faire valider par un radiologue",
        content_label="IA_INDICATIF",
        produced_by="Produit par le modèle {name} {version} (SHA-256 {sha256})",
        superseded_series="retiré, remplacé par {name} {version}",
        superseded=(
            "Ces résultats d'IA sont retirés : ils ont été remplacés par une nouvelle "
            "exécution du modèle {name} version {version} (SHA-256 {sha256}). "
            "Ne plus les utiliser."
        ),
        ai="IA",
        below_threshold="sous le seuil",
        region_image=(
            "Le cadre est l'image entière : ce résultat porte sur l'image dans son "
            "ensemble, pas sur un endroit de l'image."
        ),
        region_mask=(
            "Le cadre entoure le résultat sur l'image où sa surface est la plus grande ; "
            "le résultat peut s'étendre à d'autres images."
        ),
        region_segment=" Le résultat lui-même est le segment {segment} du SEG.",
    ),
}


def texts(lang: str) -> AdvisoryTexts:
    """The advisory texts of ``lang`` ('en' or 'fr'); ValueError names the others."""
    try:
        return _TEXTS[lang]
    except KeyError:
        raise ValueError(f"unknown language {lang!r} (known: {', '.join(LANGS)})") from None
