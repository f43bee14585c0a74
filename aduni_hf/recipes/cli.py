"""Recipes on the command line: `train.py RECIPE.yaml [--field value ...]`.

The YAML recipe holds argument-dataclass fields (and optionally `base: other.yaml`, a recipe it extends). It is
turned into `--field value` tokens placed before the command-line flags and parsed by one `RecipeParser` (an
`HfArgumentParser`), so YAML values get the same type conversion and choice checks as flags, and a flag given
later overrides the recipe. An unknown YAML key or flag is refused with the closest valid names.

The scripts call `parse_command_line`: without a recipe it prints a short usage; `--help` lists our fields
grouped by dataclass and the Trainer's most used ones (`--help_all`: every field); a recipe or flag that cannot
be used is one `error:` line. Each of these exits with status 2, argparse's convention, before any data is read.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import difflib
import inspect
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import yaml
from transformers import HfArgumentParser, TrainingArguments

from .errors import RecipeError

YAML_SUFFIXES = (".yaml", ".yml")
USAGE = "%(prog)s RECIPE.yaml [--field value ...]"
HELP_FLAGS = ("-h", "--help", "--help_all")
# The Trainer's own fields that recipes set most, listed by --help after ours (--help_all lists every one).
MOST_USED_TRAINER_FIELDS = (
    "output_dir", "num_train_epochs", "max_steps", "per_device_train_batch_size", "per_device_eval_batch_size",
    "gradient_accumulation_steps", "seed", "dataloader_num_workers", "dataloader_pin_memory", "use_cpu",
    "save_steps", "save_total_limit", "resume_from_checkpoint", "report_to", "log_level", "disable_tqdm",
    "push_to_hub", "hub_model_id", "hub_strategy", "run_name",
)  # fmt: skip
BASE_KEY = "base"  # `base: isic2018_aduni.yaml`: start from that recipe (a path relative to this one)


def _tokens(key: str, value: Any) -> list[str]:
    if isinstance(value, bool):
        return [f"--{key}", "true" if value else "false"]
    if isinstance(value, (list, tuple)):
        return [f"--{key}", *(str(v) for v in value)]
    if isinstance(value, dict):
        return [f"--{key}", json.dumps(value)]
    return [f"--{key}", str(value)]


def closest_names(word: str, names: Sequence[str]) -> list[str]:
    """The names that look like a misspelling of `word`: up to three, only those about as close as the best."""
    close = difflib.get_close_matches(word, names, n=3)  # the closest first
    ratios = [difflib.SequenceMatcher(None, word, name).ratio() for name in close]
    return [name for name, ratio in zip(close, ratios, strict=True) if ratio >= ratios[0] - 0.05]


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
            close = closest_names(str(key), sorted(known))
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise RecipeError(f"{path}: unknown field {key!r}{hint}")
    base = recipe.pop(BASE_KEY, None)
    if base is None:
        return recipe
    base_path = path.parent / str(base)
    if base_path.resolve() in (*_including, path.resolve()):
        raise RecipeError(f"{path}: base {str(base)!r} includes itself")
    return {**load_recipe(base_path, field_names, (*_including, path.resolve())), **recipe}


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's help with each field's default, except a default of None (the field is simply unset)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None:
            return action.help or ""
        return super()._get_help_string(action) or ""


class _PrintHelp(argparse.Action):
    """`--help` (our fields and the Trainer's most used) or `--help_all` (every field): print and exit 0."""

    def __init__(self, option_strings: list[str], dest: str, every_field: bool, help: str) -> None:
        # argparse passes a dest; the help stores nothing (and HfArgumentParser must find nothing to hand back)
        super().__init__(
            option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, nargs=0, help=help
        )
        self.every_field = every_field

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: Any, values: Any, option: Any = None
    ) -> None:
        assert isinstance(parser, RecipeParser)
        print(parser.format_recipe_help(self.every_field))
        parser.exit()


class RecipeParser(HfArgumentParser):
    """The `HfArgumentParser` of a recipe and its flags: exact names only (`--learning_rat` is a typo, not
    `--learning_rate`), every refusal raised as a `RecipeError`, and a `--help` that starts with our fields."""

    def __init__(self, dataclass_types: Sequence[type], example: str | None = None) -> None:
        super().__init__(
            list(dataclass_types),
            usage=USAGE,
            allow_abbrev=False,
            add_help=False,
            formatter_class=_DefaultsFormatter,
        )
        self.add_argument(
            "-h",
            "--help",
            action=_PrintHelp,
            every_field=False,
            help="our fields and the Trainer's most used",
        )
        self.add_argument(
            "--help_all", action=_PrintHelp, every_field=True, help="every field, the Trainer's included"
        )
        self.example = example
        self.field_names = [f.name for cls in dataclass_types for f in dataclasses.fields(cls) if f.init]
        self.recipe: dict[str, Any] = {}
        self.recipe_path: str | None = None

    def error(self, message: str) -> NoReturn:
        """argparse's refusals (a value of the wrong type, outside a field's choices) as a `RecipeError`, each flag
        named once (`--lr_scheduler_type`, not `--lr_scheduler_type/--lr-scheduler-type`)."""
        raise RecipeError(re.sub(r"(--\w+)(/--[\w-]+)+", r"\1", message))

    def parse_recipe(self, argv: Sequence[str]) -> tuple[Any, ...]:
        """`[recipe.yaml] [--field value ...]` -> one instance of each dataclass (`parse_recipe`)."""
        argv = list(argv)
        recipe_tokens: list[str] = []
        if argv and argv[0].endswith(YAML_SUFFIXES):
            self.recipe_path = argv.pop(0)
            self.recipe = load_recipe(self.recipe_path, self.field_names)
            self.set_defaults(**{key: None for key, value in self.recipe.items() if value is None})
            for key, value in self.recipe.items():
                if value is not None:
                    recipe_tokens += _tokens(key, value)
        try:
            *parsed, remaining = self.parse_args_into_dataclasses(
                args=recipe_tokens + argv, look_for_args_file=False, return_remaining_strings=True
            )
        except ValueError as err:  # a dataclass's own check of a value (RecipeError is one too)
            raise RecipeError(str(err)) from err
        if remaining:
            raise RecipeError(unknown_flags_message(remaining, self.flag_names()))
        return tuple(parsed)

    def flag_names(self) -> list[str]:
        """Every flag without its dashes, in the underscore spelling (`no_logit_adjustment` included)."""
        return [
            option[2:]
            for action in self._actions
            for option in _underscored(action.option_strings)
            if option.startswith("--")
        ]

    def help_sections(self, every_field: bool) -> list[tuple[str, str | None, list[str]]]:
        """(title, description, field names) of each help section: one per dataclass, in order; the Trainer's
        own fields (those a `TrainingArguments` subclass inherits unchanged) in a section of their own."""
        sections = []
        for cls in self.dataclass_types:
            names = [f.name for f in dataclasses.fields(cls) if f.init]
            summary = inspect.getdoc(cls).split("\n\n")[0].replace("\n", " ").replace("`", "")
            if not issubclass(cls, TrainingArguments):
                sections.append((cls.__name__, summary, names))
                continue
            ours = {
                name
                for base in cls.__mro__
                if issubclass(base, TrainingArguments) and base is not TrainingArguments
                for name in vars(base).get("__annotations__", {})
            }
            inherited = [name for name in names if name not in ours]
            shown = (
                inherited if every_field else [name for name in MOST_USED_TRAINER_FIELDS if name in inherited]
            )
            sections.append((cls.__name__, summary, [name for name in names if name in ours]))
            title = "TrainingArguments" if every_field else "TrainingArguments, the most used"
            sections.append((title, "The Trainer's own fields (transformers.TrainingArguments).", shown))
        return sections

    def format_recipe_help(self, every_field: bool) -> str:
        """The help: usage, an example, each section's fields with help and default (the recipe's value when a
        recipe came first), then how to list the rest."""
        formatter = self._get_formatter()
        formatter.add_usage(self.usage, [], [])
        formatter.add_text(
            "RECIPE.yaml: a YAML file of the fields below (configs/*.yaml); a flag after it overrides one field."
        )
        if self.example:
            formatter.add_text(f"example: {self.example}")
        if self.recipe_path:
            formatter.add_text(f"The defaults shown are {self.recipe_path}'s values.")
        actions = {action.option_strings[0]: action for action in self._actions if action.option_strings}
        for title, description, names in [
            ("options", None, ["help", "help_all"]),
            *self.help_sections(every_field),
        ]:
            formatter.start_section(title)
            formatter.add_text(description)
            formatter.add_arguments(
                [self._shown(actions["-h" if name == "help" else f"--{name}"]) for name in names]
            )
            formatter.end_section()
        if not every_field:
            formatter.add_text("Every transformers.TrainingArguments field works too; --help_all lists them.")
        formatter.add_text("A true/false field takes true or false (or --no_<field> for false).")
        return formatter.format_help()

    def _shown(self, action: argparse.Action) -> argparse.Action:
        """`action` as the help shows it: without its dashed alias, and with the recipe's value as its default."""
        shown = copy.copy(action)
        shown.option_strings = _underscored(action.option_strings)
        if action.dest in self.recipe:
            shown.default = self.recipe[action.dest]
        return shown


def parse_recipe(dataclass_types: Sequence[type], argv: Sequence[str]) -> tuple[Any, ...]:
    """Parse `[recipe.yaml] [--field value ...]` into instances of `dataclass_types`.

    Raises `RecipeError` for an unknown field or flag (naming the closest ones), a value of the wrong type or
    outside a field's choices, or a value a dataclass rejects. `-h`/`--help` print the help and exit.
    """
    return RecipeParser(dataclass_types).parse_recipe(argv)


def parse_command_line(
    dataclass_types: Sequence[type], example: str, argv: Sequence[str] | None = None
) -> tuple[Any, ...]:
    """A script's `RECIPE.yaml [--field value ...]` (default: `sys.argv[1:]`) as `parse_recipe` reads it.

    Without a recipe first (and no `--help`), prints the usage with `example`; a recipe or flag that cannot be
    used is one `error:` line. Both exit with status 2, argparse's convention for a command line it refuses.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if not (argv and argv[0].endswith(YAML_SUFFIXES)) and not set(HELP_FLAGS) & set(argv):
        prog = Path(sys.argv[0]).name
        print(
            f"usage: {USAGE % {'prog': prog}}\n  example: {example}\n  {prog} --help lists the fields",
            file=sys.stderr,
        )
        got = f", got {argv[0]!r}" if argv else ""
        exit_usage_error(f"the first argument is a recipe (a .yaml file such as configs/demo.yaml){got}")
    try:
        return RecipeParser(dataclass_types, example).parse_recipe(argv)
    except RecipeError as err:
        exit_usage_error(str(err))


def _underscored(option_strings: Sequence[str]) -> list[str]:
    """The spellings of a flag without transformers' dashed aliases (`--output-dir` for `--output_dir`)."""
    return [option for option in option_strings if not (option.startswith("--") and "-" in option[2:])]


def exit_usage_error(message: str) -> NoReturn:
    """Refuse a command line: `error: <message>` on stderr, exit status 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def unknown_flags_message(remaining: Sequence[str], flag_names: Sequence[str]) -> str:
    """What the command line held that is no flag, with the closest flags (as for a YAML key)."""
    flags = [token.split("=")[0] for token in remaining if token.startswith("-")]
    if not flags:
        return f"unexpected arguments {' '.join(remaining)}: give fields as --name value"
    parts = []
    for flag in flags:
        close = closest_names(flag.lstrip("-").replace("-", "_"), flag_names)
        hint = f"; did you mean {', '.join('--' + name for name in close)}?" if close else ""
        parts.append(f"unknown flag {flag}{hint}")
    return "; ".join(parts)
