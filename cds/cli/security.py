"""cds token: API tokens for the HTTP API and pages (issue 7).

``cds token new --name dr.martin --role radiologist`` prints a fresh random token
once, for the person it is for, and the ``http.auth.tokens`` entry to paste into
the configuration: only the token's SHA-256 is kept there, so the file holds no
secret. A lost token is replaced, not recovered.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from enum import StrEnum
from typing import Annotated

import typer

TOKEN_BYTES = 32  # 256 bits of randomness, 43 URL-safe characters
_NAME_RE = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")  # as ApiToken.name accepts

token_app = typer.Typer(help="HTTP API tokens (http.auth.tokens).", no_args_is_help=True)


class Role(StrEnum):
    admin = "admin"
    radiologist = "radiologist"
    observer = "observer"


def new_token() -> tuple[str, str]:
    """(the token, its hex SHA-256)."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    return token, hashlib.sha256(token.encode()).hexdigest()


@token_app.command("new")
def token_new(
    name: Annotated[str, typer.Option("--name", help="who the token is for (login name)")],
    role: Annotated[Role, typer.Option("--role", help="admin, radiologist or observer")],
) -> None:
    """Make a token: print it once, and the line for http.auth.tokens."""
    if not _NAME_RE.match(name):
        typer.echo("--name: 1..64 letters, digits, '.', '_', '@' or '-'", err=True)
        raise typer.Exit(2)
    token, digest = new_token()
    typer.echo(f"token for {name} ({role.value}); give it to them, it is not shown again:")
    typer.echo(f"  {token}")
    typer.echo("add to http.auth.tokens in the configuration (it holds only the SHA-256):")
    typer.echo(f"  - {{name: {name}, role: {role.value}, token_sha256: {digest}}}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""
    app.add_typer(token_app, name="token")
