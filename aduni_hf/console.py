"""The console of a run: log records and printed tables go above the progress bars, never into them.

tqdm draws a bar by rewriting its line on standard error. Anything else written while a bar is drawn lands at the
end of the bar's line in a terminal. `tqdm.write` clears the bars, writes the text, then draws them again: every
line a run prints goes through it, the log records (`ConsoleHandler`) and the tables (`console_print`).
"""

from __future__ import annotations

import logging
import sys

from tqdm.auto import tqdm

LOG_FORMAT = "%(asctime)s - %(levelname)s - %(name)s - %(message)s"  # transformers' example scripts' format
DATE_FORMAT = "%m/%d/%Y %H:%M:%S"
# Libraries whose records join ours: each prints to standard error through a handler of its own by default.
LIBRARY_LOGGERS = ("transformers", "datasets")


class ConsoleHandler(logging.StreamHandler):
    """A `StreamHandler` that writes each record through `tqdm.write`, above any progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


def console_print(text: str) -> None:
    """`print(text)` above any progress bar, flushed at once (standard output is block-buffered in a file)."""
    tqdm.write(text, file=sys.stdout)
    sys.stdout.flush()


def log_to_console() -> None:
    """Send our records and those of `LIBRARY_LOGGERS` to one `ConsoleHandler` on standard output, in one format.

    The handler goes on the root logger unless it has handlers already (as `logging.basicConfig`: an application's
    or pytest's own handlers are kept). The libraries drop their own console handlers and pass their records to the
    root logger. Calling it again changes nothing.
    """
    root = logging.getLogger()
    if not root.handlers:
        handler = ConsoleHandler(sys.stdout)
        handler.setFormatter(logging.Formatter(LOG_FORMAT, datefmt=DATE_FORMAT))
        root.addHandler(handler)
    for name in LIBRARY_LOGGERS:
        library = logging.getLogger(name)
        for handler in [h for h in library.handlers if type(h) is logging.StreamHandler]:
            library.removeHandler(handler)
        library.propagate = True
