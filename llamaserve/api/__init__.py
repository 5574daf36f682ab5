"""The OpenAI-compatible HTTP routes: one module per route, schemas and errors beside them."""
