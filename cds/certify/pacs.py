"""``cds certify pacs``: a site's PACS against a running cds node, one check at a time.

Each check is a :class:`~cds.certify.checks.Check` (its title and the IHE AIR or DICOM
requirement it proves are texts of ``cds.i18n``, part ``certify``). In order:

1. ``pacs_echo_out``: C-ECHO cds -> PACS; ``pacs_tls``: that association over TLS, when
   ``--tls-*`` options are given; ``pacs_echo_in``: the PACS's own C-ECHO to cds (an
   Orthanc's ``/modalities/{id}/echo`` when ``--http`` is given).
2. The synthetic test study (``cds.certify.pacs_study``): ``pacs_store`` into the PACS,
   ``pacs_to_cds`` from the PACS to cds (Orthanc REST, else C-MOVE to the node's AE),
   ``pacs_results`` cds routes, infers and delivers the results, ``pacs_query`` they are
   found in the same study by C-FIND, ``pacs_retrieve`` C-GET gives them back as cds
   sent them (byte for byte when the node's results folder is known, else their UIDs
   and classes against the node's API).
3. ``pacs_iocm``: an IOCM rejection note (the KOS cds emits on supersession) for one
   result; the PACS should then hide it from C-FIND. A PACS that does not is ``fail``
   with ``--require-iocm``, ``warn`` without (reported, never failing the run).
4. ``pacs_charset``: a UTF-8 study with French accents comes back unchanged.
5. ``pacs_large``: ``--large`` slices of 512 x 512 arrive complete (figures: MB, s, MB/s).

Evidence names files, tags, SOP classes, UIDs, statuses and figures; never a patient
value (the test studies hold none anyway).
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.uid import UID

from cds import __version__
from cds.certify.checks import Check
from cds.certify.pacs_data import charset_check, compare, large_check, sent_syntax
from cds.certify.pacs_http import HttpProblem, NodeApi, NodeInfo, OrthancRest
from cds.certify.pacs_net import Peer, echo, find, find_instances, get, move, store
from cds.certify.pacs_study import TestStudy, routed_study
from cds.destinations import Destination

#: every check, in report order
CHECKS = (
    "pacs_echo_out",
    "pacs_tls",
    "pacs_echo_in",
    "pacs_store",
    "pacs_to_cds",
    "pacs_results",
    "pacs_query",
    "pacs_retrieve",
    "pacs_iocm",
    "pacs_charset",
    "pacs_large",
)


@dataclass(frozen=True)
class PacsOptions:
    pacs: Destination
    node: NodeApi
    info: NodeInfo
    http: str | None = None  # the PACS's REST API (Orthanc), optional
    results_dir: Path | None = None  # the node's results folder, when its settings are known
    large: int = 40
    require_iocm: bool = False
    timeout_s: float = 300.0
    slices: int = 12


def class_name(uid: str) -> str:
    name = UID(uid).name
    return f"{uid} ({name})" if name and name != uid else uid


def _wait(predicate: Callable[[], Any], timeout_s: float, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


class _Run:
    def __init__(self, opts: PacsOptions, work: Path) -> None:
        self.o = opts
        self.work = work
        self.peer = Peer(opts.pacs, opts.info.ae_title)
        self.rest = OrthancRest(opts.http) if opts.http else None
        self.orthanc = self.rest is not None and self.rest.is_orthanc()
        self.checks: list[Check] = []

    def add(self, check: Check) -> Check:
        self.checks.append(check)
        return check

    # --- 1. the associations ---------------------------------------------------
    def echoes(self) -> bool:
        out = echo(self.peer)
        self.add(
            Check(
                "pacs_echo_out",
                "pass" if out.ok else "fail",
                [f"cds ({self.peer.calling_ae}) -> {self.peer.describe()}: {out.detail}"],
            )
        )
        if not self.o.pacs.tls.enabled:
            self.add(Check("pacs_tls", "not_applicable", ["no --tls-* option given"]))
        else:
            self.add(
                Check(
                    "pacs_tls",
                    "pass" if out.ok and out.tls else "fail",
                    [f"C-ECHO over TLS: {out.tls or out.detail}"],
                )
            )
        self.echo_in()
        return out.ok

    def _modality(self) -> tuple[str | None, str]:
        if self.rest is None:
            return None, "no --http given: the PACS's own echo is not reachable"
        if not self.orthanc:
            return None, f"{self.o.http} is not an Orthanc REST API (GET /system)"
        try:
            mod = self.rest.modality_of(self.o.info.ae_title)
        except HttpProblem as exc:
            return None, str(exc)
        if mod is None:
            return None, f"the PACS has no modality with AE title {self.o.info.ae_title}"
        return mod, ""

    def echo_in(self) -> None:
        mod, why = self._modality()
        if mod is None and self.orthanc:
            self.add(Check("pacs_echo_in", "fail", [f"PACS -> cds: {why}"]))
            return
        if mod is None:
            self.add(Check("pacs_echo_in", "not_applicable", [f"not tested: {why}"]))
            return
        assert self.rest is not None
        try:
            self.rest.echo(mod)
        except HttpProblem as exc:
            self.add(
                Check(
                    "pacs_echo_in",
                    "fail",
                    [
                        f"PACS -> cds ({mod}: {self.o.info.ae_title}): the PACS's C-ECHO failed",
                        str(exc),
                    ],
                )
            )
            return
        self.add(
            Check(
                "pacs_echo_in",
                "pass",
                [f"PACS -> cds: POST /modalities/{mod}/echo succeeded ({self.o.info.ae_title})"],
            )
        )

    # --- 2. the test study's round trip -----------------------------------------
    def store_study(self, check_id: str, study: TestStudy, what: str) -> tuple[bool, float]:
        start = time.monotonic()
        outcomes = store(self.peer, study.files)
        took = time.monotonic() - start
        bad = [(f, o) for f, o in zip(study.files, outcomes, strict=True) if not o.ok]
        evidence = [
            f"{what}: {len(study.files) - len(bad)}/{len(study.files)} instance(s) stored "
            f"by C-STORE into {self.peer.describe()}"
        ]
        evidence += [f"{f.name}: {o.detail}" for f, o in bad[:5]]
        if check_id:
            self.add(Check(check_id, "fail" if bad else "pass", evidence))
        return not bad, took

    def to_cds(self, study: TestStudy) -> None:
        mod, why = self._modality()
        if mod is not None:
            assert self.rest is not None
            try:
                sid = self.rest.study_id(study.study_uid)
                if sid is None:
                    raise HttpProblem("POST /tools/lookup: the PACS does not hold the test study")
                job = self.rest.store(mod, sid)
            except HttpProblem as exc:
                self.add(
                    Check(
                        "pacs_to_cds",
                        "fail",
                        [f"PACS -> cds: the PACS could not send the study to {mod}", str(exc)],
                    )
                )
                self._direct(study)
                return
            sent = job.get("InstancesCount", len(study.files))
            failed = job.get("FailedInstancesCount", 0)
            self.add(
                Check(
                    "pacs_to_cds",
                    "pass" if not failed else "fail",
                    [f"PACS -> cds: POST /modalities/{mod}/store sent {sent}, {failed} failed"],
                )
            )
            return
        out = move(self.peer, study.study_uid, self.o.info.ae_title)
        if out.ok:
            self.add(Check("pacs_to_cds", "pass", [f"PACS -> cds by C-MOVE: {out.detail}"]))
            return
        evidence = [f"PACS -> cds by C-MOVE: {out.detail}"]
        if why:
            evidence.append(f"the PACS's REST push was not tried: {why}")
        self.add(Check("pacs_to_cds", "fail", evidence))
        self._direct(study)

    def _direct(self, study: TestStudy) -> None:
        """Send the study straight to cds so that the later checks still run."""
        node = Destination(
            ae_title=self.o.info.ae_title, host=self.o.info.host, port=self.o.info.port
        )
        outcomes = store(Peer(node, "CDSCERTIFY"), study.files)
        sent = sum(o.ok for o in outcomes)
        self.checks[-1].evidence.append(
            f"sent directly by cds certify to {node.describe()} ({sent}/{len(outcomes)}) so "
            "that the later checks run: the PACS -> cds leg was not tested"
        )

    def results(self, study: TestStudy) -> list[dict[str, Any]]:
        """Wait for cds to finish the study and deliver its results; the delivered ones."""

        def done() -> dict[str, Any] | None:
            s = self.o.node.study_by_uid(study.study_uid)
            return s if s is not None and s.get("state") in ("done", "failed", "skipped") else None

        try:
            s = _wait(done, self.o.timeout_s)
        except HttpProblem as exc:
            self.add(Check("pacs_results", "fail", [f"cds API: {exc}"]))
            return []
        if not s:
            self.add(
                Check(
                    "pacs_results",
                    "fail",
                    [f"cds did not finish the test study within {self.o.timeout_s:.0f} s"],
                )
            )
            return []
        if s["state"] != "done":
            self.add(Check("pacs_results", "fail", [f"cds: the test study ended {s['state']}"]))
            return []

        def settled() -> list[dict[str, Any]] | None:
            rows = self.o.node.results(str(s["study_key"]))
            ds = [d for r in rows for d in r["deliveries"]]
            undelivered = [d for d in ds if d["state"] != "delivered"]
            if rows and all(d["state"] == "dead" or d["last_error"] for d in undelivered):
                return rows
            return None

        rows = _wait(settled, self.o.timeout_s) or self.o.node.results(str(s["study_key"]))
        return self._judge_delivery(rows)

    def _judge_delivery(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not rows:
            self.add(
                Check(
                    "pacs_results",
                    "fail",
                    [
                        "cds made no result for the test study: does a routing rule match an "
                        "adult head CT and run a model?"
                    ],
                )
            )
            return []
        evidence, bad, delivered = [], False, []
        for r in rows:
            kind = f"{r['modality']} {class_name(r['sop_class_uid'])}"
            ds = r["deliveries"]
            if not ds:
                bad = True
                evidence.append(f"{kind}: sent to no destination (the routing sends it nowhere)")
            for d in ds:
                if d["state"] == "delivered":
                    delivered.append(r)
                    evidence.append(f"{kind}: delivered to {d['destination']}")
                else:
                    bad = True
                    evidence.append(
                        f"cds -> PACS: the PACS refused {kind}: {d['state']}, "
                        f"{d['attempts']} attempt(s): {d['last_error']}"
                    )
        self.add(Check("pacs_results", "fail" if bad else "pass", evidence))
        return delivered

    def query_and_retrieve(self, study: TestStudy, delivered: list[dict[str, Any]]) -> None:
        if not delivered:
            for cid in ("pacs_query", "pacs_retrieve", "pacs_iocm"):
                self.add(Check(cid, "not_run", ["not run: no result was delivered"]))
            return
        answer, found = find_instances(self.peer, study.study_uid)
        evidence = [f"C-FIND in the test study: {answer.detail}"]
        missing = [r for r in delivered if r["sop_instance_uid"] not in found]
        for r in missing:
            evidence.append(
                f"{r['modality']} {class_name(r['sop_class_uid'])} {r['sop_instance_uid']}: "
                "delivered (the PACS answered the C-STORE) but C-FIND does not find it in the "
                "study: the PACS refused or dropped this SOP class"
            )
        ok = answer.ok and not missing
        if ok:
            evidence.append(f"all {len(delivered)} result(s) found in the same study")
        self.add(Check("pacs_query", "pass" if ok else "fail", evidence))
        here = [r for r in delivered if r["sop_instance_uid"] in found]
        self.retrieve(study, here)
        self.iocm(study, here)

    def retrieve(self, study: TestStudy, rows: list[dict[str, Any]]) -> None:
        if not rows:
            self.add(Check("pacs_retrieve", "not_run", ["not run: no result found by C-FIND"]))
            return
        evidence, bad = [], False
        for r in rows:
            out = get(
                self.peer,
                study.study_uid,
                r["series_instance_uid"],
                r["sop_instance_uid"],
                r["sop_class_uid"],
                syntax=sent_syntax(self.o.results_dir, r),
            )
            kind = f"{r['modality']} {r['sop_instance_uid']}"
            if not out.ok:
                bad = True
                evidence.append(f"{kind}: {out.detail}")
                continue
            ds, raw, syntax = out.retrieved[0]
            same, how = compare(self.o.results_dir, r, ds, raw, syntax)
            bad = bad or not same
            evidence.append(f"{kind}: {how}")
        self.add(Check("pacs_retrieve", "fail" if bad else "pass", evidence))

    # --- 3. IOCM --------------------------------------------------------------
    def iocm(self, study: TestStudy, rows: list[dict[str, Any]]) -> None:
        from cds.domain import ResultRef  # noqa: PLC0415
        from cds.results.encode import write_results  # noqa: PLC0415
        from cds.results.kos import build_rejection_kos  # noqa: PLC0415

        if not rows:
            self.add(Check("pacs_iocm", "not_run", ["not run: no result found by C-FIND"]))
            return
        r = sorted(rows, key=lambda x: x["modality"] != "OT")[0]
        ref = ResultRef(
            study.study_uid, r["series_instance_uid"], r["sop_instance_uid"], r["sop_class_uid"]
        )
        source = dcmread(study.files[0], stop_before_pixels=True)
        sha = hashlib.sha256(f"cds certify {__version__}".encode()).hexdigest()
        kos = build_rejection_kos(
            source, [ref], "en", model="cds-certify", version=__version__, sha256=sha, notes=[]
        )
        (path,) = write_results(self.work / "iocm", "kos", [kos])
        outcome = store(self.peer, [path])[0]
        kind = f"{r['modality']} {r['sop_instance_uid']}"
        evidence = [f"rejection note (KOS, 113001 Rejected for Quality Reasons) for {kind}: "
                    f"C-STORE {outcome.detail}"]  # fmt: skip
        if not outcome.ok:
            self.add(Check("pacs_iocm", "fail", evidence))
            return
        answer = find(self.peer, "IMAGE", study.study_uid, r["series_instance_uid"])
        still = any(str(m.get("SOPInstanceUID", "")) == ref.sop_uid for m in answer.matches)
        if answer.ok and not still:
            evidence.append("C-FIND no longer returns the rejected instance: the PACS hides it")
            self.add(Check("pacs_iocm", "pass", evidence))
            return
        evidence.append(
            "the PACS does not act on IOCM rejection: C-FIND still returns the rejected instance"
            if answer.ok
            else f"C-FIND after the rejection: {answer.detail}"
        )
        if not self.o.require_iocm:
            evidence.append("reported as a warning: IOCM not required (no --require-iocm)")
        self.add(Check("pacs_iocm", "fail" if self.o.require_iocm else "warn", evidence))

    def skip_rest(self, why: str) -> None:
        """Every check not made yet is ``not_run``, with ``why``."""
        made = {c.id for c in self.checks}
        for cid in CHECKS:
            if cid not in made:
                self.add(Check(cid, "not_run", [f"not run: {why}"]))


def certify_pacs(opts: PacsOptions) -> list[Check]:
    """Every check of the PACS, in the order of the module's docstring."""
    with tempfile.TemporaryDirectory(prefix="cds-certify-") as tmp:
        run = _Run(opts, Path(tmp))
        try:
            if not run.echoes():
                run.skip_rest("cds cannot open an association with the PACS (C-ECHO failed)")
                return run.checks
            study = routed_study(run.work / "study", opts.slices)
            stored, _ = run.store_study("pacs_store", study, "test study")
            if not stored:
                run.skip_rest("the PACS did not store the test study")
                return run.checks
            run.to_cds(study)
            delivered = run.results(study)
            run.query_and_retrieve(study, delivered)
            run.add(charset_check(run.peer, run.work / "charset"))
            run.add(large_check(run.peer, run.work / "large", opts.large))
        finally:
            if run.rest is not None:
                run.rest.close()
        return run.checks
