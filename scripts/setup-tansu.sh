#!/usr/bin/env bash
# Builds Tansu 0.6.0 (crates.io; a Kafka-wire-compatible broker in Rust) into .cache/tools/tansu
# for the stream tests. No Apache Kafka or Redpanda build is reachable from the package
# registries this project builds from; Tansu speaks the Kafka protocol that librdkafka uses.
# Its in-memory storage needs the dynostore feature. About 8 minutes once, on 2 cores. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=.cache/tools/tansu
[ -x "$ROOT/bin/tansu" ] && exit 0
echo "building the Tansu broker for the stream tests (once)"
cargo install tansu@0.6.0 --locked --features dynostore --root "$ROOT" --quiet
