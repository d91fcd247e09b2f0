"""The routing rules in force: loaded at start, reloaded when the file changes.

An invalid file is refused — every error is logged by path — and the previous
rules stay in force. The kill switch (models disabled by config or through
the API) lives here too; API changes are kept in ``<home>/disabled_models.json``
so they survive a restart.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

from cds.audit import AuditEvent, AuditOutcome, AuditTrail, NullAuditTrail
from cds.logging import get_logger
from cds.periodic import PeriodicWorker
from cds.routing.rules import RoutingFile, RoutingFileError, load_routing

log = get_logger("cds.routing")


class RoutingManager:
    def __init__(
        self,
        path: Path | None,
        disabled_by_config: list[str],
        state_file: Path,
        interval_s: float = 2.0,
        *,
        audit: AuditTrail | None = None,
    ) -> None:
        self.path = path
        self._audit = audit if audit is not None else NullAuditTrail()
        self._sha256: str | None = None  # of the file in force
        self._config_disabled = set(disabled_by_config)
        self._state_file = state_file
        self._rules = RoutingFile()
        self._mtime: float | None = None
        self.last_errors: list[str] = []
        self._lock = threading.Lock()
        self._worker = PeriodicWorker(
            "cds-routing", self._step, interval_s, log_event="routing.reload_failed",
            wait_first=True,
        )  # fmt: skip
        self._api_disabled: set[str] = set()
        if state_file.exists():
            try:
                self._api_disabled = set(json.loads(state_file.read_text()))
            except (OSError, ValueError):
                log.error("routing.kill_switch_unreadable", file=str(state_file))

    @property
    def rules(self) -> RoutingFile:
        with self._lock:
            return self._rules

    def reload(self) -> bool:
        """Load the file if it changed; True when new rules are in force."""
        if self.path is None:
            return False
        try:
            mtime = self.path.stat().st_mtime
        except OSError:
            mtime = None
        if mtime is not None and mtime == self._mtime:
            return False
        self._mtime = mtime
        new_sha = _sha256(self.path)
        try:
            rules = load_routing(self.path)
        except RoutingFileError as exc:
            self.last_errors = exc.errors
            self._audit.record(
                AuditEvent.ROUTING_CHANGED,
                who="system",
                outcome=AuditOutcome.MINOR_FAILURE,
                detail={"file": self.path.name, "sha256": new_sha, "in_force": self._sha256,
                        "refused": True, "errors": len(exc.errors)},
            )  # fmt: skip
            log.error(
                "routing.file_refused",
                file=str(self.path),
                errors=exc.errors,
                kept="previous rules",
            )
            return False
        with self._lock:
            self._rules = rules
        self.last_errors = []
        self._audit.record(
            AuditEvent.ROUTING_CHANGED,
            who="system",
            detail={"file": self.path.name, "old_sha256": self._sha256, "new_sha256": new_sha,
                    "rules": len(rules.rules), "destinations": len(rules.destinations)},
        )  # fmt: skip
        self._sha256 = new_sha
        log.info(
            "routing.rules_loaded",
            file=str(self.path),
            rules=len(rules.rules),
            pipelines=len(rules.pipelines),
            destinations=len(rules.destinations),
        )
        return True

    # --- kill switch -------------------------------------------------------------
    def disabled(self) -> set[str]:
        with self._lock:
            return self._config_disabled | self._api_disabled | set(self._rules.disabled_models)

    def routed_models(self) -> dict[str, list[str]]:
        """The models the rules in force send studies to (model -> pipelines), less the
        disabled ones: those are skipped on purpose."""
        rules, disabled = self.rules, self.disabled()
        routed: dict[str, list[str]] = {}
        for rule in rules.rules:
            for name in rule.pipelines:
                model = rules.pipelines[name].model
                pipes = routed.setdefault(model, [])
                if model not in disabled and name not in pipes:
                    pipes.append(name)
        return {model: pipes for model, pipes in routed.items() if pipes}

    def set_disabled(self, model: str, disabled: bool, *, who: str = "system") -> None:
        """The kill switch: ``who`` is recorded in the audit trail."""
        with self._lock:
            (self._api_disabled.add if disabled else self._api_disabled.discard)(model)
            data = json.dumps(sorted(self._api_disabled))
        tmp = self._state_file.with_suffix(".tmp")
        tmp.write_text(data)
        os.replace(tmp, self._state_file)
        log.warning("routing.model_disabled" if disabled else "routing.model_enabled", model=model)
        self._audit.record(
            AuditEvent.MODEL_DISABLED if disabled else AuditEvent.MODEL_ENABLED,
            who=who,
            detail={"model": model, "by": "kill switch"},
        )

    # --- life cycle --------------------------------------------------------------
    def _step(self) -> None:
        # a failed read (e.g. the audit trail's folder unwritable for a moment) leaves the
        # rules in force; the worker logs it and the next tick tries again
        self.reload()

    def start(self) -> None:
        self.reload()
        if self.path is not None:
            self._worker.start()

    def stop(self) -> None:
        self._worker.stop()

    @property
    def running(self) -> bool:
        """Whether the file watcher runs (it does when a routing file is configured)."""
        return self._worker.running


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None
