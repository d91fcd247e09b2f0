"""Receive benchmark of issue 21: the node on PostgreSQL, with one and two receivers,
and on SQLite, each against storescp in the same rounds.

Run from the repository root (needs DCMTK, PostgreSQL's server binaries, as Debian's
package ``postgresql`` installs them, and psycopg, ``pip install '.[postgres]'``)::

    python bench/receive_pg.py --rounds 3 [--one-port] [--senders 4]

What it does, with the series, the UID rewriting and the helpers of ``bench/receive.py``
(300 CT slices of 512 x 512, about 525 KB each, fresh UIDs every round):

1. Starts a throwaway PostgreSQL cluster (``initdb``, ``pg_ctl``; a unix socket, the
   server's default durability: ``fsync`` and ``synchronous_commit`` on) in a
   temporary folder, and on free ports of 127.0.0.1: ``storescp`` (defaults), one node
   on SQLite (its own home), and two nodes on the cluster (``node-a``, ``node-b``: one
   spool folder, one ``node.key``, as README's "Several receivers on one PostgreSQL
   store" asks).
2. Every round, in an order rotated per round, times:
   - ``storescp``: ``storescu +sd DIR``, the whole series, one association;
   - ``sqlite x1``: the same into the SQLite node;
   - ``pg x1``: the same into node-a;
   - ``pg x2``: half of the files to node-a and half to node-b at once (two storescu,
     one association each), wall time from the start of both to the end of both;
   - with ``--one-port``, ``pg x2 1port``: two more nodes of the cluster (``node-c``,
     ``node-d``, the same spool and key) listen on ONE port (``dicom.reuse_port``,
     SO_REUSEPORT), and half of the files go to that port from each of two storescu at
     once. Each storescu is one association and the kernel gives each connection to one
     of the nodes, so both may land on one node: each round prints which node stored
     how many (from the store's ``received_by``);
   - with ``--senders N``, ``pg x1 N senders``: one more node of the cluster
     (``node-e``) which N storescu send to at once, each its share of the files; the
     report says how many rows that node committed per transaction (its ``/health``:
     ``store.instance_rows``; concurrent associations' rows are group-committed).
3. Checks that every file was stored (spool files, then instances in the store), and
   prints median/min times, instances/s, MB/s, and the ratios to storescp and to each
   other.

The nodes are given ``assembly.quiet_time_s: 3600`` (no study completes while timing)
and no routing file (they only receive), and log at warning.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from glob import glob
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from receive import (  # noqa: E402
    OUT,
    STORESCP,
    STORESCU,
    UidRewriter,
    _kill_children,
    _on_signal,
    dcmtk_env,
    ensure_series,
    free_port,
    spawn,
    wait_healthy,
    wait_listening,
)


# --- PostgreSQL ---------------------------------------------------------------
def _pg_bin() -> Path:
    found = sorted(glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise SystemExit("PostgreSQL's server binaries not found: apt-get install postgresql")
    return Path(found[-1]).parent


def _as_postgres(argv: list[str]) -> list[str]:
    """initdb refuses root: run as the ``postgres`` user then."""
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@dataclass
class Cluster:
    folder: Path
    port: int
    conf: list[str] = field(default_factory=list)  # extra server settings, KEY=VALUE
    bin: Path = field(default_factory=_pg_bin)

    @property
    def url(self) -> str:
        return f"postgresql://cds@/postgres?host={self.folder}&port={self.port}"

    def _run(self, *argv: str) -> None:
        cmd = _as_postgres([str(self.bin / argv[0]), *argv[1:]])
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise SystemExit(f"{argv[0]} failed: {done.stderr}{done.stdout}")

    def start(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        data = str(self.folder / "data")
        self._run("initdb", "-D", data, "-A", "trust", "-U", "cds", "-E", "UTF8", "--locale=C")
        options = f"-k {self.folder} -p {self.port} -c listen_addresses='' -c max_connections=50"
        options += "".join(f" -c {c}" for c in self.conf)
        self._run("pg_ctl", "-D", data, "-o", options, "-l", str(self.folder / "server.log"),
                  "-w", "-t", "60", "start")  # fmt: skip

    def stop(self) -> None:
        cmd = _as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.folder / "data"), "-m",
                            "immediate", "stop"])  # fmt: skip
        subprocess.run(cmd, capture_output=True, timeout=60, check=False)

    def count_instances(self) -> int:
        import psycopg  # noqa: PLC0415 (the optional extra)

        with psycopg.connect(self.url) as db:
            row = db.execute("SELECT COUNT(*) FROM instances").fetchone()
        return int(row[0]) if row else 0

    def count_by_node(self) -> dict[str, int]:
        """Instances recorded so far, by the node that received them."""
        import psycopg  # noqa: PLC0415 (the optional extra)

        sql = "SELECT received_by, COUNT(*) FROM instances GROUP BY received_by"
        with psycopg.connect(self.url) as db:
            return {str(node): int(n) for node, n in db.execute(sql).fetchall()}


# --- receivers ----------------------------------------------------------------
@dataclass
class Setup:
    """One timed configuration: the receivers that share each round's series."""

    name: str
    targets: list[tuple[str, int]]  # (called AE title, port) of each receiver
    spool: Path  # where the files land (counted to check nothing is missing)
    times: list[float] = field(default_factory=list)
    nodes: tuple[str, ...] = ()  # one port shared: the nodes behind it (node.name)
    split: list[dict[str, int]] = field(default_factory=list)  # per round: node -> stored
    health: str = ""  # the /health of its node, for its group commits (--senders)

    def stored(self) -> int:
        return sum(1 for p in self.spool.rglob("*") if p.is_file() and p.suffix != ".part")


#: node.name -> its /health URL
NODE_HTTP: dict[str, str] = {}


def start_node(
    run: Path, name: str, store: str, spool: Path, key: Path | None, *, port: int | None = None
) -> tuple[int, Path]:
    """``python -m cds serve`` with its own home; ``key``: copy it there first; ``port``:
    a DICOM port shared with other nodes (``dicom.reuse_port``)."""
    shared = port is not None
    port, http = port or free_port(), free_port()
    home = run / f"home-{name}"
    home.mkdir()
    if key is not None:
        shutil.copy2(key, home / "node.key")
    cfg = run / f"{name}.yaml"
    cfg.write_text(
        f"node: {{name: {name}}}\n"
        f"dicom: {{ae_title: CDS, host: 127.0.0.1, port: {port}, "
        f"reuse_port: {'true' if shared else 'false'}}}\n"
        f"http: {{host: 127.0.0.1, port: {http}}}\n"
        f"store: {store}\n"
        f"spool: {{path: {spool}, min_free_mb: 100}}\n"
        "assembly: {quiet_time_s: 3600}\n"
        "log: {level: warning}\n"
    )
    log = run / f"{name}.log"
    argv = [sys.executable, "-m", "cds", "serve", "--config", str(cfg), "--home", str(home)]
    proc = spawn(argv, log)
    NODE_HTTP[name] = f"http://127.0.0.1:{http}/health"
    wait_healthy(NODE_HTTP[name], proc, log, 90)
    return port, home


def _storescu(ae: str, port: int, files: list[Path]) -> list[str]:
    return [STORESCU, "-aet", "BENCH", "-aec", ae, "127.0.0.1", str(port),
            *(str(f) for f in files)]  # fmt: skip


def send(setup: Setup, files: list[Path]) -> float:
    """Split ``files`` over the setup's receivers, one storescu each, all at once."""
    n = len(setup.targets)
    parts = [files[i::n] for i in range(n)]
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(
            _storescu(ae, port, part),
            env=dcmtk_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for (ae, port), part in zip(setup.targets, parts, strict=True)
    ]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    elapsed = time.perf_counter() - t0
    for p, out in zip(procs, outs, strict=True):
        if p.returncode != 0:
            raise SystemExit(f"{setup.name}: storescu failed ({p.returncode}):\n{out[-2000:]!r}")
    return elapsed


def start_receivers(run: Path, cluster: Cluster, one_port: bool, senders: int = 0) -> list[Setup]:
    """storescp, the SQLite node, and the two PostgreSQL nodes (one spool, one key);
    ``one_port``: two more on one port (SO_REUSEPORT); ``senders``: one more, which
    that many storescu send to at once."""
    scp_dir = run / "storescp"
    scp_dir.mkdir()
    scp_port = free_port()
    scp = spawn([STORESCP, "-aet", "STORESCP", "-od", str(scp_dir), str(scp_port)],
                run / "storescp.log", dcmtk_env())  # fmt: skip
    wait_listening(scp_port, scp, run / "storescp.log", 10)
    sqlite_spool, pg_spool = run / "spool-sqlite", run / "spool-pg"
    sq_port, _ = start_node(run, "sqlite", "{backend: sqlite}", sqlite_spool, None)
    pg_store = f"{{backend: postgresql, url: '{cluster.url}'}}"
    a_port, a_home = start_node(run, "node-a", pg_store, pg_spool, None)
    b_port, _ = start_node(run, "node-b", pg_store, pg_spool, a_home / "node.key")
    setups = [
        Setup("storescp", [("STORESCP", scp_port)], scp_dir),
        Setup("sqlite x1", [("CDS", sq_port)], sqlite_spool),
        Setup("pg x1", [("CDS", a_port)], pg_spool),
        Setup("pg x2", [("CDS", a_port), ("CDS", b_port)], pg_spool),
    ]
    if senders > 1:
        e_port, _ = start_node(run, "node-e", pg_store, pg_spool, a_home / "node.key")
        setups.append(Setup(f"pg x1 {senders} senders", [("CDS", e_port)] * senders, pg_spool))
        setups[-1].health = NODE_HTTP["node-e"]
    if one_port:
        port, key = free_port(), a_home / "node.key"
        for name in ("node-c", "node-d"):
            start_node(run, name, pg_store, pg_spool, key, port=port)
        setups.append(
            Setup("pg x2 1port", [("CDS", port)] * 2, pg_spool, nodes=("node-c", "node-d"))
        )
    return setups


def _split(cluster: Cluster, setup: Setup, before: dict[str, int]) -> str:
    """Which node of the shared port stored how many in this round (kept in ``setup``)."""
    after = cluster.count_by_node()
    got = {n: after.get(n, 0) - before.get(n, 0) for n in setup.nodes}
    setup.split.append(got)
    return " (" + ", ".join(f"{n} {k}" for n, k in got.items()) + ")"


def time_rounds(
    setups: list[Setup],
    files: list[Path],
    rewriter: UidRewriter,
    args: argparse.Namespace,
    cluster: Cluster,
) -> int:
    """Every round, each setup in a rotated order; returns how many files went to the
    PostgreSQL nodes."""
    sent_to_pg = 0
    for r in range(args.warmup + args.rounds):
        order = setups[r % len(setups) :] + setups[: r % len(setups)]
        seen: dict[str, float] = {}
        split = ""
        for setup in order:
            rewriter.fresh()  # fresh UIDs: every receiver stores, none dedups
            before, by_node = setup.stored(), cluster.count_by_node() if setup.nodes else {}
            seen[setup.name] = send(setup, files)
            if (got := setup.stored() - before) != len(files):
                raise SystemExit(f"{setup.name}: stored {got} of {len(files)} files")
            if setup.nodes:
                split = _split(cluster, setup, by_node)
            sent_to_pg += len(files) if setup.name.startswith("pg") else 0
            if setup.name == "storescp":  # keep the disk from filling
                for p in setup.spool.iterdir():
                    p.unlink()
            os.sync()  # each is timed without the last one's write-back
            if r >= args.warmup:
                setup.times.append(seen[setup.name])
        label = "warm-up" if r < args.warmup else f"round {r - args.warmup + 1}"
        print(f"{label:>8}: " + "  ".join(f"{s.name} {seen[s.name]:.3f} s" for s in setups)
              + split, flush=True)  # fmt: skip
    return sent_to_pg


# --- main -----------------------------------------------------------------------
def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    parser.add_argument("--files", type=int, default=300, help="slices in the series (300)")
    parser.add_argument(
        "--pg-conf",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a PostgreSQL server setting (repeatable), e.g. synchronous_commit=off to see "
        "what the commit's WAL flush costs",
    )
    parser.add_argument(
        "--senders",
        type=int,
        default=0,
        metavar="N",
        help="also time N storescu at once to one PostgreSQL node of its own ('pg x1 N "
        "senders'), and report how many rows it committed per transaction (group commit)",
    )
    parser.add_argument(
        "--one-port",
        action="store_true",
        help="also time two nodes on one port (dicom.reuse_port): 'pg x2 1port'",
    )
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    for tool in (STORESCU, STORESCP):
        if not os.access(tool, os.X_OK):
            raise SystemExit(f"{tool} not found: apt-get install dcmtk")
    atexit.register(_kill_children)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    series = ensure_series(args.files)
    files = sorted(series.glob("*.dcm"))
    total_bytes = sum(p.stat().st_size for p in files)
    rewriter = UidRewriter(files)
    OUT.mkdir(parents=True, exist_ok=True)
    run = Path(tempfile.mkdtemp(prefix="run-pg-", dir=OUT))  # same disk as a real spool
    cluster = Cluster(Path(tempfile.mkdtemp(prefix="cds-bench-pg-")), free_port(), args.pg_conf)
    try:
        cluster.start()
        setups = start_receivers(run, cluster, args.one_port, args.senders)
        sent_to_pg = time_rounds(setups, files, rewriter, args, cluster)
        recorded = cluster.count_instances()
        if recorded != sent_to_pg:
            raise SystemExit(f"PostgreSQL store: {recorded} instances recorded of {sent_to_pg}")
        report(setups, len(files), total_bytes, args, recorded)
    finally:
        _kill_children()
        cluster.stop()
        shutil.rmtree(cluster.folder, ignore_errors=True)
        shutil.rmtree(run, ignore_errors=True)
    return 0


def report(
    setups: list[Setup], n: int, total_bytes: int, args: argparse.Namespace, recorded: int
) -> None:
    med = {s.name: statistics.median(s.times) for s in setups}
    print()
    print(
        f"{n} files, {total_bytes / 1e6:.1f} MB ({total_bytes // n} B each); {args.rounds} "
        f"rounds after {args.warmup} warm-up, order rotated per round; {recorded} instances "
        "recorded in PostgreSQL, as sent; PostgreSQL server settings: "
        + (" ".join(args.pg_conf) or "its defaults (fsync, synchronous_commit on)")
    )
    print(f"{'receiver':<12} {'median s':>9} {'min s':>7} {'inst/s':>7} {'MB/s':>7}")
    for s in setups:
        print(
            f"{s.name:<12} {med[s.name]:>9.3f} {min(s.times):>7.3f} {n / med[s.name]:>7.0f} "
            f"{total_bytes / 1e6 / med[s.name]:>7.1f}"
        )
    print("time ratios (median; lower is faster):")
    for a, b in (("sqlite x1", "storescp"), ("pg x1", "storescp"), ("pg x2", "storescp"),
                 ("pg x1", "sqlite x1"), ("pg x2", "pg x1")):  # fmt: skip
        print(f"  {a} / {b}: {med[a] / med[b]:.2f}x")
    print(f"throughput pg x2 / pg x1: {med['pg x1'] / med['pg x2']:.2f}x")
    for s in setups:
        if s.nodes:
            print(f"throughput {s.name} / pg x1: {med['pg x1'] / med[s.name]:.2f}x")
            rounds = "; ".join(", ".join(f"{n} {k}" for n, k in got.items()) for got in s.split)
            print(
                f"{s.name}: two storescu (one association each) to one port shared by "
                f"{' and '.join(s.nodes)}; the kernel picks a node per connection, so both "
                f"may land on one. Instances stored per node, each round (warm-up first): "
                f"{rounds}"
            )
    for s in setups:
        if s.health:
            with urllib.request.urlopen(s.health, timeout=10) as answer:
                rows = json.load(answer)["store"]["instance_rows"]
            print(
                f"throughput {s.name} / pg x1: {med['pg x1'] / med[s.name]:.2f}x; its node "
                f"committed {rows['rows']} rows in {rows['commits']} transactions "
                f"({rows['rows'] / max(1, rows['commits']):.2f} a transaction, at most "
                f"{rows['largest']})"
            )
    print()
    print(f"command: python bench/receive_pg.py {shlex.join(sys.argv[1:])}")
    print(
        f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; machine: {platform.node()}, "
        f"{os.cpu_count()} CPUs, load average before the report "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )


if __name__ == "__main__":
    sys.exit(main())
