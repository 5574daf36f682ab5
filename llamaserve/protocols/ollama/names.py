"""Ollama's model names (`name:tag`) ↔ llamaserve's model ids.

A served model `smollm2` is `smollm2:latest` to Ollama clients; a Hub model
`hf:OWNER/REPO:Q4_K_M` is `hf.co/OWNER/REPO:Q4_K_M`, the name Ollama itself gives Hugging
Face models. A request may name a model by its id, an alias, either of those spellings, or
`name:TAG` where TAG is the model's quantisation or parameter size as its header says
(`smollm2:q4_1`, `smollm2:134.52m`); anything else is Ollama's 404.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool

from ...errors import RequestError
from ...models.manager import ModelManager, ResidentModel
from .library import describe, human_number

LATEST = ":latest"
HUB_HOSTS = ("hf.co/", "huggingface.co/")


def ollama_name(model_id: str) -> str:
    if model_id.startswith("hf:"):
        rest = model_id[3:]
        return f"hf.co/{rest}" + ("" if ":" in rest else LATEST)
    return model_id if ":" in model_id else model_id + LATEST


def llamaserve_name(name: str) -> str:
    """What llamaserve calls an Ollama name: `:latest` dropped, `hf.co/` as `hf:`."""
    name = name.removesuffix(LATEST)
    for host in HUB_HOSTS:
        if name.startswith(host):
            return "hf:" + name[len(host):]
    return name


def find_served(manager: ModelManager, name: str) -> ResidentModel | None:
    """The model a name means without reading any file (ids, aliases, spellings)."""
    for candidate in dict.fromkeys((name, llamaserve_name(name))):
        model = manager.find(candidate)
        if model is not None:
            return model
    folded = llamaserve_name(name).lower()  # Ollama's names are case-insensitive
    for model in manager.models:
        if folded in {n.lower() for n in (model.spec.id, *model.spec.aliases)}:
            return model
    return None


def not_found(name: str) -> RequestError:
    return RequestError(404, f"model '{name}' not found, try pulling it first", param="model",
                        code="model_not_found")


async def resolve(manager: ModelManager, name: str) -> ResidentModel:
    """The served model `name` means; 404 in Ollama's words if none."""
    model = find_served(manager, name)
    if model is not None:
        return model
    base, _, tag = name.rpartition(":")
    model = find_served(manager, base) if base and tag else None
    if model is not None and tag.lower() in await run_in_threadpool(_tags, model):
        return model
    raise not_found(name)


def _tags(model: ResidentModel) -> set[str]:
    """The tags a model answers to besides `latest`: its quantisation and parameter size."""
    described = describe(model)
    if described is None:
        return set()
    info = described.info
    tags = {human_number(info.n_params).lower()}
    if info.quantization:
        tags.add(info.quantization.lower())
    return tags
