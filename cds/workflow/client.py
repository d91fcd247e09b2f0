"""UPS-RS requests of a Task Performer (PS3.18 section 11, Table 11.1-1):

| request | method and path |
|---|---|
| subscribe (global) | ``POST /workitems/1.2.840.10008.5.1.4.34.5/subscribers/{AE}`` |
| search | ``GET /workitems?00741000=SCHEDULED&...`` (QIDO-style matching) |
| retrieve | ``GET /workitems/{uid}`` |
| update | ``POST /workitems/{uid}?transaction={Transaction UID}`` |
| change state | ``PUT /workitems/{uid}/state`` (Procedure Step State, Transaction UID) |

Only the task manager the admin named (``workflow.ups_url``) is asked: no proxy from
the environment, no redirect followed. A refusal is a ``WorkflowError`` with the HTTP
status and reason phrase only (never the server's text, which may quote the
workitem); the token or password is read from its file for each request and only
ever put in the ``Authorization`` header.
"""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import quote

import httpx

from cds import __version__
from cds.config.workflow import WorkflowSettings
from cds.errors import CdsError
from cds.errors import describe as describe_error
from cds.workflow.dataset import GLOBAL_SUBSCRIPTION_UID, SCHEDULED, state_change

DICOM_JSON = "application/dicom+json"


class WorkflowError(CdsError):
    """A UPS-RS request the task manager refused or did not answer. ``status``: the
    HTTP status (0: no answer)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


def _authorization(settings: WorkflowSettings) -> str | None:
    """The Authorization header's value; WorkflowError names the file that cannot be read."""
    if settings.auth is None:
        return None
    try:
        return settings.auth.header()
    except OSError as exc:
        raise WorkflowError(
            f"workflow.auth: cannot read its credentials file ({exc.strerror})"
        ) from None


class UpsClient:
    """The task manager at ``settings.ups_url``."""

    def __init__(self, settings: WorkflowSettings) -> None:
        if settings.ups_url is None:
            raise ValueError("workflow.ups_url is not set")
        self.settings = settings
        self.root = settings.ups_url
        self._client = httpx.Client(
            verify=settings.tls.context(),
            timeout=settings.timeout_s,
            trust_env=False,  # no proxy or certificate bundle from the environment
            follow_redirects=False,  # nothing is sent anywhere the admin did not name
        )

    def close(self) -> None:
        self._client.close()

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: list[dict[str, Any]] | None = None,
        ok: tuple[int, ...] = (200,),
    ) -> httpx.Response:
        headers = {"Accept": DICOM_JSON, "User-Agent": f"cds/{__version__}"}
        authorization = _authorization(self.settings)
        if authorization is not None:
            headers["Authorization"] = authorization
        if body is not None:
            headers["Content-Type"] = DICOM_JSON
        what = f"UPS-RS {method} {path.split('?', maxsplit=1)[0]}"
        try:
            answer = self._client.request(
                method,
                f"{self.root}{path}",
                params=params,
                headers=headers,
                json=body,
            )
        except (httpx.HTTPError, OSError, ssl.SSLError) as exc:
            raise WorkflowError(
                f"{what}: no answer from workflow.ups_url ({type(exc).__name__}: "
                f"{describe_error(exc)})"
            ) from None
        if answer.status_code not in ok:
            raise WorkflowError(
                f"{what}: answered HTTP {answer.status_code} {answer.reason_phrase}",
                answer.status_code,
            )
        return answer

    def _json_list(self, answer: httpx.Response, what: str) -> list[Any]:
        if answer.status_code == 204 or not answer.content:
            return []
        try:
            body = answer.json()
        except ValueError:
            raise WorkflowError(
                f"{what}: the answer is not DICOM JSON", answer.status_code
            ) from None
        if isinstance(body, dict):
            body = [body]
        if not isinstance(body, list):
            raise WorkflowError(f"{what}: the answer is not a DICOM JSON array", answer.status_code)
        return body

    # --- the requests ------------------------------------------------------
    def subscribe(self, ae_title: str) -> None:
        """A global subscription for ``ae_title`` (PS3.18 11.10)."""
        path = f"/workitems/{GLOBAL_SUBSCRIPTION_UID}/subscribers/{quote(ae_title, safe='')}"
        self._request("POST", path, ok=(200, 201))

    def search_scheduled(self, limit: int = 100) -> list[Any]:
        """SCHEDULED workitems matching ``workflow.filter`` (as DICOM JSON objects)."""
        params = {"00741000": SCHEDULED, "limit": str(limit)}
        flt = self.settings.filter
        if flt.workitem_code is not None:
            params["00404018.00080100"] = flt.workitem_code
        if flt.station_name is not None:
            params["00404025.00080100"] = flt.station_name
        answer = self._request("GET", "/workitems", params=params, ok=(200, 204))
        return self._json_list(answer, "UPS-RS search")

    def retrieve(self, uid: str) -> Any:
        answer = self._request("GET", f"/workitems/{uid}")
        found = self._json_list(answer, "UPS-RS retrieve")
        if len(found) != 1:
            raise WorkflowError("UPS-RS retrieve: the answer is not one workitem", 200)
        return found[0]

    def update(self, uid: str, transaction_uid: str, body: list[dict[str, Any]]) -> None:
        self._request(
            "POST", f"/workitems/{uid}", params={"transaction": transaction_uid}, body=body
        )

    def change_state(self, uid: str, state: str, transaction_uid: str) -> None:
        self._request("PUT", f"/workitems/{uid}/state", body=state_change(state, transaction_uid))
