"""Feedback: what radiologists say of each finding (accept, correct, reject).

``findings.py`` indexes the findings of each result (keyed by the SR's Tracking
Unique Identifiers) when the pipeline makes it; ``service.py`` records feedback
from every way in (review page, REST API, DICOM), append-only.
"""
