"""GET /v1/models and GET /v1/models/{model}."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..manager import ModelManager, ResidentModel
from .errors import APIError
from .schemas import ModelCard, ModelList


def _card(model: ResidentModel, model_id: str | None = None) -> ModelCard:
    return ModelCard(
        id=model_id or model.spec.id, created=model.created, owned_by=model.spec.owned_by
    )


async def list_models(request: Request) -> Response:
    manager: ModelManager = request.app.state.manager
    listing = ModelList(data=[_card(model) for model in manager.models])
    return JSONResponse(listing.model_dump())


async def retrieve_model(request: Request) -> Response:
    manager: ModelManager = request.app.state.manager
    name = request.path_params["model"]
    model = manager.find(name)
    if model is None:
        raise APIError(
            404,
            f"The model '{name}' does not exist or is not served here.",
            param="model",
            code="model_not_found",
        )
    return JSONResponse(_card(model, name).model_dump())
