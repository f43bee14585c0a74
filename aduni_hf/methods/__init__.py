"""The training methods of the paper's tables, one registered `Method` per name (`METHODS`).

| `method` | file | paper |
|---|---|---|
| `aduni`, `aduni_fixed` | aduni.py | AdUni, "AdUni w/o AduC" (Table 1) and the fixed-alpha rows of Table 2 |
| `ce` | ce.py | CE |
| `balanced_softmax` | balanced_softmax.py | Balanced Softmax, end to end |
| `balms` | balms.py | BALMS (two stages, Meta Sampler) |
| `ldam_drw` | ldam_drw.py | LDAM-DRW |
| `decouple` | decouple.py | Decouple, cRT (two stages, tau-normalisation reported) |
| `cicl` | cicl.py | CICL (two stages) |
| `paco`, `paco_aduc` | paco.py | PaCo, PaCo+AduC |

A new method is one file building a `Method` and calling `register`, imported below.
"""

from . import aduni, balanced_softmax, balms, ce, cicl, decouple, ldam_drw, paco  # noqa: F401  (they register)
from .method import METHODS, LossInputs, Method, MethodReport, Stage, TrainedRun, register
from .method_arguments import MethodArguments

__all__ = [
    "METHODS",
    "LossInputs",
    "Method",
    "MethodArguments",
    "MethodReport",
    "Stage",
    "TrainedRun",
    "register",
]
