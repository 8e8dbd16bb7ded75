#!/usr/bin/env bash
# Installs what mlguard and its tests need on a fresh Debian machine (idempotent).
#   scripts/setup.sh          runtime: the package and its Python dependencies
#   scripts/setup.sh --test   plus test tools and Debian's prometheus (promtool) for the real-Prometheus tests
#   scripts/setup.sh --bench  plus wrk for the webhook load test
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
extras=""
debs=()
for arg in "$@"; do
  case "$arg" in
    --test) extras="[test]"; debs+=(prometheus jq openssl) ;;
    --bench) extras="[test]"; debs+=(prometheus jq openssl wrk) ;;
  esac
done
missing=()
for deb in "${debs[@]}"; do
  case "$deb" in
    prometheus) command -v prometheus >/dev/null && command -v promtool >/dev/null || missing+=(prometheus) ;;
    *) command -v "$deb" >/dev/null || missing+=("$deb") ;;
  esac
done
if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
  # Debian's package may start a prometheus service on :9090; the tests start their own on free ports.
  (command -v systemctl >/dev/null && $SUDO systemctl disable --now prometheus >/dev/null 2>&1) || true
fi
command -v kubectl >/dev/null || echo "warning: kubectl not found: kustomize rendering tests need it" >&2
"$PY" -m pip install --quiet --disable-pip-version-check -e ".${extras}"
