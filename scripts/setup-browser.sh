#!/usr/bin/env bash
# Installs Debian's Chromium and ChromeDriver for the demo page's browser test. Idempotent.
# The browser comes from the distribution's packages, never from a test tool's own download.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "setup-browser: chromium/chromedriver missing and apt-get unavailable (not root?); the browser test will be skipped" >&2
  exit 0
fi
echo "installing chromium and chromium-driver from Debian"
apt-get update -q >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null
