"""Privacy: de-identification of what leaves the node other than results to the PACS.

``profile`` holds the DICOM PS3.15 Annex E Basic Application Level Confidentiality
Profile as data (tag -> action); ``deid`` applies it with keyed pseudonyms and UID
remapping; ``export`` writes de-identified case exports (``cds export case``).
"""
