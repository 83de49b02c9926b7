"""The container image, the compose stack and the Kubernetes manifests, checked by real tools.

No container engine runs here, so each file goes through the linter or validator its
ecosystem uses: hadolint for the Dockerfile, Docker Compose's own loader (``docker-compose
config``) for the compose file, kubernetes-validate against the Kubernetes API schemas for
the core resources, and the prometheus-operator models generated from its CRD schema for the
PodMonitor. Each checker is also shown a broken file, so a checker that accepts anything
would fail these tests.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import compose
import pytest
import yaml
from cloudcoil.models.prometheus_operator.v1 import PodMonitor
from pydantic import ValidationError

from tests.support import DEPLOY, ROOT
from tests.support.deploy import Promtool, venv_tool

DOCKERFILE = ROOT / "Dockerfile"
COMPOSE_FILE = ROOT / "docker-compose.yml"
K8S = DEPLOY / "k8s"
COMPOSE_BIN = str(Path(compose.__file__).parent / "docker-compose")


def _run(*command: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)


# --- Dockerfile ------------------------------------------------------------------------------


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def _final_stage(text: str) -> list[tuple[str, str]]:
    steps = _instructions(text)
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def test_dockerfile_is_hadolint_clean() -> None:
    result = _run(venv_tool("hadolint"), "--failure-threshold", "style", str(DOCKERFILE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_rejects_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\nCMD python -m service\n")
    result = _run(venv_tool("hadolint"), "--failure-threshold", "style", str(bad))
    assert result.returncode != 0
    for rule in ("DL3007", "DL3008", "DL3025"):
        assert rule in result.stdout, result.stdout


def test_image_is_multi_stage_serve_only_non_root_with_healthcheck() -> None:
    text = DOCKERFILE.read_text()
    steps = _instructions(text)
    assert sum(word == "FROM" for word, _ in steps) >= 2
    assert any("slim" in args for word, args in steps if word == "ARG" or word == "FROM")
    pip_installs = [args for word, args in steps if word == "RUN" and "pip install" in args]
    served = [args for args in pip_installs if "serve" in args]
    assert served and all('".[serve]"' in args and "train" not in args for args in served)
    assert not any("torch" in args for args in pip_installs)

    final = _final_stage(text)
    words = [word for word, _ in final]
    assert "COPY" in words and any(args.startswith("models ") for w, args in final if w == "COPY")
    user = [args for word, args in final if word == "USER"][-1]
    assert user.split(":")[0] not in ("root", "0")
    cmd = [args for word, args in final if word == "CMD"][-1]
    assert json.loads(cmd) == ["python", "-m", "service"]
    env = " ".join(args for word, args in final if word == "ENV")
    for setting in ("WATCHTIME_HOST=0.0.0.0", "WATCHTIME_WORKERS=", "WATCHTIME_INTRA_OP_THREADS="):
        assert setting in env
    health = [args for word, args in final if word == "HEALTHCHECK"][-1]
    assert "/healthz" in health and "curl" not in health


def test_healthcheck_command_is_valid_python() -> None:
    health = [args for word, args in _final_stage(DOCKERFILE.read_text()) if word == "HEALTHCHECK"]
    exec_form = json.loads(health[-1][health[-1].index("CMD") + 3 :])
    assert exec_form[:2] == ["python", "-c"]
    compile(exec_form[2], "<healthcheck>", "exec")


def test_every_copied_path_exists_and_is_not_ignored() -> None:
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for word, args in _instructions(DOCKERFILE.read_text()):
        if word != "COPY" or args.startswith("--from"):
            continue
        sources = shlex.split(args)[:-1]
        for source in sources:
            assert (ROOT / source).exists(), source
            top = source.split("/")[0]
            assert top not in ignored, f"{source} is excluded by .dockerignore"


# --- docker-compose.yml ----------------------------------------------------------------------


def _compose_config(path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return _run(COMPOSE_BIN, "-f", str(path), *extra, "config", "--format", "json")


def test_compose_file_passes_docker_compose_config() -> None:
    result = _compose_config(COMPOSE_FILE, "--profile", "load")
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = json.loads(result.stdout)
    services = config["services"]
    assert set(services) == {"watchtime", "prometheus", "grafana", "locust-master", "locust-worker"}
    assert services["locust-master"]["profiles"] == ["load"]
    assert "http://watchtime:8000" in services["locust-master"]["command"]
    published = {(p["target"], p["published"]) for p in services["watchtime"]["ports"]}
    assert published == {(8000, "8000"), (8001, "8001")}
    mounts = {m["target"]: Path(m["source"]) for m in services["prometheus"]["volumes"]}
    assert mounts["/etc/prometheus/alerts.yml"] == DEPLOY / "prometheus" / "alerts.yml"
    graf = services["grafana"]
    assert graf["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert graf["environment"]["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    for mount in [*services["prometheus"]["volumes"], *graf["volumes"]]:
        if mount["type"] == "bind":
            assert Path(mount["source"]).exists(), mount["source"]


def test_compose_default_profile_leaves_locust_out() -> None:
    result = _run(COMPOSE_BIN, "-f", str(COMPOSE_FILE), "config", "--services")
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) == {"watchtime", "prometheus", "grafana"}


def test_compose_checker_rejects_broken_files(tmp_path: Path) -> None:
    unknown_key = tmp_path / "unknown.yml"
    unknown_key.write_text("services:\n  a:\n    image: x\n    portz: ['1:1']\n")
    dangling = tmp_path / "dangling.yml"
    dangling.write_text("services:\n  a:\n    image: x\n    depends_on: [b]\n")
    for path in (unknown_key, dangling):
        assert _compose_config(path).returncode != 0, path.read_text()


def test_prometheus_config_in_compose_scrapes_the_service(promtool: Promtool) -> None:
    config_file = DEPLOY / "prometheus" / "prometheus.yml"
    result = promtool("check", "config", "--syntax-only", str(config_file), timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load(config_file.read_text())
    targets = config["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == ["watchtime:8000"]
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]


def test_grafana_provisioning_points_at_prometheus_and_the_dashboards() -> None:
    datasources = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    providers = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/dashboards/watchtime.yml").read_text()
    )
    assert providers["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    dashboard = json.loads((DEPLOY / "grafana/dashboards/watchtime.json").read_text())
    uids = {t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]}
    assert uids == {source["uid"]}


# --- Kubernetes ------------------------------------------------------------------------------


def _documents() -> dict[str, dict[str, Any]]:
    docs: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            docs[doc["kind"]] = doc
    return docs


CORE_MANIFESTS = ["deployment.yaml", "service.yaml", "hpa.yaml", "networkpolicy.yaml"]


def test_core_manifests_pass_kubernetes_validate() -> None:
    paths = [str(K8S / name) for name in CORE_MANIFESTS]
    result = _run(venv_tool("kubernetes-validate"), "--strict", *paths)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed") == len(paths), result.stdout


def test_kubernetes_validate_rejects_a_broken_deployment(tmp_path: Path) -> None:
    doc = yaml.safe_load((K8S / "deployment.yaml").read_text())
    doc["spec"]["template"]["spec"]["containers"][0]["startupProbe"]["httpGet"]["port"] = [1]
    doc["spec"]["template"]["spec"]["containers"][0]["resourcez"] = {}
    bad = tmp_path / "deployment.yaml"
    bad.write_text(yaml.safe_dump(doc))
    result = _run(venv_tool("kubernetes-validate"), "--strict", str(bad))
    assert result.returncode != 0, result.stdout


def test_kubernetes_validate_rejects_a_broken_network_policy(tmp_path: Path) -> None:
    doc = yaml.safe_load((K8S / "networkpolicy.yaml").read_text())
    doc["spec"]["ingress"][0]["ports"][0]["port"] = [8000]
    doc["spec"]["ingress"][0]["fromm"] = []
    bad = tmp_path / "networkpolicy.yaml"
    bad.write_text(yaml.safe_dump(doc))
    result = _run(venv_tool("kubernetes-validate"), "--strict", str(bad))
    assert result.returncode != 0, result.stdout


def test_network_policy_admits_only_the_service_port_and_denies_egress() -> None:
    docs = _documents()
    policy = docs["NetworkPolicy"]["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels(docs).items()
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    assert policy["egress"] == []
    (rule,) = policy["ingress"]
    assert rule["from"], "an empty 'from' would admit every source"
    container = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert [p["port"] for p in rule["ports"]] == ["http", "grpc"]
    assert {"http", "grpc"} <= set(ports)


def test_readme_ingress_example_is_a_valid_tls_ingress(tmp_path: Path) -> None:
    text = (ROOT / "README.md").read_text()
    block = text.split("kind: Ingress", 1)[0].rsplit("```yaml", 1)[1]
    block += "kind: Ingress" + text.split("kind: Ingress", 1)[1].split("```", 1)[0]
    doc = yaml.safe_load(textwrap.dedent(block))
    path = tmp_path / "ingress.yaml"
    path.write_text(yaml.safe_dump(doc))
    result = _run(venv_tool("kubernetes-validate"), "--strict", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    service = _documents()["Service"]
    assert doc["spec"]["tls"][0]["secretName"]
    for rule_path in doc["spec"]["rules"][0]["http"]["paths"]:
        backend = rule_path["backend"]["service"]
        assert backend["name"] == service["metadata"]["name"]
        assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
        assert rule_path["path"] in ("/v1", "/v2")  # not /metrics, /docs or the probes


def _pod_monitor(doc: dict[str, Any]) -> PodMonitor:
    """Parse through the CRD-generated models; any field they drop was not in the schema."""
    parsed = PodMonitor.model_validate(doc)
    back = parsed.model_dump(by_alias=True, exclude_none=True, mode="json")
    assert back == doc, f"fields outside the PodMonitor schema: {doc} -> {back}"
    return parsed


def test_pod_monitor_matches_the_operator_schema_and_the_deployment() -> None:
    docs = _documents()
    monitor = _pod_monitor(docs["PodMonitor"])
    assert monitor.spec is not None
    pod_labels = docs["Deployment"]["spec"]["template"]["metadata"]["labels"]
    wanted = monitor.spec.selector.match_labels or {}
    assert wanted and all(pod_labels.get(k) == v for k, v in wanted.items())
    ports = {
        p["name"] for p in docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]["ports"]
    }
    for endpoint in monitor.spec.pod_metrics_endpoints or []:
        assert endpoint.port in ports and endpoint.path == "/metrics"


def test_pod_monitor_schema_rejects_bad_monitors() -> None:
    good = _documents()["PodMonitor"]
    bad_interval = json.loads(json.dumps(good))
    bad_interval["spec"]["podMetricsEndpoints"][0]["interval"] = "15 seconds"
    with pytest.raises(ValidationError):
        _pod_monitor(bad_interval)
    unknown_field = json.loads(json.dumps(good))
    unknown_field["spec"]["podMetricsEndpoints"][0]["pathh"] = "/metrics"
    with pytest.raises(AssertionError, match="outside the PodMonitor schema"):
        _pod_monitor(unknown_field)


def test_deployment_probes_drain_resources_and_autoscaler() -> None:
    docs = _documents()
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["startupProbe"]["httpGet"]["path"] == "/readyz"
    # readiness through gRPC's standard health service, on the gRPC port the pod serves
    env = {e["name"]: e["value"] for e in container["env"]}
    grpc_port = container["readinessProbe"]["grpc"]["port"]
    assert grpc_port == int(env["WATCHTIME_GRPC_PORT"])
    assert {"name": "grpc", "containerPort": grpc_port, "protocol": "TCP"} in container["ports"]
    service_ports = {p["name"]: p for p in docs["Service"]["spec"]["ports"]}
    assert service_ports["grpc"]["targetPort"] == "grpc"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    # The service drains for up to 30 s after SIGTERM (uvicorn's graceful shutdown).
    drain = int(
        re.search(
            r"timeout_graceful_shutdown=(\d+)", (ROOT / "service/__main__.py").read_text()
        ).group(1)
    )
    assert pod["terminationGracePeriodSeconds"] > pause + drain
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind])
    env = {e["name"]: e["value"] for e in container["env"]}
    assert float(container["resources"]["requests"]["cpu"]) == int(env["WATCHTIME_WORKERS"])
    hpa = docs["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == docs["Deployment"]["metadata"]["name"]
    service = docs["Service"]
    assert service["spec"]["selector"].items() <= pod_labels(docs).items()


def pod_labels(docs: dict[str, dict[str, Any]]) -> dict[str, str]:
    return dict(docs["Deployment"]["spec"]["template"]["metadata"]["labels"])


def test_queue_bound_in_alerts_matches_the_deployed_setting() -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus/alerts.yml").read_text())
    (rule,) = [
        r for g in rules["groups"] for r in g["rules"] if r["alert"] == "WatchtimeQueueSaturated"
    ]
    bound = int(re.search(r"\* (\d+)", rule["expr"]).group(1))
    container = _documents()["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert int(env["WATCHTIME_MAX_QUEUE_ROWS"]) == bound
    config = yaml.safe_load(COMPOSE_FILE.read_text())
    assert int(config["services"]["watchtime"]["environment"]["WATCHTIME_MAX_QUEUE_ROWS"]) == bound
