"""Click options made from the Settings declarations (settings.py): the flag, its type and
range, its help and the default --help shows all come from the field.

An option's click default is None, never the setting's: what the command line leaves out is
then filled in by Settings, from LLAMASERVE_* variables or the declared default, so the flag,
the variable and the default cannot disagree.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

import click
from pydantic import ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from ..settings import Flag, Settings

F = TypeVar("F", bound=Callable[..., Any])


def _flag_of(field: FieldInfo) -> Flag | None:
    return next((item for item in field.metadata if isinstance(item, Flag)), None)


def _field(name: str) -> tuple[FieldInfo, Flag]:
    field = Settings.model_fields[name]
    return field, _flag_of(field) or Flag()


def _negated(field: FieldInfo) -> bool:
    """A switch that is on by default: its flag turns it off."""
    return field.annotation is bool and field.default is True


def env_var(name: str) -> str:
    return f"{Settings.model_config.get('env_prefix', '')}{name}".upper()


def flag_decls(name: str) -> tuple[str, ...]:
    field, flag = _field(name)
    if flag.decls:
        return flag.decls
    dashed = name.replace("_", "-")
    return (f"--no-{dashed}",) if _negated(field) else (f"--{dashed}",)


def _unwrap(annotation: Any) -> tuple[Any, list[Any]]:
    """(the type without None and Annotated, the Annotated metadata on the way)."""
    metadata: list[Any] = []
    while True:
        if typing.get_origin(annotation) is typing.Annotated:
            metadata += list(annotation.__metadata__)
            annotation = annotation.__origin__
            continue
        rest = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(rest) == 1:
            annotation = rest[0]  # X | None: the flag is X, None is not giving it
            continue
        return annotation, metadata


def _param_type(field: FieldInfo, flag: Flag) -> Any:
    if flag.metavar is not None:
        return click.STRING  # parsed by Settings' validators (sizes, durations, auto|N)
    annotation, metadata = _unwrap(field.annotation)
    if typing.get_origin(annotation) is list:
        annotation, metadata = _unwrap(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) is Literal:
        return click.Choice([str(value) for value in typing.get_args(annotation)])
    if annotation is Path:
        must_exist = any(getattr(item, "path_type", None) == "file" for item in metadata)
        return click.Path(exists=must_exist, dir_okay=False, path_type=Path)
    if annotation in (int, float):
        bounds: dict[str, Any] = {}
        for item in field.metadata:  # Field(ge=..., gt=..., le=..., lt=...)
            for key, bound, is_open in (("ge", "min", False), ("gt", "min", True),
                                        ("le", "max", False), ("lt", "max", True)):
                if getattr(item, key, None) is not None:
                    bounds[bound] = getattr(item, key)
                    if is_open:
                        bounds[f"{bound}_open"] = True
        if not bounds:
            return annotation
        return (click.IntRange if annotation is int else click.FloatRange)(**bounds)
    return click.STRING


def _default_text(field: FieldInfo, flag: Flag) -> str | None:
    if flag.default is not None:
        return flag.default
    value = field.default
    if value is None or value is PydanticUndefined or isinstance(value, bool | list):
        return None
    return f"{value:g}" if isinstance(value, float) else str(value)


def _help(field: FieldInfo, flag: Flag, text: str | None) -> str:
    description = text or field.description or ""
    if text is None and _negated(field):
        description = f"Do not {description[:1].lower()}{description[1:]}"
    default = _default_text(field, flag)
    # Written as click writes a shown default, but in words when the value is computed.
    return f"{description}  [default: {default}]" if default is not None else description


def setting_option(name: str, *decls: str, help: str | None = None,
                   envvar: bool = False) -> Callable[[F], F]:
    """The click option for the setting `name`, as declared in Settings. `decls` and `help`
    replace the flag's spellings and the description (a command that uses the setting
    differently); `envvar`: click reads LLAMASERVE_NAME itself, for commands that build no
    Settings (ps, chat)."""
    field, flag = _field(name)
    annotation, _ = _unwrap(field.annotation)
    kwargs: dict[str, Any] = {"default": None, "help": _help(field, flag, help)}
    if annotation is bool:
        kwargs["flag_value"] = not _negated(field)
    else:
        kwargs["type"] = _param_type(field, flag)
        kwargs["multiple"] = typing.get_origin(annotation) is list
        if flag.metavar is not None:
            kwargs["metavar"] = flag.metavar
    if envvar:
        kwargs["envvar"] = env_var(name)
    return click.option(*(decls or flag_decls(name)), name, **kwargs)


def server_options(function: F) -> F:
    """The options `run` and `serve` share: every setting with a shared Flag, in the order
    Settings declares them."""
    for name in reversed(Settings.model_fields):
        flag = _flag_of(Settings.model_fields[name])
        if flag is not None and flag.shared:
            function = setting_option(name)(function)
    return function


def given(flags: dict[str, Any]) -> dict[str, Any]:
    """The options the command line gave (click passes None, or () for a repeatable option,
    for the others), ready for Settings(**given(flags))."""
    return {name: list(value) if isinstance(value, tuple) else value
            for name, value in flags.items() if value is not None and value != ()}


def usage_error(exc: ValidationError) -> click.UsageError:
    """Settings' complaints, each under the flag that was given (or the variable)."""
    problems = []
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else ""
        where = flag_decls(name)[0] if name in Settings.model_fields else name
        problems.append(f"{where}: {error['msg'].removeprefix('Value error, ')}")
    return click.UsageError("; ".join(problems))
