"""The advisory texts every result object carries, as typed fields (``advisory(lang)``).

Builders (SR, SEG, GSPS, SC, KOS) and the FHIR notification take every text meant for
people from here, so nothing is hard-coded in one language elsewhere. Lengths fit the
DICOM value representations they go into (ContentLabel is a CS of at most 16 upper-case
characters; the prefix leaves room in a 64-character LO).

Objects are UTF-8 (ISO_IR 192): French keeps its accents. Punctuation stays ASCII where
ASCII says the same ('-', not an em dash): DCMTK's checkers (dcmpschk) read text values
byte by byte as Latin-1, and the UTF-8 em dash (E2 80 94) holds bytes they take for C1
control characters; lower-case accented letters (é, à, è: C3 A0..BF) pass.
"""

from __future__ import annotations

from dataclasses import dataclass

from cds.i18n.catalog import LANGS, Lang, check_lang, section

#: between the parts of a finding's label (U+00B7 MIDDLE DOT: UTF-8 C2 B7, no C1 byte)
LABEL_SEPARATOR = " \u00b7 "


@dataclass(frozen=True, slots=True)
class AdvisoryTexts:
    """The ``advisory`` part of the tables in one language, one field per text."""

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


_ADVISORY: dict[str, AdvisoryTexts] = {
    lang: AdvisoryTexts(lang, **section(lang, "advisory")) for lang in LANGS
}


def advisory(lang: str) -> AdvisoryTexts:
    """The advisory texts of ``lang`` ('en' or 'fr'); ValueError names the others."""
    return _ADVISORY[check_lang(lang)]
