# syntax=docker/dockerfile:1
# newscls images. The build steps are the project's own scripts (what CI runs):
#   scripts/setup-onnxruntime.sh  -> ONNX Runtime from its PyPI wheel
#   cargo build --release --locked -> the binary
#
# CPU (default target):  docker build -t newscls:cpu .
# GPU:                   docker build --target runtime-gpu --build-arg FEATURES=cuda --build-arg ORT_FLAVOR=gpu -t newscls:gpu .
#                        docker run --gpus all -p 8080:8080 newscls:gpu

# CUDA 13 + cuDNN 9 runtime for the GPU target; override to match the hosts' driver.
ARG CUDA_RUNTIME_IMAGE=nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04

# --- ONNX Runtime library, from the official wheel (cpu: onnxruntime, gpu: onnxruntime-gpu) ---
FROM python:3.11-slim-bookworm AS onnxruntime
ARG ORT_FLAVOR=cpu
WORKDIR /src
COPY scripts/setup-onnxruntime.sh scripts/
RUN ORT_FLAVOR=${ORT_FLAVOR} scripts/setup-onnxruntime.sh \
 && mkdir -p /out \
 && cp -P .cache/onnxruntime*/libonnxruntime* /out/

# --- the binary ---
FROM rust:1.95-slim-bookworm AS build
ARG FEATURES=""
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY tests tests
RUN cargo build --release --locked --features "${FEATURES}" \
 && cp target/release/newscls /newscls

# --- GPU runtime: CUDA 13 + cuDNN 9, onnxruntime-gpu's CUDA provider ---
# The tag is in the ARG above; hadolint cannot see through ARGs.
# hadolint ignore=DL3006
FROM ${CUDA_RUNTIME_IMAGE} AS runtime-gpu
RUN groupadd --system --gid 10001 newscls \
 && useradd --system --uid 10001 --gid newscls --home-dir /app --shell /usr/sbin/nologin newscls
COPY --from=onnxruntime /out/ /opt/onnxruntime/
COPY --from=build /newscls /usr/local/bin/newscls
WORKDIR /app
COPY --chown=root:root models models
COPY --chown=root:root config config
# DL3064 ("possible secret in ENV") matches the word TOKENS in NEWSCLS__BATCHING__MAX_BATCH_TOKENS:
# a batch size counted in model tokens, not a credential.
# hadolint ignore=DL3064
ENV ORT_DYLIB_PATH=/opt/onnxruntime/libonnxruntime.so.1.31.1 \
    LD_LIBRARY_PATH=/opt/onnxruntime \
    NEWSCLS_CONFIG=/app/config/default.yaml \
    NEWSCLS__MODEL__DEVICE=cuda \
    NEWSCLS__BATCHING__MAX_BATCH_SIZE=128 \
    NEWSCLS__BATCHING__MAX_BATCH_TOKENS=65536
# Numeric, so Kubernetes runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
EXPOSE 8080
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=4s --start-period=20s --retries=3 \
  CMD ["newscls", "--probe", "http://127.0.0.1:8080/livez"]
ENTRYPOINT ["newscls"]

# --- CPU runtime (default) ---
FROM debian:bookworm-slim AS runtime-cpu
RUN groupadd --system --gid 10001 newscls \
 && useradd --system --uid 10001 --gid newscls --home-dir /app --shell /usr/sbin/nologin newscls
COPY --from=onnxruntime /out/ /opt/onnxruntime/
COPY --from=build /newscls /usr/local/bin/newscls
WORKDIR /app
COPY --chown=root:root models models
COPY --chown=root:root config config
ENV ORT_DYLIB_PATH=/opt/onnxruntime/libonnxruntime.so.1.31.1 \
    NEWSCLS_CONFIG=/app/config/default.yaml
# Numeric, so Kubernetes runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
EXPOSE 8080
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=4s --start-period=20s --retries=3 \
  CMD ["newscls", "--probe", "http://127.0.0.1:8080/livez"]
ENTRYPOINT ["newscls"]
