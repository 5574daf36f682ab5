"""llamaserve: GGUF models through llama.cpp behind the OpenAI HTTP API."""

__version__ = "0.1.0"
