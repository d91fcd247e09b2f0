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
    ),
}


def texts(lang: str) -> AdvisoryTexts:
    """The advisory texts of ``lang`` ('en' or 'fr'); ValueError names the others."""
    try:
        return _TEXTS[lang]
    except KeyError:
        raise ValueError(f"unknown language {lang!r} (known: {', '.join(LANGS)})") from None
