#!/usr/bin/env bash
# Makes the base images that the Dockerfile and docker-compose.yml name, from Debian packages,
# on an engine that has none of them and cannot pull them (no Docker Hub here, nor in CI). A
# user who can pull never needs this: `docker build .` fetches the real images. Only missing
# names are made, so a real image that is there is never replaced.
#   debian:bookworm-slim          mmdebstrap --variant=minbase bookworm, imported
#   python:3.11-slim-bookworm     deploy/standins/python.Dockerfile (Debian's Python 3.11 + pip)
#   rust:1.95-slim-bookworm       deploy/standins/rust.Dockerfile (this machine's Rust toolchain)
#   nginx:1.27-alpine             deploy/standins/nginx.Dockerfile (Debian's nginx)
#   prom/prometheus:v3.5.0        deploy/standins/prometheus.Dockerfile (Debian's Prometheus)
# The stand-ins carry this machine's CA bundle, so pip and cargo reach the registries from
# inside a build as they do here (also behind a TLS-inspecting proxy).
#   ENGINE=docker|podman scripts/base-images.sh [NAME ...]    (default: all of the above)
set -euo pipefail
cd "$(dirname "$0")/.."
ENGINE=${ENGINE:-docker}
# The names the Dockerfile's FROM lines and the compose file's services use (not its own image).
mapfile -t ALL < <( { awk '$1 == "FROM" { print $2 }' Dockerfile
                      awk '$1 == "image:" { print $2 }' docker-compose.yml; } \
                    | grep -v -e '^newscls' -e '^grafana/' | sort -u)
[ $# -gt 0 ] && ALL=("$@")

have() { "$ENGINE" image inspect "$1" >/dev/null 2>&1; }

# A build context holding the Dockerfile's own directory plus this machine's CA bundle.
context() {
  local dir
  dir=$(mktemp -d)
  cp deploy/standins/* "$dir/"
  cp /etc/ssl/certs/ca-certificates.crt "$dir/"
  echo "$dir"
}

build_standin() {
  local name=$1 file=$2 dir
  dir=$(context)
  if [ "$file" = rust.Dockerfile ]; then
    local toolchain version wanted=${name#rust:}
    wanted=${wanted%%-*}
    toolchain=$(dirname "$(dirname "$(rustup which rustc)")")
    version=$("$toolchain/bin/rustc" --version | awk '{print $2}')
    case "$version" in
      "$wanted" | "$wanted".*) ;;
      *) echo "base-images: this machine's Rust is $version; $name needs $wanted" >&2; exit 1 ;;
    esac
    mkdir -p "$dir/toolchain"
    # Hard links where the file system allows (the toolchain is 600 MB without its docs).
    cp -al "$toolchain/bin" "$toolchain/lib" "$dir/toolchain/" 2>/dev/null \
      || cp -a "$toolchain/bin" "$toolchain/lib" "$dir/toolchain/"
  fi
  echo "base-images: building $name from deploy/standins/$file" >&2
  "$ENGINE" build --network host -q -f "$dir/$file" -t "$name" "$dir" >/dev/null
  rm -rf "$dir"
}

for name in "${ALL[@]}"; do
  have "$name" && continue
  case "$name" in
    debian:bookworm-slim)
      echo "base-images: making $name with mmdebstrap (about 90 s)" >&2
      tar=$(mktemp --suffix=.tar)
      mmdebstrap --quiet --variant=minbase bookworm "$tar" http://deb.debian.org/debian
      "$ENGINE" import --change 'CMD ["bash"]' "$tar" "$name" >/dev/null
      rm -f "$tar"
      ;;
    python:*) have debian:bookworm-slim || "$0" debian:bookworm-slim; build_standin "$name" python.Dockerfile ;;
    rust:*) have debian:bookworm-slim || "$0" debian:bookworm-slim; build_standin "$name" rust.Dockerfile ;;
    nginx:*) have debian:bookworm-slim || "$0" debian:bookworm-slim; build_standin "$name" nginx.Dockerfile ;;
    prom/prometheus:*) have debian:bookworm-slim || "$0" debian:bookworm-slim; build_standin "$name" prometheus.Dockerfile ;;
    *) echo "base-images: no stand-in for $name" >&2; exit 1 ;;
  esac
done
