"""Kubernetes base (ops/k8s): rendered with kustomize, validated with kubernetes-validate
--strict against the API schemas, and checked for what the issue asks of each object."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from tests.ops import regen_prometheusrule
from tests.ops.support import (
    K8S,
    OPS,
    container,
    deployment,
    load_yaml_all,
    objects,
    rendered_text,
    require_tool,
    run,
)

# The oldest Kubernetes still commonly run, and the newest the validator knows.
KUBE_VERSIONS = ["1.29.0", None]


def test_kustomize_renders_every_object() -> None:
    kinds = sorted(objects())
    assert kinds == sorted(
        [
            "ConfigMap",
            "Deployment",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
            "PrometheusRule",
            "Service",
            "ServiceAccount",
            "ServiceMonitor",
        ]
    )


@pytest.mark.parametrize("version", KUBE_VERSIONS, ids=lambda v: v or "latest")
def test_kubernetes_validate_strict(version: str | None) -> None:
    """docs/deploy.md: kubectl kustomize ops/k8s | kubernetes-validate --strict -"""
    validator = require_tool("kubernetes-validate")
    argv = [validator, "--strict", *(["-k", version] if version else []), "-"]
    result = run(argv, stdin=rendered_text())
    assert result.returncode == 0, result.stdout + result.stderr
    passed = [line for line in result.stdout.splitlines() if line.startswith("INFO")]
    warned = [line for line in result.stdout.splitlines() if line.startswith("WARN")]
    # Every core object was checked against a schema; only the Prometheus Operator's CRDs
    # (no schema in the validator) may be skipped, and they are checked below instead.
    assert len(passed) == len(objects()) - 2, result.stdout
    assert len(warned) == 2, result.stdout
    assert all("ServiceMonitor" in w or "PrometheusRule" in w for w in warned), warned


def test_strict_validation_rejects_a_misspelt_field(tmp_path: Path) -> None:
    """The validation above can fail: a typo in a probe name is an error."""
    validator = require_tool("kubernetes-validate")
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(rendered_text().replace("readinessProbe:", "readinesProbe:"))
    result = run([validator, "--strict", str(manifest)])
    assert result.returncode != 0
    assert "readinesProbe" in result.stdout


def test_probes_match_the_gateway_routes() -> None:
    c = container()
    port_names = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert port_names == {"http": 8000}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}


def test_security_context_read_only_root_with_writable_tmp() -> None:
    pod = deployment()["spec"]["template"]["spec"]
    c = container()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]], "PROMETHEUS_MULTIPROC_DIR lives under /tmp"
    assert pod["automountServiceAccountToken"] is False


def test_resources_requests_and_memory_limit() -> None:
    resources = container()["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])  # the HPA's CPU metric needs it
    assert "memory" in resources["limits"]


def test_config_map_feeds_gateway_settings() -> None:
    config = objects()["ConfigMap"]
    env_from = container()["envFrom"]
    assert env_from == [{"configMapRef": {"name": config["metadata"]["name"]}}]
    data = config["data"]
    assert data["GATEWAY_BROKER_URL"] == "redis://redis:6379/0"
    assert data["GATEWAY_PORT"] == "8000"
    assert all(key.startswith(("GATEWAY_", "OTEL_")) for key in data)


def test_selectors_match_the_pods() -> None:
    objs = objects()
    pod_labels = objs["Deployment"]["spec"]["template"]["metadata"]["labels"]

    def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
        return bool(selector) and all(labels.get(k) == v for k, v in selector.items())

    assert selects(objs["Deployment"]["spec"]["selector"]["matchLabels"], pod_labels)
    assert selects(objs["Service"]["spec"]["selector"], pod_labels)
    assert selects(objs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"], pod_labels)
    monitor = objs["ServiceMonitor"]
    service_labels = objs["Service"]["metadata"]["labels"]
    assert selects(monitor["spec"]["selector"]["matchLabels"], service_labels)
    service_ports = {p["name"]: p for p in objs["Service"]["spec"]["ports"]}
    assert service_ports["http"]["targetPort"] == "http"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in service_ports
    assert endpoint["path"] == "/metrics"
    # job label = Service name; the alerts and the dashboard select job="gateway".
    assert objs["Service"]["metadata"]["name"] == "gateway"
    assert "jobLabel" not in monitor["spec"]


def test_pdb_and_hpa() -> None:
    objs = objects()
    pdb = objs["PodDisruptionBudget"]["spec"]
    hpa = objs["HorizontalPodAutoscaler"]["spec"]
    assert pdb.get("maxUnavailable") == 1 or pdb.get("minAvailable") is not None
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": objs["Deployment"]["metadata"]["name"],
    }
    assert hpa["minReplicas"] >= 2, "one pod cannot satisfy the PDB during a node drain"
    pods_metrics = [m["pods"] for m in hpa["metrics"] if m["type"] == "Pods"]
    assert [m["metric"]["name"] for m in pods_metrics] == ["gateway_connections"]
    assert pods_metrics[0]["target"]["type"] == "AverageValue"


def test_prometheus_rule_mirrors_the_alert_rules() -> None:
    rule = objects()["PrometheusRule"]
    expected = regen_prometheusrule.prometheus_rule()
    stale = "ops/k8s/prometheusrule.yaml is stale: run python tests/ops/regen_prometheusrule.py"
    assert rule["spec"] == expected["spec"], stale
    assert (K8S / "prometheusrule.yaml").read_text() == regen_prometheusrule.render(), stale


def test_prometheus_rule_groups_pass_promtool(tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump(objects()["PrometheusRule"]["spec"]))
    result = run([promtool, "check", "rules", str(rules)])
    assert result.returncode == 0, result.stdout + result.stderr


def deploy_doc() -> Path:
    """docs/deploy.md, whose Deploy section holds the overlay example."""
    page = OPS.parent / "docs" / "deploy.md"
    assert "## Deploy" in page.read_text(), "docs/deploy.md has no Deploy section"
    return page


def test_documented_overlay_renders_and_validates(tmp_path: Path) -> None:
    """The overlay example of the Deploy docs works against this base."""
    text = deploy_doc().read_text()
    marker = "# overlays/prod/kustomization.yaml\n"
    assert marker in text, f"{deploy_doc()}: overlay example missing"
    example = text.split(marker, 1)[1].split("```", 1)[0]
    overlay = tmp_path / "overlays" / "prod"
    overlay.mkdir(parents=True)
    (overlay / "kustomization.yaml").write_text(example)
    shutil.copytree(K8S, tmp_path / "ops" / "k8s")
    kustomize = require_tool("kustomize", "kubectl")
    sub = ["build"] if kustomize.endswith("kustomize") else ["kustomize"]
    result = run([kustomize, *sub, str(overlay)])
    assert result.returncode == 0, result.stderr
    docs = {doc["kind"]: doc for doc in load_yaml_all(result.stdout)}
    assert {doc["metadata"].get("namespace") for doc in docs.values()} == {"chat"}
    assert docs["ConfigMap"]["data"]["GATEWAY_BROKER_URL"] == "redis://redis.chat.svc:6379/0"
    assert docs["ConfigMap"]["data"]["GATEWAY_DRAIN_TIMEOUT"] == "25"  # merged, not replaced
    validator = require_tool("kubernetes-validate")
    checked = run([validator, "--strict", "-"], stdin=result.stdout)
    assert checked.returncode == 0, checked.stdout
