"""Kubernetes manifests, Prometheus files and the Grafana dashboard.

Manifests are validated against the Kubernetes OpenAPI schemas shipped by the
``kubernetes-validate`` package (no cluster, no network), then checked for what the service
needs: GPU limits, probes on /livez and /readyz, a termination grace period longer than the
drain, matching selectors and ports, config from a ConfigMap and secrets from a Secret. The
dashboard and alert rules may only use metrics (and labels) that the service exports.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import pytest
import yaml

from nes2net_stream.config import load_settings
from nes2net_stream.service.metrics import ServiceMetrics

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "kubernetes"
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
UID = 10001


def docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def resource(kind: str, name: str | None = None) -> dict:
    found = [d for p in MANIFESTS for d in docs(p)
             if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


# --------------------------------------------------------------------------- schemas


@pytest.mark.parametrize("version", ["1.28.0", "latest"])
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifests_validate_against_kubernetes_schemas(path, version):
    kv = pytest.importorskip("kubernetes_validate",
                             reason="kubernetes-validate is not installed (pip)")
    version = kv.latest_version() if version == "latest" else version
    for doc in docs(path):
        kv.validate(doc, version, strict=True)  # raises ValidationError on any problem


def test_kustomization_lists_the_manifests():
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kust["kind"] == "Kustomization"
    assert set(kust["resources"]) == {p.name for p in MANIFESTS} - {"secret.example.yaml"}
    assert kust["images"][0]["name"] == resource("Deployment")["spec"]["template"]["spec"][
        "containers"][0]["image"]


# --------------------------------------------------------------------------- what the service needs


def _container() -> dict:
    return resource("Deployment", "nes2net")["spec"]["template"]["spec"]["containers"][0]


def _settings():
    config = resource("ConfigMap", "nes2net-config")["data"]["config.toml"]
    env = {e["name"]: e["value"] for e in _container()["env"] if "value" in e}
    env.pop("NES2NET_CONFIG")
    path = Path(tempfile.mkdtemp()) / "config.toml"
    path.write_text(config)
    return load_settings(path, environ=env)  # every key and env name is a real setting


def test_deployment_requests_a_gpu_and_probes_health():
    c = _container()
    res = c["resources"]
    assert res["limits"]["nvidia.com/gpu"] == 1  # extended resources: limits (requests equal)
    assert res["requests"].get("nvidia.com/gpu", 1) == res["limits"]["nvidia.com/gpu"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["startupProbe"]["httpGet"]["path"] == "/livez"
    startup = c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"]
    assert startup >= 300  # a large model may take minutes to load
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    settings = _settings()
    assert ports["ingest"] == settings.server.port and ports["dashboard"] == settings.http.port
    assert ports["scorer-metrics"] == settings.server.scorer_metrics_port
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert c[probe]["httpGet"]["port"] == "ingest"
    assert settings.model.device == "cuda" and settings.server.host == "0.0.0.0"


def test_the_alert_journal_is_on_a_writable_volume():
    spec = resource("Deployment", "nes2net")["spec"]["template"]["spec"]
    journal = _settings().redis.alert_journal_dir
    mount = next(m for m in _container()["volumeMounts"] if m["mountPath"] == journal)
    assert not mount.get("readOnly")
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    assert "emptyDir" in volume or "persistentVolumeClaim" in volume


def test_termination_grace_period_covers_the_drain():
    spec = resource("Deployment", "nes2net")["spec"]["template"]["spec"]
    settings = _settings()
    prestop = _container()["lifecycle"]["preStop"]["exec"]["command"]
    assert prestop[0] == "sleep"
    needed = float(prestop[1]) + settings.server.drain_timeout_s
    if settings.server.workers > 1:
        needed += 15  # the scorer waits drain_timeout_s + 15 s for its ingest workers
    assert spec["terminationGracePeriodSeconds"] > needed


def test_config_and_secrets_come_from_a_configmap_and_a_secret():
    c = _container()
    spec = resource("Deployment", "nes2net")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    env = {e["name"]: e for e in c["env"]}
    assert volumes["config"]["configMap"]["name"] == "nes2net-config"
    assert env["NES2NET_CONFIG"]["value"] == f"{mounts['config']}/config.toml"
    secret = resource("Secret", "nes2net-secrets")
    items = {i["key"]: i["path"] for i in volumes["secrets"]["secret"]["items"]}
    assert volumes["secrets"]["secret"]["secretName"] == "nes2net-secrets"
    assert set(items) <= set(secret["stringData"])
    files = {f"{mounts['secrets']}/{p}" for p in items.values()}
    redis_url = env["NES2NET_REDIS__URL"]["value"]
    assert "@" not in redis_url and redis_url.split("password_file=")[1] in files
    assert env["NES2NET_AUTH__TOKENS_FILE"]["value"] in files
    assert env["NES2NET_REPLICA_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    for value in secret["stringData"].values():  # the example holds placeholders only
        assert value.strip().startswith("REPLACE_WITH_")
    redis_volumes = resource("StatefulSet", "nes2net-redis")["spec"]["template"]["spec"][
        "volumes"]
    assert any(v.get("secret", {}).get("secretName") == "nes2net-secrets"
               for v in redis_volumes)


def test_pods_run_as_the_images_non_root_user_on_a_read_only_root():
    spec = resource("Deployment", "nes2net")["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == UID  # USER of docker/Dockerfile.*
    c = _container()
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    tmp = next(m for m in c["volumeMounts"] if m["mountPath"] == "/tmp")
    assert "emptyDir" in next(v for v in spec["volumes"] if v["name"] == tmp["name"])
    for dockerfile in ("Dockerfile.cpu", "Dockerfile.cuda"):
        assert f"USER {UID}:{UID}" in (ROOT / "docker" / dockerfile).read_text()


def test_service_and_pdb_select_the_deployments_pods():
    deploy = resource("Deployment", "nes2net")
    labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert deploy["spec"]["selector"]["matchLabels"].items() <= labels.items()
    svc = resource("Service", "nes2net")
    assert svc["spec"]["selector"].items() <= labels.items()
    names = {p["name"] for p in _container()["ports"]}
    assert {p["targetPort"] for p in svc["spec"]["ports"]} <= names
    pdb = resource("PodDisruptionBudget", "nes2net")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1 < deploy["spec"]["replicas"]
    redis_svc = resource("Service", "nes2net-redis")
    assert "nes2net-redis:6379" in next(e["value"] for e in _container()["env"]
                                        if e["name"] == "NES2NET_REDIS__URL")
    assert redis_svc["spec"]["ports"][0]["port"] == 6379


# --------------------------------------------------------------------------- durable variant

DURABLE = ROOT / "deploy" / "kubernetes-durable"


def _pointer(path: str) -> list[str | int]:
    parts = [p.replace("~1", "/").replace("~0", "~") for p in path.lstrip("/").split("/")]
    return [int(p) if p.isdigit() else p for p in parts]


def _json_patch(doc: dict, ops: list[dict]) -> dict:
    """Apply the RFC 6902 operations the overlay uses (add, remove, replace, test)."""
    import copy
    doc = copy.deepcopy(doc)
    for op in ops:
        *parents, last = _pointer(op["path"])
        target = doc
        for key in parents:
            target = target[key]
        if op["op"] == "test":
            assert target[last] == op["value"], f"JSON patch test failed at {op['path']}"
        elif op["op"] == "remove":
            del target[last]
        elif op["op"] in ("add", "replace"):
            if op["op"] == "replace":
                assert last in target or isinstance(target, list)
            if isinstance(target, list) and op["op"] == "add":
                target.insert(len(target) if last == "-" else last, op["value"])
            else:
                target[last] = op["value"]
        else:
            raise AssertionError(f"unexpected operation {op['op']}")
    return doc


def _durable() -> tuple[dict, dict]:
    """The overlay's StatefulSet (base Deployment + patch) and its governing Service."""
    kust = yaml.safe_load((DURABLE / "kustomization.yaml").read_text())
    assert kust["resources"] == ["../kubernetes", "headless-service.yaml"]
    (patch,) = kust["patches"]
    assert patch["target"]["kind"] == "Deployment" and patch["target"]["name"] == "nes2net"
    ops = yaml.safe_load((DURABLE / patch["path"]).read_text())
    sts = _json_patch(resource("Deployment", "nes2net"), ops)
    (svc,) = docs(DURABLE / "headless-service.yaml")
    return sts, svc


@pytest.mark.parametrize("version", ["1.28.0", "latest"])
def test_durable_variant_validates_against_kubernetes_schemas(version):
    kv = pytest.importorskip("kubernetes_validate",
                             reason="kubernetes-validate is not installed (pip)")
    version = kv.latest_version() if version == "latest" else version
    for doc in _durable():
        kv.validate(doc, version, strict=True)


def test_durable_variant_keeps_each_replicas_journal_on_its_own_claim():
    sts, svc = _durable()
    assert sts["kind"] == "StatefulSet" and sts["spec"]["serviceName"] == svc["metadata"]["name"]
    assert svc["spec"]["clusterIP"] == "None"
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    spec = sts["spec"]["template"]["spec"]
    claims = {c["metadata"]["name"]: c for c in sts["spec"]["volumeClaimTemplates"]}
    volumes = {v["name"] for v in spec["volumes"]}
    mounts = spec["containers"][0]["volumeMounts"]
    assert {m["name"] for m in mounts} <= volumes | set(claims)  # every mount is backed once
    assert not volumes & set(claims)
    journal = _settings().redis.alert_journal_dir
    mount = next(m for m in mounts if m["mountPath"] == journal)
    assert mount["name"] in claims and not mount.get("readOnly")
    assert sts["spec"]["podManagementPolicy"] == "Parallel"  # no waiting on each model load
    retain = sts["spec"]["persistentVolumeClaimRetentionPolicy"]
    assert retain == {"whenDeleted": "Retain", "whenScaled": "Retain"}


def _kustomize(directory: Path) -> list[dict]:
    """``kubectl kustomize DIR`` (skips without kubectl or its kustomize)."""
    import shutil
    import subprocess
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    out = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True,
                         timeout=60)
    if out.returncode != 0 and "unknown command" in out.stderr:
        pytest.skip("this kubectl has no kustomize")
    assert out.returncode == 0, out.stderr
    built = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert all(d["metadata"].get("namespace") == "nes2net" for d in built)
    return built


def test_durable_variant_builds_with_kustomize_when_installed():
    built = _kustomize(DURABLE)
    kinds = {(d["kind"], d["metadata"]["name"]) for d in built}
    assert ("StatefulSet", "nes2net") in kinds and ("Deployment", "nes2net") not in kinds
    sts = next(d for d in built if d["kind"] == "StatefulSet" and
               d["metadata"]["name"] == "nes2net")
    mine, _ = _durable()
    for pod in (sts, mine):  # kustomize also sets the image tag (images:)
        assert pod["spec"]["template"]["spec"]["containers"][0].pop("image")
    assert sts["spec"]["template"]["spec"] == mine["spec"]["template"]["spec"]
    assert sts["spec"]["volumeClaimTemplates"] == mine["spec"]["volumeClaimTemplates"]
    assert all(d["metadata"].get("namespace") == "nes2net" for d in built)


# --------------------------------------------------------------------------- SIPREC variant

SIPREC = ROOT / "deploy" / "kubernetes-siprec"


def _siprec() -> dict:
    """The overlay's Deployment: the base Deployment with the SIPREC JSON patch applied."""
    kust = yaml.safe_load((SIPREC / "kustomization.yaml").read_text())
    assert kust["resources"] == ["../kubernetes"]
    (patch,) = kust["patches"]
    assert patch["target"]["kind"] == "Deployment" and patch["target"]["name"] == "nes2net"
    ops = yaml.safe_load((SIPREC / patch["path"]).read_text())
    return _json_patch(resource("Deployment", "nes2net"), ops)


@pytest.mark.parametrize("version", ["1.28.0", "latest"])
def test_siprec_variant_validates_against_kubernetes_schemas(version):
    kv = pytest.importorskip("kubernetes_validate",
                             reason="kubernetes-validate is not installed (pip)")
    version = kv.latest_version() if version == "latest" else version
    kv.validate(_siprec(), version, strict=True)


def test_siprec_variant_serves_sip_on_the_nodes_address():
    from nes2net_gateways.siprec_config import SiprecConfig, allowed_networks

    dep = _siprec()
    spec = dep["spec"]["template"]["spec"]
    assert spec["hostNetwork"] is True and spec["dnsPolicy"] == "ClusterFirstWithHostNet"
    # one replica per node: the SIP port and RTP range are the node's
    (term,) = spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert term["labelSelector"]["matchLabels"].items() <= labels.items()
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0  # no second pod per node
    container = spec["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["NES2NET_GATEWAYS__SIPREC__MEDIA_ADDRESS"]["valueFrom"]["fieldRef"][
        "fieldPath"] == "status.hostIP"
    password = env["NES2NET_GATEWAYS__SIPREC__PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert password["name"] == "nes2net-secrets" and password["optional"] is True
    # the environment the pod gets is valid config, and the gateway accepts it beyond loopback
    values = {name: e.get("value", "10.1.2.3") for name, e in env.items()}
    values.pop("NES2NET_CONFIG")
    config = resource("ConfigMap", "nes2net-config")["data"]["config.toml"]
    path = Path(tempfile.mkdtemp()) / "config.toml"
    path.write_text(config)
    settings = load_settings(path, environ=values)
    cfg = SiprecConfig(**settings.gateways["siprec"])
    assert cfg.enabled and cfg.host == "0.0.0.0" and cfg.media_address == "10.1.2.3"
    assert allowed_networks(cfg, auth_required=True)  # does not refuse the exposed gateway
    ports = {(p["containerPort"], p["protocol"]) for p in container["ports"]}
    assert {(cfg.port, "UDP"), (cfg.port, "TCP")} <= ports


def test_siprec_variant_builds_with_kustomize_when_installed():
    built = _kustomize(SIPREC)
    (dep,) = [d for d in built if d["kind"] == "Deployment" and d["metadata"]["name"] == "nes2net"]
    mine = _siprec()
    for pod in (dep, mine):
        assert pod["spec"]["template"]["spec"]["containers"][0].pop("image")
    assert dep["spec"]["template"]["spec"] == mine["spec"]["template"]["spec"]
    assert dep["spec"]["strategy"] == mine["spec"]["strategy"]


# --------------------------------------------------------------------------- monitoring


def exported_metrics() -> dict[str, set[str]]:
    """Series names the service exports -> label names (histograms: _bucket/_sum/_count)."""
    from nes2net_gateways.siprec import SiprecMetrics
    from prometheus_client import CollectorRegistry

    out: dict[str, set[str]] = {}
    gateway_metrics = []
    for value in vars(SiprecMetrics(CollectorRegistry())).values():  # RtpCounters: a group
        gateway_metrics += vars(value).values() if hasattr(value, "__dataclass_fields__") \
            else [value]
    for metric in [*vars(ServiceMetrics()).values(), *gateway_metrics]:
        name, kind = getattr(metric, "_name", None), getattr(metric, "_type", None)
        if name is None:
            continue
        labels = set(metric._labelnames)
        if kind == "counter":
            out[f"{name}_total"] = labels
        elif kind == "gauge":
            out[name] = labels
        elif kind == "histogram":
            for suffix in ("_bucket", "_sum", "_count"):
                out[name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return out


def _check_expr(expr: str, exported: dict[str, set[str]]) -> set[str]:
    used = set(re.findall(r"\bnes2net_[a-z_]+\b", expr))
    assert used, f"no nes2net metric in {expr!r}"
    unknown = used - set(exported)
    assert not unknown, f"{expr!r} uses metrics the service does not export: {unknown}"
    labels = set().union(*(exported[m] for m in used)) | {"instance", "job", "pod", "le"}
    for group in re.findall(r"\bby \(([^)]*)\)", expr):
        by = {g.strip() for g in group.split(",")}
        assert by <= labels, f"{expr!r} groups by labels the metrics lack: {by - labels}"
    for selector in re.findall(r"nes2net_[a-z_]+\{([^}]*)\}", expr):
        names = {m.split("=")[0].strip().rstrip("!~") for m in selector.split(",") if m}
        assert names <= labels, f"{expr!r} selects on unknown labels {names - labels}"
    return used


def _panels(items: list[dict]) -> list[dict]:
    return [q for p in items for q in [p, *_panels(p.get("panels", []))]]


def test_grafana_dashboard_uses_only_exported_metrics_and_covers_them():
    path = ROOT / "deploy" / "grafana" / "nes2net-dashboard.json"
    dash = json.loads(path.read_text())
    exported = exported_metrics()
    panels = _panels(dash["panels"])
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    used: set[str] = set()
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["targets"] and panel["datasource"]["uid"] == "${datasource}"
        for target in panel["targets"]:
            used |= _check_expr(target["expr"], exported)
            assert 'instance=~"$instance"' in target["expr"]
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            _check_expr(var["query"]["query"], exported)
    families = {re.sub(r"_(bucket|sum|count)$", "", m) for m in exported}
    covered = {re.sub(r"_(bucket|sum|count)$", "", m) for m in used}
    assert families == covered, f"metrics without a panel: {families - covered}"


def test_prometheus_alert_rules_use_exported_metrics():
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    exported = exported_metrics()
    names = []
    for group in rules["groups"]:
        for rule in group["rules"]:
            _check_expr(rule["expr"], exported)
            assert rule["labels"]["severity"] in ("warning", "critical")
            names.append(rule["alert"])
    assert len(names) == len(set(names)) >= 4


def test_prometheus_scrape_configs_match_the_deployments():
    prom = ROOT / "deploy" / "prometheus"
    compose = yaml.safe_load((prom / "prometheus.yml").read_text())
    job = compose["scrape_configs"][0]
    assert job["dns_sd_configs"][0]["names"] == ["nes2net"]  # the Compose service name
    assert job["dns_sd_configs"][0]["port"] == load_settings(None, environ={}).server.port
    assert compose["rule_files"] == ["/etc/prometheus/alerts.yml"]
    k8s = yaml.safe_load((prom / "scrape-kubernetes.yml").read_text())["scrape_configs"][0]
    keep = [r for r in k8s["relabel_configs"] if r.get("action") == "keep"]
    port_rule = next(r for r in keep if r["source_labels"] == [
        "__meta_kubernetes_pod_container_port_name"])
    ports = {p["name"] for p in _container()["ports"]}
    assert set(port_rule["regex"].split("|")) == ports - {"dashboard"}
    name_rule = next(r for r in keep if "app_kubernetes_io_name" in r["source_labels"][0])
    labels = resource("Deployment", "nes2net")["spec"]["template"]["metadata"]["labels"]
    assert name_rule["regex"] == labels["app.kubernetes.io/name"]
    monitoring = yaml.safe_load((ROOT / "docker" / "compose.monitoring.yaml").read_text())
    mounts = " ".join(monitoring["services"]["grafana"]["volumes"])
    provider = yaml.safe_load((ROOT / "deploy" / "grafana" / "provisioning" / "dashboards" /
                               "nes2net.yaml").read_text())
    assert provider["providers"][0]["options"]["path"] in mounts
