#!/usr/bin/env bash
# Builds kube-apiserver and kube-controller-manager from Debian bookworm's `kubernetes` SOURCE package
# (1.20, the full tree with vendor/) into a cache outside the clone, and installs etcd from Debian.
#   scripts/e2e-build.sh            build when missing or when the source package version changed
#   MLGUARD_E2E_CACHE=/path         cache directory (default /var/cache/mlguard-e2e)
# Prints the cached bin directory on its last line of stdout. Any failure names the step and exits 1:
# the e2e stage never skips in silence.
#
# The recipe follows debian/rules of the package (GOPATH mode, the tree linked at
# $GOPATH/src/k8s.io/kubernetes); -mod=vendor does not work for 1.20. Two fixes are needed:
# pkg/generated/openapi/zz_generated.openapi.go is not in the tarball (`make gen_openapi` makes it, and
# needs rsync), and the vendored github.com/modern-go/reflect2 v1.0.1 crashes a Go 1.19 binary on its
# first map encoding, so Debian's reflect2 1.0.2 replaces it.
set -euo pipefail

CACHE=${MLGUARD_E2E_CACHE:-/var/cache/mlguard-e2e}
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
DEBS=(golang-go etcd-server etcd-client dpkg-dev rsync golang-github-modern-go-reflect2-dev)
SRC_LIST=/etc/apt/sources.list.d/mlguard-e2e-src.sources
RECIPE=2   # bump when this recipe changes what it builds: the cache is keyed by source version and recipe

log() { echo "e2e-build: $*" >&2; }
fail() { echo "e2e-build: FAILED at step: $1" >&2; [ -n "${2:-}" ] && [ -f "$2" ] && tail -n 60 "$2" >&2; exit 1; }
# step NAME LOGFILE CMD...: runs CMD with its output in LOGFILE; on failure names NAME and shows the log tail.
step() {
  local name=$1 logf=$2; shift 2
  log "$name"
  "$@" >>"$logf" 2>&1 || fail "$name" "$logf"
}

mkdir -p "$CACHE" || fail "create cache directory $CACHE"
# one build at a time per cache (parallel CI jobs on one machine wait for each other)
exec 9>"$CACHE/.lock"
flock 9 || fail "lock $CACHE/.lock"
LOGF="$CACHE/build.log"
: >"$LOGF" 2>/dev/null || LOGF=$(mktemp)

apt_update() { $SUDO apt-get update -qq; }
apt_install() { DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@"; }

# 1. Debian packages: the Go toolchain, etcd, and the tools of the recipe.
missing=()
for d in "${DEBS[@]}"; do
  dpkg-query -W -f='${Status}' "$d" 2>/dev/null | grep -q "install ok installed" || missing+=("$d")
done
if [ "${#missing[@]}" -gt 0 ]; then
  step "apt-get update" "$LOGF" apt_update
  step "apt-get install ${missing[*]}" "$LOGF" apt_install "${missing[@]}"
fi

# 2. A deb-src twin of the bookworm stanza (same mirror, same keyring), in its own file.
if [ ! -f "$SRC_LIST" ]; then
  log "adding $SRC_LIST"
  python3 - "$SRC_LIST" <<'EOF' || fail "write deb-src stanza $SRC_LIST"
import sys
text = open("/etc/apt/sources.list.d/debian.sources").read()
for stanza in text.split("\n\n"):
    fields = dict(
        line.split(":", 1) for line in stanza.splitlines() if ":" in line and not line.startswith("#")
    )
    if fields.get("Types", "").strip() == "deb" and "bookworm" in fields.get("Suites", "").split():
        out = [f"Types: deb-src"] + [
            f"{k}:{v}" for k, v in fields.items() if k not in ("Types", "Suites")
        ] + ["Suites: bookworm"]
        open(sys.argv[1], "w").write("\n".join(out) + "\n")
        break
else:
    sys.exit("no 'Types: deb' stanza for bookworm in /etc/apt/sources.list.d/debian.sources")
EOF
  step "apt-get update (deb-src)" "$LOGF" apt_update
fi

# 3. Which source version apt offers; the cache is keyed by it.
version=$(apt-cache showsrc kubernetes 2>/dev/null | awk '/^Version:/ {print $2; exit}')
[ -n "$version" ] || { step "apt-get update (deb-src)" "$LOGF" apt_update;
  version=$(apt-cache showsrc kubernetes 2>/dev/null | awk '/^Version:/ {print $2; exit}'); }
[ -n "$version" ] || fail "find source package kubernetes (apt-cache showsrc kubernetes)"
KEY="${version}_recipe$RECIPE"
BIN="$CACHE/$KEY/bin"
if [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/kube-controller-manager" ] && [ -f "$BIN/.complete" ]; then
  log "cached: $BIN (kubernetes $version)"
  echo "$BIN"
  exit 0
fi

# 4. Build. Old versions are removed; the work tree is dropped afterwards (about 2 GB).
log "building kubernetes $version into $BIN (4-10 minutes on 2 cores)"
find "$CACHE" -mindepth 1 -maxdepth 1 -type d ! -name "$KEY" -exec rm -rf {} + 2>/dev/null || true
WORK="$CACHE/$KEY/work"
rm -rf "$WORK"; mkdir -p "$WORK/src" "$BIN"
cd "$WORK/src"
step "apt-get source --download-only kubernetes=$version" "$LOGF" apt-get source --download-only "kubernetes=$version"
dsc=$(ls ./*.dsc | head -1)
step "dpkg-source -x $dsc" "$LOGF" dpkg-source -x "$dsc" tree
cd tree
[ -f pkg/generated/openapi/zz_generated.openapi.go ] || step "make gen_openapi" "$LOGF" \
  env GO111MODULE=off GOFLAGS= GOPATH="$WORK/gopath" make gen_openapi
reflect2=/usr/share/gocode/src/github.com/modern-go/reflect2
[ -d "$reflect2" ] || fail "find Debian's reflect2 at $reflect2"
step "replace vendored modern-go/reflect2 with Debian's $(dpkg-query -W -f='${Version}' golang-github-modern-go-reflect2-dev)" \
  "$LOGF" rsync -a --delete --exclude '*_test.go' "$reflect2/" vendor/github.com/modern-go/reflect2/
mkdir -p "$WORK/gopath/src/k8s.io"
ln -sfn "$PWD" "$WORK/gopath/src/k8s.io/kubernetes"
cd "$WORK/gopath/src/k8s.io/kubernetes"
upstream=${version%-*}; upstream=${upstream#*+really}   # 1.20.5+really1.20.2-1.1+deb12u1 -> 1.20.2
# GOPATH mode: the version package is reached through vendor/ (as hack/lib/version.sh sets it)
pkg=k8s.io/kubernetes/vendor/k8s.io/component-base/version
minor=${upstream#*.}; minor=${minor%%.*}
ldflags="-s -w -X $pkg.gitVersion=v$upstream -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
for cmd in kube-apiserver kube-controller-manager; do
  step "go build cmd/$cmd" "$LOGF" env GO111MODULE=off GOFLAGS= GOPATH="$WORK/gopath" GOCACHE="$WORK/gocache" \
    CGO_ENABLED=0 go build -p "$(nproc)" -ldflags "$ldflags" -o "$BIN/$cmd" "./cmd/$cmd"
done
got=$("$BIN/kube-apiserver" --version 2>&1) || fail "smoke test: kube-apiserver --version ($got)"
[ "$got" = "Kubernetes v$upstream" ] || fail "smoke test: kube-apiserver --version says '$got', expected 'Kubernetes v$upstream'"
log "$got"
cd "$CACHE"
rm -rf "$WORK"
touch "$BIN/.complete"
log "built in ${SECONDS}s: $BIN"
echo "$BIN"
