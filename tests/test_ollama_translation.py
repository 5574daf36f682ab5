"""Ollama's wire names and values → llamaserve's, without a model (pure translation)."""

from __future__ import annotations

import base64

import pytest

from llamaserve.errors import RequestError
from llamaserve.protocols.ollama.generation import (
    arguments_json,
    format_of,
    image_of,
    max_tokens_of,
    sampling_of,
    stops_of,
)
from llamaserve.protocols.ollama.library import human_number
from llamaserve.protocols.ollama.names import llamaserve_name, ollama_name
from llamaserve.protocols.ollama.schemas import Options

from .builders import image_bytes


@pytest.mark.parametrize(("fmt", "media_type"), [("PNG", "image/png"), ("JPEG", "image/jpeg"),
                                                 ("WEBP", "image/webp"), ("GIF", "image/gif")])
def test_base64_images_become_data_uris_of_the_type_their_bytes_show(
    fmt: str, media_type: str
) -> None:
    data = base64.b64encode(image_bytes(fmt)).decode()
    assert image_of(data, "images[0]").url == f"data:{media_type};base64,{data}"


def test_other_bytes_are_refused_naming_the_image() -> None:
    for data in ("", "@@@@", base64.b64encode(b"RIFF....WAVEfmt ").decode(),
                 base64.b64encode(b"%PDF-1.7").decode()):
        with pytest.raises(RequestError, match=r"messages\[1\]\.images\[2\] is not"):
            image_of(data, "messages[1].images[2]")
    assert image_of("data:image/png;base64,xyz", "p").url == "data:image/png;base64,xyz"


@pytest.mark.parametrize(("model_id", "name"), [
    ("smollm2", "smollm2:latest"), ("qwen-vl:7b", "qwen-vl:7b"),
    ("hf:bartowski/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M",
     "hf.co/bartowski/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M"),
    ("hf:owner/repo", "hf.co/owner/repo:latest"),
])
def test_names_both_ways(model_id: str, name: str) -> None:
    assert ollama_name(model_id) == name
    assert llamaserve_name(name) == model_id
    assert llamaserve_name(name.replace("hf.co/", "huggingface.co/")) == model_id


@pytest.mark.parametrize(("count", "text"), [(134_515_008, "134.52M"), (7_000_000_000, "7B"),
                                             (3_085_938_688, "3.1B"), (22_000_000, "22M"),
                                             (5_000, "5K"), (12, "12")])
def test_parameter_sizes_as_ollama_writes_them(count: int, text: str) -> None:
    assert human_number(count) == text


def test_options_translate() -> None:
    options = Options(num_predict=-1, seed=-1, mirostat=2, stop="\n\n", made_up=1)
    assert max_tokens_of(options) is None  # -1: until the model stops or the context is full
    assert max_tokens_of(Options(num_predict=0)) is None
    assert max_tokens_of(Options(num_predict=32)) == 32
    sampling = sampling_of(options)
    assert sampling.seed is None and sampling.mirostat_mode == 2  # -1: a random seed
    assert sampling_of(Options(seed=42)).seed == 42
    assert stops_of(options) == ["\n\n"] and stops_of(Options(stop=["a", ""])) == ["a"]


def test_format_and_tool_arguments() -> None:
    assert format_of("json").type == "json_object"
    schema = {"type": "object"}
    json_schema = format_of(schema)
    assert json_schema.type == "json_schema" and json_schema.schema == schema
    assert format_of("") is None and format_of(None) is None
    assert arguments_json({"city": "Paris"}, "p") == '{"city": "Paris"}'
    assert arguments_json('{"city": "Paris"}', "p") == '{"city": "Paris"}'
    with pytest.raises(RequestError, match="'p' must be a JSON object"):
        arguments_json("[1]", "p")
