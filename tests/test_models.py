"""GET /v1/models and /v1/models/{id}."""

from __future__ import annotations

import httpx
import openai
import pytest

from .conftest import assert_openai_error


def test_models_list_names_the_served_model(client: openai.OpenAI, smollm2_path) -> None:
    models = client.models.list().data
    assert [m.id for m in models] == ["smollm2"]
    model = models[0]
    assert model.object == "model"
    assert model.owned_by == "library"
    assert model.created == int(smollm2_path.stat().st_mtime)


def test_models_retrieve_by_id_and_alias(client: openai.OpenAI) -> None:
    assert client.models.retrieve("smollm2").id == "smollm2"
    assert client.models.retrieve("gpt-3.5-turbo").id == "gpt-3.5-turbo"


@pytest.mark.parametrize("path", ["/v1/models/", "/v1/models"])
def test_models_list_with_and_without_trailing_slash(http: httpx.Client, path: str) -> None:
    response = http.get(path)
    assert response.status_code == 200
    assert response.json()["object"] == "list"


def test_models_retrieve_unknown_is_404(http: httpx.Client) -> None:
    error = assert_openai_error(http.get("/v1/models/no-such-model"), 404)
    assert error["code"] == "model_not_found"
    assert "no-such-model" in error["message"]


def test_health_reports_ready_models(http: httpx.Client) -> None:
    body = http.get("/health").json()
    assert body["status"] == "ok"
    assert body["models"] == [{"id": "smollm2", "loaded": True}]
