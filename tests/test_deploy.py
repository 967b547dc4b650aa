"""Structural checks of the deployment configs: cluster.yaml (AWS), deploy/gcp.yaml, the KubeRay RayJob and
its Dockerfile. Nothing here reaches a cloud: the files are parsed and checked for the pieces a GPU sweep
needs (a CPU head, GPU workers that scale from 0, the GPU extra installed, replicas that take their vLLM
engine processes with them, Prometheus metrics)."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
LAUNCHER_CONFIGS = [ROOT / "cluster.yaml", DEPLOY / "gcp.yaml"]
KILL_CHILDREN = "RAY_kill_child_processes_on_worker_exit_with_raylet_subreaper"
RAY_VERSION = "2.60.0"


def load(path: Path) -> dict:
    with path.open() as f:
        return yaml.safe_load(f)


def is_gpu_type(node_type: dict) -> bool:
    """A GPU worker type: GPU resources declared (GCP) or a GPU instance type (AWS infers resources)."""
    config = node_type["node_config"]
    return (
        node_type.get("resources", {}).get("GPU", 0) > 0
        or bool(config.get("guestAccelerators"))
        or str(config.get("InstanceType", "")).startswith(("g4", "g5", "g6", "p3", "p4", "p5"))
    )


@pytest.fixture(params=LAUNCHER_CONFIGS, ids=lambda p: p.relative_to(ROOT).as_posix())
def launcher(request) -> dict:
    return load(request.param)


def test_launcher_config_matches_ray_schema(launcher):
    jsonschema = pytest.importorskip("jsonschema")
    spec = importlib.util.find_spec("ray")  # locates the package without importing it
    schema_path = Path(spec.submodule_search_locations[0]) / "autoscaler" / "ray-schema.json"
    jsonschema.validate(launcher, json.loads(schema_path.read_text()))


def test_launcher_head_and_gpu_workers(launcher):
    types = launcher["available_node_types"]
    head = launcher["head_node_type"]
    assert head in types
    assert not is_gpu_type(types[head]), "the head runs the driver and shard tasks, not replicas"
    gpu_types = {name: t for name, t in types.items() if name != head and is_gpu_type(t)}
    assert gpu_types, "no GPU worker type"
    for name, node_type in gpu_types.items():
        assert node_type["min_workers"] == 0, name
        assert node_type["max_workers"] >= 1, name
    assert launcher["max_workers"] >= max(t["max_workers"] for t in gpu_types.values())


def test_launcher_installs_gpu_extra(launcher):
    setup = launcher["setup_commands"]
    assert any("pip install" in cmd and "-e '.[gpu]'" in cmd for cmd in setup)
    mounted = next(iter(launcher["file_mounts"]))
    assert any(f"cd {mounted}" in cmd and ".[gpu]" in cmd for cmd in setup), "install from the file-mounted repo"


@pytest.mark.parametrize("key", ["head_start_ray_commands", "worker_start_ray_commands"])
def test_launcher_start_commands(launcher, key):
    starts = [cmd for cmd in launcher[key] if "ray start" in cmd]
    assert len(starts) == 1
    start = starts[0]
    assert re.search(rf"\b{KILL_CHILDREN}=1\b", start), "the env var must reach the raylet that `ray start` spawns"
    assert "--metrics-export-port=8080" in start
    if key == "head_start_ray_commands":
        assert "--head" in start
        assert "--dashboard-host=0.0.0.0" in start
        assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in start


def test_gcp_specifics():
    cfg = load(DEPLOY / "gcp.yaml")
    provider = cfg["provider"]
    assert provider["type"] == "gcp"
    assert provider["availability_zone"].startswith(provider["region"] + "-")
    assert "," not in provider["availability_zone"], "the GCP provider takes exactly one zone"
    project = provider["project_id"]
    assert project
    types = cfg["available_node_types"]
    assert types[cfg["head_node_type"]]["node_config"]["machineType"] == "n2-standard-8"
    for name, node_type in types.items():
        node_config = node_type["node_config"]
        assert node_type["resources"].get("CPU", 0) > 0, f"{name}: GCE needs explicit resources"
        images = [d["initializeParams"]["sourceImage"] for d in node_config["disks"] if d.get("boot")]
        assert images and all("deeplearning-platform-release" in i and "/family/" in i for i in images), name
        if name == cfg["head_node_type"]:
            continue
        accelerators = node_config["guestAccelerators"]
        assert sum(a["acceleratorCount"] for a in accelerators) == node_type["resources"]["GPU"], name
        assert node_config["scheduling"]["onHostMaintenance"] == "TERMINATE", f"{name}: GPU VMs cannot live-migrate"
        emails = [account["email"] for account in node_config["serviceAccounts"]]
        assert all(email.endswith(f"@{project}.iam.gserviceaccount.com") for email in emails), name
    machine_types = {t["node_config"]["machineType"] for t in types.values()}
    assert {"g2-standard-8", "a2-highgpu-1g"} <= machine_types
    assert ".venv" in cfg["rsync_exclude"], "never rsync the local virtual environment"
    assert any("google-api-python-client" in cmd for cmd in cfg["head_setup_commands"])


def rayjob_documents() -> list[dict]:
    with (DEPLOY / "kuberay-rayjob.yaml").open() as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


def rayjob() -> dict:
    jobs = [doc for doc in rayjob_documents() if doc["kind"] == "RayJob"]
    assert len(jobs) == 1
    return jobs[0]


def containers(pod_template: dict) -> list[dict]:
    return pod_template["spec"]["containers"]


def test_rayjob_entrypoint_and_lifecycle():
    job = rayjob()
    assert job["apiVersion"] == "ray.io/v1"
    spec = job["spec"]
    entrypoint = spec["entrypoint"]
    assert entrypoint.startswith("ttsearch sweep ")
    assert "--config conf/gpu.yaml" in entrypoint
    assert "output_dir=/mnt/results/" in entrypoint
    assert spec["shutdownAfterJobFinishes"] is True
    assert isinstance(spec["ttlSecondsAfterFinished"], int) and spec["ttlSecondsAfterFinished"] >= 0
    assert spec["rayClusterSpec"]["rayVersion"] == RAY_VERSION


def test_rayjob_head_and_gpu_workers():
    cluster = rayjob()["spec"]["rayClusterSpec"]
    assert cluster["enableInTreeAutoscaling"] is True
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    assert head["rayStartParams"]["metrics-export-port"] == "8080"
    for container in containers(head["template"]):
        assert "nvidia.com/gpu" not in container.get("resources", {}).get("limits", {}), "the head is CPU-only"
    gpu_groups = [
        group
        for group in cluster["workerGroupSpecs"]
        if any("nvidia.com/gpu" in c.get("resources", {}).get("limits", {}) for c in containers(group["template"]))
    ]
    assert gpu_groups, "no GPU worker group"
    for group in gpu_groups:
        assert group["minReplicas"] == 0
        assert group["maxReplicas"] >= 1
        assert group.get("replicas", 0) == 0
        assert group["rayStartParams"]["metrics-export-port"] == "8080"
        assert containers(group["template"])[0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    for group in cluster["workerGroupSpecs"]:
        # rayStartParams are passed to `ray start` as strings; KubeRay rejects other types.
        assert all(isinstance(v, str) for v in group["rayStartParams"].values())
    assert all(isinstance(v, str) for v in head["rayStartParams"].values())


def all_ray_pods() -> list[dict]:
    cluster = rayjob()["spec"]["rayClusterSpec"]
    return [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]


def test_rayjob_pods_share_image_env_and_results_volume():
    claims = {doc["metadata"]["name"]: doc for doc in rayjob_documents() if doc["kind"] == "PersistentVolumeClaim"}
    images = set()
    for pod in all_ray_pods():
        ray_container = containers(pod)[0]
        images.add(ray_container["image"])
        env = {e["name"]: e.get("value") for e in ray_container.get("env", [])}
        assert env.get(KILL_CHILDREN) == "1"
        mounts = {m["name"]: m["mountPath"] for m in ray_container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        results = [name for name, path in mounts.items() if path == "/mnt/results"]
        assert len(results) == 1, "every pod mounts the results volume: shard tasks write from any pod"
        claim = volumes[results[0]]["persistentVolumeClaim"]["claimName"]
        assert claim in claims, f"PVC {claim} is not defined in the file"
        assert "ReadWriteMany" in claims[claim]["spec"]["accessModes"]
    assert len(images) == 1, "head and workers must run the same image (same Ray, same code)"


def test_dockerfile_builds_the_gpu_image():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    instructions = [line.strip() for line in dockerfile.splitlines() if line.strip() and not line.startswith("#")]
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", dockerfile, re.M))
    base = next(line for line in instructions if line.startswith("FROM "))
    base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base.split()[1])
    assert re.fullmatch(rf"rayproject/ray:{re.escape(RAY_VERSION)}-py311-cu12\d", base), base
    runs = [line for line in instructions if line.startswith("RUN ")]
    assert any("pip install" in line and "'.[gpu]'" in line and " -e " not in line for line in runs), "a real install"
    copied = {part.rstrip("/") for line in instructions if line.startswith("COPY ") for part in line.split()[1:-1]}
    for needed in ("pyproject.toml", "ttsearch", "actors", "pipelines", "conf", "data"):
        assert needed in copied, f"the image needs {needed}"
    assert ".venv" not in copied and "." not in copied, "never copy the local virtual environment"
    workdir = next(line.split()[1] for line in instructions if line.startswith("WORKDIR "))
    for pod in all_ray_pods():
        assert containers(pod)[0]["workingDir"] == workdir, "conf/gpu.yaml is resolved from the working directory"
