"""GET /v1/models and GET /v1/models/{model}: the served models that can be used without a
download (bundled, installed or in the Hugging Face cache) and the loaded ones."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ...errors import RequestError
from ...models.hub import is_local
from ...models.manager import ModelManager, ResidentModel
from .schemas import ModelCard, ModelList


def _card(model: ResidentModel, model_id: str | None = None) -> ModelCard:
    return ModelCard(
        id=model_id or model.spec.id, created=model.created, owned_by=model.spec.owned_by
    )


def _available(model: ResidentModel) -> bool:
    return model.files is not None or is_local(model.spec)


async def list_models(request: Request) -> Response:
    manager: ModelManager = request.app.state.manager

    def cards() -> list[ModelCard]:  # file-system checks: off the event loop
        return [_card(model) for model in manager.models if _available(model)]

    listing = ModelList(data=await run_in_threadpool(cards))
    return JSONResponse(listing.model_dump())


async def retrieve_model(request: Request) -> Response:
    manager: ModelManager = request.app.state.manager
    name = request.path_params["model"]
    model = manager.find(name)
    if model is None or not await run_in_threadpool(_available, model):
        raise RequestError(
            404,
            f"The model '{name}' does not exist or is not served here.",
            param="model",
            code="model_not_found",
        )
    return JSONResponse(_card(model, name).model_dump())
