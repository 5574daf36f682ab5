"""GET /api/ps: the models loaded now, their memory, offload and expiry, in Ollama's shape
(`name`, `model`, `size`, `digest`, `details`, `expires_at`, `size_vram`, `context_length`)
plus what `llamaserve ps` prints: the llamaserve `id`, `processor`, requests in flight,
sequences, the KV cache types, the measured memory, the estimate's parts and the budget."""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ...models.manager import ModelManager, ResidentModel
from .library import details, digest_of
from .names import ollama_name


def ps_row(model: ResidentModel, expires_in: float | None) -> dict[str, Any]:
    """One loaded model: `expires_in` seconds from now it unloads (None: never, or busy)."""
    info, est, files = model.info, model.estimate, model.files
    gpu_layers = model.options.n_gpu_layers
    blocks = info.block_count if info else 0
    offloaded = blocks if gpu_layers < 0 else min(gpu_layers, blocks)
    share = offloaded / blocks if blocks else 0.0
    expires = None
    if expires_in is not None:
        expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + expires_in))
    name = ollama_name(model.spec.id)
    try:
        digest = digest_of(files.weights) if files else ""
    except OSError:  # deleted while loaded
        digest = ""
    return {
        "name": name,
        "model": name,
        "size": model.footprint,
        "digest": digest,
        "details": {**details(info, files.projector if files else None),
                    "parameter_count": info.n_params if info else None},
        "expires_at": expires,
        "size_vram": int(model.footprint * share),
        "context_length": est.context if est else None,
        "cache_type_k": est.cache_type_k if est else model.options.cache_type_k,
        "cache_type_v": est.cache_type_v if est else model.options.cache_type_v,
        "id": model.spec.id,
        "path": str(files.weights) if files else None,
        "processor": f"{share:.0%} GPU" if share else "100% CPU",
        "gpu_layers": offloaded,
        "keep_alive": model.keep_alive,
        "in_flight": model.in_flight,
        "sequences": model.engine.sequences() if model.engine else None,
        "measured_rss": model.measured_bytes,
        "estimate": {"weights": est.weights, "kv_cache": est.kv_cache,
                     "compute": est.compute} if est else None,
    }


async def list_running(request: Request) -> Response:
    manager: ModelManager = request.app.state.manager
    limits = manager.limits
    return JSONResponse({
        "models": [ps_row(model, manager.expires_in(model)) for model in manager.by_recent_use()],
        "max_memory": limits.max_memory,
        "max_models": limits.max_models,
    })
