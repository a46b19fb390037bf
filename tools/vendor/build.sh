#!/bin/sh
# Maintainers only: rebuild spinrt/web/static/vendor/ from the npm registry.
# Installs the exact versions of package-lock.json (npm ci), bundles each
# src/*.js with esbuild into one ES module, and rewrites vendor/MANIFEST.json
# and vendor/licenses/. Neither `pip install`, CI nor users need node.
#
# To upgrade a library: change its version in package.json, run
# `npm install --ignore-scripts --save-exact` here, then this script, then
# `make test`, and commit package.json, package-lock.json and the vendor files.
set -eu
cd "$(dirname "$0")"
# --ignore-scripts: esbuild's postinstall only checks its binary, which the
# JavaScript API finds in @esbuild/<platform> anyway.
npm ci --ignore-scripts --no-audit --no-fund
node build.mjs
