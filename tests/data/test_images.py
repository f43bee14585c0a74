"""Build-time image handling: mode conversion to 8-bit RGB."""

import numpy as np
import pytest
from PIL import Image

from aduni_hf.data import as_rgb


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "I;16", "I"])
def test_as_rgb_converts_every_mode(mode):
    if mode in ("I;16", "I"):
        image = Image.fromarray(
            np.full((4, 4), 65535 if mode == "I;16" else 255, dtype=np.uint16 if mode == "I;16" else np.int32)
        )
    else:
        image = Image.new(mode, (4, 4))
    rgb = as_rgb(image)
    assert rgb.mode == "RGB" and rgb.size == (4, 4)
    if mode.startswith("I"):
        assert np.asarray(rgb).max() == 255
