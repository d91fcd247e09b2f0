"""The certification kit (issue 24): what a vendor or a PACS admin runs to prove an
integration, and the documents generated from the code.

``conformance`` (and ``conformance_md``) write the DICOM conformance statement from what
the node really negotiates and emits; ``emit`` runs a package's golden input through the
offline path (``cds process``); ``model`` is ``cds certify model``: its checks, each
mapped to a requirement, and ``report`` writes them as report.json and report.html.
"""
