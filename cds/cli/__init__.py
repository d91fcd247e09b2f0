"""The ``cds`` command: one module per group of commands, wired in ``main``.

``main`` holds the top-level commands (serve, version, study, route, config) and adds
the groups: ``admin`` (studies, jobs, queue), ``deliveries``, ``model``, ``process``,
``demo``, ``observatory``, ``audit``, ``export``, ``security`` (tokens).
"""

from cds.cli.main import app, main

__all__ = ["app", "main"]
