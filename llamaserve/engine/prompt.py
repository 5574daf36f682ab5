"""Chat messages → prompt text, with the model's own chat template (or a named format).

llama-cpp-python does the rendering (Jinja2ChatFormatter and its registered formats); this
module only chooses which one and turns template failures into client errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jinja2
from llama_cpp import Llama, llama_chat_format

from .types import EngineError

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


@dataclass(frozen=True)
class RenderedPrompt:
    text: str
    stop: list[str]
    add_bos: bool


class ChatPrompter:
    """Renders chat messages for one loaded model."""

    def __init__(self, llama: Llama, chat_format: str | None = None) -> None:
        if chat_format is not None:
            if chat_format not in NAMED_FORMATS:
                known = ", ".join(sorted(NAMED_FORMATS))
                raise ValueError(f"unknown chat_format '{chat_format}' (known: {known})")
            self._formatter: Any = NAMED_FORMATS[chat_format]
            self.source = chat_format
            return
        template = llama.metadata.get("tokenizer.chat_template")
        if template is None:
            # The same fallback llama-cpp-python uses for a GGUF without a template.
            self._formatter = NAMED_FORMATS["llama-2"]
            self.source = "llama-2 (the GGUF has no chat template)"
            return
        model = llama._model

        def token_text(token_id: int) -> str:
            return model.token_get_text(token_id) if token_id != -1 else ""

        self._formatter = llama_chat_format.Jinja2ChatFormatter(
            template=template,
            eos_token=token_text(llama.token_eos()),
            bos_token=token_text(llama.token_bos()),
        )
        self.source = "the GGUF's chat template"

    def render(self, messages: list[dict[str, Any]]) -> RenderedPrompt:
        try:
            result = self._formatter(messages=messages)
        except (jinja2.TemplateError, ValueError, TypeError, KeyError) as exc:
            # Templates reject conversations they cannot express ("roles must alternate"...).
            raise EngineError(
                f"the model's chat template rejected the messages: {exc}", param="messages"
            ) from exc
        stop = result.stop if isinstance(result.stop, list) else [result.stop] * bool(result.stop)
        return RenderedPrompt(text=result.prompt, stop=stop, add_bos=not result.added_special)
