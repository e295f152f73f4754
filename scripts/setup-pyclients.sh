#!/usr/bin/env bash
# Installs the clients other servers' users already have, for the protocol tests:
# huggingface_hub (InferenceClient, TEI's and the HF Inference API's client) and tritonclient
# (KServe v2 / Open Inference Protocol, HTTP and gRPC), pinned, into .cache/pyclients. Idempotent.
# Prints the venv's python.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/pinned-venv.sh .cache/pyclients "huggingface_hub==2.4.0" "tritonclient[http,grpc]==2.73.0"
echo "$(pwd)/.cache/pyclients/bin/python"
