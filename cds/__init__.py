"""cds: a self-hosted clinical decision-support DICOM node for radiology.

Every result cds produces is advisory: a suggestion for a radiologist to accept,
correct or reject.
"""

__version__ = "0.1.0"
