"""End to end: last instance received -> every result acknowledged by the PACS, vs raw onnxruntime.

    python bench/e2e.py [--model models/cds-ref-ct-bone] [--slices 300] [--size 512]
                        [--providers auto]

What it does, in one run:

1. Writes a synthetic head-like CT (``cds.demo.synthetic_ct``: air, soft tissue, a skull
   ring that ``cds-ref-ct-bone`` segments) of ``--slices`` slices of ``--size`` x
   ``--size``, 16 bit, fresh UIDs, into a temporary folder.
2. Starts a throw-away Orthanc (the PACS) and the node (``python -m cds serve``) with a
   routing file whose one pipeline sends every CT to ``--model`` (any package; default
   ``cds-ref-ct-bone``; ``models/cds-ref-perf-unet`` is a U-Net of real compute) and
   sends its results (those of the manifest, secondary capture excepted: SEG and SR for
   a segmentation) to that Orthanc; quiet time ``--quiet`` s.
3. Sends the series to the node with DCMTK ``storescu`` (one association) and waits until
   the study is done and every delivery is ``delivered``.
4. Measures from the node's own records: ``completed_at`` (the quiet time elapsed) to the
   last ``delivered_at`` (Orthanc answered the C-STORE) -- the end-to-end time, quiet
   time excluded; and from the study history a breakdown (routing, model run with decode,
   encoding + durable write, delivery), with the runtime's own split from the node log,
   and how many files the node read and decoded during the quiet time (``/health``;
   ``--preread-mb 0`` turns that off, for an A/B in one session).
5. Then, with the node stopped, loads the package's ``model.onnx`` in a plain
   onnxruntime session (same providers, onnxruntime's default threads) and times
   ``session.run`` over the same slices, already preprocessed, in the manifest's batches
   (median of ``--raw-rounds``, after a warm-up).

Prints both times and their ratio, the provider really used, and the command.
"""

from __future__ import annotations

import argparse
import atexit
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from receive import (  # noqa: E402
    STORESCU,
    _kill_children,
    _on_signal,
    dcmtk_env,
    free_port,
    spawn,
    wait_healthy,
)

from cds.demo import OrthancPacs, find_orthanc, synthetic_ct  # noqa: E402
from cds.inference.images import decode  # noqa: E402
from cds.inference.manifest import load_manifest  # noqa: E402
from cds.inference.preprocess import preprocess  # noqa: E402
from cds.inference.validate import validate_package  # noqa: E402
from cds.logging import configure_logging  # noqa: E402

MODEL = REPO / "models" / "cds-ref-ct-bone"


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def ts(value: Any) -> float:
    return (
        float(value)
        if isinstance(value, int | float)
        else datetime.fromisoformat(value).timestamp()
    )


def start_node(
    run: Path, routing: Path, quiet: float, providers: str, preread_mb: int | None = None
) -> tuple[int, str, Path]:
    """The node; ``preread_mb``: ``inference.preread_mb`` (None: the node's default)."""
    port, http = free_port(), free_port()
    inference: dict[str, Any] = {"model_dirs": [str(run / "models")], "providers": providers}
    if preread_mb is not None:
        inference["preread_mb"] = preread_mb
    cfg = run / "cds.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "dicom": {
                    "ae_title": "CDS",
                    "host": "127.0.0.1",
                    "port": port,
                    # growth.py sends up to 10 studies at once, all from 127.0.0.1
                    "limits": {"max_associations_per_address": 16},
                },
                "http": {"host": "127.0.0.1", "port": http},
                "spool": {"min_free_mb": 100},
                "assembly": {"quiet_time_s": quiet, "check_interval_s": 0.1},
                "routing": {"file": str(routing)},
                "inference": inference,
                "delivery": {"poll_interval_s": 0.1},
                "log": {"format": "json", "level": "info"},
            }
        )
    )
    log = run / "node.log"
    argv = [sys.executable, "-m", "cds", "serve", "--config", str(cfg), "--home", str(run / "home")]
    proc = spawn(argv, log)
    url = f"http://127.0.0.1:{http}"
    wait_healthy(f"{url}/health", proc, log, 120)
    return port, url, log


def wait_done(
    url: str, study_uid: str, timeout: float
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [
            s for s in get(f"{url}/api/studies?limit=1000") if s["study_instance_uid"] == study_uid
        ]
        if found and found[0]["state"] in ("done", "failed"):
            key = found[0]["study_key"]
            body = get(f"{url}/api/deliveries?study_key={key}&limit=1000")
            rows = body["deliveries"] if isinstance(body, dict) else body
            if rows and all(r["state"] != "pending" for r in rows):
                return get(f"{url}/api/studies/{key}"), rows
        time.sleep(1.0)  # the times are the store's; a poll costs the node CPU
    raise SystemExit(f"study not done and delivered after {timeout} s")


def breakdown(
    study: dict[str, Any], rows: list[dict[str, Any]], log: Path
) -> list[tuple[str, float]]:
    """Stages from the study history (first event of each kind), plus the runtime's split."""
    at: dict[str, float] = {}
    for h in study["history"]:
        at.setdefault(h["kind"], ts(h["at"]))
    end = max(ts(r["delivered_at"]) for r in rows)
    out = []
    if {"complete", "job_running", "inferred", "encoded"} <= at.keys():
        model = at["inferred"] - at["job_running"]
        out += [
            ("routing + job start", at["job_running"] - at["complete"]),
            ("model run + SEG/SR built (decode, runtime, highdicom)", model),
            ("durable write of the objects + outbox records", at["encoded"] - at["inferred"]),
            ("delivery (outbox -> Orthanc acknowledged)", end - at["encoded"]),
        ]
    # the study's run: the largest (the golden cases run at load come first and are small)
    runs = [
        json.loads(line)
        for line in log.read_text(errors="replace").splitlines()
        if '"inference.run"' in line
    ]
    if runs:
        ev = max(runs, key=lambda e: int(e.get("images", 0)))
        out += [
            ("  of which the cds runtime (inference.run)", float(ev["seconds"])),
            ("    preprocess (on a worker thread, overlapped)", float(ev.get("preprocess", 0))),
            (
                "    preprocess done in the quiet time (not counted)",
                float(ev.get("preprocess_ahead", 0)),
            ),
            ("    onnxruntime", float(ev.get("inference", 0))),
            ("    postprocess (masks back to the source grid)", float(ev.get("postprocess", 0))),
        ]
    return out


def raw_ort(
    model: Path, files: list[Path], providers: str, rounds: int
) -> tuple[float, str, list[int], float]:
    """Median s of session.run over the preprocessed slices; the provider; the tensor shape;
    the time pydicom took to decode the series (the node does it too, inside the model run)."""
    report = validate_package(model, providers, keep_session=True)
    if not report.ok or report.manifest is None or report.session is None:
        raise SystemExit(f"{model}: not a valid package: {report.errors}")
    m = report.manifest
    t = time.perf_counter()
    stack = decode(files)
    decode_s = time.perf_counter() - t
    tensor, _ = preprocess(stack, m.input.preprocessing, m.input)
    sess = ort.InferenceSession(str(model / "model.onnx"), providers=report.session.providers_asked)
    name, bs = m.input.tensor.name, m.input.batch_size
    batches = [np.ascontiguousarray(tensor[i : i + bs]) for i in range(0, len(tensor), bs)]
    sess.run(None, {name: batches[0]})  # warm-up
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        for b in batches:
            sess.run(None, {name: b})
        times.append(time.perf_counter() - t)
    return statistics.median(times), str(report.provider), list(tensor.shape), decode_s


def start_pacs(binary: Path, run: Path, model: Path) -> OrthancPacs:
    """A throw-away Orthanc, and the routing file sending every CT to ``model`` and its
    results (secondary capture excepted) to that Orthanc."""
    manifest = load_manifest(model)
    (run / "models").mkdir()
    (run / "models" / manifest.name).symlink_to(model.resolve(), target_is_directory=True)
    pacs = OrthancPacs(binary, run / "orthanc", "CDS", 1)
    atexit.register(pacs.stop)
    pacs.wait_ready()
    dest = {"ae_title": "ORTHANC", "host": "127.0.0.1", "port": pacs.dicom_port}
    results = [r for r in manifest.output.results if r != "SC"] or list(manifest.output.results)
    pipeline = {"model": manifest.name, "results": results, "destinations": ["pacs"]}
    rule = {"name": "CT", "match": [{"attribute": "Modality", "equals": "CT"}]}
    routing = {
        "destinations": {"pacs": dest},
        "pipelines": {"bench": pipeline},
        "rules": [{**rule, "pipelines": ["bench"]}],
    }
    (run / "routing.yaml").write_text(yaml.safe_dump(routing))
    return pacs


def send(folder: Path, port: int) -> None:
    t = time.perf_counter()
    argv = [STORESCU, "-aet", "BENCH", "-aec", "CDS", "127.0.0.1", str(port), "+sd", str(folder)]
    sent = subprocess.run(argv, env=dcmtk_env(), capture_output=True, text=True, check=False)
    if sent.returncode != 0:
        raise SystemExit(f"storescu failed:\n{sent.stdout}{sent.stderr}")
    print(f"sent with storescu (one association) in {time.perf_counter() - t:.2f} s")


def prepare(model: Path | None = None) -> Path | None:
    """What a benchmark with a node and an Orthanc needs first: ``model`` a package, quiet
    logs, the peers found (None, after saying what is missing), every child killed on
    exit or SIGTERM."""
    if model is not None and not (model / "manifest.yaml").is_file():
        print(f"{model}: not a model package (no manifest.yaml)")
        return None
    configure_logging("console", "warning")
    orthanc_bin = find_orthanc()
    if orthanc_bin is None or not Path(STORESCU).exists():
        print("needs Orthanc (/usr/sbin/Orthanc) and DCMTK storescu (/usr/bin/storescu)")
        return None
    atexit.register(_kill_children)
    signal.signal(signal.SIGTERM, _on_signal)
    return orthanc_bin


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=MODEL, help="model package folder")
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--quiet", type=float, default=2.0, help="assembly quiet time (excluded)")
    ap.add_argument("--providers", default="auto", choices=["auto", "tensorrt", "cuda", "cpu"])
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--raw-rounds", type=int, default=3, help="raw onnxruntime: median of")
    ap.add_argument(
        "--preread-mb",
        type=int,
        default=None,
        help="inference.preread_mb of the node (0: no reading during the quiet time)",
    )
    return ap.parse_args()


def main() -> int:
    args = _args()
    orthanc_bin = prepare(args.model)
    if orthanc_bin is None:
        return 2

    with tempfile.TemporaryDirectory(prefix="cds-bench-e2e-") as tmp:
        run = Path(tmp)
        t0 = time.perf_counter()
        study = synthetic_ct(run / "ct", args.slices, args.size)
        mb = sum(f.stat().st_size for f in study.files) / 1e6
        print(
            f"series: {args.slices} slices {args.size}x{args.size}, {mb:.1f} MB, written in "
            f"{time.perf_counter() - t0:.1f} s"
        )
        pacs = start_pacs(orthanc_bin, run, args.model)
        port, url, log = start_node(
            run, run / "routing.yaml", args.quiet, args.providers, args.preread_mb
        )
        send(run / "ct", port)
        detail, rows = wait_done(url, study.study_uid, args.timeout)
        ahead = get(f"{url}/health")["executor"].get("preread", {})
        _kill_children()  # the node: the raw run below gets the machine to itself
        bad = [r for r in rows if r["state"] != "delivered"]
        if detail["state"] != "done" or bad:
            raise SystemExit(f"study {detail['state']}, undelivered: {bad}")
        held = {}
        for s in pacs.series(pacs.call("GET", "/studies")[0]):
            held[s["modality"]] = s["instances"]
        pacs.stop()

        completed = ts(detail["completed_at"])
        last_rx = ts(detail["last_received_at"])
        end = max(ts(r["delivered_at"]) for r in rows)
        e2e = end - completed
        stages = breakdown(detail, rows, log)
        raw_s, provider, shape, decode_s = raw_ort(
            args.model, study.files, args.providers, args.raw_rounds
        )

    print(f"Orthanc holds: {held}; deliveries: {len(rows)} delivered")
    print(f"last instance received -> study complete (quiet time): {completed - last_rx:.3f} s")
    print(f"{'end to end: complete -> all results acknowledged':<56} {e2e:8.3f} s")
    for label, secs in stages:
        print(f"  {label:<54} {secs:8.3f} s")
    taken = int(ahead.get("files_taken", 0))
    print(
        f"  read and decoded during the quiet time: {ahead.get('files_read', 0)} files, "
        f"taken by the job: {taken} (inference.preread_mb {ahead.get('budget_mb', 0)}); "
        f"series whose batches were made then: {ahead.get('series_prepared', 0)}, used: "
        f"{ahead.get('series_prepared_taken', 0)}"
    )
    print(f"  {'  pydicom decode of the series (timed here again)':<54} {decode_s:8.3f} s")
    split = dict(stages)
    model = split.get("model run + SEG/SR built (decode, runtime, highdicom)")
    runtime = split.get("  of which the cds runtime (inference.run)")
    if model is not None and runtime is not None and not taken:
        rest = model - runtime - decode_s
        print(f"  {'  rest: sources read, highdicom SEG + SR':<54} {rest:8.3f} s")
    elif model is not None and runtime is not None:  # the sources were read ahead
        rest = model - runtime
        print(f"  {'  rest: stack built, highdicom SEG + SR':<54} {rest:8.3f} s")
    print(
        f"{'raw onnxruntime on the same slices (' + provider + ')':<56} {raw_s:8.3f} s"
        f"   tensor {shape}"
    )
    print(
        f"model {args.model.name}; ratio end to end / raw onnxruntime: {e2e / raw_s:.2f} "
        "(target <= 1.10)"
    )
    print(
        f"command: python bench/e2e.py --model {args.model} --slices {args.slices} "
        f"--size {args.size} --quiet {args.quiet} --providers {args.providers} "
        f"--raw-rounds {args.raw_rounds}"
        + (f" --preread-mb {args.preread_mb}" if args.preread_mb is not None else "")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
