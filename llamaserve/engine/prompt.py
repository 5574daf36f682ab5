"""Chat messages → prompt text, with the model's own chat template (or a named format).

A GGUF's Jinja template renders in llamaserve's limited sandbox (template.py); the named formats
are llama-cpp-python's. This module chooses which one and turns template failures into client
errors (ChatTemplateError, a 400).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from llama_cpp import Llama, llama_chat_format

from .template import ChatTemplateError, LimitedChatFormatter, TemplateLimitError, TemplateRaised

logger = logging.getLogger(__name__)

# Named formats a catalog entry may ask for instead of the GGUF's template. llama-cpp-python
# registers these only as whole completion handlers, so we name its formatter functions here.
NAMED_FORMATS = {
    "llama-2": llama_chat_format.format_llama2,
    "llama-3": llama_chat_format.format_llama3,
    "alpaca": llama_chat_format.format_alpaca,
    "qwen": llama_chat_format.format_qwen,
    "vicuna": llama_chat_format.format,
    "chatml": llama_chat_format.format_chatml,
    "mistral-instruct": llama_chat_format.format_mistral_instruct,
    "zephyr": llama_chat_format.format_zephyr,
    "openchat": llama_chat_format.format_openchat,
    "gemma": llama_chat_format.format_gemma,
}


# For templates that know nothing of tools: the Hermes/Qwen convention, which the tool-call
# parser reads back (tools.py).
TOOL_SYSTEM_PROMPT = """You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{tools}
</tools>

For each function call, return a json object with function name and arguments within \
<tool_call></tool_call> XML tags:
<tool_call>
{{"name": <function-name>, "arguments": <args-json-object>}}
</tool_call>"""


def with_tool_instructions(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    listing = "\n".join(json.dumps(tool, ensure_ascii=False) for tool in tools)
    instructions = TOOL_SYSTEM_PROMPT.format(tools=listing)
    if messages and messages[0]["role"] == "system":
        first = {**messages[0], "content": f"{messages[0]['content']}\n\n{instructions}"}
        return [first, *messages[1:]]
    return [{"role": "system", "content": instructions}, *messages]


@dataclass(frozen=True)
class RenderedPrompt:
    text: str
    stop: list[str]
    add_bos: bool


class ChatPrompter:
    """Renders chat messages for one loaded model."""

    def __init__(
        self,
        llama: Llama,
        chat_format: str | None = None,
        template: str | None = None,
        default_system: str | None = None,
    ) -> None:
        """`template` (Jinja) replaces the GGUF's; `default_system` is the system message added
        to conversations that have none (both come from a multimodal handler, see vision.py)."""
        self.default_system = default_system
        self.template: str | None = None  # the Jinja text, when a template renders
        if chat_format is not None:
            if chat_format not in NAMED_FORMATS:
                known = ", ".join(sorted(NAMED_FORMATS))
                raise ValueError(f"unknown chat_format '{chat_format}' (known: {known})")
            self._formatter: Any = NAMED_FORMATS[chat_format]
            self.source = chat_format
            self.knows_tools = False
            return
        source = "the GGUF's chat template"
        if template is not None:
            source = "the multimodal handler's template"
        else:
            template = llama.metadata.get("tokenizer.chat_template")
        if template is None:
            # The same fallback llama-cpp-python uses for a GGUF without a template.
            self._formatter = NAMED_FORMATS["llama-2"]
            self.source = "llama-2 (the GGUF has no chat template)"
            self.knows_tools = False
            return
        model = llama._model

        def token_text(token_id: int) -> str:
            return model.token_get_text(token_id) if token_id != -1 else ""

        self.template = template
        self._formatter = LimitedChatFormatter(
            template=template,
            eos_token=token_text(llama.token_eos()),
            bos_token=token_text(llama.token_bos()),
        )
        self.source = source
        self.knows_tools = "tools" in template

    def render(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None,
        options: dict[str, Any] | None = None,
    ) -> RenderedPrompt:
        """The prompt for `messages`; `tools` go to templates that render them, and into a
        system prompt for templates that do not; `options` are the template's own variables
        (`enable_thinking`)."""
        if self.default_system and not any(m["role"] == "system" for m in messages):
            messages = [{"role": "system", "content": self.default_system}, *messages]
        if tools and not self.knows_tools:
            messages, tools = with_tool_instructions(messages, tools), None
        try:
            result = self._formatter(messages=messages, tools=tools, **(options or {}))
        except (TemplateLimitError, TemplateRaised) as exc:
            raise ChatTemplateError(str(exc)) from exc
        except RecursionError as exc:
            raise ChatTemplateError("it recursed too deeply") from exc
        except Exception as exc:  # noqa: BLE001 (the template is the GGUF author's code)
            # Templates reject conversations they cannot express ("roles must alternate"...)
            # with raise_exception(); others divide by zero, overflow or call what is not there.
            logger.debug("chat template failed", exc_info=True)
            raise ChatTemplateError(f"{type(exc).__name__}: {exc}") from exc
        stop = result.stop if isinstance(result.stop, list) else [result.stop] * bool(result.stop)
        return RenderedPrompt(text=result.prompt, stop=stop, add_bos=not result.added_special)
