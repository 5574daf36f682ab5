"""llama-server's own endpoints beyond the OpenAI API: `/tokenize`, `/detokenize` and
`/rerank` (Jina's and Cohere's rerank shape, as llama-server serves it), in its field names.

These are not OpenAI's (OpenAI has neither tokenizing nor reranking), so they live apart from
protocols/openai; llama-server answers errors in OpenAI's envelope, so the app's OpenAI error
handlers render theirs too."""
