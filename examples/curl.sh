#!/usr/bin/env bash
# The API with curl, as Ollama's, LiteLLM's and Xinference's users call it.
#
#   llamaserve run smollm2 &
#   bash examples/curl.sh
#
# OPENAI_BASE_URL (default http://localhost:8000/v1), LLAMASERVE_MODEL (default smollm2),
# LLAMASERVE_EMBEDDING_MODEL (default bge-m3: serve it too, `llamaserve run smollm2 bge-m3`, or
# set it to the chat model) and OPENAI_API_KEY (sent as 'Authorization: Bearer', any value when
# the server checks none).
# Exits non-zero when a call fails.
set -euo pipefail
BASE="${OPENAI_BASE_URL:-http://localhost:8000/v1}"
MODEL="${LLAMASERVE_MODEL:-smollm2}"
KEY="${OPENAI_API_KEY:-IGNORED}"
EMBEDDING_MODEL="${LLAMASERVE_EMBEDDING_MODEL:-bge-m3}"

call() {  # call PATH JSON: POST, fail on any non-2xx status, print the body
  curl --fail-with-body -sS "$BASE/$1" -H 'Content-Type: application/json' \
    -H "Authorization: Bearer $KEY" -d "$2"
  echo
}

echo "# models"
curl --fail-with-body -sS "$BASE/models" -H "Authorization: Bearer $KEY"; echo

echo "# chat"
call chat/completions '{"model": "'"$MODEL"'", "max_tokens": 32,
  "messages": [{"role": "user", "content": "Say this is a test"}]}'

echo "# chat under the catalog alias gpt-3.5-turbo (served by smollm2)"
call chat/completions '{"model": "gpt-3.5-turbo", "max_tokens": 16,
  "messages": [{"role": "user", "content": "Hello!"}]}'

echo "# streamed chat"
curl --fail-with-body -sS -N "$BASE/chat/completions" -H 'Content-Type: application/json' \
  -H "Authorization: Bearer $KEY" -d '{"model": "'"$MODEL"'", "max_tokens": 8, "stream": true,
  "messages": [{"role": "user", "content": "Count to five."}]}' | tail -n 3

echo "# completion"
call completions '{"model": "'"$MODEL"'", "prompt": "Once upon a time", "max_tokens": 16}'

echo "# embeddings, as the seed sends them"
call embeddings '{"model": "'"$EMBEDDING_MODEL"'", "input": "Embedding text..."}' | cut -c1-160

echo "# tool call"
call chat/completions '{"model": "'"$MODEL"'", "max_tokens": 64, "tool_choice": "required",
  "messages": [{"role": "user", "content": "Weather in Paris?"}],
  "tools": [{"type": "function", "function": {"name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}]}'

echo "# JSON mode"
call chat/completions '{"model": "'"$MODEL"'", "max_tokens": 64,
  "response_format": {"type": "json_object"},
  "messages": [{"role": "user", "content": "Give a JSON object with a name and an age."}]}'
