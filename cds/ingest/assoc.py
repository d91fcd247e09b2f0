"""Bookkeeping of one association on the receive path (``cds.ingest.scp``): what it
stored, per study, for the audit trail and the association-end hook; who the peer is;
the DIMSE status data set the C-STORE SCP answers with."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset

from cds.ingest.sources import GatedACSE, Peer


@dataclass
class StudyCounts:
    instances: int = 0
    duplicates: int = 0


@dataclass
class AssocStats:
    calling_ae: str
    peer: str
    address: str
    tls: bool = False
    started: float = field(default_factory=time.monotonic)
    stored: int = 0
    duplicates: int = 0
    failed: int = 0
    bytes: int = 0
    studies: dict[str, StudyCounts] = field(default_factory=dict)

    @property
    def study_keys(self) -> list[str]:
        return sorted(self.studies)


def peer_of(assoc: Any) -> Peer:
    acse = assoc.acse
    if isinstance(acse, GatedACSE):
        return acse.peer
    return Peer(address=str(assoc.requestor.address), port=int(assoc.requestor.port))


def called_ae_title(assoc: Any) -> str:
    """The AE title the peer called (not ours), from its A-ASSOCIATE-RQ."""
    primitive = assoc.requestor.primitive
    return str(primitive.called_ae_title).strip() if primitive is not None else ""


def status_dataset(code: int, comment: str) -> Dataset:
    ds = Dataset()
    ds.Status = code
    # Error Comment is LO: at most 64 characters
    ds.ErrorComment = comment[:64]
    return ds
