"""Growth: how time and memory scale with study size and with concurrent studies.

    python bench/growth.py [--model models/cds-ref-ct-bone] [--sizes 100,300,1000]
                           [--concurrent 1,2,5,10]
                           [--concurrent-slices 100] [--size 512] [--png docs/growth.png]

One node (``python -m cds serve``, ``--model`` routed, by default ``cds-ref-ct-bone``; its
results, secondary capture excepted, to a throw-away Orthanc), one run per point:

- **study size**: one synthetic CT of N slices (``cds.demo.synthetic_ct``) sent with
  DCMTK ``storescu``; the receive time (storescu's wall time), the end-to-end time
  (study complete -> every result acknowledged by Orthanc, quiet time excluded), and
  the node's peak resident memory above its idle level during the run;
- **concurrent studies**: K studies of ``--concurrent-slices`` slices sent at once, one
  ``storescu`` each; the wall time from the first byte sent to the last result
  acknowledged, and the peak memory above idle. For K = 10 this is the memory target
  of issue 8: peak <= 2x one study's pixel volume, while receiving (``receive peak``:
  measured until the last storescu returns) and overall (processing included).

The node's peak is Linux's VmHWM, reset before each point (``/proc/PID/clear_refs``).
Writes the figures as JSON, a PNG plot where matplotlib is installed, and prints them
with the command line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

import receive  # noqa: E402
from e2e import MODEL, prepare, start_node, start_pacs, ts, wait_done  # noqa: E402
from receive import STORESCU, dcmtk_env  # noqa: E402

from cds.demo import synthetic_ct  # noqa: E402


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not found for {pid}")


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def storescu(folder: Path, port: int) -> subprocess.Popen[bytes]:
    argv = [STORESCU, "-aet", "BENCH", "-aec", "CDS", "127.0.0.1", str(port), "+sd", str(folder)]
    return subprocess.Popen(
        argv, env=dcmtk_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def run_point(
    pid: int, port: int, url: str, *, folders: list[Path], study_uids: list[str], timeout: float
) -> dict[str, Any]:
    time.sleep(0.5)
    idle = rss_mb(pid)
    reset_peak(pid)
    t0 = time.time()
    procs = [storescu(f, port) for f in folders]
    for p in procs:
        p.wait(timeout)
        if p.returncode != 0:
            raise SystemExit(f"storescu failed: {p.stderr.read().decode() if p.stderr else ''}")
    received_s = time.time() - t0
    receive_peak = rss_mb(pid, "VmHWM") - idle
    ends, e2e = [], []
    for uid in study_uids:
        detail, rows = wait_done(url, uid, timeout)
        if detail["state"] != "done" or any(r["state"] != "delivered" for r in rows):
            raise SystemExit(f"study {detail['state']}; deliveries {[r['state'] for r in rows]}")
        end = max(ts(r["delivered_at"]) for r in rows)
        ends.append(end)
        e2e.append(end - ts(detail["completed_at"]))
    return {
        "receive_s": round(received_s, 3),
        "e2e_s": round(max(e2e), 3),
        "wall_s": round(max(ends) - t0, 3),
        "idle_mb": round(idle, 1),
        "receive_peak_mb": round(receive_peak, 1),
        "peak_mb": round(rss_mb(pid, "VmHWM") - idle, 1),
    }


def plot(points: dict[str, list[dict[str, Any]]], png: Path) -> None:
    import matplotlib  # noqa: PLC0415 - only the plot needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, xlabel in (
        (axes[0], "size", "slices in the study (512 x 512)"),
        (axes[1], "concurrent", "studies sent at once"),
    ):
        rows = points[key]
        if not rows:
            continue
        x = [r["x"] for r in rows]
        ax.plot(x, [r["wall_s"] for r in rows], "o-", label="first byte -> last result acked (s)")
        ax.plot(x, [r["receive_s"] for r in rows], "s--", label="receive (storescu wall, s)")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("seconds")
        ax.grid(alpha=0.3)
        ax2 = ax.twinx()
        ax2.plot(
            x, [r["peak_mb"] for r in rows], "^:", color="tab:red", label="peak RSS above idle"
        )
        ax2.plot(x, [r["pixel_mb"] for r in rows], "-", color="tab:gray", alpha=0.5,
                 label="pixel data sent (MB)")  # fmt: skip
        ax2.set_ylabel("MB")
        lines = ax.get_legend_handles_labels()
        lines2 = ax2.get_legend_handles_labels()
        ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=7, loc="upper left")
    fig.suptitle("cds: time and memory vs study size and concurrent studies (cds-ref-ct-bone, CPU)")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=MODEL, help="model package folder")
    ap.add_argument("--sizes", default="100,300,1000")
    ap.add_argument("--concurrent", default="1,2,5,10")
    ap.add_argument("--concurrent-slices", type=int, default=100)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--providers", default="auto", choices=["auto", "tensorrt", "cuda", "cpu"])
    ap.add_argument("--png", type=Path, default=REPO / "docs" / "growth.png")
    ap.add_argument("--json", type=Path, default=REPO / "bench" / "out" / "growth.json")
    ap.add_argument("--timeout", type=float, default=900)
    args = ap.parse_args()
    orthanc_bin = prepare(args.model)
    if orthanc_bin is None:
        return 2
    sizes = [int(x) for x in args.sizes.split(",") if x]
    conc = [int(x) for x in args.concurrent.split(",") if x]
    points: dict[str, list[dict[str, Any]]] = {"size": [], "concurrent": []}
    with tempfile.TemporaryDirectory(prefix="cds-bench-growth-") as tmp:
        run = Path(tmp)
        start_pacs(orthanc_bin, run, args.model)
        port, url, _ = start_node(run, run / "routing.yaml", 1.0, args.providers)
        pid = receive._CHILDREN[-1].pid
        for n in sizes:
            study = synthetic_ct(run / f"s{n}", n, args.size)
            mb = sum(f.stat().st_size for f in study.files) / 1e6
            r = run_point(
                pid,
                port,
                url,
                folders=[run / f"s{n}"],
                study_uids=[study.study_uid],
                timeout=args.timeout,
            )
            r.update(x=n, pixel_mb=round(n * args.size * args.size * 2 / 1e6, 1), files_mb=mb)
            points["size"].append(r)
            print(f"size {n:5d} slices: {r}", flush=True)
            _purge(run / f"s{n}")
        for k in conc:
            folders, uids = [], []
            for i in range(k):
                f = run / f"c{k}_{i}"
                uids.append(synthetic_ct(f, args.concurrent_slices, args.size).study_uid)
                folders.append(f)
            r = run_point(pid, port, url, folders=folders, study_uids=uids, timeout=args.timeout)
            one = args.concurrent_slices * args.size * args.size * 2 / 1e6
            r.update(x=k, pixel_mb=round(k * one, 1), one_study_pixel_mb=round(one, 1))
            r["receive_peak_vs_one_study"] = round(r["receive_peak_mb"] / one, 2)
            r["peak_vs_one_study"] = round(r["peak_mb"] / one, 2)
            points["concurrent"].append(r)
            print(f"concurrent {k:2d} x {args.concurrent_slices} slices: {r}", flush=True)
            for f in folders:
                _purge(f)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(points, indent=1))
    try:
        plot(points, args.png)
        print(f"plot: {args.png}; figures: {args.json}")
    except ImportError:  # matplotlib is not a dependency of cds
        print(f"no plot (matplotlib not installed); figures: {args.json}")
    print(
        f"command: python bench/growth.py --model {args.model} "
        f"--sizes {args.sizes} --concurrent {args.concurrent} "
        f"--concurrent-slices {args.concurrent_slices} --size {args.size}"
    )
    return 0


def _purge(folder: Path) -> None:
    for f in folder.iterdir():
        f.unlink()
    folder.rmdir()


if __name__ == "__main__":
    raise SystemExit(main())
