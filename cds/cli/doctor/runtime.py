"""The runtime: Python, onnxruntime, the execution providers that really work (a GPU
provider is tried on a real session), and every model package as ``cds model validate``
checks it (files, manifest, graph, test vector, golden cases end to end)."""

from __future__ import annotations

import sys

from cds.cli.doctor.report import Report, Status

MIN_PYTHON = (3, 11)
_GPU = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


def python(r: Report) -> None:
    v = sys.version_info
    found = f"{v.major}.{v.minor}.{v.micro}"
    if (v.major, v.minor) >= MIN_PYTHON:
        r.add("python", "Python", "ok", found)
    else:
        r.add("python", "Python", "fail", r.t("python_old", found=found), r.t("fix_python"))


def onnxruntime(r: Report) -> None:
    try:
        import onnxruntime as ort  # noqa: PLC0415 - lazy: `cds --help` stays fast
    except ImportError as exc:
        r.add("onnxruntime", "onnxruntime", "fail", str(exc), r.t("fix_onnxruntime"))
        return
    r.add("onnxruntime", "onnxruntime", "ok", str(ort.__version__))


def providers(r: Report) -> None:
    """Which providers really work: a GPU provider is tried on a real session."""
    import onnxruntime as ort  # noqa: PLC0415

    from cds.inference.session import gpu_runtime_present, tensorrt_present, visible_gpus  # noqa: PLC0415

    wanted = r.settings.inference.providers
    name, id_ = r.t("providers"), "providers"
    bad: Status = "fail" if wanted in ("cuda", "tensorrt") else "ok"
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        why, fix = r.t("cuda_no_provider"), r.t("fix_gpu_package")
    elif not gpu_runtime_present():
        why, fix = r.t("cuda_no_driver"), r.t("fix_gpu_driver")
    elif not visible_gpus():
        why, fix = r.t("cuda_no_gpu"), r.t("fix_gpu_visible")
    else:
        why, fix = _try_cuda(r), r.t("fix_gpu_libraries")
        if not why:
            gpus = ", ".join(f"GPU{g.id} {g.memory_mib} MiB" for g in visible_gpus())
            detail = r.t("cuda_works", gpus=gpus)
            if wanted == "tensorrt" and not tensorrt_present():
                r.add(id_, name, "fail", detail + "; " + r.t("no_tensorrt"), fix)
            else:
                r.add(id_, name, "ok", detail)
            return
    r.add(id_, name, bad, r.t("cpu_only", why=why, wanted=wanted), fix)


def _try_cuda(r: Report) -> str:
    """'' when a session made for CUDA really runs on CUDA, else why not."""
    from cds.config.bundled import BUNDLED_MODELS  # noqa: PLC0415
    from cds.errors import ModelError  # noqa: PLC0415
    from cds.inference.registry import find_packages  # noqa: PLC0415
    from cds.inference.session import Session  # noqa: PLC0415

    found = find_packages([*r.settings.inference.model_dirs, BUNDLED_MODELS])
    onnx = next((p / "model.onnx" for p in found if (p / "model.onnx").is_file()), None)
    if onnx is None:
        return r.t("cuda_untried")
    try:
        session = Session(onnx, "cuda")
    except ModelError:
        return r.t("cuda_falls_back")
    return "" if session.provider in _GPU else r.t("cuda_falls_back")


def models(r: Report) -> None:
    """Every package of ``inference.model_dirs``, as ``cds model validate`` checks it."""
    from cds.golden import run_golden  # noqa: PLC0415
    from cds.inference.registry import find_packages  # noqa: PLC0415
    from cds.inference.validate import validate_package  # noqa: PLC0415

    inf = r.settings.inference
    dirs = ", ".join(str(d) for d in inf.model_dirs)
    if not inf.model_dirs:
        r.add(
            "models",
            r.t("models"),
            "warn",
            r.t("no_model_dirs"),
            r.t("fix_model_dirs"),
        )
        return
    packages = find_packages(inf.model_dirs)
    if not packages:
        r.add(
            "models",
            r.t("models"),
            "fail",
            r.t("no_models", dirs=dirs),
            r.t("fix_model_dirs"),
        )
        return
    for pkg in packages:
        v = validate_package(pkg, inf.providers, golden=run_golden)
        name = v.manifest.name if v.manifest is not None else pkg.name
        label = r.t("model", name=name)
        if v.ok and v.manifest is not None:
            diff = max(v.test_vector_max_abs_diff.values(), default=0.0)
            detail = r.t(
                "model_ok",
                version=v.manifest.version,
                provider=v.provider,
                diff=f"{diff:.2g}",
                golden=len(v.golden),
            )
            r.add(f"model:{name}", label, "ok", detail)
        else:
            more = f" (+{len(v.errors) - 1})" if len(v.errors) > 1 else ""
            r.add(
                f"model:{name}",
                label,
                "fail",
                v.errors[0] + more,
                r.t("fix_model", path=pkg),
            )
