"""Preparing a request for the scheduler (on the model's prompt thread): the prompt's tokens
(chat template, images, fill-in-the-middle), the context-fit check, and the job's sampler."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import llama_cpp
from llama_cpp import Llama

from .constraint import SchemaCompiler
from .jobs import Job
from .options import LoadOptions
from .prompt import ChatPrompter
from .sampling import LogprobReader, build_sampler
from .stops import StopMatcher
from .tokens import Vocabulary
from .types import EngineError, GenerationRequest, PromptTooLongError
from .vision import MediaPrompt, VisionProjector, choose_handler, handler_format

logger = logging.getLogger(__name__)


def make_prompter(
    llama: Llama, options: LoadOptions, projector: Path | None
) -> tuple[ChatPrompter, VisionProjector | None]:
    """How chat messages become a prompt, and the vision projector when there is one."""
    if projector is None:
        return ChatPrompter(llama, options.chat_format), None
    vision = VisionProjector(projector, llama, options.n_gpu_layers != 0, options.verbose)
    handler = choose_handler(options.chat_handler, llama, projector)
    template, default_system = handler_format(handler)
    if options.chat_format is not None:
        template, default_system = None, None
    prompter = ChatPrompter(llama, options.chat_format, template, default_system)
    logger.info("vision projector %s, prompts in %s (handler %s)", projector, prompter.source,
                handler)
    return prompter, vision


class Preparer:
    """Turns requests into jobs for one model; `vision_lock` is shared with the scheduler,
    which evaluates images through the same projector."""

    def __init__(
        self, llama: Llama, prompter: ChatPrompter, vision: VisionProjector | None, n_ctx: int,
        vision_lock: threading.Lock,
    ) -> None:
        self.llama = llama
        self.prompter = prompter
        self.vision = vision
        self.n_ctx = n_ctx
        self.vision_lock = vision_lock
        self.schemas = SchemaCompiler(llama._model.vocab, llama.n_vocab())
        self.vocabulary = Vocabulary(llama)
        _ = self.vocabulary.longest_piece  # read once at load, not on a request

    def job(self, request: GenerationRequest) -> Job:
        tokens, template_stops, media = self._prompt_tokens(request)
        try:
            n_prompt = len(tokens) if media is None else media.n_tokens
            self._check_fits(n_prompt, None if request.fit_context else request.max_tokens)
            limit = self.n_ctx - n_prompt  # the cells left, not the positions
            if request.max_tokens is not None:
                limit = min(limit, request.max_tokens)
            text_tokens = tokens if media is None else [t for t in tokens if t >= 0]
            constraint = self.schemas.compile(request.json_schema)
            sampler = build_sampler(self.llama, request.sampling, request.grammar, text_tokens)
        except BaseException:
            if media is not None:
                media.close()
            raise
        reader = LogprobReader(self.vocabulary, request.logprobs or 0)
        stops = StopMatcher([*request.stop, *template_stops])
        return Job(request, tokens, n_prompt, limit, sampler, reader, stops, media, constraint)

    def count(self, request: GenerationRequest) -> int:
        """The prompt tokens `job(request)` would count, without the fit check or a sampler."""
        tokens, _, media = self._prompt_tokens(request)
        if media is None:
            return len(tokens)
        try:
            return media.n_tokens
        finally:
            media.close()

    def _prompt_tokens(
        self, request: GenerationRequest
    ) -> tuple[list[int], list[str], MediaPrompt | None]:
        llama = self.llama
        if request.messages is not None:
            rendered = self.prompter.render(request.messages, request.tools,
                                            request.template_options)
            self._check_bytes(len(rendered.text.encode("utf-8")), "messages")
            if request.images:
                if self.vision is None:
                    raise EngineError("this model does not accept images", param="messages")
                with self.vision_lock:
                    media = self.vision.tokenize(rendered.text, rendered.add_bos, request.images)
                return media.tokens, rendered.stop, media
            tokens = llama.tokenize(
                rendered.text.encode("utf-8"), add_bos=rendered.add_bos, special=True
            )
            return tokens, rendered.stop, None
        prompt = request.prompt
        if isinstance(prompt, list):
            n_vocab = llama.n_vocab()
            bad = next((t for t in prompt if not 0 <= t < n_vocab), None)
            if bad is not None:
                raise EngineError(
                    f"token id {bad} is outside the model's vocabulary (0..{n_vocab - 1})",
                    param="prompt",
                )
            tokens = list(prompt)
        else:
            text = (prompt or "").encode("utf-8")
            suffix = len(request.suffix.encode("utf-8")) if request.suffix is not None else 0
            self._check_bytes(len(text) + suffix, "prompt")
            add_bos = llama._model.add_bos_token()
            tokens = llama.tokenize(text, add_bos=add_bos, special=False)
        if request.suffix is not None:
            tokens = self._infill(tokens, request.suffix)
        return tokens, [], None

    def _infill(self, prefix: list[int], suffix: str) -> list[int]:
        """Fill-in-the-middle prompt in llama.cpp's prefix-suffix-middle order."""
        vocab = self.llama._model.vocab
        fim = [llama_cpp.llama_vocab_fim_pre(vocab), llama_cpp.llama_vocab_fim_suf(vocab),
               llama_cpp.llama_vocab_fim_mid(vocab)]
        if -1 in fim:
            raise EngineError(
                "this model has no fill-in-the-middle tokens, so 'suffix' cannot be used",
                param="suffix",
            )
        pre, suf, mid = fim
        suffix_tokens = self.llama.tokenize(suffix.encode("utf-8"), add_bos=False, special=False)
        return [pre, *prefix, suf, *suffix_tokens, mid]

    def _check_bytes(self, n_bytes: int, param: str) -> None:
        """Refuse a text that cannot fit before tokenizing it: tokenizing a 31 MB prompt takes
        ~30 s (and its token array ~120 MB) only to find it too long."""
        fewest = self.vocabulary.fewest_tokens(n_bytes)
        if fewest >= self.n_ctx:
            raise PromptTooLongError(
                f"This model's maximum context length is {self.n_ctx} tokens. However, your "
                f"prompt has at least {fewest} tokens ({n_bytes} bytes), leaving no room for a "
                "completion. Shorten the prompt.",
                param=param,
            )

    def _check_fits(self, n_prompt: int, max_tokens: int | None) -> None:
        """The prompt's KV cells plus max_tokens must fit in a sequence's n_ctx cells (its
        positions may be fewer: M-RoPE images, but every token takes a cell)."""
        n_ctx = self.n_ctx
        if n_prompt == 0:
            raise EngineError("the prompt is empty", param="prompt")
        if n_prompt >= n_ctx:
            raise PromptTooLongError(
                f"This model's maximum context length is {n_ctx} tokens. However, your prompt "
                f"has {n_prompt} tokens, leaving no room for a completion. Shorten the prompt.",
                param="messages",
            )
        if max_tokens is not None and n_prompt + max_tokens > n_ctx:
            raise PromptTooLongError(
                f"This model's maximum context length is {n_ctx} tokens. However, you requested "
                f"{n_prompt + max_tokens} tokens ({n_prompt} in the prompt, {max_tokens} for the "
                "completion). Reduce the prompt or max_tokens.",
                param="max_tokens",
            )
