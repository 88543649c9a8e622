"""The observability assets in deploy/observability/ against real processes.

Two clusters run for the module (a decoupled one: etcd, 3 bookies and 2
brokers; a monolithic one: etcd and 3 brokers), each given traffic by the
official client so that counters and histograms have samples, then every
process's /metrics is scraped. The tests check that

* the Grafana dashboard parses, every panel has a query, and every metric
  name any query or template variable uses is in some scrape (a histogram
  `x` is there as x_bucket, x_sum and x_count, so `x` alone is not), with
  rate()/increase() over counters only, histogram_quantile() over _bucket
  series only and every label a query filters or groups on present on the
  metric;
* every job of prometheus.yml (compose) and prometheus-kubernetes.yml points
  at the port the process of its component serves /metrics on, and the
  compose and Kubernetes manifests in deploy/ agree;
* when a `prometheus` binary is installed (Debian package `prometheus`), a
  real Prometheus scraping the processes with prometheus.yml's jobs answers
  every dashboard query with data (which also checks the PromQL syntax).

Metric names are taken from PromQL loosely: identifiers that are not
functions, keywords, label names, strings, durations or $variables.
"""

import json
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pulsar
import pytest
import yaml

from cluster import Cluster, http
from conftest import REPO, _die_with_parent, free_port, magnetar_bin
from support import produce, receive_n, wait_until

OBSERVABILITY = REPO / "deploy" / "observability"
DASHBOARD = OBSERVABILITY / "grafana" / "magnetar-dashboard.json"
PROMETHEUS_COMPOSE = OBSERVABILITY / "prometheus.yml"
PROMETHEUS_KUBERNETES = OBSERVABILITY / "prometheus-kubernetes.yml"
COMPOSE = REPO / "deploy" / "compose" / "decoupled.yml"
KUBERNETES = REPO / "deploy" / "kubernetes"

COMPONENTS = ("broker", "bookie", "etcd")
# What only a process of that component exports.
COMPONENT_FAMILY = {
    "broker": "magnetar_broker_messages_in_total",
    "bookie": "magnetar_bookie_entries_added_total",
    "etcd": "etcd_server_has_leader",
}
# Series Prometheus makes itself for every target, never in a scrape.
PROMETHEUS_SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
# Labels Prometheus attaches to targets (prometheus*.yml), not the processes.
TARGET_LABELS = {"instance", "job", "component", "namespace", "pod"}
# Kubernetes: the container port each component's pods name for /metrics.
K8S_PORT_NAMES = {"broker": "http", "bookie": "http", "etcd": "client"}
MESSAGES = 200


# ---------------------------------------------------------------------------
# Prometheus text exposition and PromQL, loosely.

SAMPLE = re.compile(r"^([A-Za-z_:][\w:]*)(\{(.*)\})?\s+\S+")
LABEL = re.compile(r'([A-Za-z_]\w*)\s*=\s*"((?:[^"\\]|\\.)*)"')


def parse_exposition(text):
    """{sample name: set of label names}, {family: type} of one scrape."""
    samples, types = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(None, 3)
            types[name] = kind.strip()
            continue
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, f"unparsable exposition line: {line!r}"
        labels = samples.setdefault(m.group(1), set())
        labels.update(name for name, _ in LABEL.findall(m.group(3) or ""))
    return samples, types


HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
            "unless", "bool", "offset", "inf", "nan"}
STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
IDENT = re.compile(r"(?<![\w.:$])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")


def metric_names(expr):
    """Metric names a PromQL expression selects."""
    e = STRING.sub('""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)        # label matchers
    e = re.sub(r"\[[^\]]*\]", " ", e)       # ranges, subqueries
    e = GROUPING.sub(" ", e)                # by (...), on (...)
    e = re.sub(r"\$\{?\w+\}?", " ", e)      # dashboard variables
    return {n for n in IDENT.findall(e) if n not in KEYWORDS}


def variable_query_names(query):
    """Metric names of a Grafana Prometheus variable query."""
    m = re.match(r"\s*label_values\(\s*([^,)]+?)\s*(,[^)]*)?\)\s*$", query)
    if m:
        return metric_names(m.group(1)) if m.group(2) else set()
    m = re.match(r"\s*query_result\((.*)\)\s*$", query)
    if m:
        return metric_names(m.group(1))
    if re.match(r"\s*(label_names|metrics)\(", query):
        return set()
    return metric_names(query)


def selector_labels(expr):
    """[(metric, label)] of every label matcher on a named metric."""
    out = []
    for m in re.finditer(r"([A-Za-z_:][\w:]*)\s*\{([^}]*)\}", STRING.sub(_blank, expr)):
        for label in re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", m.group(2)):
            out.append((m.group(1), label))
    return out


def _blank(m):
    # Keeps a string's length and quotes, drops its content (no braces).
    return m.group(0)[0] + "x" * (len(m.group(0)) - 2) + m.group(0)[-1]


def grouped_labels(expr):
    """[(labels, inner expression)] of every `agg by (labels) (inner)`."""
    out = []
    text = STRING.sub(_blank, expr)
    for m in re.finditer(r"\bby\s*\(([^)]*)\)\s*\(", text):
        depth, i = 1, m.end()
        while depth and i < len(text):
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        labels = [l.strip() for l in m.group(1).split(",") if l.strip()]
        out.append((labels, text[m.end():i - 1]))
    return out


def range_function_args(expr):
    """[(function, metric)] of rate/irate/increase applied to a selector."""
    return re.findall(r"\b(rate|irate|increase)\(\s*([A-Za-z_:][\w:]*)", expr)


def quantile_args(expr):
    """Metric names inside each histogram_quantile(...) call."""
    out = []
    text = STRING.sub(_blank, expr)
    for m in re.finditer(r"\bhistogram_quantile\(", text):
        depth, i = 1, m.end()
        while depth and i < len(text):
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        out.append(metric_names(text[m.end():i - 1]))
    return out


# ---------------------------------------------------------------------------
# The assets.

def load_dashboard():
    return json.loads(DASHBOARD.read_text())


def query_panels(dashboard):
    """Every panel that is not a row, rows' collapsed children included."""
    out = []
    for panel in dashboard["panels"]:
        if panel.get("type") == "row":
            out += panel.get("panels", [])
        else:
            out.append(panel)
    return out


def dashboard_queries(dashboard):
    """[(where, expr)] of every panel target and Prometheus variable."""
    out = []
    for panel in query_panels(dashboard):
        for target in panel.get("targets", []):
            out.append((f"panel {panel['title']!r} {target.get('refId')}", target["expr"]))
    return out


def variable_queries(dashboard):
    out = []
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            query = var["query"]
            query = query.get("query", "") if isinstance(query, dict) else query
            out.append((f"variable ${var['name']}", query))
    return out


def referenced_names(dashboard):
    """{metric name: [where it is used]} over the whole dashboard."""
    used = {}
    for where, expr in dashboard_queries(dashboard):
        for name in metric_names(expr):
            used.setdefault(name, []).append(where)
    for where, query in variable_queries(dashboard):
        for name in variable_query_names(query):
            used.setdefault(name, []).append(where)
    return used


def scrape_jobs(path):
    return yaml.safe_load(path.read_text())["scrape_configs"]


def default_http_port(command):
    """The port of `magnetar COMMAND --http`'s documented default."""
    out = subprocess.run([str(magnetar_bin()), command, "--help"], capture_output=True,
                         text=True, timeout=30, check=True).stdout
    m = re.search(r"--http <[^>]*>\s+(.*?)\[default: [^\]]*:(\d+)\]", out, re.S)
    assert m, f"`magnetar {command} --help` documents no --http default:\n{out}"
    return int(m.group(2))


def etcd_default_client_port():
    binary = shutil.which("etcd")
    out = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=30)
    m = re.search(r"--listen-client-urls '[^']*:(\d+)'", out.stdout + out.stderr)
    assert m, "etcd --help names no default client URL"
    return int(m.group(1))


def expected_ports():
    return {
        "broker": default_http_port("broker"),
        "bookie": default_http_port("bookie"),
        "etcd": etcd_default_client_port(),
    }


def static_component(job):
    """(component, [(host, port)]) of a static job."""
    components = set()
    targets = []
    for sc in job.get("static_configs", []):
        components.add(sc.get("labels", {}).get("component"))
        for target in sc["targets"]:
            host, port = target.rsplit(":", 1)
            targets.append((host, int(port)))
    assert len(components) == 1, f"job {job['job_name']}: one `component` label, got {components}"
    return components.pop(), targets


# ---------------------------------------------------------------------------
# Real processes: two clusters with traffic, every /metrics scraped.

def exercise(cluster):
    """Produces, consumes (half acknowledged, so there is a backlog) and
    reads through the official client. Returns a producer, a consumer and a
    reader to keep open while the processes are scraped."""
    cluster.create_namespace("obs", "ns")
    topic = f"persistent://obs/ns/dash-{uuid.uuid4().hex[:8]}"
    client = cluster.client()
    consumer = client.subscribe(topic, "obs-sub", consumer_type=pulsar.ConsumerType.Shared,
                                initial_position=pulsar.InitialPosition.Earliest)
    produce(client, topic, MESSAGES)
    receive_n(consumer, MESSAGES // 2, ack=True)
    reader = client.create_reader(topic, pulsar.MessageId.earliest)
    assert reader.read_next(10_000) is not None
    return client.create_producer(topic), consumer, reader


def scrape(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200, f"{url}: {response.status}"
        return response.read().decode()


def endpoints(cluster):
    """[(name, component, /metrics url)] of every process of `cluster`."""
    out = [(f"{cluster.architecture}/etcd", "etcd", f"{cluster.etcd.endpoint}/metrics")]
    out += [(f"{cluster.architecture}/{b.name}", "bookie", f"http://127.0.0.1:{b.http_port}/metrics")
            for b in cluster.bookies]
    out += [(f"{cluster.architecture}/broker{b.index}", "broker", f"{b.http_url}/metrics")
            for b in cluster.brokers]
    return out


def counter_sum(text, name):
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith(name + " ") or line.startswith(name + "{"))


@pytest.fixture(scope="module")
def deployment():
    """Both clusters, running, with traffic; {"clusters", "scrapes"}, where
    scrapes is [(name, component, url, samples, types)]."""
    binary = magnetar_bin()
    if not binary.is_file():
        pytest.fail(f"{binary} not found: set MAGNETAR_BIN or run `cargo build --bin magnetar`")
    clusters, open_handles = [], []
    try:
        for architecture, size in (("decoupled", dict(brokers=2, bookies=3)),
                                   ("monolithic", dict(brokers=3))):
            cluster = Cluster(binary, Path(tempfile.mkdtemp(prefix="magnetar-obs-")),
                              architecture=architecture, **size)
            clusters.append(cluster)
            cluster.start()
            open_handles.append(exercise(cluster))
        scrapes = []
        for cluster in clusters:
            brokers = [url for _, component, url in endpoints(cluster) if component == "broker"]
            # Receipts and dispatches are counted before the client sees
            # them; wait anyway rather than assume it.
            wait_until(lambda: sum(counter_sum(scrape(u), "magnetar_broker_messages_in_total")
                                   for u in brokers) >= MESSAGES,
                       timeout_s=30, what=f"{cluster.architecture} brokers count the messages")
            for name, component, url in endpoints(cluster):
                samples, types = parse_exposition(scrape(url))
                scrapes.append((name, component, url, samples, types))
        yield {"clusters": clusters, "scrapes": scrapes}
    except BaseException:
        for cluster in clusters:
            print(cluster.log_tails(30))
        raise
    finally:
        for cluster in clusters:
            cluster.stop()
            shutil.rmtree(cluster.root, ignore_errors=True)


def exported(scrapes):
    """{sample name: label names}, {family: type} over every scrape."""
    samples, types = {}, {}
    for _, _, _, s, t in scrapes:
        for name, labels in s.items():
            samples.setdefault(name, set()).update(labels)
        types.update(t)
    return samples, types


def family_of(sample, types):
    """The histogram or summary family a sample name belongs to, if any."""
    for suffix in HISTOGRAM_SUFFIXES:
        if sample.endswith(suffix) and types.get(sample[: -len(suffix)]) in ("histogram", "summary"):
            return sample[: -len(suffix)]
    return None


# ---------------------------------------------------------------------------
# The dashboard and configs on their own.

def test_dashboard_parses_and_every_panel_has_a_query():
    dashboard = load_dashboard()
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard["uid"] and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = query_panels(dashboard)
    assert panels, "the dashboard has no panels"
    ids = [p["id"] for p in dashboard["panels"]]
    ids += [c["id"] for p in dashboard["panels"] for c in p.get("panels", [])]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in panels:
        targets = panel.get("targets") or []
        assert targets, f"panel {panel['title']!r} has no target"
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in targets:
            assert target.get("expr", "").strip(), f"panel {panel['title']!r}: empty query"
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
        refs = [t["refId"] for t in targets]
        assert len(refs) == len(set(refs)), f"panel {panel['title']!r}: refIds repeat"
        pos = panel["gridPos"]
        assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24, panel["title"]
    # What the dashboard is for.
    used = referenced_names(dashboard)
    for family in ("magnetar_broker_messages_in_total", "magnetar_broker_bytes_in_total",
                   "magnetar_broker_messages_out_total", "magnetar_broker_bytes_out_total",
                   "magnetar_broker_publish_seconds_bucket", "magnetar_broker_backlog_entries",
                   "magnetar_bookie_journal_commit_seconds_bucket", "magnetar_bookie_ledgers",
                   "magnetar_broker_ledgers", "magnetar_broker_cursors"):
        assert family in used, f"the dashboard shows no {family}"


def test_metric_names_are_extracted_from_promql():
    expr = ('histogram_quantile(0.99, sum by (instance, le) (rate('
            'magnetar_broker_publish_seconds_bucket{instance=~"$broker", x="a{b}"}[$__rate_interval])))'
            ' / on (instance) group_left max(up offset 5m) > bool 1e-3')
    assert metric_names(expr) == {"magnetar_broker_publish_seconds_bucket", "up"}
    assert variable_query_names("label_values(magnetar_bookie_ledgers, instance)") == {
        "magnetar_bookie_ledgers"}
    assert grouped_labels("sum by (code) (rate(x_total{a=\"1\"}[1m]))") == [
        (["code"], 'rate(x_total{a="x"}[1m])')]  # strings blanked
    assert selector_labels('x{a="1", b!~"c"} + y') == [("x", "a"), ("x", "b")]


def test_prometheus_configs_parse():
    for path in (PROMETHEUS_COMPOSE, PROMETHEUS_KUBERNETES):
        config = yaml.safe_load(path.read_text())
        jobs = config["scrape_configs"]
        names = [j["job_name"] for j in jobs]
        assert len(names) == len(set(names)), f"{path.name}: job names repeat"
        assert sorted(names) == ["etcd", "magnetar-bookie", "magnetar-broker"], path.name
        for job in jobs:
            assert job.get("metrics_path", "/metrics") == "/metrics"
    if shutil.which("promtool"):
        # Debian's promtool lacks Kubernetes discovery: the compose file only.
        run = subprocess.run(["promtool", "check", "config", str(PROMETHEUS_COMPOSE)],
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stdout + run.stderr


def test_kubernetes_jobs_keep_the_metrics_port_of_each_component():
    for job in scrape_jobs(PROMETHEUS_KUBERNETES):
        [sd] = job["kubernetes_sd_configs"]
        assert sd["role"] == "pod" and sd["namespaces"]["names"] == ["magnetar"]
        [selector] = sd["selectors"]
        key, component = selector["label"].split("=")
        assert key == "app.kubernetes.io/component" and component in COMPONENTS
        keep = [r for r in job["relabel_configs"] if r.get("action") == "keep"]
        assert keep, f"job {job['job_name']} keeps every port"
        for rule in keep:
            regex = re.compile(f"^(?:{rule['regex']})$")
            sep = rule.get("separator", ";")
            value = lambda port: sep.join({
                "__meta_kubernetes_pod_label_app_kubernetes_io_component": component,
                "__meta_kubernetes_pod_container_port_name": port,
            }[label] for label in rule["source_labels"])
            assert regex.match(value(K8S_PORT_NAMES[component])), job["job_name"]
            for other in ("pulsar", "grpc", "peer", "replication"):
                assert not regex.match(value(other)), f"{job['job_name']} keeps port {other}"
        relabelled = {r.get("target_label") for r in job["relabel_configs"]}
        assert {"component", "instance"} <= relabelled, job["job_name"]


def test_kubernetes_manifests_name_the_metrics_ports():
    manifests = sorted(KUBERNETES.glob("*.yaml")) if KUBERNETES.is_dir() else []
    if not manifests:
        pytest.skip("no deploy/kubernetes manifests")
    ports = expected_ports()
    found = {}
    for path in manifests:
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") not in ("StatefulSet", "Deployment", "DaemonSet"):
                continue
            template = doc["spec"]["template"]
            component = template["metadata"].get("labels", {}).get("app.kubernetes.io/component")
            if component not in COMPONENTS:
                continue
            assert doc["metadata"].get("namespace", "magnetar") == "magnetar", path.name
            named = {p.get("name"): p["containerPort"]
                     for c in template["spec"]["containers"] for p in c.get("ports", [])}
            found[component] = named
    for component in COMPONENTS:
        assert component in found, f"no workload labelled component={component} in deploy/kubernetes"
        name = K8S_PORT_NAMES[component]
        assert found[component].get(name) == ports[component], (
            f"{component} pods: port {name!r} should be {ports[component]}, have {found[component]}")


# ---------------------------------------------------------------------------
# Against the real processes.

def test_every_dashboard_metric_is_exported(deployment):
    samples, types = exported(deployment["scrapes"])
    used = referenced_names(load_dashboard())
    missing = {}
    for name, where in sorted(used.items()):
        if name in PROMETHEUS_SYNTHETIC or name in samples:
            continue
        if types.get(name) in ("histogram", "summary"):
            missing[name] = f"is a {types[name]}: use {name}_bucket / _sum / _count ({where[0]})"
        else:
            missing[name] = f"is exported by no process (used by {', '.join(where[:3])})"
    assert not missing, "dashboard metrics not in any scrape:\n" + "\n".join(
        f"  {n} {why}" for n, why in missing.items())
    for name in used:
        if name.endswith(HISTOGRAM_SUFFIXES) and name in samples and types.get(name) is None:
            assert family_of(name, types), f"{name} is no histogram's series"


def test_queries_use_metrics_as_their_types_allow(deployment):
    samples, types = exported(deployment["scrapes"])
    problems = []
    for where, expr in dashboard_queries(load_dashboard()):
        for function, name in range_function_args(expr):
            kind = "counter" if types.get(name) == "counter" else (
                "histogram series" if family_of(name, types) else types.get(name))
            if kind not in ("counter", "histogram series"):
                problems.append(f"{where}: {function}() over {name}, a {kind}")
        for names in quantile_args(expr):
            for name in names:
                if not (name.endswith("_bucket") and family_of(name, types) and
                        types[family_of(name, types)] == "histogram"):
                    problems.append(f"{where}: histogram_quantile over {name}, not a histogram's _bucket")
        for name, label in selector_labels(expr):
            if label not in TARGET_LABELS and name in samples and label not in samples[name]:
                problems.append(f"{where}: {name} has no label {label!r}")
        for labels, inner in grouped_labels(expr):
            names = metric_names(inner) - PROMETHEUS_SYNTHETIC
            have = set().union(*(samples.get(n, set()) for n in names)) if names else set()
            for label in labels:
                if label not in TARGET_LABELS and label not in have:
                    problems.append(f"{where}: groups by {label!r}, which {sorted(names)} lack")
    assert not problems, "\n".join(problems)


def test_every_scrape_job_points_at_a_metrics_port(deployment):
    ports = expected_ports()
    # Each component's processes serve their metrics on their --http port
    # (etcd on its client port): the scrapes above came from there.
    for component in COMPONENTS:
        served = [s for s in deployment["scrapes"] if s[1] == component]
        assert served, f"no {component} was scraped"
        for name, _, url, samples, _ in served:
            assert COMPONENT_FAMILY[component] in samples, f"{name} ({url}) serves no {component} metrics"
    compose = yaml.safe_load(COMPOSE.read_text()) if COMPOSE.is_file() else None
    seen = set()
    for job in scrape_jobs(PROMETHEUS_COMPOSE):
        component, targets = static_component(job)
        assert component in COMPONENTS, f"job {job['job_name']}: component {component!r}"
        seen.add(component)
        assert targets, f"job {job['job_name']} has no target"
        for host, port in targets:
            assert port == ports[component], (
                f"job {job['job_name']}: {host}:{port}, but a {component} serves /metrics on {ports[component]}")
            if compose is None:
                continue
            service = compose["services"].get(host)
            assert service is not None, f"job {job['job_name']}: no service {host} in {COMPOSE.name}"
            env = service.get("environment") or {}
            if component == "etcd":
                listen = env.get("ETCD_LISTEN_CLIENT_URLS", "")
                assert listen.endswith(f":{port}"), f"{host} listens for clients on {listen!r}"
            else:
                listen = env.get("MAGNETAR_HTTP", f"0.0.0.0:{ports[component]}")
                assert listen.endswith(f":{port}"), f"{host} serves HTTP on {listen!r}"
            networks = service.get("networks") or []
            assert "meta" in networks, f"{host} is not on the `meta` network Prometheus joins"
    assert seen == set(COMPONENTS), f"prometheus.yml scrapes only {sorted(seen)}"
    if compose is not None:
        # Every process of the topology is scraped.
        for name, service in compose["services"].items():
            if re.fullmatch(r"(etcd|bookie|broker)-\d+", name):
                assert any(name == host for job in scrape_jobs(PROMETHEUS_COMPOSE)
                           for host, _ in static_component(job)[1]), f"{name} is not scraped"


@pytest.mark.parametrize("architecture", ["decoupled"])
def test_standalone_serves_broker_and_bookie_metrics_on_their_own_ports(magnetar):
    broker, _ = parse_exposition(scrape(f"{magnetar.http_url}/metrics"))
    bookie, _ = parse_exposition(
        scrape(f"http://127.0.0.1:{magnetar.bookie_http_port}/metrics"))
    assert COMPONENT_FAMILY["broker"] in broker and COMPONENT_FAMILY["bookie"] not in broker
    assert COMPONENT_FAMILY["bookie"] in bookie and COMPONENT_FAMILY["broker"] not in bookie


# ---------------------------------------------------------------------------
# A real Prometheus, when one is installed.

def prometheus_query(base, query):
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    status, body = http("GET", url, timeout=10)
    assert status == 200 and body["status"] == "success", f"{query}: {status} {body}"
    return body["data"]["result"]


def grafana_to_promql(expr):
    return (expr.replace("$__rate_interval", "15s")
                .replace('=~"$broker"', '=~".*"').replace('=~"$bookie"', '=~".*"')
                .replace('=~"$etcd"', '=~".*"'))


def test_a_real_prometheus_answers_every_dashboard_query(deployment, tmp_path):
    binary = shutil.which("prometheus")
    if not binary:
        pytest.skip("no `prometheus` binary (Debian package prometheus)")
    # prometheus.yml's jobs and labels, the targets replaced by the test's
    # processes, scraped every second.
    config = yaml.safe_load(PROMETHEUS_COMPOSE.read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    by_component = {}
    for _, component, url, _, _ in deployment["scrapes"]:
        by_component.setdefault(component, []).append(urllib.parse.urlsplit(url).netloc)
    for job in config["scrape_configs"]:
        component, _ = static_component(job)
        job["static_configs"] = [{"targets": by_component[component],
                                  "labels": {"component": component}}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "prometheus.log", "wb")
    proc = subprocess.Popen(
        [binary, f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        preexec_fn=_die_with_parent,
    )
    try:
        targets = sum(len(t) for t in by_component.values())

        def scraped_twice():
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()[-3000:]
            try:
                status, _ = http("GET", f"{base}/-/ready", timeout=2)
            except OSError:
                return False
            if status != 200:
                return False  # still starting
            up = prometheus_query(base, "count_over_time(up[1m]) >= 3 and up == 1")
            return len(up) == targets

        wait_until(scraped_twice, timeout_s=60, what="Prometheus scrapes every process")
        dashboard = load_dashboard()
        queries = [(w, grafana_to_promql(e)) for w, e in dashboard_queries(dashboard)]
        # Filters on errors that did not happen may rightly find nothing.
        may_be_empty = [q for q in queries if 'grpc_code!="OK"' in q[1]]

        def empty():
            return [(w, q) for w, q in queries
                    if (w, q) not in may_be_empty and not prometheus_query(base, q)]

        try:
            wait_until(lambda: not empty(), timeout_s=30, what="every query has data")
        except AssertionError:
            raise AssertionError("queries without data:\n" + "\n".join(
                f"  {w}: {q}" for w, q in empty()))
        for where, query in variable_queries(dashboard):
            m = re.match(r"\s*label_values\(\s*([^,]+?)\s*,\s*(\w+)\s*\)", query)
            assert m, f"{where}: {query}"
            status, body = http("GET", f"{base}/api/v1/label/{m.group(2)}/values?"
                                + urllib.parse.urlencode({"match[]": m.group(1)}))
            assert status == 200 and body["data"], f"{where}: {query} has no values"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
