"""Renders charts/infergate with `helm template` and parses the objects."""

import json
import os
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "infergate"
RELEASE = "infergate"
NAMESPACE = "infergate-system"
# `helm template` checks Chart.yaml's kubeVersion against this (a helm built without its
# ldflags assumes v1.20); the control plane of the end-to-end suite runs 1.34.
KUBE_VERSION = "v1.34.0"


def helm_binary():
    helm = os.environ.get("HELM")
    if not helm:
        pytest.fail("HELM is not set: run `make test-chart`, which builds helm with tests/cluster/build.sh")
    return helm


def run_helm(*args, values=None):
    """Runs helm with the values written to a file; returns the CompletedProcess."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        json.dump(values or {}, f)
        f.flush()
        return subprocess.run(
            [helm_binary(), *args, "-f", f.name], capture_output=True, text=True, check=False
        )


def template_args():
    return [RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION]


def render(values=None, include_crds=False):
    """The objects `helm template` renders, as dicts."""
    extra = ["--include-crds"] if include_crds else []
    done = run_helm("template", *template_args(), *extra, values=values)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def render_error(values):
    """The error of a rendering that must fail."""
    done = run_helm("template", *template_args(), values=values)
    assert done.returncode != 0, f"rendered although it should not:\n{done.stdout[:2000]}"
    return done.stderr


def of_kind(objects, kind):
    return [o for o in objects if o["kind"] == kind]


def one(objects, kind, name=None):
    found = [o for o in of_kind(objects, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


def container(objects):
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert len(pod["containers"]) == 1
    return pod["containers"][0]


def env(objects):
    """The operator's environment as {name: value or valueFrom}."""
    result = {}
    for var in container(objects).get("env", []):
        assert var["name"] not in result, f"{var['name']} set twice"
        result[var["name"]] = var.get("value", var.get("valueFrom"))
    return result
