# Stand-in for python:3.11-slim-bookworm where Docker Hub cannot be reached (made by
# scripts/base-images.sh; a user who can pull gets the real image). Debian bookworm's own
# Python 3.11 with pip, which is all the onnxruntime stage of the Dockerfile runs.
FROM debian:bookworm-slim
RUN apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      ca-certificates python3 python3-pip python-is-python3 \
 && rm -rf /var/lib/apt/lists/*
# This machine's CA bundle (mounted into the build context by scripts/base-images.sh): pip
# verifies PyPI against it, also behind a TLS-inspecting proxy.
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
CMD ["python3"]
