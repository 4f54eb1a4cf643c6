"""helm lint and helm template of charts/infergate with several value sets, checked object by object."""

import json
import re

import pytest
import yaml

from helm_render import (
    CHART,
    NAMESPACE,
    ROOT,
    container,
    env,
    of_kind,
    one,
    render,
    render_error,
    run_helm,
)

OPERATOR = "infergate-operator"

# What the operator calls, by (apiGroup, resource): operator/src/reconcile/mod.rs (list, server-side
# apply = patch + create for a new object, merge patch, delete, patch_status, get of the object,
# the JSON patch removing an older version's finalizer), gate/pods.rs (list pods), kube's event Recorder (create, patch) and the Controller's
# watches (list, watch). Anything more is not least privilege; anything less breaks a call.
RECONCILE_RULES = {
    ("infergate.dev", "inferencedeployments"): {"get", "list", "watch", "patch"},
    ("infergate.dev", "inferencedeployments/status"): {"patch"},
    ("infergate.dev", "inferencedeployments/scale"): {"patch"},
    ("infergate.dev", "inferencedeployments/finalizers"): {"update"},
    ("apps", "deployments"): {"get", "list", "watch", "create", "patch", "delete"},
    ("", "services"): {"list", "watch", "create", "patch"},
    ("policy", "poddisruptionbudgets"): {"create", "patch"},
    ("", "pods"): {"list"},
    ("events.k8s.io", "events"): {"create", "patch"},
}

SCENARIOS = {
    "default": {},
    "namespace-scope": {"watch": {"scope": "namespace", "namespace": "ml"}},
    "two-replicas": {"replicaCount": 2},
    "monitors": {
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
        "serving": {"podMonitor": {"enabled": True}},
    },
    "pdb": {"podDisruptionBudget": {"enabled": True}, "replicaCount": 2},
}


def granted(rules):
    """{(group, resource): verbs} of RBAC rules, with resourceNames kept apart."""
    result = {}
    for rule in rules:
        assert "resourceNames" not in rule, f"unexpected resourceNames in {rule}"
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                result.setdefault((group, resource), set()).update(rule["verbs"])
    return result


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_lint_is_clean(scenario):
    done = run_helm("lint", "--strict", str(CHART), values=SCENARIOS[scenario])
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_object_is_named_and_namespaced_as_expected(scenario):
    objects = render(SCENARIOS[scenario])
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding"}
    for o in objects:
        assert o["metadata"]["name"], o
        if o["kind"] in cluster_scoped:
            assert "namespace" not in o["metadata"], o
        else:
            assert o["metadata"]["namespace"], o
        assert o["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"


def test_default_is_cluster_wide_with_exactly_the_reconcile_permissions():
    objects = render()
    assert {o["kind"] for o in objects} == {
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "Service",
        "ConfigMap",
    }
    role = one(objects, "ClusterRole", OPERATOR)
    assert granted(role["rules"]) == RECONCILE_RULES
    binding = one(objects, "ClusterRoleBinding", OPERATOR)
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": OPERATOR}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": OPERATOR, "namespace": NAMESPACE}]
    sa = one(objects, "ServiceAccount", OPERATOR)
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == sa["metadata"]["name"]


def test_default_operator_env_is_what_the_binary_reads():
    objects = render()
    variables = env(objects)
    assert variables["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert variables["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert variables["HTTP_ADDR"] == "0.0.0.0:8080"
    assert variables["LOG_FORMAT"] == "json"
    for absent in ("WATCH_NAMESPACE", "LEADER_ELECTION", "LEASE_NAME", "RUST_LOG"):
        assert absent not in variables
    assert "args" not in container(objects)
    # One operator at a time without a Lease: the old pod stops before the new one starts.
    assert one(objects, "Deployment")["spec"]["strategy"] == {"type": "Recreate"}


def test_chart_env_names_are_flags_of_the_operator_binary():
    """Every variable the chart sets is one src/bin/operator.rs reads (RUST_LOG: tracing's filter)."""
    source = (ROOT / "operator" / "src" / "bin" / "operator.rs").read_text()
    # Shared flags are named through the protocol crate: `env = ...server_flags::NAME.env`.
    flags = (ROOT / "protocol" / "src" / "server_flags.rs").read_text()
    shared = dict(re.findall(r'(\w+) = \("[a-z0-9-]+", "([A-Z0-9_]+)"\);', flags))
    read = set(re.findall(r'env = "([A-Z_]+)"', source)) | {"RUST_LOG"}
    read |= {shared[name] for name in re.findall(r"server_flags::(\w+)\.env", source)}
    assert {"WATCH_NAMESPACE", "HTTP_ADDR", "LEADER_ELECTION", "LEASE_NAME", "POD_NAMESPACE", "POD_NAME"} <= read
    values = {
        "watch": {"scope": "namespace"},
        "replicaCount": 3,
        "logLevel": "debug",
        "logFormat": "text",
    }
    variables = env(render(values))
    assert set(variables) <= read, set(variables) - read
    assert variables["LOG_FORMAT"] == "text" and variables["RUST_LOG"] == "debug"


def test_security_context_is_locked_down():
    objects = render()
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container(objects)["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["runAsNonRoot"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    c = container(objects)
    assert c["resources"]["requests"] == {"cpu": "50m", "memory": "64Mi"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]


def test_namespace_scope_grants_nothing_cluster_wide():
    objects = render(SCENARIOS["namespace-scope"])
    assert not of_kind(objects, "ClusterRole") and not of_kind(objects, "ClusterRoleBinding")
    role = one(objects, "Role", OPERATOR)
    assert role["metadata"]["namespace"] == "ml"
    assert granted(role["rules"]) == RECONCILE_RULES
    binding = one(objects, "RoleBinding", OPERATOR)
    assert binding["metadata"]["namespace"] == "ml"
    assert binding["roleRef"]["kind"] == "Role" and binding["roleRef"]["name"] == OPERATOR
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": OPERATOR, "namespace": NAMESPACE}]
    assert env(objects)["WATCH_NAMESPACE"] == "ml"


def test_namespace_scope_defaults_to_the_release_namespace():
    objects = render({"watch": {"scope": "namespace"}})
    assert one(objects, "Role", OPERATOR)["metadata"]["namespace"] == NAMESPACE
    assert env(objects)["WATCH_NAMESPACE"] == NAMESPACE


def lease_role_checks(objects, lease):
    role = one(objects, "Role", f"{OPERATOR}-leader-election")
    assert role["metadata"]["namespace"] == NAMESPACE
    by_names = {}
    for rule in role["rules"]:
        assert rule["apiGroups"] == ["coordination.k8s.io"] and rule["resources"] == ["leases"]
        by_names[tuple(rule.get("resourceNames", []))] = set(rule["verbs"])
    # kube-lease-manager: create once, then get and patch (strategic merge and apply) its Lease.
    assert by_names == {(): {"create"}, (lease,): {"get", "patch"}}
    binding = one(objects, "RoleBinding", f"{OPERATOR}-leader-election")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"][0]["name"] == OPERATOR


def test_two_replicas_turn_leader_election_on():
    objects = render(SCENARIOS["two-replicas"])
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    variables = env(objects)
    assert variables["LEADER_ELECTION"] == "true"
    assert variables["LEASE_NAME"] == OPERATOR
    assert variables["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    lease_role_checks(objects, OPERATOR)
    # Leases stay out of the reconcile's ClusterRole.
    assert ("coordination.k8s.io", "leases") not in granted(one(objects, "ClusterRole")["rules"])


def test_leader_election_by_value_with_one_replica_and_a_lease_name():
    objects = render({"leaderElection": {"enabled": True, "leaseName": "my-lease"}})
    assert env(objects)["LEADER_ELECTION"] == "true" and env(objects)["LEASE_NAME"] == "my-lease"
    lease_role_checks(objects, "my-lease")


def test_one_replica_has_no_lease_permissions():
    objects = render()
    assert not of_kind(objects, "Role") and not of_kind(objects, "RoleBinding")


def test_operator_service_monitor_keeps_the_series_labels():
    objects = render(SCENARIOS["monitors"])
    monitor = one(objects, "ServiceMonitor", OPERATOR)
    assert monitor["metadata"]["labels"]["release"] == "prom"
    service = one(objects, "Service", OPERATOR)
    # The monitor selects the metrics Service, which selects the operator pods.
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"] == "http"
    assert endpoint["path"] == "/metrics"
    # The gauges' own namespace label (the InferenceDeployment's) must win over the target's.
    assert endpoint["honorLabels"] is True


def test_operator_pod_monitor_alternative_and_not_both():
    objects = render({"metrics": {"podMonitor": {"enabled": True}}})
    monitor = one(objects, "PodMonitor", OPERATOR)
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert monitor["spec"]["podMetricsEndpoints"][0]["honorLabels"] is True
    assert not of_kind(objects, "ServiceMonitor")
    error = render_error({"metrics": {"podMonitor": {"enabled": True}, "serviceMonitor": {"enabled": True}}})
    assert "not both" in error


def test_serving_pod_monitor_scrapes_every_revision():
    objects = render(SCENARIOS["monitors"])
    monitor = one(objects, "PodMonitor", "infergate-serving")
    expressions = monitor["spec"]["selector"]["matchExpressions"]
    assert {(e["key"], e["operator"]) for e in expressions} == {
        ("infergate.dev/name", "Exists"),
        ("infergate.dev/revision", "Exists"),
    }
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("http", "/metrics")
    # The dashboard joins server series with the operator's gauges on `name`.
    assert {"sourceLabels": ["__meta_kubernetes_pod_label_infergate_dev_name"], "targetLabel": "name"} in endpoint[
        "relabelings"
    ]
    scoped = render({"watch": {"scope": "namespace", "namespace": "ml"}, "serving": {"podMonitor": {"enabled": True}}})
    assert one(scoped, "PodMonitor")["spec"]["namespaceSelector"] == {"matchNames": ["ml"]}


def test_pod_disruption_budget():
    objects = render(SCENARIOS["pdb"])
    pdb = one(objects, "PodDisruptionBudget", OPERATOR)
    assert pdb["spec"]["maxUnavailable"] == 1 and "minAvailable" not in pdb["spec"]
    deployment = one(objects, "Deployment")
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]
    pdb = one(render({"podDisruptionBudget": {"enabled": True, "minAvailable": 1}}), "PodDisruptionBudget")
    assert pdb["spec"] == {"minAvailable": 1, "selector": deployment["spec"]["selector"]}
    assert not of_kind(render(), "PodDisruptionBudget")


def test_dashboard_config_map_carries_the_sidecar_label_and_the_file():
    objects = render()
    cm = one(objects, "ConfigMap", "infergate-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads((CHART / "dashboards" / "infergate.json").read_text())
    assert json.loads(cm["data"]["infergate.json"]) == shipped
    custom = render(
        {"dashboards": {"label": "dashboards", "labelValue": "infergate", "namespace": "monitoring",
                        "annotations": {"grafana_folder": "Inference"}}}
    )
    cm = one(custom, "ConfigMap")
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["labels"]["dashboards"] == "infergate"
    assert "grafana_dashboard" not in cm["metadata"]["labels"]
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Inference"}
    assert not of_kind(render({"dashboards": {"enabled": False}}), "ConfigMap")


def test_crds_directory_holds_the_generated_crd():
    with_crds = render(include_crds=True)
    crd = one(with_crds, "CustomResourceDefinition")
    generated = yaml.safe_load((ROOT / "crds" / "infergate.dev_inferencedeployments.yaml").read_text())
    assert crd == generated
    assert not of_kind(render(), "CustomResourceDefinition")


def test_pass_through_values():
    values = {
        "image": {"repository": "registry.example/infergate-operator", "tag": "1.2.3", "pullPolicy": "Always"},
        "imagePullSecrets": [{"name": "regcred"}],
        "extraEnv": [{"name": "RUST_BACKTRACE", "value": "1"}],
        "extraArgs": ["--log-format", "text"],
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "type", "operator": "In", "values": ["kwok"]}]}]}}},
        "resources": {"requests": {"cpu": 1, "memory": "1Gi"}},
        "http": {"port": 9090},
        "podAnnotations": {"a": "b"},
    }
    objects = render(values)
    pod = one(objects, "Deployment")["spec"]["template"]
    c = container(objects)
    assert c["image"] == "registry.example/infergate-operator:1.2.3" and c["imagePullPolicy"] == "Always"
    assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    assert env(objects)["RUST_BACKTRACE"] == "1"
    assert c["args"] == ["--log-format", "text"]
    for key in ("nodeSelector", "tolerations", "affinity"):
        assert pod["spec"][key] == values[key]
    # Helm merges maps: the default memory limit stays unless set to null.
    assert c["resources"] == {"requests": {"cpu": 1, "memory": "1Gi"}, "limits": {"memory": "256Mi"}}
    assert env(objects)["HTTP_ADDR"] == "0.0.0.0:9090"
    assert env(render({"http": {"host": "::", "port": 8081}}))["HTTP_ADDR"] == "[::]:8081"
    assert env(render({"http": {"host": "127.0.0.9", "port": 8081}}))["HTTP_ADDR"] == "127.0.0.9:8081"
    assert c["ports"][0]["containerPort"] == 9090
    assert pod["metadata"]["annotations"] == {"a": "b"}
    digest = "sha256:" + "a" * 64
    c = container(render({"image": {"repository": "r/op", "digest": digest, "pullPolicy": "IfNotPresent"}}))
    assert c["image"] == f"r/op@{digest}"


@pytest.mark.parametrize(
    "values, complaint",
    [
        ({"surprise": True}, "surprise"),
        ({"watch": {"scope": "everywhere"}}, "scope"),
        ({"replicaCount": "two"}, "replicaCount"),
        ({"logFormat": "xml"}, "logFormat"),
        ({"image": {"repository": "r", "pullPolicy": "Sometimes"}}, "pullPolicy"),
        ({"metrics": {"serviceMonitor": {"enabled": True, "interval": "soon"}}}, "interval"),
        ({"extraEnv": [{"value": "no name"}]}, "name"),
        ({"serviceAccount": {"create": False}}, "serviceAccount.name"),
    ],
)
def test_invalid_values_are_rejected(values, complaint):
    assert complaint in render_error(values)
