"""Offline checks of the Kubernetes manifests in deploy/kubernetes.

No cluster is needed, and no network: the manifests are validated against
the Kubernetes OpenAPI schemas that the PyPI package `kubernetes-validate`
carries (strict mode, so an unknown or misspelt field fails), and against
the `magnetar` binary itself ($MAGNETAR_BIN): every MAGNETAR_* variable and
every magnetar.toml key must be one it knows, and each container's
environment and configuration must take the binary as far as its first
etcd request. The rest cross-checks the objects: Service and PodDisruptionBudget
selectors, probe ports, volumes, the etcd member list and the addresses
bookies and brokers advertise.
"""

import os
import re
import shutil
import socket
import subprocess
import tomllib
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from conftest import REPO, free_port, magnetar_bin

K8S_DIR = REPO / "deploy" / "kubernetes"
README = K8S_DIR / "README.md"

# Kubernetes versions whose bundled schemas the manifests must pass: an
# older release still widely run, and the newest kubernetes-validate ships.
K8S_VERSIONS = ("1.30.0", "1.37.0")

WORKLOAD_KINDS = ("StatefulSet", "Deployment")
# Made-up downward-API values for running the binary as a pod would.
FIELD_VALUES = {
    "metadata.namespace": "magnetar",
    "status.podIP": "10.244.0.17",
}


def load_manifests():
    """(file name, document) for every document of every file the
    kustomization lists, in order."""
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    docs = []
    for name in kustomization["resources"]:
        for doc in yaml.safe_load_all((K8S_DIR / name).read_text()):
            if doc is not None:
                docs.append((name, doc))
    return docs


MANIFESTS = load_manifests()
OBJECTS = [doc for _, doc in MANIFESTS]


def doc_id(item):
    name, doc = item
    return f"{name}:{doc['kind']}/{doc['metadata']['name']}"


def of_kind(*kinds):
    return [o for o in OBJECTS if o["kind"] in kinds]


def the(kind, name):
    found = [o for o in of_kind(kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def workloads():
    return of_kind(*WORKLOAD_KINDS)


def pod_spec(workload):
    return workload["spec"]["template"]["spec"]


def pod_labels(workload):
    return workload["spec"]["template"]["metadata"].get("labels", {})


def containers(workload):
    spec = pod_spec(workload)
    return spec.get("initContainers", []) + spec["containers"]


def selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def env_of(container) -> dict:
    return {e["name"]: e for e in container.get("env", [])}


def magnetar_role(container):
    """`bookie` / `broker` for a container running the image's entrypoint
    (the magnetar binary) with that subcommand, else None."""
    if container.get("command") or not container.get("args"):
        return None
    return container["args"][0]


def magnetar_containers():
    """(workload, container, role) for every container running magnetar."""
    found = []
    for w in workloads():
        for c in containers(w):
            role = magnetar_role(c)
            if role:
                found.append((w, c, role))
    return found


def resolved_env(workload, container, pod_name) -> dict:
    """The container's environment as the kubelet builds it: downward-API
    fields filled in, `$(VAR)` replaced by variables defined earlier."""
    fields = dict(FIELD_VALUES, **{"metadata.name": pod_name})
    env = {}
    for entry in container.get("env", []):
        if "value" in entry:
            value = re.sub(
                r"\$\((\w+)\)",
                lambda m: env.get(m.group(1), m.group(0)),
                entry["value"],
            )
        else:
            ref = entry["valueFrom"]["fieldRef"]["fieldPath"]
            assert ref in fields, f"{entry['name']}: no test value for field {ref}"
            value = fields[ref]
        env[entry["name"]] = value
    return env


def first_pod_name(workload):
    if workload["kind"] == "StatefulSet":
        return f"{workload['metadata']['name']}-0"
    return f"{workload['metadata']['name']}-6d4cf56db6-x2x7q"


# --- the binary ---------------------------------------------------------


def binary() -> Path:
    path = magnetar_bin()
    if not path.is_file():
        pytest.fail(f"{path} not found: set MAGNETAR_BIN or run `cargo build --bin magnetar`")
    return path


def clean_env(**extra):
    """This process's environment without MAGNETAR_* variables (which clap
    would read), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAGNETAR_")}
    env["RUST_BACKTRACE"] = "0"
    env.update(extra)
    return env


_HELP = {}


def help_of(role: str) -> str:
    if role not in _HELP:
        out = subprocess.run(
            [str(binary()), role, "--help"],
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.returncode == 0, out.stderr
        _HELP[role] = out.stdout
    return _HELP[role]


def env_names(help_text: str) -> set:
    """Variables clap lists as `[env: MAGNETAR_X=]` (a wrap may split it)."""
    return set(re.findall(r"\[env:\s+(MAGNETAR_[A-Z0-9_]+)=", help_text))


def flag_names(help_text: str) -> set:
    return set(re.findall(r"^\s+(?:-[A-Za-z], )?--([a-z][a-z0-9-]*)", help_text, re.M))


def test_help_parsing_finds_the_known_variables_and_flags():
    """The parsers above read real --help output (else every env check
    below would pass on an empty set, or fail on everything)."""
    bookie, broker = help_of("bookie"), help_of("broker")
    assert {"MAGNETAR_METADATA", "MAGNETAR_ADVERTISE", "MAGNETAR_TOKEN_SECRET_KEY",
            "MAGNETAR_CONFIG"} <= env_names(bookie)
    assert {"MAGNETAR_STORAGE_TOKEN", "MAGNETAR_ACK_QUORUM", "MAGNETAR_CLUSTER_NAME"} \
        <= env_names(broker)
    assert "MAGNETAR_STORAGE_TOKEN" not in env_names(bookie)
    assert {"metadata", "lease-ttl-ms", "gc-interval-ms"} <= flag_names(bookie)
    assert {"metadata", "lease-ttl", "load-report-interval"} <= flag_names(broker)


# --- the files ----------------------------------------------------------


def test_kustomization_lists_every_manifest_and_sets_the_namespace():
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk, "kustomization.yaml must list exactly the manifests here"
    namespaces = of_kind("Namespace")
    assert [n["metadata"]["name"] for n in namespaces] == [kustomization["namespace"]]
    for obj in OBJECTS:
        # kustomize puts everything in its namespace; a manifest naming
        # another one would be moved silently.
        ns = obj["metadata"].get("namespace")
        assert ns in (None, kustomization["namespace"]), doc_id(("", obj))


def test_every_image_is_the_kustomization_image():
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    names = {i["name"] for i in kustomization["images"]}
    for w in workloads():
        for c in containers(w):
            assert c["image"].split(":")[0] in names, f"{c['name']}: {c['image']}"
            # magnetar:latest loaded with `kind load` exists only on the
            # nodes: the default policy for :latest (Always) would fail.
            assert c.get("imagePullPolicy") == "IfNotPresent", c["name"]


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to resolve a name or open a connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("item", MANIFESTS, ids=doc_id)
def test_manifest_matches_the_kubernetes_schema(item, version, no_network):
    _, doc = item
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        path = "/".join(str(p) for p in e.path)
        message = f"{doc_id(item)} against Kubernetes {version}: {path}: {e.message}"
    else:
        return
    pytest.fail(message, pytrace=False)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_strict_validation_catches_unknown_fields_and_wrong_types(version, no_network):
    """The validator above is not a no-op: a misspelt field or a string
    where a number belongs fails it."""
    bookie = the("StatefulSet", "bookie")
    kubernetes_validate.validate(bookie, version, strict=True)

    typo = yaml.safe_load(yaml.safe_dump(bookie))
    typo["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, version, strict=True)

    wrong_type = yaml.safe_load(yaml.safe_dump(bookie))
    wrong_type["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong_type, version, strict=True)


# --- the binary accepts what the manifests give it ---------------------


@pytest.mark.parametrize(
    "workload,container,role",
    magnetar_containers(),
    ids=[f"{w['metadata']['name']}/{c['name']}" for w, c, _ in magnetar_containers()],
)
def test_magnetar_variables_are_known_to_the_binary(workload, container, role):
    known = env_names(help_of(role))
    used = {name for name in env_of(container) if name.startswith("MAGNETAR_")}
    assert used, "no MAGNETAR_* variable at all: is this the right container?"
    unknown = sorted(used - known)
    assert not unknown, f"`magnetar {role}` has no such variables: {unknown}"


def config_map_toml():
    config = the("ConfigMap", "magnetar-config")
    return tomllib.loads(config["data"]["magnetar.toml"])


def test_config_file_keys_are_flags_of_their_subcommand():
    config = config_map_toml()
    roles = {role for _, _, role in magnetar_containers()}
    assert set(config) == roles, "one table per magnetar subcommand the pods run"
    for role, table in config.items():
        flags = flag_names(help_of(role)) - {"config", "log", "log-format", "help"}
        unknown = sorted(set(table) - flags)
        assert not unknown, f"[{role}]: `magnetar {role}` has no flags {unknown}"


def test_every_magnetar_container_reads_the_config_map():
    for w, c, _ in magnetar_containers():
        path = env_of(c)["MAGNETAR_CONFIG"]["value"]
        mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
        mount = mounts[str(Path(path).parent)]
        volume = {v["name"]: v for v in pod_spec(w)["volumes"]}[mount["name"]]
        assert volume["configMap"]["name"] == "magnetar-config"
        assert Path(path).name in the("ConfigMap", "magnetar-config")["data"]


def readme_secret_commands():
    """The `magnetar tokens ...` commands README.md gives, and the files
    its `kubectl create secret` takes."""
    text = README.read_text()
    commands = re.findall(r"^\s*magnetar (tokens .+)$", text, re.M)
    files = re.findall(r"--from-file=([\w.]+)", text)
    return commands, files


@pytest.fixture(scope="module")
def storage_secret(tmp_path_factory):
    """The Secret magnetar-storage's files, made with README.md's commands."""
    root = tmp_path_factory.mktemp("magnetar-storage")
    commands, files = readme_secret_commands()
    assert commands and files, "README.md must show how to make the Secret"
    for command in commands:
        out = subprocess.run(
            [str(binary()), *command.split()],
            cwd=root,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.returncode == 0, f"magnetar {command}: {out.stderr}"
    made = sorted(p.name for p in root.iterdir())
    assert made == sorted(files), f"the commands make {made}, the Secret takes {files}"
    return {name: (root / name).read_bytes() for name in files}


def lay_out_volumes(workload, container, root: Path, secret_files: dict) -> dict:
    """A directory under `root` for each of the container's mounts, filled
    as the kubelet would; returns mountPath -> directory."""
    volumes = {v["name"]: v for v in pod_spec(workload).get("volumes", [])}
    claims = {t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])}
    dirs = {}
    for mount in container.get("volumeMounts", []):
        target = root / mount["mountPath"].strip("/").replace("/", "_")
        target.mkdir(parents=True)
        dirs[mount["mountPath"]] = target
        name = mount["name"]
        if name in claims:
            continue
        volume = volumes[name]
        if "configMap" in volume:
            data = the("ConfigMap", volume["configMap"]["name"])["data"]
            items = volume["configMap"].get("items") or [{"key": k, "path": k} for k in data]
            for item in items:
                (target / item["path"]).write_text(data[item["key"]])
        elif "secret" in volume:
            assert volume["secret"]["secretName"] == "magnetar-storage"
            items = volume["secret"].get("items") or [
                {"key": k, "path": k} for k in secret_files
            ]
            for item in items:
                (target / item["path"]).write_bytes(secret_files[item["key"]])
        else:
            assert "emptyDir" in volume, f"volume {name}: unexpected kind"
    return dirs


@pytest.mark.parametrize(
    "workload,container,role",
    magnetar_containers(),
    ids=[f"{w['metadata']['name']}/{c['name']}" for w, c, _ in magnetar_containers()],
)
def test_binary_starts_with_the_container_settings(
    workload, container, role, storage_secret, tmp_path
):
    """Runs `magnetar <role>` with the container's args, its environment
    and its volumes laid out in tmp_path (the ConfigMap's file, the
    Secret's files). Everything before the first metadata call is checked
    then: flags, variables and file keys parse, the settings are
    consistent, a bookie's token key loads. The etcd names of the
    ConfigMap do not resolve here, so it must stop exactly there."""
    dirs = lay_out_volumes(workload, container, tmp_path, storage_secret)
    env = resolved_env(workload, container, first_pod_name(workload))
    # Each path under a mount moves to that mount's directory, in one pass
    # (tmp_path itself may lie under a mount path such as /tmp).
    mounts = "|".join(re.escape(m) for m in sorted(dirs, key=len, reverse=True))
    for name, value in env.items():
        moved = re.sub(
            rf"(^|:)({mounts})(?=/|$)", lambda m: m.group(1) + str(dirs[m.group(2)]), value
        )
        hit = re.match(rf"(?:file:)?({mounts})(?=/|$)", value)
        if hit and any(dirs[hit.group(1)].iterdir()):
            # A path into a ConfigMap or Secret volume names a file it holds.
            path = Path(moved.removeprefix("file:"))
            assert path.is_file(), f"{name}={value}: the volume has no such file"
        env[name] = moved
    leftover = {k: v for k, v in env.items() if re.search(r"\$\(\w+\)", v)}
    assert not leftover, f"unresolved references: {leftover}"
    # A bookie binds its ports before its first etcd call: free ones here,
    # on the same (wildcard) address.
    for name, value in env.items():
        if re.fullmatch(r"0\.0\.0\.0:\d+", value):
            env[name] = f"0.0.0.0:{free_port()}"
    out = subprocess.run(
        [str(binary()), *container["args"]],
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    log = out.stdout + out.stderr
    assert out.returncode != 0, f"it started without an etcd to connect to:\n{log}"
    assert "parsing config file" not in log, log
    # etcd is reached lazily: the first call fails, on the bookie's
    # registration or the broker's creation of public/default.
    assert re.search(r"metadata backend unavailable|connecting to metadata", log), \
        f"it stopped before reaching for etcd:\n{log}"
    assert "etcd-0.etcd" in log or "dns error" in log, log


# --- objects that refer to one another ---------------------------------


@pytest.mark.parametrize("workload", workloads(), ids=lambda w: w["metadata"]["name"])
def test_workload_selector_matches_its_pod_template(workload):
    assert selects(workload["spec"]["selector"]["matchLabels"], pod_labels(workload))


@pytest.mark.parametrize("workload", workloads(), ids=lambda w: w["metadata"]["name"])
def test_workload_pods_are_told_apart(workload):
    """No workload's selector takes another's pods."""
    for other in workloads():
        if other is not workload:
            assert not selects(workload["spec"]["selector"]["matchLabels"], pod_labels(other))


def container_ports(workload) -> dict:
    """Name and number of every declared containerPort -> containerPort."""
    ports = {}
    for c in containers(workload):
        for p in c.get("ports", []):
            ports[p["containerPort"]] = p["containerPort"]
            if "name" in p:
                ports[p["name"]] = p["containerPort"]
    return ports


@pytest.mark.parametrize("service", of_kind("Service"), ids=lambda s: s["metadata"]["name"])
def test_service_selects_pods_that_serve_its_ports(service):
    selector = service["spec"]["selector"]
    matched = [w for w in workloads() if selects(selector, pod_labels(w))]
    assert matched, f"selector {selector} matches no workload's pods"
    for w in matched:
        ports = container_ports(w)
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            assert target in ports, f"{w['metadata']['name']} declares no containerPort {target}"


PROBES = ("startupProbe", "readinessProbe", "livenessProbe")


@pytest.mark.parametrize("workload", workloads(), ids=lambda w: w["metadata"]["name"])
def test_probes_use_declared_container_ports(workload):
    for c in containers(workload):
        ports = {p["containerPort"] for p in c.get("ports", [])} | {
            p["name"] for p in c.get("ports", []) if "name" in p
        }
        for kind in PROBES:
            probe = c.get(kind)
            if probe is None:
                continue
            action = probe.get("httpGet") or probe.get("tcpSocket") or probe.get("grpc")
            assert action, f"{c['name']} {kind}: no port-based action"
            assert action["port"] in ports, f"{c['name']} {kind}: port {action['port']}"


@pytest.mark.parametrize("workload", workloads(), ids=lambda w: w["metadata"]["name"])
def test_every_server_has_readiness_and_liveness_probes(workload):
    for c in containers(workload):
        assert "readinessProbe" in c and "livenessProbe" in c, c["name"]


def test_brokers_are_ready_by_http_health():
    probe = containers(the("Deployment", "broker"))[0]["readinessProbe"]
    assert probe["httpGet"]["path"] == "/health"
    assert container_ports(the("Deployment", "broker"))[probe["httpGet"]["port"]] == 8080


@pytest.mark.parametrize(
    "pdb", of_kind("PodDisruptionBudget"), ids=lambda p: p["metadata"]["name"]
)
def test_disruption_budget_covers_one_workload_and_allows_one_eviction(pdb):
    selector = pdb["spec"]["selector"]["matchLabels"]
    matched = [w for w in workloads() if selects(selector, pod_labels(w))]
    assert len(matched) == 1, f"selector {selector} matches {len(matched)} workloads"
    replicas = matched[0]["spec"]["replicas"]
    spec = pdb["spec"]
    if "minAvailable" in spec:
        # An integer minAvailable of `replicas` would block every drain.
        assert isinstance(spec["minAvailable"], int) and 0 < spec["minAvailable"] < replicas
    else:
        assert isinstance(spec["maxUnavailable"], int) and 0 < spec["maxUnavailable"] < replicas


def test_every_workload_has_a_disruption_budget():
    covered = set()
    for pdb in of_kind("PodDisruptionBudget"):
        for w in workloads():
            if selects(pdb["spec"]["selector"]["matchLabels"], pod_labels(w)):
                covered.add(w["metadata"]["name"])
    assert covered == {w["metadata"]["name"] for w in workloads()}


def test_etcd_budget_keeps_a_quorum():
    etcd = the("StatefulSet", "etcd")
    assert the("PodDisruptionBudget", "etcd")["spec"]["minAvailable"] == \
        etcd["spec"]["replicas"] // 2 + 1


@pytest.mark.parametrize(
    "sts", of_kind("StatefulSet"), ids=lambda s: s["metadata"]["name"]
)
def test_stateful_set_has_its_headless_service_and_volumes(sts):
    service = the("Service", sts["spec"]["serviceName"])
    assert service["spec"].get("clusterIP") == "None"
    assert selects(service["spec"]["selector"], pod_labels(sts))
    # Members must resolve one another before they are ready.
    assert service["spec"].get("publishNotReadyAddresses") is True
    claims = {t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]}
    mounted = {m["name"] for c in containers(sts) for m in c.get("volumeMounts", [])}
    assert claims <= mounted, "a volume claim template nobody mounts"


@pytest.mark.parametrize("workload", workloads(), ids=lambda w: w["metadata"]["name"])
def test_volume_mounts_refer_to_volumes_that_exist(workload):
    volumes = {v["name"]: v for v in pod_spec(workload).get("volumes", [])}
    claims = {t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])}
    _, secret_files = readme_secret_commands()
    for c in containers(workload):
        for m in c.get("volumeMounts", []):
            assert m["name"] in volumes or m["name"] in claims, f"{c['name']}: {m['name']}"
    for v in volumes.values():
        if "configMap" in v:
            data = the("ConfigMap", v["configMap"]["name"])["data"]
            for item in v["configMap"].get("items", []):
                assert item["key"] in data
        if "secret" in v:
            # The Secret is made by hand (README.md): the keys pods mount
            # must be the files README.md puts in it.
            assert v["secret"]["secretName"] == "magnetar-storage"
            for item in v["secret"]["items"]:
                assert item["key"] in secret_files, item["key"]


@pytest.mark.parametrize("workload", workloads(), ids=lambda w: w["metadata"]["name"])
def test_pods_run_restricted_with_resources(workload):
    pod = pod_spec(workload)["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] == 10001 and pod["fsGroup"] == 10001
    assert pod["seccompProfile"]["type"] == "RuntimeDefault"
    for c in containers(workload):
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False, c["name"]
        assert sc["capabilities"]["drop"] == ["ALL"], c["name"]
        assert sc["readOnlyRootFilesystem"] is True, c["name"]
        for part in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c["resources"][part]), f"{c['name']} {part}"


# --- names and addresses ------------------------------------------------


def etcd_args():
    etcd = the("StatefulSet", "etcd")
    (container,) = containers(etcd)
    args = {}
    for arg in container["args"]:
        name, _, value = arg.partition("=")
        args[name] = value
    return etcd, container, args


def test_etcd_flags_are_known_to_etcd():
    """Every flag given is one etcd (the same 3.4 series as the image's,
    from the OS packages the suite installs) lists in its --help."""
    etcd_bin = shutil.which("etcd")
    if etcd_bin is None:
        pytest.skip("etcd is not installed")
    out = subprocess.run([etcd_bin, "--help"], capture_output=True, text=True, timeout=30)
    known = set(re.findall(r"^\s+(--[a-z][a-z0-9-]*)", out.stdout + out.stderr, re.M))
    assert "--initial-cluster" in known
    _, container, args = etcd_args()
    assert container["command"] == ["/usr/bin/etcd"]
    unknown = sorted(set(args) - known)
    assert not unknown, f"etcd has no flags {unknown}"


def test_etcd_initial_cluster_names_every_member_by_its_stable_address():
    etcd, container, args = etcd_args()
    service = etcd["spec"]["serviceName"]
    name = etcd["metadata"]["name"]
    peer = [p["containerPort"] for p in container["ports"] if p["name"] == "peer"][0]
    expected = ",".join(
        f"{name}-{i}=http://{name}-{i}.{service}.$(POD_NAMESPACE).svc:{peer}"
        for i in range(etcd["spec"]["replicas"])
    )
    assert args["--initial-cluster"] == expected
    assert args["--name"] == "$(POD_NAME)"
    assert args["--initial-advertise-peer-urls"] == \
        f"http://$(POD_NAME).{service}.$(POD_NAMESPACE).svc:{peer}"
    assert args["--initial-cluster-state"] == "new"
    assert args["--data-dir"].startswith("/data/")
    # $(VAR) in args expands only from the container's own variables.
    env = env_of(container)
    for ref in re.findall(r"\$\((\w+)\)", " ".join(container["args"])):
        assert ref in env, f"$({ref}) is not defined"


def test_metadata_url_is_a_service_of_ready_etcd_members():
    """Bookies and brokers reach etcd through one ClusterIP Service that
    routes only to ready members (not the headless Service, whose names
    exist for members that are down: the etcd client fails requests it
    spreads to those)."""
    etcd, container, _ = etcd_args()
    client = [p for p in container["ports"] if p["name"] == "client"][0]
    for role, table in config_map_toml().items():
        m = re.fullmatch(r"etcd://([a-z0-9-]+):(\d+)/(\w+)", table["metadata"])
        assert m, f"[{role}] metadata = {table['metadata']!r}: one Service, a root"
        service = the("Service", m.group(1))
        assert service["spec"].get("clusterIP") != "None"
        assert not service["spec"].get("publishNotReadyAddresses")
        assert selects(service["spec"]["selector"], pod_labels(etcd))
        (port,) = [p for p in service["spec"]["ports"] if p["port"] == int(m.group(2))]
        assert port["targetPort"] in (client["name"], client["containerPort"])
    for _, c, _ in magnetar_containers():
        assert "MAGNETAR_METADATA" not in env_of(c), "one metadata URL, in the ConfigMap"


@pytest.mark.parametrize("workload", workloads(), ids=lambda w: w["metadata"]["name"])
def test_pods_get_no_service_variables(workload):
    """With service links on, the Service etcd-client would put
    ETCD_CLIENT_* variables into every pod, which etcd reads as flags."""
    assert pod_spec(workload)["enableServiceLinks"] is False


def test_bookie_advertises_its_stable_dns_name_on_its_grpc_port():
    bookie = the("StatefulSet", "bookie")
    (container,) = containers(bookie)
    env = resolved_env(bookie, container, "bookie-2")
    grpc = container_ports(bookie)["grpc"]
    assert env["MAGNETAR_ADVERTISE"] == f"bookie-2.{bookie['spec']['serviceName']}.magnetar.svc:{grpc}"
    assert env["MAGNETAR_LISTEN"] == f"0.0.0.0:{grpc}"
    assert env["MAGNETAR_HTTP"] == f"0.0.0.0:{container_ports(bookie)['http']}"


def test_broker_advertises_its_pod_ip_on_its_pulsar_port():
    broker = the("Deployment", "broker")
    (container,) = containers(broker)
    assert env_of(container)["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    env = resolved_env(broker, container, "broker-x")
    pulsar = container_ports(broker)["pulsar"]
    assert env["MAGNETAR_ADVERTISE"] == f"{FIELD_VALUES['status.podIP']}:{pulsar}"
    assert env["MAGNETAR_LISTEN"] == f"0.0.0.0:{pulsar}"
    assert env["MAGNETAR_HTTP"] == f"0.0.0.0:{container_ports(broker)['http']}"


def test_kubectl_kustomize_builds_the_directory():
    """`kubectl apply -k` works offline up to the API server: the
    kustomization builds, every object in the one namespace."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    out = subprocess.run(
        [kubectl, "kustomize", str(K8S_DIR)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    built = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert len(built) == len(OBJECTS)
    for d in built:
        if d["kind"] != "Namespace":
            assert d["metadata"]["namespace"] == "magnetar", d["metadata"]["name"]
