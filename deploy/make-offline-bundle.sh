#!/usr/bin/env bash
# Build the offline bundle of cds for an air-gapped site (issue 23, item 3):
#
#   bash deploy/make-offline-bundle.sh [OUT]
#
# makes OUT/cds-offline-<version>-<python tag>-<platform>.tar.gz (OUT default: dist/),
# for the Python and platform of CDS_BUILD_PYTHON (default: .venv/bin/python). It holds
#   wheelhouse/   the cds wheel (with its bundled reference models) and every
#                 dependency as a wheel, the CPU onnxruntime
#   config/       cds.example.yaml, routing.example.yaml
#   install.sh    install.sh [PREFIX]: a virtual environment in PREFIX (default
#                 /opt/cds) and `pip install --no-index` from wheelhouse/ alone
# The wheelhouse is gathered from CDS_WHEELHOUSE (default dist/wheelhouse, shared with
# deploy/build-deb.sh: deploy/lib-wheelhouse.sh), which is filled from the registry
# only when it lacks a wheel. The last line printed is the tarball's path.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_PY=${CDS_BUILD_PYTHON:-$REPO/.venv/bin/python}
OUT=${1:-$REPO/dist}
WHEELHOUSE=${CDS_WHEELHOUSE:-$REPO/dist/wheelhouse}
# shellcheck source=deploy/lib-wheelhouse.sh
. "$REPO/deploy/lib-wheelhouse.sh"

command -v "$BUILD_PY" >/dev/null || { echo "make-offline-bundle: $BUILD_PY not found" >&2; exit 1; }
read -r VERSION PYTAG PLATFORM < <("$BUILD_PY" -c '
import sys, sysconfig, tomllib
version = tomllib.load(open(sys.argv[1], "rb"))["project"]["version"]
tag = f"cp{sys.version_info[0]}{sys.version_info[1]}"
print(version, tag, sysconfig.get_platform().replace("-", "_").replace(".", "_"))
' "$REPO/pyproject.toml")
name=cds-offline-$VERSION-$PYTAG-$PLATFORM

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
bundle=$work/$name
mkdir -p "$OUT" "$bundle/wheelhouse" "$bundle/config"

# 1. the cds wheel, the shared wheelhouse filled for this Python, and from it exactly
#    the wheels cds needs (pip copies each one it resolves into the bundle)
wheel=$(cds_build_wheel "$BUILD_PY" "$REPO" "$work/cds")
cds_fill_wheelhouse "$BUILD_PY" "$BUILD_PY" "$WHEELHOUSE" "$wheel"
"$BUILD_PY" -m pip --disable-pip-version-check wheel -q --no-index \
    --find-links "$WHEELHOUSE" -w "$bundle/wheelhouse" "$wheel" >&2
if ls "$bundle"/wheelhouse/onnxruntime_gpu-* >/dev/null 2>&1; then
    echo "make-offline-bundle: onnxruntime-gpu in the wheelhouse; the bundle is the CPU build" >&2
    exit 1
fi

# 2. the example configurations and the install script
install -m 0644 "$REPO/deploy/cds.example.yaml" "$REPO/deploy/routing.example.yaml" \
    "$bundle/config/"
sed -e "s/@VERSION@/$VERSION/" -e "s/@PYTAG@/$PYTAG/" >"$bundle/install.sh" <<'INSTALL'
#!/usr/bin/env bash
# Install cds @VERSION@ from this offline bundle, with no package index:
#   bash install.sh [PREFIX]        (PREFIX default: /opt/cds)
# PYTHON names the Python to use (default: python3); it must be CPython @PYTAG@, the
# Python the wheelhouse was built for, with its venv module (Debian: python3-venv).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PREFIX=${1:-/opt/cds}
PY=${PYTHON:-python3}
command -v "$PY" >/dev/null || { echo "install.sh: $PY not found (set PYTHON)" >&2; exit 1; }
tag=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
if [[ $tag != @PYTAG@ ]]; then
    echo "install.sh: $PY is $tag; this bundle's wheels are for @PYTAG@ (set PYTHON)" >&2
    exit 1
fi
"$PY" -m venv "$PREFIX"
"$PREFIX/bin/python" -m pip install -q --disable-pip-version-check --no-index \
    --find-links "$HERE/wheelhouse" cds
echo "installed cds $("$PREFIX/bin/cds" version) into $PREFIX"
echo "example configurations: $HERE/config (copy them to /etc/cds and edit them)"
echo "check the install: $PREFIX/bin/cds doctor --config /etc/cds/cds.yaml"
INSTALL
chmod 0755 "$bundle/install.sh"

# 3. the tarball
tarball=$OUT/$name.tar.gz
tar -C "$work" --owner=0 --group=0 -czf "$tarball" "$name"
echo "$tarball"
