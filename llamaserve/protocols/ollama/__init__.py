"""Ollama's native API (/api/*)."""
