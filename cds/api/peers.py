"""Who is at the other end of an HTTP request: the peer, or behind a trusted reverse
proxy, the client it names in ``X-Forwarded-For`` (issue 14).

Only ``http.trusted_proxies`` are believed: a header sent by anyone else is ignored,
since any client can write one. Each proxy appends the address it was connected
from, so the chain is read from the right, past the trusted proxies; the first address
that is not one is the client (what is left of it was written by the client, and may
be made up). ``cds serve`` runs uvicorn with its own proxy-header handling off, so
that this is the one place that decides.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _address(text: str) -> Address | None:
    try:
        found = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(found, ipaddress.IPv6Address) and found.ipv4_mapped is not None:
        return found.ipv4_mapped  # a dual-stack socket's view of an IPv4 peer
    return found


def _trusted(address: Address, proxies: Sequence[Network]) -> bool:
    return any(address in net for net in proxies)


def client_of(peer: str, forwarded_for: Sequence[str], proxies: Sequence[Network]) -> str:
    """The client's address, from the peer and the ``X-Forwarded-For`` headers (in order).

    A chain that holds something other than an address stops there: the last hop
    known for sure (a trusted proxy) is answered, not text a client made up.
    """
    hop = _address(peer)
    if hop is None or not proxies or not _trusted(hop, proxies):
        return peer
    chain = [part for header in forwarded_for for part in header.split(",") if part.strip()]
    for entry in reversed(chain):
        found = _address(entry)
        if found is None:
            break
        hop = found
        if not _trusted(hop, proxies):
            break
    return str(hop)
