"""Every llamaserve feature through the official OpenAI Python library, unchanged.

    llamaserve run smollm2 &                  # add --mmproj PROJECTOR.gguf for the image call
    python examples/python_openai.py

OPENAI_BASE_URL (default http://localhost:8000/v1) picks the server, LLAMASERVE_MODEL (default
smollm2) the model; LLAMASERVE_IMAGE_MODEL, when set, the model for the image call (skipped
otherwise). OPENAI_API_KEY is sent if the server wants one. Exits non-zero when a call fails.
"""

import base64
import io
import json
import os
import sys

from openai import OpenAI

client = OpenAI(
    base_url=os.environ.get("OPENAI_BASE_URL", "http://localhost:8000/v1"),
    api_key=os.environ.get("OPENAI_API_KEY", "IGNORED"),
)
model = os.environ.get("LLAMASERVE_MODEL", "smollm2")


def check(condition: bool, what: str) -> None:
    if not condition:
        sys.exit(f"FAILED: {what}")
    print(f"ok: {what}")


models = client.models.list()
check(any(m.id == model for m in models.data), f"models.list() lists {model}")

chat = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "Say this is a test"}], max_tokens=32
)
check(bool(chat.choices[0].message.content), "chat completion: " + chat.choices[0].message.content)

streamed = "".join(
    chunk.choices[0].delta.content or ""
    for chunk in client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Count to five."}], max_tokens=32,
        stream=True,
    )
    if chunk.choices
)
check(bool(streamed), "streamed chat: " + streamed.replace("\n", " "))

completion = client.completions.create(model=model, prompt="Once upon a time", max_tokens=16)
check(bool(completion.choices[0].text), "completion: " + completion.choices[0].text)

embedding = client.embeddings.create(model=model, input=["Embedding text...", "Another one"])
check(len(embedding.data) == 2 and len(embedding.data[0].embedding) > 0,
      f"embeddings: 2 vectors of {len(embedding.data[0].embedding)} dimensions")

weather = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]},
    },
}
tool_reply = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "What's the weather in Paris?"}],
    tools=[weather], tool_choice="required", max_tokens=64,
)
call = tool_reply.choices[0].message.tool_calls[0]
check(call.function.name == "get_weather" and "city" in json.loads(call.function.arguments),
      f"tool call: {call.function.name}({call.function.arguments})")

person = {"type": "object", "properties": {"name": {"type": "string"},
                                           "age": {"type": "integer"}},
          "required": ["name", "age"]}
structured = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "Describe a person."}], max_tokens=200,
    temperature=0,
    response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": person}},
)
answer = json.loads(structured.choices[0].message.content)
check(isinstance(answer["name"], str) and isinstance(answer["age"], int),
      f"JSON schema: {answer}")

image_model = os.environ.get("LLAMASERVE_IMAGE_MODEL")
if image_model:
    from PIL import Image

    png = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(png, format="PNG")
    uri = "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()
    seen = client.chat.completions.create(
        model=image_model, max_tokens=16,
        messages=[{"role": "user", "content": [
            {"type": "text", "text": "What is in this image?"},
            {"type": "image_url", "image_url": uri},
        ]}],
    )
    check(seen.choices[0].message.content is not None, "image message answered")
else:
    print("skipped: image message (set LLAMASERVE_IMAGE_MODEL to a model with a projector)")
