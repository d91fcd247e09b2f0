"""Admin commands of the ``cds`` CLI: ``cds jobs``, ``cds queue``, ``cds studies rerun|purge``.

The same operations as the HTTP admin endpoints (both call ``cds.admin``):

- reading (``jobs``, ``queue``) opens the state store directly: it works with
  the node down;
- ``jobs cancel`` and ``studies purge`` also act on the store and the spool
  directly, so an admin can stop work or free disk whether the node runs or
  not. SQLite lets the node and the CLI write at once; a running job's worker
  sees its cancellation at its next step, and a purged study's folder is made
  again by the node if an instance arrives for it;
- ``jobs retry`` and ``studies rerun`` hand a study to the node's workers, so
  they ask the running node over its HTTP API (``http.host``/``http.port`` of
  the same configuration) and say so when it is not running.
"""

from __future__ import annotations

import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Annotated, Any

import typer

from cds import admin
from cds.api.schemas import JobOut, QueueOut
from cds.audit import AuditTrail, cli_actor
from cds.cli.common import REFUSED, USAGE, ConfigOpt, HomeOpt, fail, open_state_store, when
from cds.config import Settings, load_settings
from cds.domain import JobState
from cds.errors import AdminError, ConfigError
from cds.ingest.spool import Spool

JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]
StateOpt = Annotated[JobState | None, typer.Option("--state", help="only jobs in this state")]
StudyOpt = Annotated[str | None, typer.Option("--study", help="only the jobs of this study key")]
LimitOpt = Annotated[int, typer.Option("--limit", min=1, help="at most this many")]

HTTP_TIMEOUT_S = 30.0


def _settings(config: Path | None, home: Path | None) -> Settings:
    try:
        return load_settings(config, home)
    except ConfigError as exc:
        raise fail(str(exc), USAGE) from None


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = max(seconds, 0.0)
    if s < 60:
        return f"{s:.1f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"


# --- cds jobs -------------------------------------------------------------------
jobs_app = typer.Typer(
    help="Jobs: list them (the default), retry a failed or partial one, cancel a queued or "
    "running one.",
    add_completion=False,
)


def _print_jobs(
    *,
    config: Path | None,
    home: Path | None,
    state: JobState | None,
    study: str | None,
    limit: int,
    as_json: bool,
) -> None:
    store = open_state_store(_settings(config, home))
    try:
        rows = admin.list_jobs(store, state, study, limit)
    finally:
        store.close()
    now = time.time()
    if as_json:
        typer.echo(json.dumps([JobOut.of(j, now).model_dump(mode="json") for j in rows], indent=2))
        return
    if not rows:
        typer.echo("no jobs")
        return
    typer.echo(
        f"{'JOB ID':<32} {'STUDY KEY':<16} {'STATE':<9} {'CREATED (UTC)':<19} "
        f"{'WAITED':>7} {'RAN':>7} {'TRIES':>5} {'NODE':<12}  KIND / ERROR"
    )
    for j in rows:
        waited, ran = admin.job_timings(j, now)
        not_made = [o.text for o in j.objects if o.failed]
        error = f"  {j.error[:80]}" if j.error and not not_made else ""
        typer.echo(
            f"{j.job_id:<32} {j.study_key:<16} {j.state.value:<9} {when(j.created_at):<19} "
            f"{_duration(waited):>7} {_duration(ran):>7} {j.attempts:>5} "
            f"{(j.claimed_by or '-')[:12]:<12}  {j.kind}{error}"
        )
        for line in not_made:  # a partial job: each object not made, with its reason
            typer.echo(f"    {line}")


@jobs_app.callback(invoke_without_command=True)
def jobs(
    ctx: typer.Context,
    *,
    config: ConfigOpt = None,
    home: HomeOpt = None,
    state: StateOpt = None,
    study: StudyOpt = None,
    limit: LimitOpt = 50,
    as_json: JsonOpt = False,
) -> None:
    """Jobs: list them (the default), retry a failed or partial one, cancel an open one."""
    if ctx.invoked_subcommand is None:
        _print_jobs(
            config=config, home=home, state=state, study=study, limit=limit, as_json=as_json
        )


@jobs_app.command("list")
def jobs_list(
    *,
    config: ConfigOpt = None,
    home: HomeOpt = None,
    state: StateOpt = None,
    study: StudyOpt = None,
    limit: LimitOpt = 50,
    as_json: JsonOpt = False,
) -> None:
    """List jobs with their state and timings, newest first (reads the store)."""
    _print_jobs(config=config, home=home, state=state, study=study, limit=limit, as_json=as_json)


@jobs_app.command("retry")
def jobs_retry(
    job_id: Annotated[
        str, typer.Argument(help="id of a failed or partial job, as 'cds jobs' lists it")
    ],
    config: ConfigOpt = None,
    home: HomeOpt = None,
) -> None:
    """Retry a failed or partial job: the running node re-queues its study (its HTTP API)."""
    body = _post(_settings(config, home), f"/api/jobs/{_quote(job_id)}/retry")
    typer.echo(f"job {job_id}: study {body['study_key']} re-queued")


@jobs_app.command("cancel")
def jobs_cancel(
    job_id: Annotated[str, typer.Argument(help="id of a queued or running job")],
    config: ConfigOpt = None,
    home: HomeOpt = None,
) -> None:
    """Cancel a queued or running job (in the store: works with the node down).

    A running job stops at its next step and is never reported done.
    """
    store = open_state_store(_settings(config, home))
    try:
        job = admin.cancel_job(store, job_id)
    except AdminError as exc:
        raise fail(str(exc), REFUSED) from None
    finally:
        store.close()
    typer.echo(f"job {job.job_id} ({job.kind}, study {job.study_key}) cancelled")


# --- cds queue ------------------------------------------------------------------
def queue_cmd(config: ConfigOpt = None, home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Queue depth: jobs queued and running, the oldest waiting, studies waiting."""
    store = open_state_store(_settings(config, home))
    try:
        q = QueueOut.of(admin.queue_stats(store), time.time())
    finally:
        store.close()
    if as_json:
        typer.echo(json.dumps(q.model_dump(mode="json"), indent=2))
        return
    oldest = "-" if q.oldest_queued_age_s is None else f"{_duration(q.oldest_queued_age_s)} ago"
    typer.echo(f"jobs queued                 {q.jobs_queued}")
    typer.echo(f"jobs running                {q.jobs_running}")
    typer.echo(f"oldest queued job           {oldest}")
    typer.echo(f"studies receiving           {q.studies_receiving}")
    typer.echo(f"studies complete, waiting   {q.studies_complete_waiting}")
    age = q.oldest_pending_delivery_age_s
    typer.echo(f"deliveries pending          {q.deliveries_pending}")
    typer.echo(f"oldest pending delivery     {'-' if age is None else _duration(age) + ' ago'}")
    typer.echo(f"deliveries dead             {q.deliveries_dead}")


# --- cds workers ----------------------------------------------------------------
def workers_cmd(config: ConfigOpt = None, home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """The executor's workers: what each was sent and did, where it runs, what it holds.

    Asks the running node (GET /api/workers): the node's threads, its process pool, or
    each Ray actor with its process, machine and loaded models."""
    rows: list[dict[str, Any]] = _call(_settings(config, home), "/api/workers", "GET")
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    typer.echo(f"{'WORKER':<28} {'KIND':<8} {'IN FLIGHT':>9} {'DONE':>6} {'FAILED':>6} BUSY")
    for w in rows:
        typer.echo(
            f"{w['worker']:<28} {w['kind']:<8} {w['in_flight']:>9} {w['done']:>6} "
            f"{w['failed']:>6} {_duration(w['busy_seconds'])}"
        )
        where = " ".join(f"{k} {w[k]}" for k in ("host", "pid") if k in w)
        if "device" in w:  # a Ray actor: what it runs on
            memory = w.get("gpu_memory_mib")
            where += f"{' ' if where else ''}on {w['device']}"
            where += f" ({memory} MiB)" if memory is not None else ""
        held = ", ".join(w.get("loaded", [])) or ", ".join(w["models"]) or "-"
        typer.echo(f"    {where + '; ' if where else ''}models: {held}")
        for d in w.get("devices", []):  # the node's threads: each GPU id (and the CPU)
            on = ", ".join(d["models"]) or "-"
            typer.echo(f"    {d['device']}: {d['max_sessions']} at once; models: {on}")


# --- cds studies rerun | purge --------------------------------------------------
def study_rerun_cmd(
    study_key: Annotated[str, typer.Argument(help="study key as listed by 'cds studies'")],
    config: ConfigOpt = None,
    home: HomeOpt = None,
) -> None:
    """Re-run a study through routing and its models, e.g. after a model update.

    The running node does it (asked through its HTTP API); recorded in the
    study's history as rerun_requested.
    """
    body = _post(_settings(config, home), f"/api/studies/{_quote(study_key)}/rerun")
    typer.echo(f"study {body['study_key']} re-queued")


def _interactive() -> bool:
    return sys.stdin.isatty()


def study_purge_cmd(
    study_key: Annotated[str, typer.Argument(help="study key as listed by 'cds studies'")],
    config: ConfigOpt = None,
    home: HomeOpt = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="purge even while receiving or processing; cancels its open jobs"
        ),
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
) -> None:
    """Delete a study's files from the spool (current and superseded versions).

    The study's record and history stay, marked purged. Acts on the store and
    spool directly (works with the node down). An instance sent again later is
    stored again and re-opens the study.
    """
    settings = _settings(config, home)
    store = open_state_store(settings)
    try:
        detail = store.get_study(study_key)
        if detail is None:
            raise fail(f"no study with key {study_key!r}", REFUSED)
        s = detail.summary
        if not yes:
            if not _interactive():
                raise fail(
                    f"refusing to purge study {study_key} without confirmation: "
                    "no terminal to ask on; pass --yes",
                    REFUSED,
                )
            typer.confirm(
                f"Purge study {study_key} ({s.state.value}, {s.series_count} series, "
                f"{s.instance_count} instances)? Its files are deleted; its record "
                "and history stay",
                default=False,
                abort=True,
            )
        spool = Spool(settings.spool_path, 0)
        trail = AuditTrail(settings.audit_path)  # the same trail as the node's, locked
        try:
            r = admin.purge_study(
                store, spool, study_key, force, audit=trail, who=cli_actor(), reason="admin"
            )
        except AdminError as exc:
            raise fail(str(exc), REFUSED) from None
        finally:
            trail.close()
    finally:
        store.close()
    typer.echo(
        f"study {study_key} purged: {r.files_removed} file(s) removed ({r.instances} "
        f"instance(s), {r.superseded_versions} superseded version(s), "
        f"{r.unrecorded_files} unrecorded); history kept"
    )
    if r.jobs_cancelled:
        typer.echo(f"  cancelled {len(r.jobs_cancelled)} job(s): {', '.join(r.jobs_cancelled)}")
    if not r.purged:
        typer.echo("  instances that arrived during the purge were kept: the study is receiving")


#: ``cds studies rerun|purge``; cli.py adds its study listing as the callback
studies_app = typer.Typer(
    help="Studies: list them (the default), re-run one, purge one from the spool.",
    add_completion=False,
)
studies_app.command("rerun")(study_rerun_cmd)
studies_app.command("purge")(study_purge_cmd)


# --- the node's HTTP API --------------------------------------------------------
def _quote(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


#: the token ``cds jobs retry`` and ``cds studies rerun`` send when the API needs one
TOKEN_ENV = "CDS_API_TOKEN"  # noqa: S105 (the name of a variable, not a secret)


def _base_url(settings: Settings) -> str:
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(
        settings.http.host, settings.http.host
    )
    scheme = "https" if settings.http.tls_cert_file is not None else "http"
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{settings.http.port}"


def _tls_context(settings: Settings) -> ssl.SSLContext | None:
    """For the node's own HTTPS: trust the certificate file the node serves (a leaf is
    accepted as its own anchor), whatever name it was issued for, since the CLI calls the
    node by the address it listens on."""
    cert = settings.http.tls_cert_file
    if cert is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.check_hostname = False
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    try:
        ctx.load_verify_locations(cafile=str(cert))
    except (OSError, ssl.SSLError) as exc:
        raise fail(f"http.tls_cert_file: cannot read {cert} ({exc})", REFUSED) from None
    return ctx


def _post(settings: Settings, path: str) -> dict[str, Any]:
    """POST to the running node (see ``_call``)."""
    body: dict[str, Any] = _call(settings, path, "POST")
    return body


def _call(settings: Settings, path: str, method: str) -> Any:
    """Ask the running node; exit 1 with its message on a refusal or when it is down.

    With authentication on, the token comes from the environment (``CDS_API_TOKEN``),
    never from the command line (it would show in the process list and the history)."""
    base = _base_url(settings)
    request = urllib.request.Request(base + path, method=method)  # noqa: S310 (http(s) only)
    token = os.environ.get(TOKEN_ENV, "")
    if settings.http.auth.mode != "none":
        if not token:
            raise fail(
                f"the node's API needs authentication (http.auth.mode "
                f"{settings.http.auth.mode}): set {TOKEN_ENV} to an admin token "
                "(cds token new --name NAME --role admin)",
                REFUSED,
            )
        request.add_header("Authorization", f"Bearer {token}")
    # the node's API is local: never through a proxy from the environment
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    context = _tls_context(settings)
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(request, timeout=HTTP_TIMEOUT_S) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        try:
            detail = str(json.load(exc).get("detail", exc.reason))
        except (ValueError, AttributeError):
            detail = str(exc.reason)
        if exc.code == 401:
            detail = f"{detail} (the token in {TOKEN_ENV} was refused)"
        raise fail(detail, REFUSED) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise fail(
            f"the node is not running at {base} (http.host/http.port): {reason}. "
            "This command needs the running node: start it with 'cds serve' "
            "(and give this command the node's --config)",
            REFUSED,
        ) from None
