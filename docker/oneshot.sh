#!/bin/sh
# Entrypoint of the image, run by tini (ENTRYPOINT [tini, --, spin-entrypoint]).
#
#   RUNTIME_MODE unset or "daemon": exec the command (CMD: the runtime daemon,
#       `twistd -n --pidfile= spin-runtime`, or whatever `docker run IMAGE ...` gives).
#   RUNTIME_MODE=oneshot: run one notebook to completion on an embedded runtime
#       and exit with `spin run`'s code (0 ok, 1 a cell failed, 2 bad notebook
#       or usage, 3 MAX_DURATION exceeded, 4 runtime unavailable):
#         NOTEBOOK         path of the .ipynb inside the container (required)
#         MAX_DURATION     e.g. 90s, 10m, 1h (default 10m)
#         OUTPUT_NOTEBOOK  where to write the executed notebook (optional)
#
# `exec` keeps tini's signals going straight to spin/twistd: on `docker stop`
# spin cancels the running cell, writes what ran, and exits 143.
set -eu

mode=${RUNTIME_MODE:-daemon}
case "$mode" in
    oneshot)
        if [ -z "${NOTEBOOK:-}" ]; then
            echo "spin-entrypoint: RUNTIME_MODE=oneshot needs NOTEBOOK=/path/to/notebook.ipynb" >&2
            exit 2
        fi
        set -- run "$NOTEBOOK" --max-duration "${MAX_DURATION:-10m}" --format logs
        if [ -n "${OUTPUT_NOTEBOOK:-}" ]; then
            set -- "$@" -o "$OUTPUT_NOTEBOOK"
        fi
        exec spin "$@"
        ;;
    daemon)
        exec "$@"
        ;;
    *)
        echo "spin-entrypoint: unknown RUNTIME_MODE '$mode' (use daemon or oneshot)" >&2
        exit 2
        ;;
esac
