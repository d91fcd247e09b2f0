"""Result objects cds emits (SEG, SR, GSPS, SC): one highdicom builder per kind.

Every object is advisory and says so, in French or English (``cds.i18n``),
and names the model, its version and the SHA-256 of its ``model.onnx``.
"""
