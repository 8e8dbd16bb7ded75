#!/usr/bin/env bash
# Sets up mlguard on a fresh Debian machine (idempotent), in a virtual environment `.venv` made with
# the system's python3: nothing is ever installed into the system interpreter (PEP 668).
#   scripts/setup.sh          runtime: the package and its Python dependencies
#   scripts/setup.sh --test   plus test tools and Debian's prometheus (promtool), jq, openssl
#   scripts/setup.sh --bench  plus wrk and nginx for the load tests
# pip runs only on first use, or when pyproject.toml or the extras asked for change
# (the stamp .venv/.mlguard-setup holds their digest).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${MLGUARD_PYTHON:-python3}
VENV=${MLGUARD_VENV:-.venv}
extras=""
debs=()
for arg in "$@"; do
  case "$arg" in
    --test) extras="[test]"; debs+=(prometheus jq openssl) ;;
    --bench) extras="[test]"; debs+=(prometheus jq openssl wrk nginx) ;;
    *) echo "setup.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
apt_install() {
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@"
}

missing=()
"$PY" -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
for deb in "${debs[@]}"; do
  case "$deb" in
    prometheus) command -v prometheus >/dev/null && command -v promtool >/dev/null || missing+=(prometheus) ;;
    nginx) [ -x /usr/sbin/nginx ] || missing+=(nginx-light) ;;
    *) command -v "$deb" >/dev/null || missing+=("$deb") ;;
  esac
done
if [ "${#missing[@]}" -gt 0 ]; then
  apt_install "${missing[@]}"
  # Debian's packages may start services (prometheus on :9090, nginx on :80); the tests start their own.
  if command -v systemctl >/dev/null; then
    $SUDO systemctl disable --now prometheus nginx >/dev/null 2>&1 || true
  fi
fi
command -v kubectl >/dev/null || echo "warning: kubectl not found: kustomize rendering needs it" >&2

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.mlguard-setup"
want="$(sha256sum pyproject.toml | cut -c1-64) ${extras:-[runtime]}"
have="$(cat "$stamp" 2>/dev/null || true)"
# a stamp made with [test] also covers a runtime-only set-up
if [ "$have" != "$want" ] && ! { [ -z "$extras" ] && [ "${have% *}" = "${want% *}" ]; }; then
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e ".${extras}"
  echo "$want" > "$stamp"
fi
