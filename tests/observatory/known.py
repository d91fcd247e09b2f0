"""A state store with known studies, jobs, results, findings and feedback, written with
the store's own methods at explicit times, and every figure the observatory must find
in it (worked out by hand below, not by the code under test).

Week 47 of 2026 starts on Monday 2026-11-16 (T0). Model alpha 1.0:

======  ==========  ===========  =============  ================================
study   completed   first result job run (s)    findings (present, score: feedback)
======  ==========  ===========  =============  ================================
S1      Tue W47     +4 s         2              F1 (yes .05: accept +60 s),
                                                F2 (no .15: reject +120, correct +300)
S2      Wed W47     +8 s         4              F3 (yes .95: accept +30)
S3      Thu W47     +12 s        6              F4 (no .50: none)
S4      Sun W47     +100 s       8              F5 (yes 1.0: reject +600, given in W48),
        23:57:30                                F6 (yes .99: none)
S5      Mon W48     +20 s        3              F7 (yes .30: none)
======  ==========  ===========  =============  ================================

S1 runs again in W48 (job of 10 s: a new SR and a rejection note withdrawing the old
one): still one study, counted in W47. S2 also has a failed job (not counted).
Model beta 2.0: S6 (Wed W47, +30 s, job 20 s), F8 (yes .70: accept +45).

Patient-like canaries sit everywhere the store can hold free text: the calling AE,
the user and the reason of the feedback, the corrected label.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cds.domain import (
    Feedback,
    FeedbackAction,
    FindingRecord,
    InstanceRecord,
    JobState,
    ResultObject,
    ResultState,
)
from cds.store.sqlite import SqliteStore

T0 = 1794787200.0  # Monday 2026-11-16 00:00 UTC, the start of ISO week 2026-W47
DAY = 86400.0
WEEK = 7 * DAY
CT = "1.2.840.10008.5.1.4.1.1.2"
SR = "1.2.840.10008.5.1.4.1.1.88.34"
SEG = "1.2.840.10008.5.1.4.1.1.66.4"
KOS = "1.2.840.10008.5.1.4.1.1.88.59"
SHA = {"alpha": "a" * 64, "beta": "b" * 64}
VERSION = {"alpha": "1.0", "beta": "2.0"}
CANARY_NAME = "CANARY^JEANNE"
CANARY_ID = "CANARY-PID-4711"
CANARY_AE = "CANARY_AE"
CANARY_USER = "dr.canary"


@dataclass
class Known:
    """What was put in the store, to look for in what comes out."""

    identifiers: set[str] = field(default_factory=set)  # study keys, UIDs, AE, users, ...
    study_keys: list[str] = field(default_factory=list)


def _uid(n: int, part: int) -> str:
    return f"1.2.826.0.1.3680043.10.4711.{n}.{part}"


def _result(
    key: str, n: int, part: int, model: str, *, kind: str, state: ResultState
) -> ResultObject:
    modality = {SR: "SR", SEG: "SEG", KOS: "KO"}[kind]
    return ResultObject(
        sop_uid=_uid(n, part),
        study_key=key,
        study_uid=_uid(n, 0),
        series_uid=_uid(n, 100 + part),
        sop_class_uid=kind,
        modality=modality,
        path=f"{key}/{part}.dcm",
        job_kind=f"chest:{model}",
        source_series_uid=_uid(n, 1),
        model_version=VERSION[model],
        inputs_seed=f"seed{n}",
        state=state,
        created_at=0.0,  # the store stamps its own time (now=)
    )


def _study(
    store: SqliteStore,
    known: Known,
    n: int,
    model: str,
    *,
    completed: float,
    first_result: float,
    run: tuple[float, float],
    findings: list[tuple[bool, float, list[tuple[FeedbackAction, float]]]],
) -> str:
    key = f"stk{n:04d}"
    known.study_keys.append(key)
    received = completed - 10
    store.record_instance(
        InstanceRecord(
            study_uid=_uid(n, 0),
            series_uid=_uid(n, 1),
            sop_uid=_uid(n, 2),
            sop_class_uid=CT,
            transfer_syntax_uid="1.2.840.10008.1.2.1",
            modality="CT",
            series_number=1,
            study_key=key,
            path=f"spool/{key}/{n}.dcm",
            size=1,
            sha256="0" * 64,
            calling_ae=CANARY_AE,
            received_at=received,
            quiet_time_s=10,
        )
    )
    assert store.complete_study(key, completed)
    job = store.create_job(key, f"chest:{model}", now=completed + 0.5)
    store.set_job_state(job.job_id, JobState.RUNNING, now=completed + run[0])
    made = completed + first_result
    objects = [
        _result(key, n, 3, model, kind=SR, state=ResultState.CURRENT),
        _result(key, n, 4, model, kind=SEG, state=ResultState.CURRENT),
    ]
    store.record_results(objects, [], now=made)
    records = [
        FindingRecord(
            tracking_uid=_uid(n, 1000 + i),
            result_sop_uid=objects[0].sop_uid,
            study_key=key,
            job_kind=f"chest:{model}",
            model=model,
            version=VERSION[model],
            sha256=SHA[model],
            label_scheme="SCT",
            label_value="39607008",
            label_meaning="Lung structure",
            display_en="Nodule",
            display_fr="Nodule",
            present=present,
            score=score,
            created_at=made,
        )
        for i, (present, score, _) in enumerate(findings)
    ]
    store.record_findings(records)
    for rec, (_, _, given) in zip(records, findings, strict=True):
        for j, (action, delay) in enumerate(given):
            fb_id = f"fb-{rec.tracking_uid}-{j}"
            correct = action is FeedbackAction.CORRECT
            store.add_feedback(
                Feedback(
                    feedback_id=fb_id,
                    tracking_uid=rec.tracking_uid,
                    result_sop_uid=rec.result_sop_uid,
                    study_key=key,
                    action=action,
                    reason=f"seen on {CANARY_NAME} ({CANARY_ID})",
                    corrected_scheme="99CANARY" if correct else None,
                    corrected_value=CANARY_ID if correct else None,
                    corrected_meaning=CANARY_NAME if correct else None,
                    who=CANARY_USER,
                    source="api",
                    at=made + delay,
                    model=model,
                    version=VERSION[model],
                    sha256=SHA[model],
                )
            )
            known.identifiers.add(fb_id)
        known.identifiers.add(rec.tracking_uid)
    store.set_job_state(job.job_id, JobState.DONE, now=completed + run[1])
    known.identifiers |= {key, job.job_id, *(_uid(n, p) for p in (0, 1, 2, 3, 4, 103, 104))}
    return key


def build(path: Path) -> tuple[SqliteStore, Known]:
    """The store described in the module docstring."""
    store, known = SqliteStore(path), Known()
    known.identifiers |= {CANARY_AE, CANARY_USER, CANARY_ID, CANARY_NAME}
    a, r, c = FeedbackAction.ACCEPT, FeedbackAction.REJECT, FeedbackAction.CORRECT
    plan = [  # n, model, completed, first result after, job (running, done) after, findings
        (
            1,
            "alpha",
            T0 + DAY,
            4,
            (2, 4),
            [(True, 0.05, [(a, 60)]), (False, 0.15, [(r, 120), (c, 300)])],
        ),
        (2, "alpha", T0 + 2 * DAY, 8, (4, 8), [(True, 0.95, [(a, 30)])]),
        (3, "alpha", T0 + 3 * DAY, 12, (6, 12), [(False, 0.5, [])]),
        (4, "alpha", T0 + WEEK - 150, 100, (92, 100), [(True, 1.0, [(r, 600)]), (True, 0.99, [])]),
        (5, "alpha", T0 + WEEK + 3600, 20, (17, 20), [(True, 0.3, [])]),
        (6, "beta", T0 + 2 * DAY, 30, (10, 30), [(True, 0.7, [(a, 45)])]),
    ]
    s1, s2, *_ = [
        _study(store, known, n, m, completed=t, first_result=f, run=run, findings=found)
        for n, m, t, f, run, found in plan
    ]

    failed = store.create_job(s2, "chest:alpha", now=T0 + 2 * DAY + 50)
    store.set_job_state(failed.job_id, JobState.RUNNING, now=T0 + 2 * DAY + 51)
    store.set_job_state(failed.job_id, JobState.FAILED, error="boom", now=T0 + 2 * DAY + 60)

    rerun = T0 + 8 * DAY  # S1 again: a new SR supersedes the old one, withdrawn by a KOS
    job = store.create_job(s1, "chest:alpha", now=rerun)
    store.set_job_state(job.job_id, JobState.RUNNING, now=rerun)
    store.record_results(
        [
            _result(s1, 1, 5, "alpha", kind=SR, state=ResultState.CURRENT),
            _result(s1, 1, 6, "alpha", kind=KOS, state=ResultState.REJECTION),
        ],
        [],
        superseded=[_uid(1, 3)],
        now=rerun + 5,
    )
    store.set_job_state(job.job_id, JobState.DONE, now=rerun + 10)
    known.identifiers |= {failed.job_id, job.job_id, _uid(1, 5), _uid(1, 6)}
    return store, known
