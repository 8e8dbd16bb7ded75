# syntax=docker/dockerfile:1.7
# mlguard: one image for the admission webhook and the analysis provider
# (`mlguard serve webhook ...` / `mlguard serve analysis ...`, see kustomize/base).
#
#   docker build -t ghcr.io/mlguard/mlguard:0.1.0 .
#
# Two stages: the builder makes wheels for mlguard and every dependency; the runtime stage only
# installs those wheels (no compiler, no pip cache, no source tree) and runs as a non-root UID
# that matches the manifests' runAsUser/runAsGroup (10001) and works with readOnlyRootFilesystem
# (writable scratch only in /tmp, an emptyDir in the cluster).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Build tools live here only (some dependencies may lack a wheel for the platform).
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md ./
COPY policies/ policies/
COPY webhook/ webhook/
COPY rollouts/ rollouts/
RUN python -m pip wheel --wheel-dir /wheels .

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="mlguard" \
      org.opencontainers.image.description="GPU-inference guardrails for Kubernetes: admission webhook and Argo Rollouts analysis provider" \
      org.opencontainers.image.source="https://github.com/mlguard/mlguard" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TMPDIR=/tmp
RUN groupadd --system --gid 10001 mlguard \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin mlguard
# Install from the builder's wheels without copying them into a layer of this image.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    python -m pip install --no-index --find-links=/wheels mlguard \
 && mlguard --help > /dev/null
WORKDIR /tmp
USER 10001:10001
EXPOSE 8443 8080
ENTRYPOINT ["mlguard"]
CMD ["--help"]
