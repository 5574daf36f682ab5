"""The model catalog: named models (models.yaml) and resolving what a user typed into a ModelSpec.

This module only describes models; getting their files is hub.py's job, loading them the
manager's.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

ModelKind = Literal["chat", "embedding", "rerank", "vision"]


class CatalogError(ValueError):
    """A catalog file that cannot be used, or a model name that cannot be resolved."""


class HubSource(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hub: str = Field(pattern=r"^[\w.-]+/[\w.-]+$", description="Hugging Face repo, owner/name")
    file: str = Field(min_length=1, description="GGUF file in the repo")
    revision: str = "main"
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")


class PackageSource(BaseModel):
    model_config = ConfigDict(extra="forbid")

    package: str = Field(pattern=r"^[A-Za-z_][\w.]*$", description="importable package name")
    file: str | None = Field(default=None, description="path of the GGUF inside the package")
    pip: str | None = Field(default=None, description="distribution to pip install")
    assemble: str | None = Field(
        default=None, description="function in the package that writes the file, returns its path"
    )

    @model_validator(mode="after")
    def _file_or_assemble(self) -> PackageSource:
        if (self.file is None) == (self.assemble is None):
            raise ValueError("give exactly one of 'file' or 'assemble'")
        return self


class SamplingDefaults(BaseModel):
    model_config = ConfigDict(extra="forbid")

    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    min_p: float | None = Field(default=None, ge=0, le=1)
    repeat_penalty: float | None = Field(default=None, ge=0)
    max_tokens: int | None = Field(default=None, ge=1)


class CatalogEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str = ""
    kind: ModelKind = "chat"
    source: HubSource | PackageSource
    projector: str | None = None
    chat_format: str | None = None
    chat_handler: str | None = None
    context: int | None = Field(default=None, ge=16)
    defaults: SamplingDefaults = SamplingDefaults()
    aliases: list[str] = []
    draft: str | None = Field(default=None, min_length=1,
                              description="draft model for speculative decoding")

    @model_validator(mode="after")
    def _projector_needs_hub(self) -> CatalogEntry:
        if self.projector and not isinstance(self.source, HubSource):
            raise ValueError("'projector' is only supported for Hub sources")
        return self


class Catalog(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: dict[str, CatalogEntry]

    @model_validator(mode="after")
    def _names_unique(self) -> Catalog:
        seen: dict[str, str] = {}
        for name, entry in self.models.items():
            for label in (name, *entry.aliases):
                if label in seen and not (label == name and seen[label] == name):
                    raise ValueError(
                        f"name '{label}' of entry '{name}' is already used by entry '{seen[label]}'"
                    )
                seen[label] = name
        return self

    def lookup(self, name: str) -> tuple[str, CatalogEntry] | None:
        """The (catalog name, entry) that `name` or one of its aliases refers to."""
        if name in self.models:
            return name, self.models[name]
        for entry_name, entry in self.models.items():
            if name in entry.aliases:
                return entry_name, entry
        return None


def bundled_catalog_path() -> Path:
    return Path(str(resources.files("llamaserve").joinpath("models.yaml")))


def _describe_location(loc: tuple[Any, ...]) -> str:
    if len(loc) >= 2 and loc[0] == "models":
        entry, rest = loc[1], [str(p) for p in loc[2:]]
        # pydantic names the union member it tried ("HubSource"); the user wrote neither.
        rest = [p for p in rest if p not in ("HubSource", "PackageSource")]
        return f"entry '{entry}', field '{'.'.join(rest) or '(entry)'}'"
    return f"field '{'.'.join(str(p) for p in loc) or '(top level)'}'"


def parse_catalog(text: str, origin: str = "models.yaml") -> Catalog:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CatalogError(f"{origin}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise CatalogError(f"{origin}: expected a mapping with a 'models:' key")
    try:
        return Catalog.model_validate(data)
    except ValidationError as exc:
        problems = [f"{_describe_location(err['loc'])}: {err['msg']}" for err in exc.errors()]
        raise CatalogError(f"{origin}: " + "; ".join(dict.fromkeys(problems))) from exc


def load_catalog(path: str | os.PathLike[str] | None = None) -> Catalog:
    """Read and validate a catalog file (the bundled models.yaml when path is None)."""
    catalog_path = Path(path) if path is not None else bundled_catalog_path()
    try:
        text = catalog_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError(f"cannot read catalog {catalog_path}: {exc.strerror}") from exc
    return parse_catalog(text, origin=str(catalog_path))


HF_REF = re.compile(
    r"^hf:(?P<repo>[\w.-]+/[\w.-]+)(?::(?P<selector>[^@]+))?(?:@(?P<revision>[^:@]+))?$"
)


@dataclass(frozen=True)
class HubRef:
    """`hf:OWNER/REPO[:FILE_OR_QUANT][@REVISION]` as typed: hub.py picks the file, since
    that needs the repo's file list."""

    repo: str
    selector: str | None = None  # a file name (ends in .gguf) or a quantisation such as Q4_K_M
    revision: str = "main"


def parse_hub_ref(text: str) -> HubRef:
    match = HF_REF.match(text)
    if match is None:
        raise CatalogError(
            f"'{text}' is not a Hub reference: write hf:OWNER/REPO, hf:OWNER/REPO:Q4_K_M, "
            "hf:OWNER/REPO:FILE.gguf, optionally followed by @REVISION"
        )
    return HubRef(match["repo"], match["selector"], match["revision"] or "main")


@dataclass(frozen=True)
class ModelSpec:
    """A model the server can load: where its files come from and how to run it."""

    id: str
    kind: ModelKind
    source: HubSource | PackageSource | Path | HubRef
    projector: str | None = None
    chat_format: str | None = None
    chat_handler: str | None = None
    context: int | None = None
    defaults: SamplingDefaults = field(default_factory=SamplingDefaults)
    aliases: tuple[str, ...] = ()
    draft: ModelSpec | None = None  # a draft model sharing the vocabulary (speculative decoding)

    @property
    def owned_by(self) -> str:
        if isinstance(self.source, HubSource | HubRef):
            repo = self.source.hub if isinstance(self.source, HubSource) else self.source.repo
            return repo.split("/", 1)[0]
        return "library"

    def with_alias(self, alias: str | None) -> ModelSpec:
        """The same model served under `alias`; the old id stays reachable as an alias."""
        if not alias or alias == self.id:
            return self
        aliases = tuple(dict.fromkeys((self.id, *self.aliases)))
        return ModelSpec(**{**self.__dict__, "id": alias, "aliases": aliases})


_BARE_HUB_REF = re.compile(r"^[\w.-]+/[\w.-]+(:[\w.-]+)?(@[\w.-]+)?$")


def hub_spelling(text: str) -> str:
    """Other ways people write a Hub reference, as `hf:OWNER/REPO[:QUANT]`: Ollama's
    `hf.co/OWNER/REPO:QUANT`, a Hub URL, or a bare `OWNER/REPO[:QUANT]` that is not a file
    here."""
    for prefix in ("https://huggingface.co/", "huggingface.co/", "https://hf.co/", "hf.co/"):
        if text.startswith(prefix):
            return "hf:" + text.removeprefix(prefix)
    if (_BARE_HUB_REF.match(text) and not text.lower().endswith(".gguf")
            and not Path(text).expanduser().exists()):
        return "hf:" + text
    return text


def resolve(text: str, catalog: Catalog) -> ModelSpec:
    """Turn what a user typed (a .gguf path, an `hf:` reference or a catalog name/alias) into a
    ModelSpec."""
    text = hub_spelling(text)
    if text.startswith("hf:"):
        return ModelSpec(id=text, kind="chat", source=parse_hub_ref(text))
    path = Path(text).expanduser()
    if text.lower().endswith(".gguf") or os.sep in text or path.is_file():
        if not path.is_file():
            raise CatalogError(f"model file not found: {path}")
        return ModelSpec(id=path.stem, kind="chat", source=path.resolve())
    found = catalog.lookup(text)
    if found is None:
        names = sorted({*catalog.models, *(a for e in catalog.models.values()
                                            for a in e.aliases)})
        close = difflib.get_close_matches(text, names, n=1, cutoff=0.75)
        hint = f" Did you mean {close[0]}?" if close else ""
        raise CatalogError(
            f"unknown model '{text}': not a .gguf file and not in the catalog.{hint} "
            f"(known: {', '.join(sorted(catalog.models))}; any GGUF on the Hub: "
            "hf:OWNER/REPO[:QUANT])"
        )
    name, entry = found
    return ModelSpec(
        id=name,
        kind=entry.kind,
        source=entry.source,
        projector=entry.projector,
        chat_format=entry.chat_format,
        chat_handler=entry.chat_handler,
        context=entry.context,
        defaults=entry.defaults,
        aliases=tuple(entry.aliases),
        draft=resolve_draft(entry.draft, catalog),
    )


def resolve_draft(text: str | None, catalog: Catalog) -> ModelSpec | None:
    """The draft model named by a catalog entry or --draft (its own draft is not used)."""
    if text is None:
        return None
    found = catalog.lookup(text)
    if found is not None and found[1].draft is not None:
        catalog = Catalog(models={**catalog.models,
                                  found[0]: found[1].model_copy(update={"draft": None})})
    return resolve(text, catalog)
