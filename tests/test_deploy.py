"""The deployment configs against the project they deploy: cluster.yaml (AWS), deploy/gcp.yaml, the KubeRay
RayJob and its Dockerfile. Nothing here reaches a cloud or needs Docker: the files are parsed and checked
against what they must agree with — Ray's launcher schema and its `ray start` options, pyproject.toml (the
extras, the console script, the packages the image must carry, the Ray version), the repository's files, and
conf/gpu.yaml's replicas (every GPU worker fits one; the cluster can grow to host all of them)."""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import shlex
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from ray.scripts.scripts import start as ray_start

from ttsearch.cli import build_parser
from ttsearch.config import SweepConfig, load_config

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
LAUNCHER_CONFIGS = [ROOT / "cluster.yaml", DEPLOY / "gcp.yaml"]
KILL_CHILDREN = "RAY_kill_child_processes_on_worker_exit_with_raylet_subreaper"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
EXTRAS = set(PYPROJECT["project"]["optional-dependencies"])
RAY_REQUIREMENT = next(r for r in map(Requirement, PYPROJECT["project"]["dependencies"]) if r.name == "ray")
# (vCPUs, GPUs) of the AWS instance types the launcher uses: AWS nodes' resources are inferred from these.
AWS_INSTANCES = {"m6i.2xlarge": (8, 0), "g6.xlarge": (4, 1), "p4d.24xlarge": (96, 8)}
# GCE GPU machine families and the only accelerator each can carry.
GCE_ACCELERATORS = {"g2": "nvidia-l4", "a2": "nvidia-tesla-a100"}


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


def node_capacity(node_type: dict) -> tuple[float, float]:
    """(CPUs, GPUs) Ray sees on a node of this type: declared resources win, else the AWS instance's."""
    resources = node_type.get("resources", {})
    instance = node_type["node_config"].get("InstanceType")
    inferred = AWS_INSTANCES[instance] if instance else (0, 0)
    return resources.get("CPU", inferred[0]), resources.get("GPU", inferred[1])


def gce_vcpus(machine_type: str) -> int:
    """vCPUs of a GCE machine type: `<family>-standard-<vCPUs>` or A2's `a2-highgpu-<GPUs>g` (12 per GPU)."""
    if match := re.fullmatch(r"\w+-standard-(\d+)", machine_type):
        return int(match[1])
    if match := re.fullmatch(r"a2-highgpu-(\d+)g", machine_type):
        return 12 * int(match[1])
    raise AssertionError(f"unknown machine type {machine_type}: add its vCPUs here")


def documented_sweep(path: Path) -> SweepConfig:
    """The config of the `ttsearch sweep --config ...` that a launcher file's comments tell the user to run."""
    [configs] = set(re.findall(r"ttsearch sweep ((?:--config \S+\s*)+)", path.read_text()))
    return load_config([ROOT / name for name in configs.split()[1::2]])


def replica_needs(cfg: SweepConfig) -> list[tuple[str, int, float, int]]:
    """(what, CPUs, GPUs, count) of each kind of GPU replica the sweep starts."""
    return [("generator", cfg.generator.num_cpus, cfg.generator.num_gpus, cfg.generator.replicas),
            ("verifier", cfg.verifier.num_cpus, cfg.verifier.num_gpus, cfg.verifier.replicas)]  # fmt: skip


def pip_install(command: str) -> tuple[list[str], list[Requirement]]:
    """(project extras installed from `.`, other requirements) of the `pip install` in a shell command."""
    words = shlex.split(command.split("pip install", 1)[1].split("&&")[0])
    targets = [w for w in words if not w.startswith("-")]
    local = [w for w in targets if w == "." or w.startswith(".[")]
    assert len(local) == 1, f"installs the project from `.` once: {command}"
    extras = re.fullmatch(r"\.(?:\[(.*)\])?", local[0])[1]
    others = [Requirement(w) for w in targets if w != local[0]]
    return ([e.strip() for e in extras.split(",")] if extras else []), others


def check_ray_pin(requirements: list[Requirement]) -> str:
    """The one `ray==X` pin: X satisfies pyproject's Ray requirement and the pin keeps pyproject's Ray extras."""
    [ray] = [r for r in requirements if r.name == "ray"]
    [pin] = [s.version for s in ray.specifier if s.operator == "=="]
    assert RAY_REQUIREMENT.specifier.contains(pin), f"ray {pin} does not satisfy pyproject's {RAY_REQUIREMENT}"
    assert RAY_REQUIREMENT.extras <= ray.extras, f"the pin drops Ray extras the project needs: {ray}"
    return pin


def ray_start_options(command: str) -> dict:
    """The options of the `ray start` in a shell command line, parsed by Ray's own CLI (unknown flags and
    bad values raise), and the environment assignments in front of it."""
    [segment] = [s for s in command.split(";") if "ray start" in s]
    words = shlex.split(segment)
    env = {}
    while "=" in words[0] and not words[0].startswith("-"):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    assert words[:2] == ["ray", "start"], segment
    return {"env": env, **ray_start.make_context("start", words[2:]).params}


@pytest.fixture(params=LAUNCHER_CONFIGS, ids=lambda p: p.relative_to(ROOT).as_posix())
def launcher_path(request) -> Path:
    return request.param


@pytest.fixture
def launcher(launcher_path) -> dict:
    return load(launcher_path)


def test_launcher_config_matches_ray_schema(launcher):
    spec = importlib.util.find_spec("ray")  # locates the package without importing it
    schema = json.loads((Path(spec.submodule_search_locations[0]) / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(launcher, schema)
    broken = copy.deepcopy(launcher)
    broken["available_node_types"][broken["head_node_type"]]["max_wokers"] = 1
    with pytest.raises(jsonschema.ValidationError):  # the schema is strict enough to catch a typo
        jsonschema.validate(broken, schema)


def test_launcher_head_and_gpu_workers_fit_the_sweep_it_documents(launcher, launcher_path):
    sweep = documented_sweep(launcher_path)
    types = launcher["available_node_types"]
    head = launcher["head_node_type"]
    assert head in types
    assert not is_gpu_type(types[head]) and node_capacity(types[head])[1] == 0, "the head hosts no replica"
    gpu_types = {name: t for name, t in types.items() if name != head and is_gpu_type(t)}
    assert gpu_types, "no GPU worker type"
    for name, node_type in gpu_types.items():
        assert node_type["min_workers"] == 0 < node_type["max_workers"], f"{name}: scales from 0"
        cpus, gpus = node_capacity(node_type)
        for what, need_cpus, need_gpus, _ in replica_needs(sweep):
            assert cpus >= need_cpus and gpus >= need_gpus, f"{name} ({cpus} CPUs, {gpus} GPUs) cannot host a {what}"
    # The cluster can grow to host every replica at once.
    cap = launcher["max_workers"]
    reachable = sum(min(t["max_workers"], cap) * node_capacity(t)[1] for t in gpu_types.values())
    needed = sum(count * gpus for _, _, gpus, count in replica_needs(sweep))
    assert reachable >= needed, f"{needed} GPUs needed, at most {reachable} reachable"


def test_launcher_installs_the_mounted_project_with_an_extra_pyproject_defines(launcher):
    [(mounted, source)] = [(dst, src) for dst, src in launcher["file_mounts"].items() if (ROOT / src).resolve() == ROOT]
    installs = [cmd for cmd in launcher["setup_commands"] if "pip install" in cmd and f"cd {mounted} " in cmd]
    assert len(installs) == 1, "the project is installed from the directory the repository is mounted at"
    assert (ROOT / source / "pyproject.toml").is_file()
    extras, others = pip_install(installs[0])
    assert "gpu" in extras and set(extras) <= EXTRAS, f"extras {extras}; pyproject defines {sorted(EXTRAS)}"
    check_ray_pin(others)


@pytest.mark.parametrize("key", ["head_start_ray_commands", "worker_start_ray_commands"])
def test_launcher_start_commands_are_valid_ray_start_lines(launcher, key):
    starts = [cmd for cmd in launcher[key] if "ray start" in cmd]
    assert len(starts) == 1
    options = ray_start_options(starts[0])
    assert options["env"].get(KILL_CHILDREN) == "1", "the env var must reach the raylet that `ray start` spawns"
    assert options["metrics_export_port"], "Prometheus scrapes a fixed port"
    assert options["head"] == (key == "head_start_ray_commands")
    if options["head"]:
        assert options["dashboard_host"] == "0.0.0.0", "`ray job submit` reaches the dashboard from outside"
        assert options["autoscaling_config"], "the head runs the autoscaler"
    else:
        assert options["address"], "workers join the head"


def test_gcp_machines_carry_what_their_resources_declare():
    cfg = load(DEPLOY / "gcp.yaml")
    provider = cfg["provider"]
    assert provider["type"] == "gcp"
    assert provider["availability_zone"].startswith(provider["region"] + "-")
    assert "," not in provider["availability_zone"], "the GCP provider takes exactly one zone"
    project = provider["project_id"]
    for name, node_type in cfg["available_node_types"].items():
        node_config = node_type["node_config"]
        machine = node_config["machineType"]
        assert 0 < node_type["resources"].get("CPU", 0) <= gce_vcpus(machine), f"{name}: CPUs of a {machine}"
        images = [d["initializeParams"]["sourceImage"] for d in node_config["disks"] if d.get("boot")]
        assert images and all("deeplearning-platform-release" in i and "/family/" in i for i in images), name
        accelerators = node_config.get("guestAccelerators", [])
        assert sum(a["acceleratorCount"] for a in accelerators) == node_type["resources"].get("GPU", 0), name
        if not accelerators:
            continue
        family = machine.split("-")[0]
        assert {a["acceleratorType"] for a in accelerators} == {GCE_ACCELERATORS[family]}, f"{name}: {machine}"
        assert node_config["scheduling"]["onHostMaintenance"] == "TERMINATE", f"{name}: GPU VMs cannot live-migrate"
        emails = [account["email"] for account in node_config["serviceAccounts"]]
        assert all(email.endswith(f"@{project}.iam.gserviceaccount.com") for email in emails), name
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


def all_ray_pods() -> list[dict]:
    cluster = rayjob()["spec"]["rayClusterSpec"]
    return [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]


class Dockerfile:
    """deploy/Dockerfile's instructions, `${ARG}`s substituted."""

    def __init__(self, path: Path = DEPLOY / "Dockerfile"):
        text = path.read_text()
        self.args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.M))
        lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        self.instructions = [re.sub(r"\$\{(\w+)\}", lambda m: self.args[m[1]], line) for line in lines]

    def all(self, keyword: str) -> list[list[str]]:
        return [shlex.split(line)[1:] for line in self.instructions if line.split()[0] == keyword]

    @property
    def base(self) -> str:
        [[image, *_]] = self.all("FROM")
        return image

    @property
    def workdir(self) -> str:
        return self.all("WORKDIR")[-1][0]

    def copies(self) -> dict[str, str]:
        """Source in the build context (the repository root) → absolute path in the image."""
        copied = {}
        for words in self.all("COPY"):
            *sources, destination = [w for w in words if not w.startswith("--")]
            for source in sources:
                target = destination if destination.startswith("/") else f"{self.workdir}/{destination}"
                target = target.replace("/./", "/").rstrip("/")
                copied[source.rstrip("/")] = f"{target}/{Path(source).name}" if destination.endswith("/") else target
        return copied


def test_dockerfile_installs_the_project_it_copies_with_an_extra_pyproject_defines():
    image = Dockerfile()
    copies = image.copies()
    for source in copies:
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository (the build context)"
        assert source not in (".", ".venv", "runs"), "never copy the local virtual environment or runs"
    # What a pip build of pyproject.toml reads: itself, its readme, every package directory and package-dir.
    setuptools = PYPROJECT["tool"]["setuptools"]
    mapped = setuptools.get("package-dir", {})
    needed = {"pyproject.toml", PYPROJECT["project"]["readme"]}
    needed |= {mapped.get(p, p.replace(".", "/")).split("/")[0] for p in setuptools["packages"]}
    assert not needed - set(copies), f"the image lacks {sorted(needed - set(copies))}"
    assert {copies[name] for name in needed} == {f"{image.workdir}/{name}" for name in needed}, "one source tree"
    [install] = [" ".join(words) for words in image.all("RUN") if "pip install" in " ".join(words)]
    assert " -e " not in install, "a real install: the image runs without its build context"
    extras, others = pip_install(install)
    assert "gpu" in extras and set(extras) <= EXTRAS, f"extras {extras}; pyproject defines {sorted(EXTRAS)}"
    assert check_ray_pin(others) == image.args["RAY_VERSION"], "Ray stays at the base image's version"
    python = re.search(r"-py(\d)(\d+)-", image.base)
    assert python and f"{python[1]}.{python[2]}" in SpecifierSet(PYPROJECT["project"]["requires-python"]), image.base
    assert [KILL_CHILDREN, "1"] in [words[0].split("=", 1) for words in image.all("ENV")]


def test_rayjob_runs_a_console_script_on_a_config_the_image_carries():
    job, image = rayjob(), Dockerfile()
    spec = job["spec"]
    program, *argv = shlex.split(spec["entrypoint"])
    assert program in PYPROJECT["project"]["scripts"], f"{program} is not a console script of the project"
    args = build_parser().parse_args(argv)
    cfg = load_config([ROOT / path for path in args.config], args.overrides)
    for path in args.config:  # resolved from the pods' working directory, inside the image
        in_image = f"{containers(all_ray_pods()[0])[0]['workingDir']}/{path}"
        assert any(in_image.startswith(f"{target}/") and (ROOT / source / in_image[len(target) + 1 :]).is_file()
                   for source, target in image.copies().items()), f"{path} is not in the image"  # fmt: skip
    for pod in all_ray_pods():
        mounts = [m["mountPath"] for m in containers(pod)[0]["volumeMounts"]]
        assert any(cfg.output_dir.startswith(f"{m}/") for m in mounts), "results land on the shared volume"
    assert spec["shutdownAfterJobFinishes"] is True
    assert isinstance(spec["ttlSecondsAfterFinished"], int) and spec["ttlSecondsAfterFinished"] >= 0
    # One Ray everywhere: the cluster spec's, the image's (its Dockerfile) and the tag the pods pull.
    ray_version = spec["rayClusterSpec"]["rayVersion"]
    assert ray_version == image.args["RAY_VERSION"] and RAY_REQUIREMENT.specifier.contains(ray_version)
    tag = image.base.split(":", 1)[1]
    for pod in all_ray_pods():
        for container in [*containers(pod), *pod["spec"].get("initContainers", [])]:
            assert container["image"].endswith(f":ray{tag}"), f"{container['image']} is not built from {image.base}"


def test_rayjob_head_and_gpu_workers_fit_the_sweep_it_runs():
    spec = rayjob()["spec"]
    args = build_parser().parse_args(shlex.split(spec["entrypoint"])[1:])
    cfg = load_config([ROOT / path for path in args.config], args.overrides)
    cluster = spec["rayClusterSpec"]
    assert cluster["enableInTreeAutoscaling"] is True
    head = cluster["headGroupSpec"]
    # KubeRay passes rayStartParams to `ray start` as --key=value strings: Ray's CLI must accept each one.
    for params, role in [(head["rayStartParams"], ["--head"])] + [
        (g["rayStartParams"], ["--address=head:6379"]) for g in cluster["workerGroupSpecs"]
    ]:
        assert all(isinstance(v, str) for v in params.values()), "KubeRay rejects non-string rayStartParams"
        ray_start.make_context("start", role + [f"--{k}={v}" for k, v in params.items()])
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    for container in containers(head["template"]):
        assert "nvidia.com/gpu" not in container.get("resources", {}).get("limits", {}), "the head is CPU-only"
    metrics_ports = {port["containerPort"] for pod in all_ray_pods() for container in containers(pod)
                     for port in container["ports"] if port.get("name") == "metrics"}  # fmt: skip
    exported = {int(group["rayStartParams"]["metrics-export-port"]) for group in [head, *cluster["workerGroupSpecs"]]}
    assert exported == metrics_ports, "the metrics port Ray exports on is the one the pods expose"
    gpu_groups = [
        group
        for group in cluster["workerGroupSpecs"]
        if any("nvidia.com/gpu" in c.get("resources", {}).get("limits", {}) for c in containers(group["template"]))
    ]
    assert gpu_groups, "no GPU worker group"
    reachable = 0
    for group in gpu_groups:
        assert group["minReplicas"] == group.get("replicas", 0) == 0 < group["maxReplicas"], "scales from 0"
        limits = containers(group["template"])[0]["resources"]["limits"]
        cpus, gpus = float(limits["cpu"]), int(limits["nvidia.com/gpu"])
        for what, need_cpus, need_gpus, _ in replica_needs(cfg):
            assert cpus >= need_cpus and gpus >= need_gpus, f"a {group['groupName']} pod cannot host a {what}"
        reachable += group["maxReplicas"] * gpus
    needed = sum(count * gpus for _, _, gpus, count in replica_needs(cfg))
    assert reachable >= needed, f"{needed} GPUs needed, at most {reachable} reachable"


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
        assert ray_container["workingDir"] == Dockerfile().workdir, "conf/ is resolved from the working directory"
    assert len(images) == 1, "head and workers must run the same image (same Ray, same code)"
