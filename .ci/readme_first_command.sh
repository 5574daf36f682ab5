#!/usr/bin/env bash
# The README's first command, as a new user runs it: a fresh virtualenv with only what
# `pip install -e '.[tiny]'` installs (no test extra), then `llamaserve run smollm2`, one chat
# request with curl, and a clean stop. A runtime dependency that only the test extra brings in
# turns CI red here.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${1:-.venv-readme}"
rm -rf "$venv"
python3 -m venv "$venv"
# shellcheck disable=SC1091
. "$venv/bin/activate"
python -m pip install --quiet --upgrade pip
python -m pip install -e '.[tiny]'
if ! python .ci/llama_smoke.py; then
  echo "llama-cpp-python failed its smoke test; rebuilding it from source with: ${CMAKE_ARGS:-}"
  python -m pip install --force-reinstall --no-deps --no-cache-dir llama-cpp-python
  python .ci/llama_smoke.py
fi

port=$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp)
llamaserve run smollm2 --port "$port" >"$log" 2>&1 &
pid=$!
stop() { kill -INT "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }
trap stop EXIT
for _ in $(seq 1 300); do
  if curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "llamaserve run smollm2 exited before serving:"; cat "$log"; exit 1
  fi
  sleep 0.5
done
answer=$(curl -fsS "http://127.0.0.1:$port/v1/chat/completions" -H 'Content-Type: application/json' \
  -d '{"model":"smollm2","messages":[{"role":"user","content":"Say this is a test"}],"max_tokens":16}') || {
  echo "the chat request failed; server log:"; cat "$log"; exit 1; }
echo "$answer" | python -c 'import json,sys; body=json.load(sys.stdin); print("README first command: ok:", repr(body["choices"][0]["message"]["content"]))'
trap - EXIT
kill -INT "$pid"
if ! wait "$pid"; then
  echo "llamaserve run did not exit cleanly on Ctrl-C; log:"; cat "$log"; exit 1
fi
deactivate
rm -rf "$venv"
