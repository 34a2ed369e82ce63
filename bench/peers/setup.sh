#!/usr/bin/env bash
# Creates one virtualenv per peer engine under .parity/bench/peers/<name>-venv,
# from bench/peers/<name>/requirements.txt. Usage: bench/peers/setup.sh [name ...]
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
python="${PYTHON:-python3}"
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  names=(bytewax quix)
fi
for name in "${names[@]}"; do
  req="$root/bench/peers/$name/requirements.txt"
  venv="$root/.parity/bench/peers/$name-venv"
  if [ ! -f "$req" ]; then
    echo "no peer $name: $req is missing" >&2
    exit 1
  fi
  stamp="$venv/.requirements"
  if [ -f "$stamp" ] && cmp -s "$req" "$stamp"; then
    echo "$name: $venv is up to date"
    continue
  fi
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip
  "$venv/bin/pip" install --quiet -r "$req"
  cp "$req" "$stamp"
  echo "$name: installed into $venv"
done
