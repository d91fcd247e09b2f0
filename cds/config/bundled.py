"""What ships inside the package (``pyproject.toml`` package data): the reference model
packages, the default ``inference.model_dirs``, and the example configurations.

``cds/_bundled`` holds links to the repository's ``models/`` and ``deploy/`` folders; a
wheel holds copies. Either way the path is the package's own, so a node started from
any folder finds them.
"""

from __future__ import annotations

from pathlib import Path

BUNDLED = Path(__file__).resolve().parent.parent / "_bundled"
#: the reference model packages (cds-ref-*): not the fetched vendor model
BUNDLED_MODELS = BUNDLED / "models"
#: cds.example.yaml and routing.example.yaml
BUNDLED_CONFIG = BUNDLED / "config"


def bundled_model_dirs() -> list[Path]:
    """The default ``inference.model_dirs``: the bundled reference models."""
    return [BUNDLED_MODELS]
