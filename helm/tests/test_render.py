"""Assertions on the manifests the Tollbu chart renders.

Run by scripts/chart-check (pytest, with HELM pointing at the pinned helm binary):
    HELM=/path/to/helm python -m pytest helm/tests
Set TOLLBU_BIN to a built `tollbu` binary to also have the gateway itself
validate every rendered tollbu.toml and the example policies.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).resolve().parent
CHART = HERE.parent / "tollbu"
NAMESPACE = "registry-ns"
RELEASE = "gw"
FULLNAME = "gw-tollbu"
HELM = os.environ.get("HELM") or shutil.which("helm") or "helm"
VARIANTS = ["default"] + sorted(p.name for p in (CHART / "ci").glob("*-values.yaml"))

NAMESPACED_KINDS = {
    "ConfigMap", "Service", "ServiceAccount", "StatefulSet", "PodDisruptionBudget",
    "HorizontalPodAutoscaler", "NetworkPolicy", "ServiceMonitor", "Certificate", "Pod",
}
CLUSTER_KINDS: set[str] = set()  # the chart renders none; a new kind must be classified here


def helm_template(*args: str, values: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [HELM, "template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    if values and values != "default":
        cmd += ["-f", str(CHART / "ci" / values)]
    cmd += list(args)
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{result.stderr}")
    return result


def render(*args: str, values: str | None = None) -> list[dict]:
    out = helm_template(*args, values=values).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def only(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def kinds(docs: list[dict]) -> list[str]:
    return [d["kind"] for d in docs]


def statefulset(docs: list[dict]) -> dict:
    return only(docs, "StatefulSet")


def gateway_container(docs: list[dict]) -> dict:
    containers = statefulset(docs)["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "tollbu")


def config_toml(docs: list[dict]) -> dict:
    cm = only(docs, "ConfigMap", f"{FULLNAME}-config")
    return tomllib.loads(cm["data"]["tollbu.toml"])


def pod_checksums(docs: list[dict]) -> dict:
    annotations = statefulset(docs)["spec"]["template"]["metadata"]["annotations"]
    return {k: v for k, v in annotations.items() if k.startswith("checksum/")}


# --- every variant ---------------------------------------------------------------------------


@pytest.fixture(scope="module", params=VARIANTS)
def variant(request):
    return request.param, render(values=request.param)


def test_every_namespaced_object_names_the_release_namespace(variant):
    _, docs = variant
    for doc in docs:
        kind = doc["kind"]
        assert kind in NAMESPACED_KINDS | CLUSTER_KINDS, f"unclassified kind {kind}"
        if kind in NAMESPACED_KINDS:
            assert doc["metadata"].get("namespace") == NAMESPACE, f"{kind}/{doc['metadata']['name']} lacks namespace"


def test_pods_are_hardened(variant):
    name, docs = variant
    pod_specs = [statefulset(docs)["spec"]["template"]["spec"]]
    pod_specs += [d["spec"] for d in docs if d["kind"] == "Pod"]
    assert len(pod_specs) == 2, "StatefulSet pod and the helm test pod"
    for spec in pod_specs:
        assert spec["automountServiceAccountToken"] is False
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True
        assert psc["runAsUser"] == 65532 and psc["runAsGroup"] == 65532
        assert psc["seccompProfile"]["type"] == "RuntimeDefault"
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC")
        for container in spec["containers"] + spec.get("initContainers", []):
            sc = container["securityContext"]
            assert sc["runAsNonRoot"] is True, container["name"]
            assert sc["allowPrivilegeEscalation"] is False, container["name"]
            assert sc["readOnlyRootFilesystem"] is True, container["name"]
            assert sc["privileged"] is False, container["name"]
            assert sc["capabilities"]["drop"] == ["ALL"], container["name"]
            assert "add" not in sc["capabilities"], container["name"]
            assert sc["seccompProfile"]["type"] == "RuntimeDefault", container["name"]
            for section in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][section]), (container["name"], section)
            assert "@sha256:" in container["image"] or re.search(r":[\w][\w.-]+$", container["image"]), container["image"]
    sts_pod = pod_specs[0]
    assert sts_pod["securityContext"]["fsGroup"] == 65532
    assert sts_pod["enableServiceLinks"] is False


def test_probes_use_the_admin_port(variant):
    _, docs = variant
    container = gateway_container(docs)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    config = config_toml(docs)
    assert config["admin"]["listen"].endswith(f":{ports['admin']}")
    assert not config["admin"]["listen"].startswith("127."), "probes and metrics need a non-loopback admin listener"
    if "listen" in config["gateway"]:
        assert config["gateway"]["listen"].endswith(f":{ports['http']}")
    if "tls" in config["gateway"]:
        assert config["gateway"]["tls"]["listen"].endswith(f":{ports['https']}")


def test_config_paths_are_mounted_and_origin_is_per_replica(variant):
    _, docs = variant
    sts = statefulset(docs)
    container = gateway_container(docs)
    config = config_toml(docs)
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert container["args"] == ["serve", "--config", "/etc/tollbu/config/tollbu.toml"]

    def mounted(path: str, writable: bool = False) -> None:
        owners = [m for mp, m in mounts.items() if path == mp or path.startswith(mp.rstrip("/") + "/")]
        assert owners, f"{path} is not under any volume mount"
        assert owners[0].get("readOnly", False) is not True or not writable, f"{path} must be writable"

    mounted("/etc/tollbu/config/tollbu.toml")
    mounted(config["policies"]["dir"])
    audit = config["audit"]
    mounted(audit["dir"], writable=True)
    mounted(audit["signing_key"])
    mounted(audit["pseudonym_key"])
    tls = config["gateway"].get("tls")
    if tls:
        for key in ("cert", "key", "client_ca"):
            if key in tls:
                mounted(tls[key])
    for issuer in config.get("issuer", []):
        if "ca" in issuer:
            mounted(issuer["ca"])
    for service in config.get("service", []):
        for key in ("upstream_ca", "upstream_client_cert", "upstream_client_key"):
            if key in service:
                mounted(service[key])

    # One log identity per replica: origin carries the pod name from the downward API.
    assert "${POD_NAME}" in audit["origin"]
    assert "+" not in audit["origin"] and " " not in audit["origin"]
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"

    # The audit directory lives on the replica's own claim, which outlives the pod.
    claims = {c["metadata"]["name"]: c for c in sts["spec"]["volumeClaimTemplates"]}
    audit_mount = next(m for mp, m in mounts.items() if audit["dir"].startswith(mp + "/"))
    assert audit_mount["name"] in claims
    assert audit_mount["name"] not in {v["name"] for v in sts["spec"]["template"]["spec"]["volumes"]}
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Retain"}
    claim_labels = claims[audit_mount["name"]]["metadata"].get("labels", {})
    assert "helm.sh/chart" not in claim_labels and "app.kubernetes.io/version" not in claim_labels, (
        "volumeClaimTemplates are immutable: no labels that change on upgrade"
    )
    # Secrets are files, never environment variables.
    assert all("secretKeyRef" not in e.get("valueFrom", {}) for e in container["env"])


def test_services_split_data_and_admin(variant):
    _, docs = variant
    gateway = only(docs, "Service", FULLNAME)
    admin = only(docs, "Service", f"{FULLNAME}-admin")
    headless = only(docs, "Service", f"{FULLNAME}-headless")
    assert {p["targetPort"] for p in gateway["spec"]["ports"]} <= {"http", "https"}
    assert [p["targetPort"] for p in admin["spec"]["ports"]] == ["admin"]
    assert headless["spec"]["clusterIP"] == "None"
    assert statefulset(docs)["spec"]["serviceName"] == headless["metadata"]["name"]
    pod_labels = statefulset(docs)["spec"]["template"]["metadata"]["labels"]
    for svc in (gateway, admin, headless):
        assert svc["spec"]["selector"].items() <= pod_labels.items()


def test_test_pod_checks_readyz(variant):
    _, docs = variant
    pod = next(d for d in docs if d["kind"] == "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    args = pod["spec"]["containers"][0]["args"]
    assert any(a.endswith("/readyz") and f"{FULLNAME}-admin.{NAMESPACE}" in a for a in args)


def test_rendered_config_is_accepted_by_the_gateway(variant, tmp_path):
    """Only when a built binary is available (TOLLBU_BIN); the gateway's own parser is the judge.
    `--syntax-only`: the files the config names exist only in the pod."""
    binary = os.environ.get("TOLLBU_BIN")
    if not binary:
        pytest.skip("TOLLBU_BIN not set")
    _, docs = variant
    cm = only(docs, "ConfigMap", f"{FULLNAME}-config")
    path = tmp_path / "tollbu.toml"
    path.write_text(cm["data"]["tollbu.toml"])
    env = dict(os.environ, POD_NAME=f"{FULLNAME}-0")
    result = subprocess.run(
        [binary, "config", "check", "--syntax-only", str(path)], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stdout + result.stderr
    policies = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == f"{FULLNAME}-policies"]
    if policies and policies[0].get("data"):
        pdir = tmp_path / "policies"
        pdir.mkdir()
        for name, text in policies[0]["data"].items():
            (pdir / name).write_text(text)
        result = subprocess.run([binary, "policy", "check", str(pdir)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


# --- checksums roll the pods -----------------------------------------------------------------


def test_retired_generations_are_swept_with_the_active_log():
    assert "retired_dirs" not in config_toml(render())["audit"]
    config = config_toml(render("--set", "config.audit.generation=g3", "--set", "config.audit.retiredGenerations={g1,g2}"))
    assert config["audit"]["dir"] == "/var/lib/tollbu/audit/g3"
    assert config["audit"]["retired_dirs"] == ["/var/lib/tollbu/audit/g1", "/var/lib/tollbu/audit/g2"]
    # Retiring the generation still written is refused by the chart, not left to the pod's start.
    result = helm_template("--set", "config.audit.retiredGenerations={g1}", check=False)
    assert result.returncode != 0
    assert "retiredGenerations lists g1, the current generation" in result.stderr, result.stderr


# Settings the schema accepts one by one but that, together, would crash-loop the pod or fail its
# probes: the chart refuses them at render time, naming the values.
CRASH_LOOP_VALUES = [
    (["--set", "admin.port=8080"], "must differ"),
    (["--set", "gateway.bindAddress=127.0.0.1"], "loopback"),
    (["--set", "terminationGracePeriodSeconds=5"], "must exceed config.limits.shutdown_delay_ms + shutdown_grace_ms + shutdown_flush_ms"),
    (["--set", "config.limits.shutdown_grace_ms=60000"], "must exceed config.limits.shutdown_delay_ms + shutdown_grace_ms + shutdown_flush_ms"),
    # The chart's 5 s shutdown delay counts: 5 + 10 (default grace) + 4 (default flush) + 1 > 19.
    (["--set", "terminationGracePeriodSeconds=19"], "(5000 + 10000 + 4000 ms)"),
    (["--set", "config.limits.shutdown_delay_ms=20000"], "(20000 + 10000 + 4000 ms)"),
    # A longer flush bound needs a longer termination grace too.
    (["--set", "config.limits.shutdown_flush_ms=20000"], "(5000 + 10000 + 20000 ms)"),
    (["--set", "config.services[0].id=population", "--set", "config.services[0].upstream=https://r.example",
      "--set", "config.services[0].mtls=true"], "mtls needs tlsSecret"),
    (["--set", "config.services[0].id=population", "--set", "config.services[0].upstream=http://r.example",
      "--set", "config.services[0].tlsSecret=registry-tls"], "tlsSecret is set but upstream http://r.example is not https"),
    (["--set", "config.issuers[0].issuer=https://maskinporten.no/", "--set", "config.issuers[0].jwksUrl=http://maskinporten.no/jwk",
      "--set", "config.issuers[0].caSecret=issuer-ca"], "caSecret is set but jwksUrl http://maskinporten.no/jwk is not https"),
    (["--set", "config.services[0].id=population", "--set", "config.services[0].upstream=https://r.example",
      "--set", "config.services[0].issuers={https://maskinporten.no/}"], "is not one of config.issuers"),
    (["--set", "commonLabels.app\\.kubernetes\\.io/name=other"], "may not set app.kubernetes.io/name"),
    (["--set", "gateway.tls.enabled=true", "--set", "certManager.enabled=true",
      "--set", "certManager.issuerRef.name=ca", "--set", "certManager.privateKey.algorithm=RSA"], "an RSA key is"),
]


@pytest.mark.parametrize("args,needle", CRASH_LOOP_VALUES, ids=[" ".join(a) for a, _ in CRASH_LOOP_VALUES])
def test_settings_that_would_crash_loop_the_pod_are_refused(args, needle):
    result = helm_template(*args, check=False)
    assert result.returncode != 0, f"rendered: {args}"
    assert needle in result.stderr, result.stderr


def test_a_longer_shutdown_grace_renders_with_a_longer_termination_grace_and_upstream_connections_are_settable():
    docs = render("--set", "config.limits.shutdown_grace_ms=60000", "--set", "terminationGracePeriodSeconds=70",
                  "--set", "config.limits.upstream_max_connections=512")
    assert config_toml(docs)["limits"]["upstream_max_connections"] == 512


def test_the_gateway_serves_on_through_a_shutdown_delay_that_the_termination_grace_covers():
    # Kubernetes removes a terminating pod's endpoint as it sends SIGTERM; kube-proxy and ingresses learn of it
    # seconds later, so the gateway keeps its listeners open (not ready) for the delay before it drains.
    docs = render()
    assert config_toml(docs)["limits"]["shutdown_delay_ms"] == 5000
    assert statefulset(docs)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 5 + 10 + 4 + 1
    # 0 closes the listeners at once, and then a shorter termination grace is enough.
    docs = render("--set", "config.limits.shutdown_delay_ms=0", "--set", "terminationGracePeriodSeconds=15")
    assert config_toml(docs)["limits"]["shutdown_delay_ms"] == 0


def test_audit_retention_is_rendered_only_when_set():
    assert "retention_days" not in config_toml(render())["audit"]
    config = config_toml(render("--set", "config.audit.retentionDays=400"))
    assert config["audit"]["retention_days"] == 400


def test_config_change_changes_the_config_checksum_only():
    base = pod_checksums(render(values="minimal-values.yaml"))
    changed = pod_checksums(render("--set", "config.limits.upstream_timeout_ms=9000", values="minimal-values.yaml"))
    assert changed["checksum/config"] != base["checksum/config"]
    assert changed["checksum/policies"] == base["checksum/policies"]
    unrelated = pod_checksums(render("--set", "resources.limits.memory=1Gi", values="minimal-values.yaml"))
    assert unrelated == base


def test_policy_change_changes_the_policy_checksum_only(tmp_path):
    policy = tmp_path / "p.toml"
    policy.write_text('[service]\nid = "x"\n')
    base = pod_checksums(render("--set-file", f"policies.files.x\\.toml={policy}"))
    policy.write_text('[service]\nid = "y"\n')
    changed = pod_checksums(render("--set-file", f"policies.files.x\\.toml={policy}"))
    assert changed["checksum/policies"] != base["checksum/policies"]
    assert changed["checksum/config"] == base["checksum/config"]


def test_repository_policies_can_be_passed_with_set_file():
    repo_policies = HERE.parent.parent / "policies"
    args = []
    for f in sorted(repo_policies.glob("*.toml")):
        if not f.name.endswith(".test.toml"):
            args += ["--set-file", f"policies.files.{f.name.replace('.', chr(92) + '.')}={f}"]
    docs = render(*args)
    data = only(docs, "ConfigMap", f"{FULLNAME}-policies")["data"]
    for f in repo_policies.glob("*.toml"):
        if not f.name.endswith(".test.toml"):
            assert data[f.name] == f.read_text()


# --- optional objects ------------------------------------------------------------------------


def test_pdb_only_when_it_has_an_effect():
    assert "PodDisruptionBudget" in kinds(render())  # replicaCount 2
    assert "PodDisruptionBudget" not in kinds(render("--set", "replicaCount=1"))
    hpa_one = render("--set", "autoscaling.enabled=true", "--set", "autoscaling.minReplicas=1")
    assert "PodDisruptionBudget" not in kinds(hpa_one)
    hpa_three = render("--set", "autoscaling.enabled=true", "--set", "autoscaling.minReplicas=3", "--set", "replicaCount=1")
    assert "PodDisruptionBudget" in kinds(hpa_three)
    assert only(hpa_three, "PodDisruptionBudget")["apiVersion"] == "policy/v1"


def test_hpa_is_off_by_default_and_owns_replicas_when_on():
    default = render()
    assert "HorizontalPodAutoscaler" not in kinds(default)
    assert statefulset(default)["spec"]["replicas"] == 2
    on = render("--set", "autoscaling.enabled=true")
    hpa = only(on, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": FULLNAME}
    assert "replicas" not in statefulset(on)["spec"]


def test_service_monitor_follows_the_api_or_the_override():
    assert "ServiceMonitor" not in kinds(render())
    detected = render("--api-versions", "monitoring.coreos.com/v1/ServiceMonitor")
    detected_group = render("--api-versions", "monitoring.coreos.com/v1")
    forced = render("--set", "metrics.serviceMonitor.force=true")
    for docs in (detected, detected_group, forced):
        sm = only(docs, "ServiceMonitor")
        admin = only(docs, "Service", f"{FULLNAME}-admin")
        assert sm["spec"]["selector"]["matchLabels"].items() <= admin["metadata"]["labels"].items()
        assert sm["spec"]["endpoints"][0]["port"] in {p["name"] for p in admin["spec"]["ports"]}
        assert sm["spec"]["endpoints"][0]["path"] == "/metrics"
    off = render("--api-versions", "monitoring.coreos.com/v1/ServiceMonitor", "--set", "metrics.serviceMonitor.enabled=false")
    assert "ServiceMonitor" not in kinds(off)


def test_network_policy_admits_only_gateway_and_admin_ports():
    assert "NetworkPolicy" not in kinds(render())
    docs = render(values="full-values.yaml")
    np = only(docs, "NetworkPolicy")
    container_ports = {p["name"] for p in gateway_container(docs)["ports"]}
    ingress_ports = [p["port"] for rule in np["spec"]["ingress"] for p in rule["ports"]]
    assert set(ingress_ports) == container_ports
    admin_rule = next(r for r in np["spec"]["ingress"] if [p["port"] for p in r["ports"]] == ["admin"])
    assert admin_rule.get("from"), "admin port must not be open to every source"
    assert np["spec"]["policyTypes"] == ["Ingress", "Egress"]
    egress_ports = {p["port"] for rule in np["spec"]["egress"] for p in rule.get("ports", [])}
    assert {53, 8443, 443} <= egress_ports
    ingress_only = only(render("--set", "networkPolicy.enabled=true"), "NetworkPolicy")
    assert ingress_only["spec"]["policyTypes"] == ["Ingress"] and "egress" not in ingress_only["spec"]


def test_cert_manager_certificate_feeds_the_tls_volume():
    docs = render(values="cert-manager-values.yaml")
    cert = only(docs, "Certificate")
    assert cert["apiVersion"] == "cert-manager.io/v1"
    assert cert["spec"]["issuerRef"] == {"name": "registry-internal-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
    assert cert["spec"]["privateKey"]["rotationPolicy"] == "Always"
    volumes = {v["name"]: v for v in statefulset(docs)["spec"]["template"]["spec"]["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == cert["spec"]["secretName"]
    assert "Certificate" not in kinds(render())


def test_topology_spread_selects_the_gateway_pods():
    docs = render()
    sts = statefulset(docs)
    constraints = sts["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in constraints} == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    for c in constraints:
        assert c["labelSelector"]["matchLabels"] == sts["spec"]["selector"]["matchLabels"]


# --- the schema rejects bad values, naming the path ------------------------------------------

BAD_VALUES = [
    (["--set", "securityContext.allowPrivilegeEscalation=true"], "allowPrivilegeEscalation"),
    (["--set", "securityContext.readOnlyRootFilesystem=false"], "readOnlyRootFilesystem"),
    (["--set", "podSecurityContext.runAsNonRoot=false"], "runAsNonRoot"),
    (["--set", "gateway.plain.port=80"], "port"),
    (["--set", "replicaCount=0"], "replicaCount"),
    (["--set", "config.audit.originPrefix=registry.example+x"], "originPrefix"),
    (["--set", "config.audit.durability=sometimes"], "durability"),
    (["--set", "config.audit.retentionDays=-1"], "retentionDays"),
    (["--set", "config.audit.retiredGenerations={g0,G1}"], "retiredGenerations"),
    (["--set", "config.limits.max_conections=5"], "max_conections"),
    (["--set", "config.issuers[0].leewaySecs=120"], "leewaySecs"),
    (["--set", "config.issuers[0].algorithms={HS256}"], "algorithms"),
    (["--set", "config.services[0].id=population", "--set", "config.services[0].upstream=ftp://x"], "upstream"),
    (["--set", "image.digest=sha256:1234"], "digest"),
    (["--set", "gateway.tls.enabled=true"], "existingSecret"),
    (["--set", "gateway.tls.enabled=true", "--set", "certManager.enabled=true"], "name"),
    (["--set", "certManager.enabled=true", "--set", "certManager.issuerRef.name=ca"], "enabled"),
    (["--set", "gateway.plain.enabled=false"], "enabled"),
    (["--set", "persistence.retentionPolicy.whenScaled=Sometimes"], "whenScaled"),
    (["--set", "policies.files.bad\\.yaml=x"], "bad.yaml"),
    (["--set", "extraEnv[0].name=POD_NAME"], "extraEnv"),
    (["--set", "unknownKey=1"], "unknownKey"),
]


@pytest.mark.parametrize("args,needle", BAD_VALUES, ids=[" ".join(a) for a, _ in BAD_VALUES])
def test_schema_rejects_bad_values(args, needle):
    result = helm_template(*args, check=False)
    assert result.returncode != 0, f"accepted: {args}"
    assert "schema" in result.stderr.lower() or "values don't meet" in result.stderr.lower(), result.stderr
    assert needle in result.stderr, result.stderr


def test_schema_accepts_platform_assigned_ids():
    # OpenShift-style platforms assign the uid; null removes it while runAsNonRoot stays true.
    docs = render("--set", "podSecurityContext.runAsUser=null", "--set", "securityContext.runAsUser=null")
    assert "runAsUser" not in gateway_container(docs)["securityContext"]


# --- documentation of values -----------------------------------------------------------------


def test_every_value_is_documented():
    """Each key in values.yaml has a `# --` comment, directly or through an ancestor (helm-docs)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    documented_at_indent: list[tuple[int, bool]] = []  # stack of (indent, documented)
    pending_doc = False
    missing = []
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if stripped.startswith("# --"):
            pending_doc = True
            continue
        if not stripped or stripped.startswith("#"):
            continue
        indent = len(line) - len(line.lstrip())
        if stripped.startswith("- "):
            continue  # list items belong to their key
        match = re.match(r"^([A-Za-z0-9_.\\-]+):", stripped)
        if not match:
            continue
        while documented_at_indent and documented_at_indent[-1][0] >= indent:
            documented_at_indent.pop()
        inherited = any(doc for _, doc in documented_at_indent)
        value = stripped[len(match.group(0)):].strip()
        is_leaf = value != ""
        if is_leaf and not (pending_doc or inherited):
            missing.append(f"values.yaml:{number}: {match.group(1)}")
        documented_at_indent.append((indent, pending_doc or inherited))
        pending_doc = False
    assert not missing, "undocumented values:\n" + "\n".join(missing)


def test_schema_is_valid_json_and_covers_every_top_level_value():
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert schema["additionalProperties"] is False
    assert set(values) <= set(schema["properties"])
