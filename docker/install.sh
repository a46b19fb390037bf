#!/bin/sh
# Install the spinrt package into the *current* Python and prove that twistd
# can see the `spin-runtime` plugin afterwards.
#
# This is the one place the install steps live: docker/Dockerfile runs it
# while building the image, and .ci/check-deploy runs it in a fresh venv so a
# broken install (missing dependency, plugin not shipped, ...) fails CI.
#
# Usage: docker/install.sh [SOURCE_DIR]
#   SOURCE_DIR  directory holding setup.cfg / pyproject.toml
#               (default: the repository root, i.e. the parent of docker/)
#   PYTHON      environment variable naming the interpreter to install into
#               (default: `python`, else `python3`, as found on PATH; in an
#               activated venv that is the venv's interpreter)
set -eu

die() {
    echo "install.sh: ERROR: $*" >&2
    exit 1
}

script_dir=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
src=${1:-"$script_dir/.."}
[ -d "$src" ] || die "source directory '$src' does not exist"
src=$(CDPATH='' cd -- "$src" && pwd)

if [ ! -f "$src/setup.cfg" ] && [ ! -f "$src/pyproject.toml" ] && [ ! -f "$src/setup.py" ]; then
    die "'$src' is not a Python project (no setup.cfg, pyproject.toml or setup.py)"
fi

if [ -n "${PYTHON:-}" ]; then
    python=$PYTHON
elif command -v python >/dev/null 2>&1; then
    python=python
else
    python=python3
fi
command -v "$python" >/dev/null 2>&1 || die "no Python interpreter '$python' on PATH"

echo "install.sh: installing $src into $("$python" -c 'import sys; print(sys.prefix)')"
# A regular (non-editable) install: the Twisted plugin in twisted/plugins/ is
# only visible to twistd from a real install (see DESIGN.md).
"$python" -m pip install --no-cache-dir "$src"

# The console script that the image / unit actually runs must be the one that
# belongs to this interpreter.
bindir=$("$python" -c 'import os, sys; print(os.path.dirname(sys.executable))')
twistd=$bindir/twistd
if [ ! -x "$twistd" ]; then
    twistd=$(command -v twistd 2>/dev/null) || die "twistd is not installed (is Twisted a dependency?)"
fi

# `twistd --help` lists every IServiceMaker plugin it can find. Running it
# here also writes twisted/plugins/dropin.cache while we still have write
# access, so the non-root runtime does not warn about the cache on each start.
help_out=$("$twistd" --help 2>&1) || die "'$twistd --help' failed:
$help_out"
if ! printf '%s\n' "$help_out" | grep -Eq '^[[:space:]]+spin-runtime([[:space:]]|$)'; then
    printf '%s\n' "$help_out" | sed -n '/^Commands:/,$p' >&2
    die "'$twistd --help' does not list the spin-runtime plugin: the package installed but twistd cannot find twisted/plugins/spinrt_plugin.py"
fi

# Same for the add-on cell plugin package, when the package has one.
"$python" - <<'EOF' || die "could not scan the spinrt.plugins package"
import importlib.util
if importlib.util.find_spec("spinrt.plugins") is not None:
    import spinrt.plugins
    from twisted.plugin import IPlugin, getPlugins
    list(getPlugins(IPlugin, spinrt.plugins))
EOF

echo "install.sh: OK: '$twistd --help' lists spin-runtime"
