"""Inference: model packages (manifest, registry, validation) and the onnxruntime runtime."""
