#!/usr/bin/env bash
# Bootstrap the venv (scripts/setup.sh) and run the vs-keep command line: scripts/vs-keep.sh restore IN OUT ...
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VS_KEEP_EXTRAS="${VS_KEEP_EXTRAS:-test}" "$root/scripts/setup.sh"
exec "$root/.venv/bin/vs-keep" "$@"
