"""Query/retrieve from a DICOMweb archive: QIDO-RS to find studies, WADO-RS to fetch them.

- ``find_studies``: QIDO-RS ``GET <dicomweb_url>/studies`` with the same matches as the
  C-FIND (``StudyQuery``: the study date range, Modalities in Study, Study Description),
  asking for the same return keys (``includefield``). An origin server may add its
  default attributes (PS3.18 table 6.7.1-2, patient ones among them): only the Study
  Instance UID, Study Date and instance count are read, nothing else is kept or logged.
  Paged by ``offset`` until a page is empty or brings no new study (a server that
  ignores ``offset`` does not loop).
- ``get_study``: WADO-RS ``GET <dicomweb_url>/studies/{uid}``, every instance in the
  transfer syntax the archive holds (``transfer-syntax=*``, no transcoding asked of
  it), streamed part by part; each part, as the archive sent it, is handed to ``sink``
  (split as a STOW-RS part is, then the node's receiver, as a C-GET's instances are:
  the same checks, spool and store).

dicomweb-client (the maintained QIDO/WADO client, which also parses what origin servers
get wrong: single-part answers, JSON objects for arrays) with a ``requests`` session set
up so that nothing goes anywhere the routing file does not say: no proxy or credentials
from the environment (``trust_env`` off), no redirect followed (refused), no retry of its
own (a failed study is tried again by the run, at its rate). Credentials are read from
their files when the client is made and only ever put in the ``Authorization`` header.

Every failure is an ``ArchiveError`` naming the archive's field in the routing file
(``archives.NAME.dicomweb_url`` or ``.auth``/``.tls``) and never a data value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from io import BytesIO
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmwrite
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from cds.destinations import DicomWebArchive
from cds.errors import describe
from cds.ingest.archive import ArchiveError, FoundStudy, Retrieved, StudyQuery

#: the calling AE title instances fetched by WADO-RS are recorded with (as STOW-RS in)
WADO_AE = "DICOMWEB"
#: one instance retrieved by WADO-RS: its PS3.10 bytes, as a STOW-RS part -> the status
#: the node's receiver gave it (0x0000: stored)
PartSink = Callable[[bytes], int]
#: the return keys asked for (the C-FIND's): Study Instance UID, Study Date, Modalities
#: in Study, Number of Study Related Instances
FIELDS = ("0020000D", "00080020", "00080061", "00201208")
#: studies asked for per QIDO-RS request
PAGE = 500
_STUDY_UID, _STUDY_DATE, _INSTANCES = "0020000D", "00080020", "00201208"
#: what reading a part that is not a PS3.10 file (or is cut short) raises in pydicom
_UNREADABLE = (InvalidDicomError, EOFError, ValueError, TypeError, AttributeError, KeyError)


class _Redirected(requests.RequestException):
    """The archive answered with a redirect, which is not followed."""


def _refuse_redirect(response: requests.Response, *_: Any, **__: Any) -> requests.Response:
    if response.is_redirect:
        response.close()
        raise _Redirected(f"HTTP {response.status_code}")
    return response


def address(url: str) -> str:
    """``host:port`` of a service root (the audit trail's ``where``)."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"


class WebArchiveClient:
    """The QIDO-RS/WADO-RS client of the routing file's archive ``name``."""

    def __init__(self, name: str, archive: DicomWebArchive, timeout_s: float = 30.0) -> None:
        self.name = name
        self.archive = archive
        self.field = f"archives.{name}"
        session = requests.Session()
        session.trust_env = False  # no proxy, .netrc or CA bundle from the environment
        session.proxies = {}
        session.max_redirects = 0
        session.hooks["response"] = [_refuse_redirect]
        session.verify = self._verify()
        if archive.tls.cert_file is not None:
            key = archive.tls.key_file
            session.cert = (
                (str(archive.tls.cert_file), str(key)) if key else str(archive.tls.cert_file)
            )
        if (authorization := self._authorization()) is not None:
            session.headers["Authorization"] = authorization
        try:
            self.client = DICOMwebClient(archive.dicomweb_url, session=session, timeout=timeout_s)
        except ValueError as exc:
            raise ArchiveError(f"{self.field}.dicomweb_url: {describe(exc)}") from None
        self.client.set_http_retry_params(retry=False)

    def _verify(self) -> bool | str:
        tls = self.archive.tls
        if not tls.verify:
            return False
        if tls.ca_file is not None:
            if not tls.ca_file.is_file():
                raise ArchiveError(f"{self.field}.tls.ca_file: no such file")
            return str(tls.ca_file)
        return True

    def _authorization(self) -> str | None:
        auth = self.archive.auth
        if auth is None:
            return None
        if auth.bearer_token_file is not None:
            return f"Bearer {self._secret(auth.bearer_token_file, 'bearer_token_file').strip()}"
        import base64  # noqa: PLC0415 (basic auth only)

        assert auth.username is not None
        assert auth.password_file is not None
        password = self._secret(auth.password_file, "password_file").rstrip("\r\n")
        pair = base64.b64encode(f"{auth.username}:{password}".encode()).decode("ascii")
        return f"Basic {pair}"

    def _secret(self, path: Path, field: str) -> str:
        try:
            return path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ArchiveError(
                f"{self.field}.auth.{field}: cannot read the file ({exc.strerror})"
            ) from None

    def _failure(self, exc: BaseException, what: str) -> ArchiveError:
        """An ArchiveError saying why ``what`` failed, naming the field to look at."""
        url = self.archive.dicomweb_url
        if isinstance(exc, _Redirected):
            return ArchiveError(
                f"{self.field}.dicomweb_url: {url} answered {what} with a redirect ({exc}), "
                "which is not followed: give the final service root"
            )
        if isinstance(exc, requests.HTTPError) and exc.response is not None:
            code = exc.response.status_code
            reason = exc.response.reason or ""
            if code in (401, 403):
                field = f"{self.field}.auth"
                hint = "no credentials given" if self.archive.auth is None else "check them"
                return ArchiveError(f"{field}: {url} refused {what}: HTTP {code} {reason} ({hint})")
            hint = " (is it the DICOMweb service root?)" if code in (404, 405) else ""
            return ArchiveError(
                f"{self.field}.dicomweb_url: {url} answered {what} with HTTP {code} {reason}{hint}"
            )
        if isinstance(exc, requests.exceptions.SSLError):
            return ArchiveError(
                f"{self.field}.tls: {url}: TLS failed for {what} (the server certificate "
                "is not trusted, or ours refused: check tls.ca_file, cert_file)"
            )
        if isinstance(exc, requests.ConnectionError | requests.Timeout):
            return ArchiveError(
                f"{self.field}.dicomweb_url: no answer from {url} to {what} ({type(exc).__name__})"
            )
        return ArchiveError(f"{self.field}.dicomweb_url: {url}: {what} failed ({describe(exc)})")

    def find_studies(self, query: StudyQuery) -> list[FoundStudy]:
        """Every study the archive matches (QIDO-RS), in the order it answered."""
        filters = {"StudyDate": f"{query.since:%Y%m%d}-{query.until:%Y%m%d}"}
        if query.modality:
            filters["ModalitiesInStudy"] = query.modality
        if query.description:
            filters["StudyDescription"] = query.description
        found: dict[str, FoundStudy] = {}
        offset = 0
        while True:
            try:
                page = self.client.search_for_studies(
                    fields=FIELDS, search_filters=filters, limit=PAGE, offset=offset
                )
            except (requests.RequestException, ValueError) as exc:
                raise self._failure(exc, "QIDO-RS") from None
            if not isinstance(page, list):
                raise ArchiveError(f"{self.field}.dicomweb_url: QIDO-RS answer is not a list")
            new = [s for s in map(_study, page) if s is not None and s.study_uid not in found]
            if not new:
                return list(found.values())
            found.update((s.study_uid, s) for s in new)
            offset += len(page)

    def get_study(self, study_uid: str, sink: PartSink) -> Retrieved:
        """WADO-RS of one study; each instance to ``sink``. Never raises for the archive
        or the network: a Retrieved says how far it got."""
        completed = failed = warned = 0
        instances: Iterator[Dataset] = iter(())
        try:
            instances = self.client.iter_study(study_uid, media_types=(("application/dicom", "*"),))
            for ds in instances:
                status = sink(part10(ds))
                if status == 0x0000:
                    completed += 1
                elif status & 0xF000 == 0xB000:
                    warned += 1
                    completed += 1
                else:
                    failed += 1
        except (requests.RequestException, *_UNREADABLE) as exc:
            reason = str(self._failure(exc, "WADO-RS"))
            if not isinstance(exc, requests.RequestException):
                reason = f"WADO-RS: an unreadable part from {self.archive.dicomweb_url} "
                reason += f"({describe(exc)})"
            return Retrieved(False, completed, failed + 1, warned, reason)
        finally:
            close = getattr(instances, "close", None)
            if close is not None:
                close()
        detail = f"WADO-RS: {completed} stored, {failed} refused, {warned} warning"
        if completed == 0 and failed == 0:
            return Retrieved(False, detail=f"WADO-RS: {self.archive.dicomweb_url} sent no instance")
        return Retrieved(failed == 0, completed, failed, warned, detail)


def _study(item: object) -> FoundStudy | None:
    """The study of one QIDO-RS result, or None if it has no Study Instance UID."""
    if not isinstance(item, dict):
        return None
    uid = _value(item, _STUDY_UID)
    if not isinstance(uid, str) or not uid.strip():
        return None
    count = _value(item, _INSTANCES)
    try:
        instances = int(count) if isinstance(count, int | float | str) else None
    except ValueError:
        instances = None
    return FoundStudy(uid.strip(), str(_value(item, _STUDY_DATE) or ""), instances)


def _value(item: dict[str, Any], tag: str) -> object:
    element = item.get(tag)
    values = element.get("Value") if isinstance(element, dict) else None
    return values[0] if isinstance(values, Sequence) and values else None


def part10(ds: Dataset) -> bytes:
    """The PS3.10 bytes of an instance as the archive sent them: the WADO-RS part
    dicomweb-client read it from (``FileDataset.buffer``), else written back."""
    buffer = getattr(ds, "buffer", None)
    if isinstance(buffer, BytesIO):
        return buffer.getvalue()
    out = BytesIO()
    dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()
