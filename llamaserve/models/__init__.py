"""Models on this machine: the catalog, Hub pulls and the cache, GGUF headers, and the manager
of the models a server keeps resident."""
