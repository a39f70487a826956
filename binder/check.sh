#!/bin/bash
# What repo2docker would do with binder/, without a container engine: a fresh venv, the install
# binder/requirements.txt asks for, postBuild, then JupyterLab started through binder/start, the
# panel listed and the quickstart notebook served. Usage: bash binder/check.sh
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
on_exit() {
    code=$?
    [ "$code" -ne 0 ] && [ -f "$work/lab.log" ] && { echo "--- JupyterLab log:"; tail -40 "$work/lab.log"; }
    kill "${lab_pid:-0}" 2>/dev/null || true
    rm -rf "$work"
}
trap on_exit EXIT
python3 -m venv "$work/venv"
export PATH="$work/venv/bin:$PATH"
cd "$repo"
pip install -q --upgrade pip
pip install -q -r binder/requirements.txt
bash binder/postBuild
echo "postBuild: ok (the panel is enabled)"
token="$(python -c 'import secrets; print(secrets.token_hex(16))')"
port="$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
root_flag=""; [ "$(id -u)" = 0 ] && root_flag="--allow-root"  # Binder runs as a user; this machine may not
binder/start jupyter lab $root_flag --no-browser --ip 127.0.0.1 --port "$port" --IdentityProvider.token="$token" \
    --ServerApp.root_dir="$repo" >"$work/lab.log" 2>&1 &
lab_pid=$!
for _ in $(seq 120); do curl -sf "http://127.0.0.1:$port/api/status?token=$token" >/dev/null && break; sleep 1; done
curl -sf "http://127.0.0.1:$port/api/status?token=$token" >/dev/null || { echo "JupyterLab did not start"; exit 1; }
echo "JupyterLab: started through binder/start"
curl -sf "http://127.0.0.1:$port/lab/api/extensions?token=$token" | grep -q '"name": *"nbserve-labextension"' \
    || curl -sf "http://127.0.0.1:$port/lab/api/extensions?token=$token" | grep -q 'nbserve-labextension'
echo "JupyterLab: the nbserve panel is served"
curl -sf "http://127.0.0.1:$port/api/contents/notebooks/01-quickstart.ipynb?token=$token" | grep -q '"type": *"notebook"'
echo "JupyterLab: notebooks/01-quickstart.ipynb opens"
curl -sf "http://127.0.0.1:$port/nbserve/api/state?token=$token" >/dev/null
echo "JupyterLab: the nbserve server extension answers"
echo "binder check: ok"
