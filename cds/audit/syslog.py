"""Forward the audit trail to an audit record repository: RFC 5424 over TLS (RFC 5425).

The trail itself is the spool: a cursor file (``syslog.cursor``: last seq sent
and its byte offset, fsync'd after each message) says how far the repository
has got. A background thread sends every record past the cursor, in order,
when one is written (``kick``) and every ``poll_s`` (records written by the CLI
in another process); while the repository is down it retries with a backoff,
and nothing is lost across a restart: the node picks up at the cursor.

Each message is ``<85>1 TIMESTAMP HOST APP PROCID IHE+RFC-3881 [cds@32473 seq=..
hash=..] BOM<AuditMessage/>`` (facility 10 security/auth, severity 5 notice),
framed by octet counting (``LEN SP MSG``). A message is counted as sent once
the TLS socket accepted it: RFC 5425 has no application acknowledgement, so a
message in flight when the repository crashes can be lost; the ``seq`` lets a
repository spot gaps and duplicates.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import ssl
from datetime import UTC, datetime
from pathlib import Path

from cds.audit.atna import to_atna
from cds.audit.trail import LOG_NAME, AuditRecord
from cds.config import SyslogSettings
from cds.logging import get_logger
from cds.periodic import Backoff, PeriodicWorker

log = get_logger("cds.audit")

CURSOR_NAME = "syslog.cursor"
PRI = 10 * 8 + 5  # authpriv.notice
MSGID = "IHE+RFC-3881"
SD_ID = "cds@32473"  # 32473: the enterprise number RFC 5612 sets aside for examples
BOM = b"\xef\xbb\xbf"
BATCH = 5000  # records read from the trail per pass


def _sd_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def format_message(
    rec: AuditRecord, *, app_name: str, hostname: str, ae_title: str, procid: str = "-"
) -> bytes:
    """One RFC 5424 message with the record's ATNA XML as MSG, octet-count framed."""
    stamp = datetime.fromtimestamp(rec.at, UTC).isoformat(timespec="milliseconds")
    stamp = stamp.replace("+00:00", "Z")
    sd = f'[{SD_ID} seq="{rec.seq}" hash="{_sd_value(rec.hash)}"]'
    header = f"<{PRI}>1 {stamp} {hostname[:255] or '-'} {app_name[:48]} {procid} {MSGID} {sd} "
    xml = to_atna(rec, source_id=f"{app_name}@{hostname}", ae_title=ae_title)
    msg = header.encode("ascii", "replace") + BOM + xml
    return f"{len(msg)} ".encode() + msg


class SyslogForwarder:
    def __init__(
        self,
        trail_path: Path,
        settings: SyslogSettings,
        *,
        ae_title: str,
        hostname: str | None = None,
        poll_s: float = 5.0,
        retry_initial_s: float = 1.0,
        retry_max_s: float = 60.0,
        timeout_s: float = 10.0,
    ) -> None:
        self._log = trail_path / LOG_NAME
        self._cursor_file = trail_path / CURSOR_NAME
        self._cfg = settings
        self._ae = ae_title
        self._hostname = hostname or socket.gethostname()
        self._poll = poll_s
        self._retry = (retry_initial_s, retry_max_s)
        self._timeout = timeout_s
        self._sock: ssl.SSLSocket | None = None
        self._backoff = retry_initial_s  # the next wait while the repository is down
        self._worker = PeriodicWorker(
            "cds-audit-syslog", self._step, poll_s, log_event="audit.syslog_failed",
            join_timeout_s=timeout_s + 5,
        )  # fmt: skip
        self.sent = 0
        self.last_error: str | None = None

    # --- cursor ------------------------------------------------------------------
    def cursor(self) -> tuple[int, int]:
        """(last seq sent, byte offset in the log after it)."""
        try:
            data = json.loads(self._cursor_file.read_text())
            return int(data["seq"]), int(data["offset"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0, 0

    def _save_cursor(self, seq: int, offset: int) -> None:
        tmp = self._cursor_file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, json.dumps({"seq": seq, "offset": offset}).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self._cursor_file)

    def backlog(self) -> int:
        """How many records wait to be sent."""
        return len(self._pending(limit=None))

    def _pending(self, limit: int | None = BATCH) -> list[tuple[AuditRecord, int]]:
        """Records after the cursor (the first ``limit``), each with the offset just
        after its line."""
        seq, offset = self.cursor()
        try:
            size = self._log.stat().st_size
        except OSError:
            return []
        if size < offset:  # the log was replaced: go by seq alone
            offset = 0
        out: list[tuple[AuditRecord, int]] = []
        with self._log.open("rb") as f:
            f.seek(offset)
            for line in f:
                offset += len(line)
                if not line.endswith(b"\n"):
                    break  # being written, or torn: the next pass sees it
                try:
                    rec = AuditRecord.from_json(json.loads(line))
                except (ValueError, KeyError, TypeError):
                    continue
                if rec.seq > seq:
                    out.append((rec, offset))
                    if limit is not None and len(out) >= limit:
                        break
        return out

    # --- sending -------------------------------------------------------------------
    def _connect(self) -> ssl.SSLSocket:
        ctx = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH,
            cafile=str(self._cfg.ca_file) if self._cfg.ca_file else None,
        )
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self._cfg.cert_file is not None:
            ctx.load_cert_chain(
                self._cfg.cert_file, self._cfg.key_file if self._cfg.key_file else None
            )
        raw = socket.create_connection((self._cfg.host, self._cfg.port), timeout=self._timeout)
        try:
            return ctx.wrap_socket(raw, server_hostname=self._cfg.host)
        except BaseException:
            raw.close()
            raise

    def flush(self) -> int:
        """Send everything past the cursor; returns how many. Raises OSError when the
        repository cannot be reached (what is left stays for the next try)."""
        done = 0
        for rec, offset in self._pending():
            if self._sock is not None and not self._alive(self._sock):
                self._close()
            if self._sock is None:
                self._sock = self._connect()
            msg = format_message(
                rec, app_name=self._cfg.app_name, hostname=self._hostname, ae_title=self._ae
            )
            try:
                self._sock.sendall(msg)
            except OSError:
                self._close()
                raise
            self._save_cursor(rec.seq, offset)
            done += 1
            self.sent += 1
        return done

    @staticmethod
    def _alive(sock: ssl.SSLSocket) -> bool:
        """A repository never writes to us: a readable socket is closing (EOF or
        close_notify). Checking before each message, rather than finding out from a
        failed write after the kernel took the message, keeps a restart of the
        repository from losing the first message sent after it."""
        readable, _, _ = select.select([sock], [], [], 0)
        return not readable and sock.pending() == 0

    def _close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None

    # --- thread ------------------------------------------------------------------
    def kick(self, _rec: AuditRecord | None = None) -> None:
        """A record was written: send it now (an ``AuditTrail`` listener)."""
        self._worker.kick()

    def _step(self) -> float | Backoff:
        try:
            while self.flush() == BATCH and not self._worker.stopping:
                pass  # a long backlog goes out in batches, without waiting between
        except (OSError, ssl.SSLError) as exc:
            if self.last_error is None:
                log.warning(
                    "audit.syslog_down",
                    host=self._cfg.host,
                    port=self._cfg.port,
                    error_type=type(exc).__name__,
                    error=str(exc)[:200],
                )
            self.last_error = f"{type(exc).__name__}: {exc}"
            wait, self._backoff = self._backoff, min(self._backoff * 2, self._retry[1])
            return Backoff(wait)  # down: new records do not cut the backoff short
        self._backoff = self._retry[0]
        if self.last_error is not None:
            log.info("audit.syslog_back", host=self._cfg.host, port=self._cfg.port)
        self.last_error = None
        return self._poll

    def start(self) -> None:
        self._worker.start()

    def stop(self) -> None:
        """Stop after one last try to send what is left (the rest stays for next time)."""
        self._worker.stop()
        if self.last_error is None:
            with contextlib.suppress(OSError, ssl.SSLError):
                self.flush()
        self._close()
