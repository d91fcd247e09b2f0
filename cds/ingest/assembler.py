"""Study assembly: a study is complete when no instance arrived for its quiet time.

The deadline of each study lives in the state store (``complete_due_at``,
pushed back by every new instance, whatever the association), so a restart
resumes every timer where it stood. One thread polls the store for due
studies and hands each completed study to the orchestrator's callback.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from cds.logging import get_logger
from cds.periodic import PeriodicWorker
from cds.store.base import StudyStore

log = get_logger("cds.assembly")

StudyCompleteCallback = Callable[[str], None]


class Assembler:
    def __init__(
        self,
        store: StudyStore,
        on_complete: StudyCompleteCallback,
        interval_s: float = 0.5,
        clock: Callable[[], float] = time.time,
        *,
        on_tick: Callable[[float], None] | None = None,
    ) -> None:
        """``on_tick(now)``: called at every tick after the due studies (the node's
        re-checks of studies that wait for a rule's longer quiet time)."""
        self._store = store
        self._on_complete = on_complete
        self._on_tick = on_tick
        self._clock = clock
        self._worker = PeriodicWorker(
            "cds-assembler", self._step, interval_s, log_event="assembly.tick_failed",
            wait_first=True,
        )  # fmt: skip

    def tick(self) -> list[str]:
        """Complete every due study once; returns the keys completed."""
        now = self._clock()
        done = []
        for key in self._store.studies_due(now):
            if self._store.complete_study(key, now):
                log.info("assembly.study_complete", study_key=key)
                done.append(key)
                try:
                    self._on_complete(key)
                except Exception as exc:  # a failing consumer must not stop assembly
                    log.error(
                        "assembly.on_complete_failed",
                        study_key=key,
                        error_type=type(exc).__name__,
                    )
        if self._on_tick is not None:
            self._on_tick(now)
        return done

    def _step(self) -> None:
        self.tick()

    def start(self) -> None:
        self._worker.start()

    def stop(self) -> None:
        self._worker.stop()

    @property
    def running(self) -> bool:
        return self._worker.running
