"""What every ``cds`` command shares: how it fails, with one meaning per exit status.

- ``REFUSED`` (1): what was asked cannot be done (no such study, nothing made, an
  operation refused in the current state, a file that cannot be read).
- ``USAGE`` (2): the command line or the configuration is wrong (a bad option, an
  invalid configuration file).
- ``PARTIAL`` (3): done in part (``cds process``: some objects asked were not made).
"""

from __future__ import annotations

import typer

REFUSED = 1
USAGE = 2
PARTIAL = 3


def fail(message: str, code: int) -> typer.Exit:
    """Print ``message`` on stderr; the Exit to raise with ``code``."""
    typer.echo(message, err=True)
    return typer.Exit(code)
