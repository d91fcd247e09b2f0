# Shared by deploy/build-deb.sh and deploy/make-offline-bundle.sh (issue 23): the cds
# wheel and a wheelhouse of its dependencies. Source it; it defines functions only.
#
# The wheelhouse (default dist/wheelhouse, kept between builds) is filled from the
# package registry the first time, at the versions the repository's .venv holds (as
# constraints; the CPU runtime, never onnxruntime-gpu), then reused offline.

# cds_build_wheel BUILD_PY REPO DEST: build the cds wheel into DEST; print its path.
cds_build_wheel() {
    local build_py=$1 repo=$2 dest=$3
    "$build_py" -m pip --disable-pip-version-check wheel --no-deps -q -w "$dest" "$repo" >&2
    ls "$dest"/cds-*.whl
}

# cds_fill_wheelhouse BUILD_PY TARGET_PY WHEELHOUSE WHEEL: make WHEELHOUSE hold a wheel
# for TARGET_PY of every dependency of WHEEL, from the registry only when it lacks one.
cds_fill_wheelhouse() {
    local build_py=$1 target_py=$2 wheelhouse=$3 wheel=$4 constraints
    local pip=("$build_py" -m pip --disable-pip-version-check --python "$target_py")
    mkdir -p "$wheelhouse"
    # the wheelhouse holds the dependencies only: a cds wheel left there by an earlier
    # build has the same name as this one, and pip would read its (older) requirements
    rm -f "$wheelhouse"/cds-[0-9]*.whl
    if "${pip[@]}" wheel -q --no-index --find-links "$wheelhouse" -w "$wheelhouse" "$wheel" \
            >/dev/null 2>&1; then
        rm -f "$wheelhouse"/cds-[0-9]*.whl
        return 0
    fi
    # the versions the tests ran with; not the GPU runtime (the CPU build, README)
    constraints=$(mktemp)
    "$build_py" -m pip --disable-pip-version-check freeze --exclude-editable \
        | grep -v -i -E '^(cds|onnxruntime-gpu)[ =@]| @ ' >"$constraints" || true
    "${pip[@]}" wheel -q --find-links "$wheelhouse" -c "$constraints" -w "$wheelhouse" "$wheel" \
        || { rm -f "$constraints"; return 1; }
    rm -f "$constraints" "$wheelhouse"/cds-[0-9]*.whl
}
