"""Back up and restore a node's home (``cds admin backup DEST``, ``cds admin restore SRC``).

What a node keeps, and how each part is copied while the node runs:

- the SQLite state store: through SQLite's online backup API, one read transaction,
  so the copy is one consistent moment of the store (the node goes on writing);
- the spool and results files *that copy of the store lists* (current and
  superseded instance versions, result objects, deliveries). They are written once
  under content-addressed names and never changed, so a file listed in the snapshot
  is the file the snapshot means; one purged in between is named in the manifest;
- the audit trail (``audit.jsonl``, its signed head and key), under the trail's own
  lock (``audit.lock``), so no record is half copied; the copy is verified;
- the keys (``node.key``, ``keys/``) and the node's small files at the top of home.

A backup is a folder (mode 0700: it holds patient images and keys) with
``manifest.json`` written last: a folder without one is not a backup. Restore goes
into an empty home of a stopped node, checks every file's SHA-256 first, and verifies
the restored audit trail. PostgreSQL stores are refused: the database is backed up
with ``pg_dump`` and the shared spool with the site's file backup.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import socket
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cds import __version__
from cds.audit import AuditEvent, AuditTrail
from cds.audit.trail import LOCK_NAME
from cds.audit.verify import verify
from cds.config import Settings
from cds.errors import CdsError

MANIFEST = "manifest.json"
FORMAT = 1
STATE = "state.db"
#: top-level files of home that are not copied: the store (copied by the backup API)
#: and SQLite's side files
_NOT_HOME_FILES = ("state.db", "state.db-wal", "state.db-shm", "state.db-journal")
#: which folder of the backup holds the files each query of the snapshot lists
_LISTED = {
    "spool": ("SELECT path FROM instances UNION SELECT path FROM instance_versions",),
    "results": ("SELECT path FROM results UNION SELECT path FROM deliveries",),
}
_COUNTED = ("studies", "instances", "results", "deliveries", "jobs", "findings", "feedback")

POSTGRES_REFUSAL = (
    "store.backend is postgresql: cds admin backup copies a SQLite store only. Back up "
    "the database with pg_dump (pg_dump --format=custom --file cds.dump DBNAME; restore "
    "with pg_restore --clean --dbname DBNAME cds.dump), and the shared spool.path, "
    "results.path, audit.path and each node's node.key and keys/ with the site's file "
    "backup"
)


class BackupError(CdsError):
    """A backup or restore is refused or failed; the message names the file and why."""


@dataclass(frozen=True, slots=True)
class BackupReport:
    dest: Path
    files: int
    bytes: int
    counts: dict[str, int]
    audit_records: int
    missing: list[str] = field(default_factory=list)  # listed, gone (purged meanwhile)
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class RestoreReport:
    home: Path
    files: int
    bytes: int
    counts: dict[str, int]
    audit_records: int
    backup_made_at: float


def _refuse_postgres(settings: Settings) -> None:
    if settings.store.backend != "sqlite":
        raise BackupError(POSTGRES_REFUSAL)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy(src: Path, dst: Path) -> tuple[str, int]:
    """Copy durably (mode 0600); (SHA-256, size) of what was written."""
    dst.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = dst.with_name(dst.name + ".part")
    shutil.copyfile(src, tmp)
    os.chmod(tmp, 0o600)
    _fsync(tmp)
    os.replace(tmp, dst)
    return _sha256(dst), dst.stat().st_size


def _inside(root: Path, rel: str) -> Path:
    """``root / rel``, refusing a path that leaves ``root`` (a damaged store or manifest)."""
    p = Path(rel)
    if p.is_absolute() or ".." in p.parts:
        raise BackupError(f"refusing path {rel!r}: not inside {root}")
    return root / p


def _snapshot(db: Path, dest: Path) -> dict[str, int]:
    """Copy the live store with SQLite's backup API; count its rows; check the copy."""
    src = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    out = sqlite3.connect(dest)
    try:
        src.backup(out)  # all pages in one step: one read transaction, one moment
        check = out.execute("PRAGMA integrity_check").fetchone()[0]
        if check != "ok":
            raise BackupError(f"the copy of {db} fails SQLite's integrity check: {check}")
        counts = {}
        for table in _COUNTED:  # constant names, not input
            counts[table] = int(out.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608
        return counts
    except sqlite3.Error as exc:
        raise BackupError(f"cannot copy the state store {db}: {exc}") from None
    finally:
        out.close()
        src.close()


def _listed(db: Path, queries: Iterable[str]) -> list[str]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return sorted({str(r[0]) for q in queries for r in con.execute(q)})
    finally:
        con.close()


@contextlib.contextmanager
def _audit_locked(path: Path) -> Iterator[None]:
    """Hold the trail's writers' lock (no record is appended while it is held)."""
    fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _home_files(settings: Settings) -> list[Path]:
    """The node's keys and small files at the top of home (not the store, not folders
    copied otherwise), relative to home."""
    home = settings.home
    out = [
        p.relative_to(home)
        for p in sorted(home.iterdir())
        if p.is_file() and p.name not in _NOT_HOME_FILES and not p.name.endswith(".tmp")
    ]
    keys = settings.keys_path
    if keys.is_dir():
        out += [p.relative_to(home) for p in sorted(keys.rglob("*")) if p.is_file()]
    return out


def _not_as_root(settings: Settings) -> None:
    """Root writing the node's audit trail would leave its head file root's, and the
    service (user cds) could no longer write it: run as the owner of home."""
    home = settings.home
    if os.geteuid() == 0 and home.is_dir() and (owner := home.stat().st_uid) != 0:
        raise BackupError(
            f"run the backup as the node's user, the owner of {home} (uid {owner}), not as "
            "root: runuser -u cds -- /opt/cds/bin/cds admin backup DEST --config ..."
        )


def backup(settings: Settings, dest: Path, who: str) -> BackupReport:
    """Copy the node's state, files, audit trail and keys into the new folder ``dest``."""
    _refuse_postgres(settings)
    started = time.monotonic()
    db = settings.sqlite_path
    if not db.is_file():
        raise BackupError(f"no state store at {db} (store.sqlite_path): nothing to back up")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise BackupError(f"{dest} already exists and is not an empty folder: give a new one")
    _not_as_root(settings)
    dest.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(dest, 0o700)
    trail = AuditTrail(settings.audit_path)  # recorded first: the copy holds this record
    try:
        trail.record(AuditEvent.EXPORT, who=who,
                     detail={"what": "backup of the node's home", "to": str(dest)})  # fmt: skip
    finally:
        trail.close()
    entries: dict[str, dict[str, Any]] = {}

    def add(rel: str, sha: str, size: int) -> None:
        entries[rel] = {"sha256": sha, "size": size}

    counts = _snapshot(db, dest / STATE)
    os.chmod(dest / STATE, 0o600)
    _fsync(dest / STATE)
    add(STATE, _sha256(dest / STATE), (dest / STATE).stat().st_size)
    missing: list[str] = []
    roots = {"spool": settings.spool_path, "results": settings.results_path}
    for part, queries in _LISTED.items():
        for rel in _listed(dest / STATE, queries):
            src = _inside(roots[part], rel)
            try:
                add(f"{part}/{rel}", *_copy(src, _inside(dest / part, rel)))
            except FileNotFoundError:
                missing.append(f"{part}/{rel}")
    audit = settings.audit_path
    if audit.is_dir():
        with _audit_locked(audit):
            for p in sorted(audit.iterdir()):
                if p.is_file() and p.name != LOCK_NAME and not p.name.endswith(".tmp"):
                    add(f"audit/{p.name}", *_copy(p, dest / "audit" / p.name))
    verdict = verify(dest / "audit")
    if not verdict.ok:
        raise BackupError(f"the audit trail copied from {audit} does not verify: {verdict.reason}")
    for rel_path in _home_files(settings):
        rel = rel_path.as_posix()
        add(f"home/{rel}", *_copy(settings.home / rel_path, dest / "home" / rel_path))
    manifest = {
        "format": FORMAT,
        "cds_version": __version__,
        "made_at": time.time(),
        "node": settings.node.name,
        "host": socket.gethostname(),
        "home": str(settings.home),
        "counts": counts,
        "audit_records": verdict.records,
        "missing": missing,
        "files": entries,
    }
    tmp = dest / (MANIFEST + ".part")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
    os.chmod(tmp, 0o600)
    _fsync(tmp)
    os.replace(tmp, dest / MANIFEST)
    _fsync(dest)
    return BackupReport(
        dest=dest,
        files=len(entries),
        bytes=sum(e["size"] for e in entries.values()),
        counts=counts,
        audit_records=verdict.records,
        missing=missing,
        seconds=time.monotonic() - started,
    )


def read_manifest(src: Path) -> dict[str, Any]:
    path = src / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BackupError(
            f"{path}: no manifest: {src} is not a cds backup, or its backup did not finish"
        ) from None
    except (OSError, ValueError) as exc:
        raise BackupError(f"{path}: cannot read the manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{path}: format {manifest.get('format')!r} is not {FORMAT}")
    return manifest


def check_backup(src: Path, manifest: dict[str, Any]) -> None:
    """Every file the manifest names is there with its SHA-256 (else name the first bad)."""
    for rel, entry in sorted(manifest["files"].items()):
        path = _inside(src, rel)
        if not path.is_file():
            raise BackupError(f"{src}: {rel} is missing from the backup")
        if _sha256(path) != entry["sha256"]:
            raise BackupError(f"{src}: {rel} does not match its SHA-256 in {MANIFEST} (damaged)")


def node_running(settings: Settings) -> str | None:
    """Why the node looks like it is running (its DICOM port answers), or None."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(
        settings.dicom.host, settings.dicom.host
    )
    with contextlib.suppress(OSError), socket.create_connection((host, settings.dicom.port), 1):
        return f"something answers on the DICOM port {host}:{settings.dicom.port}"
    return None


def _targets(settings: Settings) -> dict[str, Path]:
    return {
        "spool": settings.spool_path,
        "results": settings.results_path,
        "audit": settings.audit_path,
        "home": settings.home,
    }


def _not_empty(settings: Settings) -> list[str]:
    found = []
    if settings.sqlite_path.exists():
        found.append(str(settings.sqlite_path))
    for name in ("spool", "results", "audit"):
        root = _targets(settings)[name]
        if root.is_dir() and any(p.is_file() for p in root.rglob("*")):
            found.append(str(root))
    if (settings.home / "node.key").exists():
        found.append(str(settings.home / "node.key"))
    return found


def restore(settings: Settings, src: Path, who: str) -> RestoreReport:
    """Put the backup ``src`` in place for a stopped node whose home is empty."""
    _refuse_postgres(settings)
    manifest = read_manifest(src)
    running = node_running(settings)
    if running is not None:
        raise BackupError(f"the node seems to be running ({running}): stop it first")
    there = _not_empty(settings)
    if there:
        raise BackupError(
            "restore goes into an empty home; already there: " + ", ".join(there)
            + f". Stop the node and move {settings.home} aside first"
        )  # fmt: skip
    check_backup(src, manifest)
    settings.home.mkdir(parents=True, exist_ok=True)
    targets = _targets(settings)
    size = 0
    for rel in sorted(manifest["files"]):
        part, _, rest = rel.partition("/")
        dst = settings.sqlite_path if rel == STATE else _inside(targets[part], rest)
        size += _copy(_inside(src, rel), dst)[1]
    verdict = verify(settings.audit_path)
    if not verdict.ok:
        raise BackupError(f"the restored audit trail does not verify: {verdict.reason}")
    trail = AuditTrail(settings.audit_path)
    try:
        trail.record(
            AuditEvent.CONFIG_CHANGED,
            who=who,
            detail={"what": "home restored from a backup", "from": str(src),
                    "backup_made_at": manifest["made_at"]},
        )  # fmt: skip
    finally:
        trail.close()
    _give_to_owner(settings)
    return RestoreReport(
        home=settings.home,
        files=len(manifest["files"]),
        bytes=size,
        counts=dict(manifest["counts"]),
        audit_records=verdict.records + 1,
        backup_made_at=float(manifest["made_at"]),
    )


def _give_to_owner(settings: Settings) -> None:
    """Run as root (``sudo cds admin restore``), hand what was written to the owner of
    home (the ``cds`` user of the package), so that the service can write it."""
    if os.geteuid() != 0:
        return
    st = settings.home.stat()
    if st.st_uid == 0:
        return
    roots = {settings.home, *_targets(settings).values(), settings.sqlite_path}
    for root in roots:
        if not root.exists():
            continue
        paths = [root, *root.rglob("*")] if root.is_dir() else [root]
        for p in paths:
            os.chown(p, st.st_uid, st.st_gid, follow_symlinks=False)
