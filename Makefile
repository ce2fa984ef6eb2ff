# The README's two commands: `make generate` (the main job) and `make test`.
# Both bootstrap .venv on a fresh machine. The FFI is compiled without build isolation so that it
# is built against the jaxlib that runs it (the XLA FFI ABI is versioned).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
DEPS := jax jaxlib flax numpy nanobind scikit-build-core cmake ninja safetensors tokenizers optax tqdm pytest
TEST_DEPS := torch==2.13.0 transformers matplotlib nbclient nbformat ipykernel pytest-xdist
FFI_SOURCES := $(shell find ffi -name '*.h' -o -name '*.cc' -o -name '*.cu' -o -name '*.cuh') CMakeLists.txt pyproject.toml

.PHONY: test generate build bench notebooks results gpu-test gpu-all gpu-scan clean

# (.deps-2: the dependency list grew pytest-xdist; an older .venv installs it once.)
$(VENV)/.deps-2:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(DEPS) $(TEST_DEPS)
	touch $@

# CUDA architectures of the kernels (when nvcc is found): sm_80 and sm_90 where a GPU is visible; on a
# machine without one (CI) the CUDA build is only a compile check, so sm_90 alone (half the compile time).
CUDA_ARCHS ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo '80;90' || echo 90)

$(VENV)/.built: $(VENV)/.deps-2 $(FFI_SOURCES)
	$(PIP) install -q --no-build-isolation --no-deps -e . "-Ccmake.define.CMAKE_CUDA_ARCHITECTURES=$(CUDA_ARCHS)"
	touch $@

build: $(VENV)/.built

test: build
	XLA_PYTHON_CLIENT_PREALLOCATE=false $(PY) -m pytest -q -n 2 --durations=20 tests

generate: build
	$(PY) -m mamba_jax.cli generate --model default --prompt "def fibonacci(n):" --max-new-tokens 200

bench: build
	$(PY) benchmarks/bench_ops.py

# Executes every notebook (also part of `make test`); regenerates docs/results.md's tables and figures.
notebooks: build
	$(PY) -m pytest -q tests/test_notebooks.py

results: build
	$(PY) benchmarks/plots.py

# On the GPU host (python3 there already has jax, the CUDA plugin and the build tools):
gpu-build:
	python3 -m pip install -q --no-build-isolation --no-deps -e .

gpu-test: gpu-build
	python3 -m pytest -q tests

# The whole GPU check of issue 3 in one call (build, kernel checks under compute-sanitizer, tests,
# benchmarks); logs and JSON under $(OUT) (default gpu-out/). See tools/gpu_all.sh.
gpu-all:
	tools/gpu_all.sh

# The fused decode step's tests, sanitizers, ncu and decode timings (tools/gpu_fused.sh), and the
# side-by-side table against mamba_ssm (needs ../shared/anchors copied to .anchors and carried).
gpu-fused:
	tools/gpu_fused.sh

gpu-side-by-side: gpu-build
	python3 benchmarks/bench_side_by_side.py --ops selective_scan,causal_conv1d,selective_state_update,causal_conv1d_update \
	  --gen-cases mamba-2.8b:1,mamba-2.8b:16,mamba-2.8b:64,mamba-130m:1,mamba-130m:64,mamba2-2.7b:1,mamba2-2.7b:16 \
	  --what ops,gen --gen-models mamba-130m,mamba-2.8b,mamba2-2.7b --timeout 170 --profile \
	  --work $(or $(OUT),gpu-out)/sbs --out $(or $(OUT),gpu-out)/side-by-side.json

# Prefill of mamba-2.8b at 2048 and 65536 tokens on both sides (time and peak memory).
gpu-side-by-side-prefill: gpu-build
	python3 benchmarks/bench_side_by_side.py --ops '' --gen-cases mamba-2.8b:1 --prefill-lens 2048,65536 --what prefill \
	  --timeout 300 --work $(or $(OUT),gpu-out)/sbs-prefill --out $(or $(OUT),gpu-out)/side-by-side-prefill.json

# The selective scan on the GPU host in one call (tools/gpu_scan.sh: checker, tests, sanitizers, kernel
# times, op rows and prefill side by side with .anchors carried, Nsight Compute).
gpu-scan:
	OUT=$(or $(OUT),gpu-out) tools/gpu_scan.sh

clean:
	rm -rf build $(VENV)/.built
