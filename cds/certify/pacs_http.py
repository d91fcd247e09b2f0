"""The HTTP side of ``cds certify pacs``: the cds node's API, and the PACS's REST API.

``NodeApi`` reads what the running node says of itself (``/health``: its AE title and
DICOM port) and of the test study (``/api/studies``, ``/api/studies/{key}/results``:
its state, the result objects and their deliveries). ``OrthancRest`` is the PACS's
own REST API when ``--http`` names an Orthanc: its echo to a configured modality
(``/modalities/{id}/echo``) and its push of a study to one (``/modalities/{id}/store``),
so that the PACS -> cds leg is really the PACS's. Errors name the URL path and the HTTP
status, never a value of a data set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx


class HttpProblem(Exception):
    """An HTTP call that did not give what was asked (the message says which and why)."""


def _call(client: httpx.Client, method: str, path: str, **kwargs: Any) -> Any:
    try:
        r = client.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        raise HttpProblem(f"{method} {client.base_url}{path}: {type(exc).__name__}") from None
    if r.status_code >= 400:
        body = r.text[:200].replace("\n", " ")
        raise HttpProblem(f"{method} {path}: HTTP {r.status_code} {body}".rstrip())
    try:
        return r.json()
    except ValueError:
        return r.text


@dataclass(frozen=True)
class NodeInfo:
    ae_title: str
    host: str
    port: int
    tls_port: int | None
    version: str


class NodeApi:
    """The running node's HTTP API (``base``: ``http://host:port``)."""

    def __init__(self, base: str, token: str | None = None, timeout_s: float = 30) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base = base.rstrip("/")
        self.client = httpx.Client(base_url=self.base, headers=headers, timeout=timeout_s)

    def close(self) -> None:
        self.client.close()

    def info(self) -> NodeInfo:
        """The node's AE title and DICOM port, from ``/health`` (HttpProblem when the
        node does not answer, hides the details, or its DICOM listener is down)."""
        try:
            r = self.client.get("/health")
            body = r.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise HttpProblem(f"GET {self.base}/health: {type(exc).__name__}") from None
        dicom = body.get("dicom") if isinstance(body, dict) else None
        if not isinstance(dicom, dict):
            raise HttpProblem(
                f"GET {self.base}/health: no details (authentication is on: give --token-file)"
            )
        if not dicom.get("listening"):
            raise HttpProblem(f"GET {self.base}/health: the node's DICOM listener is down")
        host = httpx.URL(self.base).host or "127.0.0.1"
        return NodeInfo(
            ae_title=str(dicom["ae_title"]),
            host=host,
            port=int(dicom["port"]),
            tls_port=dicom.get("tls_port"),
            version=str(body.get("version", "?")),
        )

    def study_by_uid(self, study_uid: str) -> dict[str, Any] | None:
        for s in _call(self.client, "GET", "/api/studies", params={"limit": 1000}):
            if s.get("study_instance_uid") == study_uid:
                return dict(_call(self.client, "GET", f"/api/studies/{s['study_key']}"))
        return None

    def results(self, study_key: str) -> list[dict[str, Any]]:
        return list(_call(self.client, "GET", f"/api/studies/{study_key}/results"))


class OrthancRest:
    """An Orthanc's REST API (``base``: ``http://host:port``, the one ``--http`` names)."""

    def __init__(self, base: str, timeout_s: float = 120) -> None:
        self.base = base.rstrip("/")
        self.client = httpx.Client(base_url=self.base, timeout=timeout_s)

    def close(self) -> None:
        self.client.close()

    def is_orthanc(self) -> bool:
        try:
            body = _call(self.client, "GET", "/system")
        except HttpProblem:
            return False
        return isinstance(body, dict) and "DicomAet" in body

    def modality_of(self, ae_title: str) -> str | None:
        """The id of the configured modality whose AE title is ``ae_title``."""
        body = _call(self.client, "GET", "/modalities", params={"expand": ""})
        if isinstance(body, dict):
            for name, m in body.items():
                if isinstance(m, dict) and m.get("AET") == ae_title:
                    return str(name)
        return None

    def echo(self, modality: str) -> None:
        _call(self.client, "POST", f"/modalities/{modality}/echo", json={})

    def study_id(self, study_uid: str) -> str | None:
        found = _call(self.client, "POST", "/tools/lookup", content=study_uid)
        for item in found if isinstance(found, list) else []:
            if item.get("Type") == "Study":
                return str(item["ID"])
        return None

    def store(self, modality: str, study_id: str) -> dict[str, Any]:
        """Orthanc pushes the study to the modality (its C-STORE SCU); its job's answer."""
        body = _call(
            self.client, "POST", f"/modalities/{modality}/store", json={"Resources": [study_id]}
        )
        return dict(body) if isinstance(body, dict) else {}
