#!/usr/bin/env bash
# What compiling newscls needs beyond Rust: cmake, make, a C++ compiler and the libcurl headers,
# for the librdkafka that the Kafka client (rdkafka, stream mode) builds from source (C and
# C++), and pkg-config with the OpenSSL
# headers for its TLS (rdkafka's `ssl` feature, openssl-sys). A developer machine often has the
# last two already; a plain Debian or rust:slim image does not. Debian packages, installed once
# when missing (as root). Idempotent.
set -euo pipefail
# A clean build for `make test` writes about 4 GB (target/ and .cache/): say so up front when the
# disk is short, instead of leaving only a "No space left on device" halfway through a compile.
free_kb=$(df -Pk . | awk 'NR == 2 {print $4}')
if [ "${free_kb:-0}" -lt $((4 * 1024 * 1024)) ]; then
  echo "setup-build: warning: $((free_kb / 1024)) MB free on this disk; a clean make test needs about 4 GB" >&2
fi
missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v make >/dev/null 2>&1 || missing+=(make)
command -v g++ >/dev/null 2>&1 || missing+=(g++)
[ -f /usr/include/x86_64-linux-gnu/curl/curl.h ] || [ -f /usr/include/curl/curl.h ] || missing+=(libcurl4-openssl-dev)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
[ -f /usr/include/openssl/ssl.h ] || missing+=(libssl-dev)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "setup-build: install ${missing[*]} (needed to build librdkafka and its TLS)" >&2
  exit 1
fi
echo "installing ${missing[*]} from Debian (to build librdkafka and its TLS)"
apt-get update -q >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
