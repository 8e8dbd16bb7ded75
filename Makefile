# Everything runs in .venv, made by scripts/setup.sh with the system's python3 (never installed into).
VENV ?= .venv
PYTHON := $(VENV)/bin/python
.PHONY: setup run test lint bench bench-stats e2e

setup:
	scripts/setup.sh

# Sets up, then runs the webhook (TLS) and the analysis provider on 127.0.0.1 with the baseline
# PolicySet and shows a denied and an allowed AdmissionReview. Ctrl-C stops it.
run: setup
	$(PYTHON) scripts/demo.py

lint:
	$(PYTHON) -m ruff check .
	$(VENV)/bin/lint-imports
	$(PYTHON) -m mypy policies webhook rollouts

# Sets up (venv, pip packages, Debian prometheus) and passes the tests.
test:
	scripts/setup.sh --test
	$(MAKE) lint
	$(PYTHON) -m pytest

bench:
	scripts/setup.sh --bench
	@for b in tests/benchmarks/bench_*.py; do echo "== $$b"; $(PYTHON) $$b || exit 1; done

# The full tier of the statistics simulations (issue 17): false alarms and power of every check, fixed
# seeds, one table row per claim of rollouts/README.md; about 45 minutes on 2 busy cores. The quick tier runs in
# `make test`. JOBS=2 runs two worker processes.
bench-stats:
	scripts/setup.sh --test
	$(PYTHON) tests/benchmarks/stats_simulations.py --jobs $(or $(JOBS),1)

# A real control plane: kube-apiserver and kube-controller-manager (Kubernetes 1.20) built once from
# Debian's `kubernetes` source package into $(MLGUARD_E2E_CACHE) (default /var/cache/mlguard-e2e,
# outside the clone; rebuilt when the source version changes), Debian's etcd, the webhook registered
# from the prod overlay, and tests/e2e driven with kubectl. Prints the kubectl transcript at the end.
# Not part of `make test`: pyproject's addopts ignore tests/e2e unless it is named, as here.
E2E_PYTEST = $(PYTHON) -m pytest -p no:cacheprovider
e2e:
	scripts/setup.sh --test
	@bin=$$(scripts/e2e-build.sh) || { echo "make e2e: FAILED at step: build Kubernetes from Debian's source package (scripts/e2e-build.sh)" >&2; exit 1; }; \
	MLGUARD_E2E_BIN=$$bin $(E2E_PYTEST) tests/e2e
