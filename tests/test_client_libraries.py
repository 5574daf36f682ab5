"""Libraries built on structured outputs keep working against llamaserve: instructor and
pydantic-ai extract a pydantic model (nested, constrained, nullable) through the OpenAI
endpoint, by JSON schema and by forced tool call, with their retries turned off so that the
first answer must already validate."""

from __future__ import annotations

from typing import Literal

import openai
import pytest
from pydantic import BaseModel, Field

from .conftest import LiveServer


class Pet(BaseModel):
    kind: Literal["cat", "dog", "fish"]
    name: str = Field(max_length=16)


class Person(BaseModel):
    name: str = Field(max_length=24)
    age: int = Field(ge=0, le=120)
    nickname: str | None = Field(max_length=12)
    pets: list[Pet] = Field(max_length=2)


PROMPT = "Invent a person who has a pet."
SEEDS = [1, 2, 3]


@pytest.mark.parametrize("mode", ["JSON_SCHEMA", "TOOLS"])
def test_instructor_extracts_a_pydantic_model(server: LiveServer, mode: str) -> None:
    instructor = pytest.importorskip("instructor", reason="pip install -e '.[test]' installs it")
    client = instructor.from_openai(
        openai.OpenAI(base_url=server.v1, api_key="IGNORED", max_retries=0, timeout=120),
        mode=getattr(instructor.Mode, mode))
    for seed in SEEDS:
        person = client.chat.completions.create(
            model="smollm2", response_model=Person, max_retries=0, temperature=1.2, seed=seed,
            max_tokens=150, messages=[{"role": "user", "content": PROMPT}])
        assert isinstance(person, Person)


@pytest.mark.parametrize("output", ["tool", "native"])
def test_pydantic_ai_agent_returns_a_pydantic_model(server: LiveServer, output: str) -> None:
    pydantic_ai = pytest.importorskip("pydantic_ai",
                                      reason="pip install -e '.[test]' installs it")
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    model = OpenAIChatModel("smollm2", provider=OpenAIProvider(base_url=server.v1,
                                                               api_key="IGNORED"))
    # tool: the default, a forced call of a final_result tool; native: response_format
    output_type = pydantic_ai.ToolOutput(Person) if output == "tool" else \
        pydantic_ai.NativeOutput(Person)
    agent = pydantic_ai.Agent(model, output_type=output_type, retries=0)
    for seed in SEEDS:
        result = agent.run_sync(PROMPT, model_settings={"temperature": 1.2, "seed": seed,
                                                        "max_tokens": 150})
        assert isinstance(result.output, Person)
