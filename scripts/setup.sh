#!/usr/bin/env bash
# Create/refresh the project virtualenv at .venv/ with a Python >= 3.12 found on PATH or in pyenv,
# and install vs-keep editable with its test extras. Idempotent: a stamp of setup.py + interpreter
# makes a second run a no-op (well under a second).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
extras="${VS_KEEP_EXTRAS:-test}"

is_ok_python() {  # $1: interpreter path; true if it runs and is >= 3.12
  "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1
}

find_python() {
  local c p v
  for c in python3.13 python3.12 python3 python; do
    p="$(command -v "$c" 2>/dev/null || true)"
    if [ -n "$p" ] && is_ok_python "$p"; then echo "$p"; return 0; fi
  done
  if command -v pyenv >/dev/null 2>&1; then
    # Highest installed 3.12+ first.
    for v in $(pyenv versions --bare 2>/dev/null | grep -E '^3\.(1[2-9]|[2-9][0-9])(\.[0-9]+)?$' | sort -t. -k1,1n -k2,2n -k3,3n -r); do
      p="$(pyenv prefix "$v" 2>/dev/null)/bin/python3"
      if [ -x "$p" ] && is_ok_python "$p"; then echo "$p"; return 0; fi
    done
  fi
  for p in "$HOME"/.pyenv/versions/3.1[2-9]*/bin/python3 /usr/local/bin/python3.1[2-9] /usr/bin/python3.1[2-9]; do
    if [ -x "$p" ] && is_ok_python "$p"; then echo "$p"; return 0; fi
  done
  return 1
}

if [ ! -x "$venv/bin/python" ] || ! is_ok_python "$venv/bin/python"; then
  py="$(find_python)" || { echo "setup.sh: need Python >= 3.12 (on PATH or via pyenv); none found" >&2; exit 1; }
  echo "setup.sh: creating $venv with $py ($("$py" -V 2>&1))" >&2
  rm -rf "$venv"
  "$py" -m venv "$venv"
fi

# vspipe finds Python through a per-user config keyed by the venv's libvsscript path: write it when missing.
configure_vapoursynth() {
  [ -x "$venv/bin/vapoursynth" ] || return 0
  local conf="${XDG_CONFIG_HOME:-$HOME/.config}/vapoursynth/vapoursynth.toml"
  if ! grep -qF "$venv/lib" "$conf" 2>/dev/null; then
    "$venv/bin/vapoursynth" config >&2 || echo "setup.sh: 'vapoursynth config' failed; vspipe may not start" >&2
  fi
}

stamp="$venv/.vs-keep-stamp"
want="$( (cat "$root/setup.py"; echo "$extras"; "$venv/bin/python" -V) | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$venv/bin/python" -c 'import vs_keep' >/dev/null 2>&1; then
  configure_vapoursynth
  exit 0
fi
echo "setup.sh: installing vs-keep[$extras] into $venv" >&2
log="$venv/.vs-keep-install.log"
if ! { "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip &&
       "$venv/bin/python" -m pip install -q --disable-pip-version-check -e "$root[$extras]"; } >"$log" 2>&1; then
  tail -n 40 "$log" >&2
  echo "setup.sh: installation failed (full log: $log)" >&2
  exit 1
fi
echo "$want" > "$stamp"
configure_vapoursynth
