"""The errors a recipe run reports as one line: scripts/train.py prints `error: <message>` and exits 2 when the
recipe or a flag is refused as it is parsed (`parse_command_line`), 1 when the run refuses it."""


class RecipeError(ValueError):
    """A recipe or flag that cannot be used; the message names the field and what is wrong."""


class RunFolderError(RecipeError):
    """An output_dir or checkpoint that cannot be used as asked; the message says why and what to do."""


__all__ = ["RecipeError", "RunFolderError"]
