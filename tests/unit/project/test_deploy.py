"""The deployment configs against the project they deploy: cluster.yaml (AWS), deploy/gcp.yaml, the KubeRay
RayJob and RayService, their Dockerfile, and the Ray Serve config deploy/serve.yaml. Nothing here reaches a
cloud, needs Docker or starts Ray: the files are parsed and checked against what they must agree with — Ray's
launcher schema, its `ray start` options and Serve's config schema, pyproject.toml (the extras, the console
script, the packages the image must carry, the Ray version), the repository's files, the Serve application
they name (imported and built from its args, which must load as a valid ttsearch config), and conf/gpu.yaml's
replicas (every GPU worker fits one; the cluster can grow to host all of them)."""

from __future__ import annotations

import copy
import dataclasses
import importlib
import importlib.util
import json
import re
import shlex
import tomllib
import typing
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from pydantic import BaseModel
from ray.scripts.scripts import start as ray_start
from ray.serve import Application
from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
from ray.serve.schema import ServeDeploySchema
from ttsearch.pipelines.serve import API_KEY_ENV, APP_NAME

from ttsearch.cli import build_parser
from ttsearch.config import CONF_DIR, SweepConfig, load_config

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
LAUNCHER_CONFIGS = [ROOT / "cluster.yaml", DEPLOY / "gcp.yaml"]
KUBERAY = {"RayJob": DEPLOY / "kuberay-rayjob.yaml", "RayService": DEPLOY / "kuberay-rayservice.yaml"}
CLUSTER_SPEC = {"RayJob": "rayClusterSpec", "RayService": "rayClusterConfig"}  # where each keeps its RayCluster
SERVE_CONFIGS = ["deploy/serve.yaml", "RayService"]  # Ray Serve config files: the file, the RayService's string
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
    return [
        ("generator", cfg.generator.num_cpus, cfg.generator.num_gpus, cfg.generator.replicas),
        ("verifier", cfg.verifier.num_cpus, cfg.verifier.num_gpus, cfg.verifier.replicas),
    ]


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


def kuberay_documents(kind: str) -> list[dict]:
    with KUBERAY[kind].open() as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


def kuberay(kind: str) -> dict:
    """The one `kind` resource (RayJob, RayService) of its manifest."""
    resources = [doc for doc in kuberay_documents(kind) if doc["kind"] == kind]
    assert len(resources) == 1
    return resources[0]


def ray_cluster(kind: str) -> dict:
    """The RayCluster spec a RayJob / RayService creates."""
    return kuberay(kind)["spec"][CLUSTER_SPEC[kind]]


def containers(pod_template: dict) -> list[dict]:
    return pod_template["spec"]["containers"]


def all_ray_pods(kind: str) -> list[dict]:
    cluster = ray_cluster(kind)
    return [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]


def serve_config(source: str) -> dict:
    """A Ray Serve config (ServeDeploySchema): deploy/serve.yaml, or the RayService's serveConfigV2 string."""
    if source == "RayService":
        return yaml.safe_load(kuberay("RayService")["spec"]["serveConfigV2"])
    return load(ROOT / source)


def app_config(app: dict) -> SweepConfig:
    """The ttsearch config a Serve application's `build_app` loads from its args (config files, overrides)."""
    args = app["args"]
    assert isinstance(args["config"], list) and isinstance(args["overrides"], list), args
    return load_config(args["config"], args["overrides"])


def workload(kind: str) -> tuple[SweepConfig, int]:
    """The ttsearch config a KubeRay manifest runs, and how many sets of its replicas run at once: a sweep
    starts one; a service one per ingress replica (each owns its generator and verifier replicas)."""
    spec = kuberay(kind)["spec"]
    if kind == "RayJob":
        args = build_parser().parse_args(shlex.split(spec["entrypoint"])[1:])
        return load_config([ROOT / path for path in args.config], args.overrides), 1
    [app] = serve_config(kind)["applications"]
    cfg = app_config(app)
    return cfg, cfg.serve.autoscaling.max_replicas


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


def assert_image_carries(path: str, working_dir: str) -> None:
    """`path`, relative to a pod's working directory, is a repository file that deploy/Dockerfile copies there."""
    in_image = f"{working_dir}/{path}"
    assert any(
        in_image.startswith(f"{target}/") and (ROOT / source / in_image[len(target) + 1 :]).is_file()
        for source, target in Dockerfile().copies().items()
    ), f"{path} is not in the image"


def test_rayjob_runs_a_console_script_on_a_config_the_image_carries():
    spec = kuberay("RayJob")["spec"]
    program, *argv = shlex.split(spec["entrypoint"])
    assert program in PYPROJECT["project"]["scripts"], f"{program} is not a console script of the project"
    args = build_parser().parse_args(argv)
    cfg, _ = workload("RayJob")
    for path in args.config:  # resolved from the pods' working directory, inside the image
        assert_image_carries(path, containers(all_ray_pods("RayJob")[0])[0]["workingDir"])
    for pod in all_ray_pods("RayJob"):
        mounts = [m["mountPath"] for m in containers(pod)[0]["volumeMounts"]]
        assert any(cfg.output_dir.startswith(f"{m}/") for m in mounts), "results land on the shared volume"
    assert spec["shutdownAfterJobFinishes"] is True
    assert isinstance(spec["ttlSecondsAfterFinished"], int) and spec["ttlSecondsAfterFinished"] >= 0


@pytest.mark.parametrize("kind", KUBERAY)
def test_kuberay_head_and_gpu_workers_fit_what_it_runs(kind):
    cfg, copies = workload(kind)
    cluster = ray_cluster(kind)
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
    metrics_ports = {
        port["containerPort"]
        for pod in all_ray_pods(kind)
        for container in containers(pod)
        for port in container["ports"]
        if port.get("name") == "metrics"
    }
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
    needed = copies * sum(count * gpus for _, _, gpus, count in replica_needs(cfg))
    assert reachable >= needed, f"{needed} GPUs needed, at most {reachable} reachable"


@pytest.mark.parametrize("kind", KUBERAY)
def test_kuberay_pods_run_one_image_one_ray_and_the_env(kind):
    image = Dockerfile()
    # One Ray everywhere: the cluster spec's, the image's (its Dockerfile) and the tag the pods pull.
    ray_version = ray_cluster(kind)["rayVersion"]
    assert ray_version == image.args["RAY_VERSION"] and RAY_REQUIREMENT.specifier.contains(ray_version)
    tag = image.base.split(":", 1)[1]
    images = set()
    for pod in all_ray_pods(kind):
        for container in [*containers(pod), *pod["spec"].get("initContainers", [])]:
            assert container["image"].endswith(f":ray{tag}"), f"{container['image']} is not built from {image.base}"
        ray_container = containers(pod)[0]
        images.add(ray_container["image"])
        env = {e["name"]: e.get("value") for e in ray_container.get("env", [])}
        assert env.get(KILL_CHILDREN) == "1"
        assert ray_container["workingDir"] == image.workdir, "conf/ is resolved from the working directory"
    assert len(images) == 1, "head and workers must run the same image (same Ray, same code)"


def test_rayjob_pods_share_the_results_volume():
    claims = {
        doc["metadata"]["name"]: doc for doc in kuberay_documents("RayJob") if doc["kind"] == "PersistentVolumeClaim"
    }
    for pod in all_ray_pods("RayJob"):
        ray_container = containers(pod)[0]
        mounts = {m["name"]: m["mountPath"] for m in ray_container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        results = [name for name, path in mounts.items() if path == "/mnt/results"]
        assert len(results) == 1, "every pod mounts the results volume: shard tasks write from any pod"
        claim = volumes[results[0]]["persistentVolumeClaim"]["claimName"]
        assert claim in claims, f"PVC {claim} is not defined in the file"
        assert "ReadWriteMany" in claims[claim]["spec"]["accessModes"]


def nested_model(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a field holds, directly, optionally or as list items (not as a dict's values)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) is dict:
        return None
    return next(filter(None, map(nested_model, typing.get_args(annotation))), None)


def unknown_keys(data: dict, model: type[BaseModel], where: str = "") -> list[str]:
    """Keys of `data` that `model` (and the models nested in it) does not define."""
    unknown = []
    for key, value in data.items():
        field = model.model_fields.get(key)
        if field is None:
            unknown.append(f"{where}{key}")
        elif (inner := nested_model(field.annotation)) is not None:
            items = value if isinstance(value, list) else [value]
            for i, item in enumerate(items):
                if isinstance(item, dict):
                    index = f"[{i}]" if isinstance(value, list) else ""
                    unknown += unknown_keys(item, inner, f"{where}{key}{index}.")
    return unknown


@pytest.mark.parametrize("source", SERVE_CONFIGS)
def test_serve_config_matches_serves_schema(source):
    config = serve_config(source)
    ServeDeploySchema.model_validate(config)  # types, required fields, route prefixes, unique names
    # Serve ignores keys it does not know (forward compatibility), so a misspelt key would do nothing.
    assert unknown_keys(config, ServeDeploySchema) == []
    broken = copy.deepcopy(config)
    broken["applications"][0]["route_prefx"] = "/"
    broken["http_options"] = {**broken.get("http_options", {}), "hots": "0.0.0.0"}
    assert set(unknown_keys(broken, ServeDeploySchema)) == {"http_options.hots", "applications[0].route_prefx"}


@pytest.mark.parametrize("source", SERVE_CONFIGS)
def test_serve_app_builds_from_its_import_path_on_the_shipped_configs(source, tmp_path, monkeypatch):
    # A directory without conf/: the config files must come from the installed package, as on a node that
    # runs the app without the source tree as its working directory (no runtime_env working_dir).
    monkeypatch.chdir(tmp_path)
    [app] = serve_config(source)["applications"]
    assert app["name"] == APP_NAME and app["route_prefix"] == "/", "the app `ttsearch serve` runs, at the root"
    assert not app.get("deployments"), "build_app sets the deployment's options from serve.autoscaling"
    module_name, _, attribute = app["import_path"].partition(":")
    assert module_name.split(".")[0] in PYPROJECT["tool"]["setuptools"]["packages"], "installed with the project"
    builder = getattr(importlib.import_module(module_name), attribute)
    assert callable(builder)
    cfg = app_config(app)  # validates every key
    assert cfg.verifier.kind not in ("oracle", "hash"), "a service needs a verifier that scores new questions"
    # What Serve does with an import path that names a builder: check its signature, call it with the args.
    started = []  # the suite's own Ray may be up already (integration tests run first): watch ray.init instead
    monkeypatch.setattr(ray, "init", lambda *args, **kwargs: started.append(args or kwargs))
    built = call_user_app_builder_with_args_if_necessary(builder, app["args"])
    assert isinstance(built, Application)
    assert started == [], "building the application must not start Ray"
    for path in app["args"]["config"]:
        assert Path(path).parent == Path("conf") and (CONF_DIR / Path(path).name).is_file(), path
        assert_image_carries(path, Dockerfile().workdir)


def test_serve_yaml_listens_where_ttsearch_serve_does():
    config = serve_config("deploy/serve.yaml")
    http = ServeDeploySchema.model_validate(config).http_options
    [app] = config["applications"]
    cfg = app_config(app)
    assert (http.host, http.port) == (cfg.serve.host, cfg.serve.port), "the documented URLs hold for both"
    assert cfg.serve.proxy_location == ServeDeploySchema.model_validate(config).proxy_location.value


def test_rayservice_proxies_listen_on_the_serve_port_of_its_pods():
    http = ServeDeploySchema.model_validate(serve_config("RayService")).http_options
    assert http.host == "0.0.0.0", "the proxy is reached from outside its pod, through the serve Service"
    ports = [
        {p["containerPort"] for c in containers(pod) for p in c["ports"] if p.get("name") == "serve"}
        for pod in all_ray_pods("RayService")
    ]
    assert ports[0] == {http.port}, "the head declares the port its proxy listens on"
    assert all(p <= {http.port} for p in ports[1:])


def test_rayservice_serves_conf_gpu_yamls_models_and_search():
    served, _ = workload("RayService")
    gpu = load_config([ROOT / "conf/gpu.yaml", ROOT / "conf/revision_prompt.yaml"])
    for section in ("generator", "verifier", "search"):
        assert getattr(served, section) == getattr(gpu, section), f"{section}: conf/serve.yaml's CPU settings leak"
    # The scheduler is gpu.yaml's but for the service's batch window (conf/serve.yaml), which sweeps leave at 0.
    window = load_config(ROOT / "conf/serve.yaml").scheduler.batch_window_s
    assert window > 0 and served.scheduler == dataclasses.replace(gpu.scheduler, batch_window_s=window)


def test_rayservice_pods_read_the_api_key_from_a_secret():
    served, _ = workload("RayService")
    assert served.serve.api_key is None, "a key in the config would win over the Secret (and sit in the repository)"
    assert not any(doc["kind"] == "Secret" for doc in kuberay_documents("RayService"))
    references = set()
    for pod in all_ray_pods("RayService"):  # the ingress replica may run on any pod
        env = {e["name"]: e for e in containers(pod)[0].get("env", [])}
        assert API_KEY_ENV in env, "every pod that can host the ingress replica needs the key"
        assert "value" not in env[API_KEY_ENV]
        ref = env[API_KEY_ENV]["valueFrom"]["secretKeyRef"]
        assert not ref.get("optional"), "without the Secret the pod must not start unprotected"
        references.add((ref["name"], ref["key"]))
    [(name, key)] = references
    assert f"kubectl create secret generic {name} --from-literal={key}=" in KUBERAY["RayService"].read_text()
