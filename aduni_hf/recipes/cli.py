"""Recipes on the command line: `train.py recipe.yaml [--field value ...]`.

The YAML recipe holds argument-dataclass fields (and optionally `base: other.yaml`, a recipe it extends). It is turned into `--field value` tokens placed before the
command-line flags and parsed by one `HfArgumentParser`, so YAML values get the same type conversion and
choice checks as flags, and a flag given later overrides the recipe. Unknown YAML keys are rejected with the
file name and the closest valid names.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser

from .errors import RecipeError


def _tokens(key: str, value: Any) -> list[str]:
    if isinstance(value, bool):
        return [f"--{key}", "true" if value else "false"]
    if isinstance(value, (list, tuple)):
        return [f"--{key}", *(str(v) for v in value)]
    if isinstance(value, dict):
        return [f"--{key}", json.dumps(value)]
    return [f"--{key}", str(value)]


BASE_KEY = "base"  # `base: isic2018_aduni.yaml`: start from that recipe (a path relative to this one)


def load_recipe(
    path: str | Path, field_names: Sequence[str], _including: tuple[Path, ...] = ()
) -> dict[str, Any]:
    """Read a YAML recipe; every key must be a field of one of the argument dataclasses, or `base`.

    `base: other.yaml` reads that recipe first (its path relative to this file's folder) and lets this file's
    fields override it, so a method's recipe can be its data set's AdUni recipe with `method: ce`.
    """
    path = Path(path)
    try:
        recipe = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise RecipeError(f"{path}: cannot read the recipe: {err}") from err
    if not isinstance(recipe, dict):
        raise RecipeError(f"{path}: a recipe is a mapping of field: value, got {type(recipe).__name__}")
    known = set(field_names)
    for key in recipe:
        if key not in known and key != BASE_KEY:
            close = difflib.get_close_matches(str(key), known, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise RecipeError(f"{path}: unknown field {key!r}{hint}")
    base = recipe.pop(BASE_KEY, None)
    if base is None:
        return recipe
    base_path = path.parent / str(base)
    if base_path.resolve() in (*_including, path.resolve()):
        raise RecipeError(f"{path}: base {str(base)!r} includes itself")
    return {**load_recipe(base_path, field_names, (*_including, path.resolve())), **recipe}


def parse_recipe(dataclass_types: Sequence[type], argv: Sequence[str]) -> tuple[Any, ...]:
    """Parse `[recipe.yaml] [--field value ...]` into instances of `dataclass_types`.

    Raises `RecipeError` for an unknown field or a value a dataclass rejects; argparse itself reports a value
    of the wrong type or outside a field's choices (and exits with status 2).
    """
    parser = HfArgumentParser(list(dataclass_types))
    parser.allow_abbrev = False  # a recipe is exact: --learning_rat is a typo, not --learning_rate
    argv = list(argv)
    recipe_tokens: list[str] = []
    field_names = [f.name for cls in dataclass_types for f in dataclasses.fields(cls) if f.init]
    if argv and argv[0].endswith((".yaml", ".yml")):
        recipe = load_recipe(argv.pop(0), field_names)
        nulls = {key: None for key, value in recipe.items() if value is None}
        parser.set_defaults(**nulls)
        for key, value in recipe.items():
            if value is not None:
                recipe_tokens += _tokens(key, value)
    try:
        *parsed, remaining = parser.parse_args_into_dataclasses(
            args=recipe_tokens + argv, look_for_args_file=False, return_remaining_strings=True
        )
    except ValueError as err:
        raise RecipeError(str(err)) from err
    if remaining:
        raise RecipeError(unknown_flags_message(remaining, field_names))
    return tuple(parsed)


def unknown_flags_message(remaining: Sequence[str], field_names: Sequence[str]) -> str:
    """What the command line held that is no field, with the closest field names (as for a YAML key)."""
    flags = [token for token in remaining if token.startswith("-")]
    if not flags:
        return f"unexpected arguments {' '.join(remaining)}: give fields as --name value"
    parts = []
    for flag in flags:
        close = difflib.get_close_matches(flag.lstrip("-").replace("-", "_"), field_names, n=3)
        hint = f"; did you mean {', '.join('--' + name for name in close)}?" if close else ""
        parts.append(f"unknown flag {flag}{hint}")
    return "; ".join(parts)
