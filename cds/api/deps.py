"""Request dependencies: the running node."""

from __future__ import annotations

from typing import cast

from fastapi import Request

from cds.orchestrator import Node


def get_node(request: Request) -> Node:
    return cast(Node, request.app.state.node)
