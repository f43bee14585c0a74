"""Run scripts/train.py and SIGKILL it half-way through writing a checkpoint (test instrumentation).

    python tests/training/kill_during_save.py SUFFIX scripts/train.py recipe.yaml [--field value ...]

When `torch.save` writes a file whose path ends with SUFFIX (`checkpoint-9/optimizer.pt`: the optimiser
state of the checkpoint of step 9, after that checkpoint's weights; `run/training_args.bin`: the last file of
the final model in output_dir `run`), half of the file is written and the process kills itself with SIGKILL,
as a pre-empted machine would: no Python clean-up runs. Nothing of aduni_hf is replaced; only `torch.save`,
which the Trainer calls, is wrapped.
"""

import io
import os
import runpy
import signal
import sys

import torch

_torch_save = torch.save


def main() -> None:
    suffix, script, *arguments = sys.argv[1:]

    def save_then_die(obj, f, *args, **kwargs):
        path = os.fspath(f) if isinstance(f, (str, os.PathLike)) else ""
        if path.endswith(suffix):
            buffer = io.BytesIO()
            _torch_save(obj, buffer, *args, **kwargs)
            with open(path, "wb") as handle:
                handle.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
                handle.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return _torch_save(obj, f, *args, **kwargs)

    torch.save = save_then_die
    sys.argv = [script, *arguments]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
