#!/usr/bin/env bash
# Build the Debian package of cds: dist/cds_<version>_<arch>.deb (issue 23, item 2).
#
#   bash deploy/build-deb.sh
#
# What dh-virtualenv would make, with dpkg-deb alone (no debhelper, no source package):
# a virtual environment in /opt/cds made with the target's own Python (/usr/bin/python3,
# so the package depends on Debian's python3 of the same minor version) and cds installed
# into it from a wheelhouse (pip install --no-index), its paths rewritten from the build
# folder to /opt/cds and its bytecode compiled as it will be found; /etc/cds/cds.yaml
# and routing.yaml as conffiles (deploy/debian); the unit deploy/systemd/cds.service;
# the maintainer scripts (deploy/debian/postinst, prerm, postrm: the cds system user,
# /var/lib/cds).
#
# The wheelhouse (default dist/wheelhouse, kept between builds) is filled from the
# package registry the first time, at the versions this repository's .venv holds (as
# constraints), then reused offline (deploy/lib-wheelhouse.sh, shared with
# deploy/make-offline-bundle.sh). Settings, by environment:
#   CDS_DEB_VERSION   the package version (default: the version in pyproject.toml)
#   CDS_DEB_OUT       where the .deb goes (default: dist/)
#   CDS_WHEELHOUSE    the wheelhouse folder (default: dist/wheelhouse)
#   CDS_DEB_PYTHON    the target's Python (default: /usr/bin/python3)
#   CDS_BUILD_PYTHON  a Python with pip 22.3 or newer to run pip (default: .venv/bin/python)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${CDS_DEB_PYTHON:-/usr/bin/python3}
BUILD_PY=${CDS_BUILD_PYTHON:-$REPO/.venv/bin/python}
OUT=${CDS_DEB_OUT:-$REPO/dist}
WHEELHOUSE=${CDS_WHEELHOUSE:-$REPO/dist/wheelhouse}
VERSION=${CDS_DEB_VERSION:-$("$BUILD_PY" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$REPO/pyproject.toml")}
ARCH=$(dpkg --print-architecture)
PREFIX=/opt/cds
# shellcheck source=deploy/lib-wheelhouse.sh
. "$REPO/deploy/lib-wheelhouse.sh"

for tool in dpkg-deb "$PY" "$BUILD_PY"; do
    command -v "$tool" >/dev/null || { echo "build-deb: $tool not found" >&2; exit 1; }
done
if [[ ! $VERSION =~ ^[0-9][A-Za-z0-9.+~-]*$ ]]; then
    echo "build-deb: CDS_DEB_VERSION: not a Debian version: $VERSION" >&2
    exit 2
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
venv=$root$PREFIX
pip=("$BUILD_PY" -m pip --disable-pip-version-check --python "$venv/bin/python")
mkdir -p "$OUT" "$WHEELHOUSE"

# 1. the environment, with the target's Python (bin/python3 -> /usr/bin/python3)
"$PY" -m venv --without-pip "$venv"

# 2. the wheel of cds, and a wheelhouse of its dependencies for that Python
wheel=$(cds_build_wheel "$BUILD_PY" "$REPO" "$work/cds")
cds_fill_wheelhouse "$BUILD_PY" "$venv/bin/python" "$WHEELHOUSE" "$wheel"

# 3. cds into the environment, from the wheelhouse only
"${pip[@]}" install -q --no-index --no-compile --find-links "$WHEELHOUSE" "$wheel"

# 4. the build folder's paths become /opt/cds (scripts' #!, activate, pyvenv.cfg), then
#    the bytecode, compiled under the names it will have
grep -rlI --null -F "$root" "$venv" | xargs -0 -r sed -i "s|$root||g"
"$venv/bin/python" -m compileall -q -j 0 -s "$root" -p / "$venv/lib" >/dev/null

# 5. configuration (conffiles), the unit, the documentation
install -d "$root/etc/cds" "$root/usr/lib/systemd/system" "$root/usr/share/doc/cds"
install -m 0640 "$REPO/deploy/debian/cds.yaml" "$REPO/deploy/debian/routing.yaml" "$root/etc/cds/"
install -m 0644 "$REPO/deploy/systemd/cds.service" "$root/usr/lib/systemd/system/"
install -m 0644 "$REPO/deploy/cds.example.yaml" "$REPO/deploy/routing.example.yaml" \
    "$REPO/LICENSE" "$root/usr/share/doc/cds/"

# 6. the control files and the package
install -d "$root/DEBIAN"
install -m 0644 "$REPO/deploy/debian/conffiles" "$root/DEBIAN/"
install -m 0755 "$REPO/deploy/debian/postinst" "$REPO/deploy/debian/prerm" \
    "$REPO/deploy/debian/postrm" "$root/DEBIAN/"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$VERSION/" -e "s/@ARCH@/$ARCH/" -e "s/@SIZE@/$size/" \
    "$REPO/deploy/debian/control.in" >"$root/DEBIAN/control"
deb="$OUT/cds_${VERSION}_${ARCH}.deb"
dpkg-deb --root-owner-group -Zgzip -z6 --build "$root" "$deb" >/dev/null
echo "$deb"
