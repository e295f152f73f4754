# syntax=docker/dockerfile:1
# newscls images. The build steps are the project's own scripts (what `make run` and CI run):
#   scripts/setup-onnxruntime.sh  -> ONNX Runtime from its PyPI wheel
#   scripts/setup-cuda.sh         -> (GPU) CUDA 13 + cuDNN 9 libraries from NVIDIA's PyPI wheels
#   cargo build --release --locked -> the binary
#
# CPU (default target):  docker build -t newscls:cpu .
# GPU:                   docker build --target runtime-gpu --build-arg FEATURES=cuda --build-arg ORT_FLAVOR=gpu -t newscls:gpu .
#                        docker run --gpus all -p 8080:8080 newscls:gpu
# The GPU image has the same layout as `make run` on a GPU machine: a plain base, the CUDA
# libraries next to ONNX Runtime, and only the NVIDIA driver from the host (mounted by the
# NVIDIA container toolkit).

# --- ONNX Runtime library, from the official wheel (cpu: onnxruntime, gpu: onnxruntime-gpu) ---
FROM python:3.11-slim-bookworm AS onnxruntime
ARG ORT_FLAVOR=cpu
WORKDIR /src
COPY scripts/setup-onnxruntime.sh scripts/setup-cuda.sh scripts/
RUN ORT_FLAVOR=${ORT_FLAVOR} scripts/setup-onnxruntime.sh \
 && mkdir -p /out/cuda \
 && cp -P .cache/onnxruntime*/libonnxruntime* /out/ \
 && if [ "${ORT_FLAVOR}" = gpu ]; then scripts/setup-cuda.sh && cp -P .cache/cuda/lib/* /out/cuda/; fi

# --- the binary ---
FROM rust:1.95-slim-bookworm AS build
ARG FEATURES=""
WORKDIR /src
COPY scripts/setup-build.sh scripts/
RUN scripts/setup-build.sh && rm -rf /var/lib/apt/lists/*
# Everything Cargo.toml names: the build script and its protocol file (gRPC), the sources, and
# the test and bench targets' entry files, which cargo checks for on every build (only those, so
# that editing a test does not rebuild the image; `make docker-check` holds this list to the
# manifest).
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto proto
COPY src src
COPY tests/it/main.rs tests/it/main.rs
COPY tests/tools/main.rs tests/tools/main.rs
COPY benches benches
RUN cargo build --release --locked --features "${FEATURES}" \
 && cp target/release/newscls /newscls

# --- GPU runtime: onnxruntime-gpu's CUDA provider with CUDA 13 + cuDNN 9 from PyPI ---
FROM debian:bookworm-slim AS runtime-gpu
# /var/cache/newscls: the registry model cache (model.uri), the one place the service writes.
# libssl3: the Kafka client's TLS (rdkafka links OpenSSL); everything else is in the base image.
# Not pinned on purpose: the image takes Debian's current OpenSSL security fixes when rebuilt.
# hadolint ignore=DL3008
RUN apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 newscls \
 && useradd --system --uid 10001 --gid newscls --home-dir /app --shell /usr/sbin/nologin newscls \
 && install -d -o 10001 -g 10001 /var/cache/newscls
# The system roots that TLS to a registry or collector is verified against (Debian's bundle,
# from the Python stage, which has it).
COPY --from=onnxruntime /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=onnxruntime /out/ /opt/onnxruntime/
COPY --from=build /newscls /usr/local/bin/newscls
WORKDIR /app
COPY --chown=root:root models models
COPY --chown=root:root config config
# Batch limits need no setting here: with the model on the GPU they default to GPU-sized
# batches (config/default.yaml, batching).
ENV ORT_DYLIB_PATH=/opt/onnxruntime/libonnxruntime.so.1.31.1 \
    LD_LIBRARY_PATH=/opt/onnxruntime/cuda:/opt/onnxruntime \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    NEWSCLS_CONFIG=/app/config/default.yaml \
    NEWSCLS__MODEL__CACHE_DIR=/var/cache/newscls/models \
    NEWSCLS__MODEL__DEVICE=cuda
# Numeric, so Kubernetes runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
EXPOSE 8080
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=4s --start-period=20s --retries=3 \
  CMD ["newscls", "--probe", "http://127.0.0.1:8080/livez"]
ENTRYPOINT ["newscls"]

# --- CPU runtime (default) ---
FROM debian:bookworm-slim AS runtime-cpu
# /var/cache/newscls: the registry model cache (model.uri), the one place the service writes.
# libssl3: the Kafka client's TLS (rdkafka links OpenSSL); everything else is in the base image.
# Not pinned on purpose: the image takes Debian's current OpenSSL security fixes when rebuilt.
# hadolint ignore=DL3008
RUN apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 newscls \
 && useradd --system --uid 10001 --gid newscls --home-dir /app --shell /usr/sbin/nologin newscls \
 && install -d -o 10001 -g 10001 /var/cache/newscls
# The system roots that TLS to a registry or collector is verified against (Debian's bundle,
# from the Python stage, which has it).
COPY --from=onnxruntime /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=onnxruntime /out/ /opt/onnxruntime/
COPY --from=build /newscls /usr/local/bin/newscls
WORKDIR /app
COPY --chown=root:root models models
COPY --chown=root:root config config
ENV ORT_DYLIB_PATH=/opt/onnxruntime/libonnxruntime.so.1.31.1 \
    NEWSCLS_CONFIG=/app/config/default.yaml \
    NEWSCLS__MODEL__CACHE_DIR=/var/cache/newscls/models
# Numeric, so Kubernetes runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
EXPOSE 8080
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=4s --start-period=20s --retries=3 \
  CMD ["newscls", "--probe", "http://127.0.0.1:8080/livez"]
ENTRYPOINT ["newscls"]
