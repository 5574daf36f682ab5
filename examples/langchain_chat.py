"""LangChain's ChatOpenAI and OpenAIEmbeddings pointed at llamaserve.

    llamaserve run smollm2 &
    pip install langchain-openai
    python examples/langchain_chat.py

OPENAI_BASE_URL (default http://localhost:8000/v1) and LLAMASERVE_MODEL (default smollm2).
Exits non-zero when a call fails.
"""

import os
import sys

from langchain_core.messages import HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI, OpenAIEmbeddings

base_url = os.environ.get("OPENAI_BASE_URL", "http://localhost:8000/v1")
api_key = os.environ.get("OPENAI_API_KEY", "IGNORED")
model = os.environ.get("LLAMASERVE_MODEL", "smollm2")

chat = ChatOpenAI(base_url=base_url, api_key=api_key, model=model, max_tokens=32)
reply = chat.invoke([SystemMessage("You are terse."), HumanMessage("Say this is a test")])
if not reply.content:
    sys.exit("FAILED: ChatOpenAI.invoke returned no text")
print("ok: ChatOpenAI.invoke:", reply.content)

pieces = [chunk.content for chunk in chat.stream("Count to five.")]
if not "".join(pieces):
    sys.exit("FAILED: ChatOpenAI.stream returned no text")
print(f"ok: ChatOpenAI.stream: {len(pieces)} chunks")

# check_embedding_ctx_length=False: LangChain would otherwise tokenize with tiktoken (OpenAI's
# tokenizer, fetched from the internet) and send token ids meant for OpenAI's models.
embeddings = OpenAIEmbeddings(base_url=base_url, api_key=api_key, model=model,
                              check_embedding_ctx_length=False)
vectors = embeddings.embed_documents(["Embedding text...", "Another document"])
query = embeddings.embed_query("Embedding text...")
if len(vectors) != 2 or len(query) != len(vectors[0]):
    sys.exit("FAILED: OpenAIEmbeddings returned the wrong shapes")
print(f"ok: OpenAIEmbeddings: 2 documents and a query, {len(query)} dimensions")
