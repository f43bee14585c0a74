"""The console of a run (aduni_hf/console.py): records and tables above the progress bars, one handler for ours,
transformers' and datasets' records."""

import io
import logging
import subprocess
import sys

from tqdm import tqdm

from aduni_hf.console import ConsoleHandler


def test_a_record_logged_while_a_bar_is_drawn_gets_a_line_of_its_own():
    stream = io.StringIO()
    logger = logging.getLogger("aduni_hf.test_console")
    handler = ConsoleHandler(stream)
    logger.addHandler(handler)
    try:
        with tqdm(total=3, file=stream, ascii=True) as bar:
            bar.update(1)
            logger.warning("a record")
            bar.update(1)
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    # The bar's line is cleared (carriage return) before the record, which ends its line; the bar comes back after.
    assert "\ra record\n" in text, repr(text)
    assert text.split("a record\n")[1].lstrip("\r").startswith(" 33%|"), repr(text)


PROBE = """
import logging
import datasets
import transformers
from aduni_hf.console import log_to_console

log_to_console()
log_to_console()  # again, as every fold of a cross-validation does: still one line per record
logging.getLogger("aduni_hf.probe").warning("ours")
transformers.utils.logging.get_logger("transformers.trainer").warning("transformers'")
datasets.utils.logging.get_logger("datasets.builder").warning("datasets'")
"""


def test_transformers_and_datasets_records_join_ours_on_standard_output_in_one_format():
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    records = [line.split(" - ", 1)[1] for line in result.stdout.splitlines()]  # after the date
    assert records == [
        "WARNING - aduni_hf.probe - ours",
        "WARNING - transformers.trainer - transformers'",
        "WARNING - datasets.builder - datasets'",
    ]
    assert "transformers'" not in result.stderr and "datasets'" not in result.stderr
