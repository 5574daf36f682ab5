"""The OpenAI Agents SDK (`openai-agents`) on its default Responses API model, pointed at the
server: agents run to completion and call their function tools with valid arguments.

SmolLM2 is too small to choose a tool by itself, so the agents force it (tool_choice
"required"); at temperature 0 the rest of each run is the same every time.
"""

from __future__ import annotations

import asyncio
from typing import Any

from agents import (  # openai-agents, in the `test` extra
    Agent,
    ModelSettings,
    OpenAIResponsesModel,
    Runner,
    function_tool,
    set_tracing_disabled,
)
from openai import AsyncOpenAI

from .conftest import LiveServer

set_tracing_disabled(True)  # traces would go to OpenAI's servers


def weather_agent(server: LiveServer, calls: list[str], **options: Any) -> Agent:
    @function_tool
    def get_weather(city: str) -> str:
        """The current weather in a city."""
        calls.append(city)
        return f"Sunny and 21 C in {city}."

    client = AsyncOpenAI(base_url=server.v1, api_key="IGNORED", max_retries=0, timeout=120)
    return Agent(
        name="weather", instructions="Answer weather questions with the get_weather tool.",
        model=OpenAIResponsesModel(model="smollm2", openai_client=client), tools=[get_weather],
        # SmolLM2's answer after the tool result runs 187-217 tokens depending on the
        # micro-batch size (the rounding of its prompt): room enough that the SDK, which
        # raises on an incomplete response, sees the loop finish.
        model_settings=ModelSettings(tool_choice="required", temperature=0, max_tokens=400),
        **options)


def test_agent_calls_its_tool_and_stops_on_it(server: LiveServer) -> None:
    calls: list[str] = []
    agent = weather_agent(server, calls, tool_use_behavior="stop_on_first_tool")
    result = asyncio.run(Runner.run(agent, "What's the weather in Paris?", max_turns=2))
    assert calls and all(isinstance(city, str) and city for city in calls)
    assert result.final_output == f"Sunny and 21 C in {calls[0]}."


def test_agent_loop_answers_after_the_tool_result(server: LiveServer) -> None:
    """The SDK's default: after a tool call it sends the result back (tool_choice reset to
    auto) and the model answers in text."""
    calls: list[str] = []
    agent = weather_agent(server, calls)
    result = asyncio.run(Runner.run(agent, "What's the weather in Paris?", max_turns=3))
    assert len(calls) == 1
    kinds = [item.type for item in result.new_items]
    assert kinds == ["tool_call_item", "tool_call_output_item", "message_output_item"]
    assert isinstance(result.final_output, str) and result.final_output.strip()
    assert len(result.raw_responses) == 2
    assert all(response.response_id.startswith("resp_") for response in result.raw_responses)


def test_streamed_agent_run_completes(server: LiveServer) -> None:
    client = AsyncOpenAI(base_url=server.v1, api_key="IGNORED", max_retries=0, timeout=120)
    agent = Agent(name="greeter", instructions="Greet the user.",
                  model=OpenAIResponsesModel(model="smollm2", openai_client=client),
                  model_settings=ModelSettings(temperature=0, max_tokens=200))

    async def run() -> tuple[Any, list[str]]:
        streamed = Runner.run_streamed(agent, "Say hello.")
        deltas = []
        async for event in streamed.stream_events():
            if event.type == "raw_response_event" and \
                    event.data.type == "response.output_text.delta":
                deltas.append(event.data.delta)
        return streamed, deltas

    streamed, deltas = asyncio.run(run())
    assert streamed.is_complete and deltas
    assert streamed.final_output == "".join(deltas)
