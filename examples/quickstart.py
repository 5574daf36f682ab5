"""The README's quick start with the official OpenAI Python client.

    llamaserve run smollm2 &        # in another terminal
    python examples/quickstart.py

OPENAI_BASE_URL (default http://localhost:8000/v1) and LLAMASERVE_MODEL (default smollm2) pick
the server and the model.
"""

import os

from openai import OpenAI

client = OpenAI(
    base_url=os.environ.get("OPENAI_BASE_URL", "http://localhost:8000/v1"),
    api_key=os.environ.get("OPENAI_API_KEY", "IGNORED"),
)
model = os.environ.get("LLAMASERVE_MODEL", "smollm2")

print("models:", [m.id for m in client.models.list().data])

chat = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "Say this is a test"}], max_tokens=64
)
print("chat:", chat.choices[0].message.content)

print("stream: ", end="")
for chunk in client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "Count to five."}],
    max_tokens=64,
    stream=True,
):
    print(chunk.choices[0].delta.content or "", end="", flush=True)
print()

completion = client.completions.create(model=model, prompt="Once upon a time", max_tokens=32)
print("completion:", completion.choices[0].text)
