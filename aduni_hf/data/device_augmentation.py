"""The training augmentation as batched tensor operations on the training device, with today's random parameters.

A training view on the CPU path (`transforms.py`) is a torchvision v2 pipeline applied to a PIL image, its random
numbers drawn from torch's RNG seeded by (seed, epoch, draw, index, view) (`seeded`). `DeviceAugmentation` splits
that into two halves:

- `draw(seed)`, on the host (in a data-loader worker): the view's random parameters, drawn by the pipeline's own
  transforms (`make_params`, and the flips' coin) from the same seeded RNG in the same order, so they are bit for
  bit the CPU path's. They travel as one float32 row of `PARAMETERS` (every value a float32 draw, a small integer
  or a flag, so the row holds it exactly).
- `apply(pixels, parameters)`, on the device: a whole batch of views at once, each with its own parameters, from
  the uint8 pixels stored at the training size: affine warp (nearest, fill 0, as `RandomAffine`), flips, colour
  jitter in each view's own order, normalisation (the pipeline's: ImageNet's, or the pretrained encoder weights').

The operations follow torchvision's float tensor kernels (`torchvision.transforms.v2.functional`: `affine`, the
`adjust_*` colour functions, `normalize`); they are written here batched, with a per-view parameter, where
torchvision's take one parameter per call. The CPU path works on PIL images, which round to uint8 after every
step; the device path rounds nowhere (docs/method.md, "Data and augmentation", gives the measured difference).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2

from ..image_utils import IMAGENET_MEAN, IMAGENET_STD
from .transforms import Channels, build_augmentation, cpu_rng_seeded

# One view's parameters, in this order. Absent operations hold their identity: no affine (angle 0, scale 1), no
# flip (0), the colour functions in order 0..3 with a NaN factor (not applied, as torchvision's None).
PARAMETERS = (
    "angle", "translate_x", "translate_y", "scale", "shear_x", "shear_y",
    "horizontal_flip", "vertical_flip",
    "jitter_order_0", "jitter_order_1", "jitter_order_2", "jitter_order_3",
    "brightness", "contrast", "saturation", "hue",
)  # fmt: skip
INDEX = {name: i for i, name in enumerate(PARAMETERS)}
JITTER_FACTORS = ("brightness", "contrast", "saturation", "hue")  # ColorJitter's fn_idx 0..3
# ITU-R 601-2 luma, as torchvision's rgb_to_grayscale (and PIL's "L" conversion)
LUMA = (0.2989, 0.587, 0.114)
# Transforms that draw nothing and that `apply` does itself: the resize to the training size, the conversion to
# float and the normalisation.
DETERMINISTIC = (v2.Resize, v2.ToImage, v2.ToDtype, v2.Normalize)


class DeviceAugmentation:
    """A registered augmentation (`AUGMENTATIONS`) as host-side parameter draws and a batched device transform.

    Args:
        name: the augmentation's name ("kaggle", "digits", "none").
        image_size: the training size S; `apply` returns (N, 3, S, S).
        mean, std: the normalisation, as `build_augmentation` takes it (default ImageNet's).

    Raises ValueError naming the augmentation and the transform when its pipeline holds a transform this module
    does not implement.
    """

    def __init__(
        self, name: str, image_size: int, mean: Channels = IMAGENET_MEAN, std: Channels = IMAGENET_STD
    ) -> None:
        pipeline = build_augmentation(name, image_size, mean=mean, std=std)
        self.name, self.image_size = name, image_size
        self.transforms = list(pipeline.transforms) if isinstance(pipeline, v2.Compose) else [pipeline]
        unknown = [
            type(t).__name__
            for t in self.transforms
            if not isinstance(t, (*DETERMINISTIC, v2.RandomAffine, v2.RandomHorizontalFlip, v2.RandomVerticalFlip,
                                  v2.ColorJitter))
        ]  # fmt: skip
        if unknown:
            raise ValueError(f"augmentation {name!r}: no device implementation of {', '.join(unknown)}")
        affines = [t for t in self.transforms if isinstance(t, v2.RandomAffine)]
        if any(v2.InterpolationMode(t.interpolation) != v2.InterpolationMode.NEAREST or t.center is not None for t in affines):
            raise ValueError(f"augmentation {name!r}: the device affine is nearest-neighbour about the centre only")
        normalize = [t for t in self.transforms if isinstance(t, v2.Normalize)]
        self.mean = tuple(normalize[0].mean) if normalize else (0.0, 0.0, 0.0)
        self.std = tuple(normalize[0].std) if normalize else (1.0, 1.0, 1.0)
        self.has_affine = bool(affines)
        # what RandomAffine's make_params reads: the size of the image at that point (after the resize)
        self._probe = [tv_tensors.Image(torch.empty(3, image_size, image_size, dtype=torch.uint8))]

    # ---- on the host ------------------------------------------------------------------------------------------
    def draw(self, seed: int) -> Tensor:
        """The parameters (len(PARAMETERS),) float32 of the view whose CPU transform `seeded(transform, image,
        seed)` would draw: the same transforms draw them from the same seeded RNG, in the pipeline's order."""
        row = torch.zeros(len(PARAMETERS), dtype=torch.float64)
        row[INDEX["scale"]] = 1.0
        row[INDEX["jitter_order_0"] : INDEX["jitter_order_3"] + 1] = torch.arange(4)
        row[INDEX["brightness"] :] = math.nan
        with cpu_rng_seeded(seed):
            for transform in self.transforms:
                if isinstance(transform, v2.RandomAffine):
                    params = transform.make_params(self._probe)
                    row[INDEX["angle"]] = params["angle"]
                    row[INDEX["translate_x"]], row[INDEX["translate_y"]] = params["translate"]
                    row[INDEX["scale"]] = params["scale"]
                    row[INDEX["shear_x"]], row[INDEX["shear_y"]] = params["shear"]
                elif isinstance(transform, (v2.RandomHorizontalFlip, v2.RandomVerticalFlip)):
                    # the coin of torchvision's _RandomApplyTransform.forward: skipped when rand >= p
                    applied = not bool(torch.rand(1) >= transform.p)
                    flip = "horizontal_flip" if isinstance(transform, v2.RandomHorizontalFlip) else "vertical_flip"
                    row[INDEX[flip]] = float(applied)
                elif isinstance(transform, v2.ColorJitter):
                    params = transform.make_params(self._probe)
                    row[INDEX["jitter_order_0"] : INDEX["jitter_order_3"] + 1] = params["fn_idx"].double()
                    for name in JITTER_FACTORS:
                        value = params[f"{name}_factor"]
                        row[INDEX[name]] = math.nan if value is None else value
        return row.float()

    # ---- on the device ----------------------------------------------------------------------------------------
    def apply(self, pixels: Tensor, parameters: Tensor) -> Tensor:
        """The views of `pixels` (N, H, W, 3) uint8, each with its row of `parameters` (N, len(PARAMETERS)):
        (N, 3, S, S) float32, normalised. Everything runs on `pixels`' device."""
        images = pixels.permute(0, 3, 1, 2).float().div_(255.0)  # to_dtype(..., scale=True)
        if images.shape[-2:] != (self.image_size, self.image_size):
            images = v2.functional.resize(images, [self.image_size, self.image_size], antialias=True).clamp_(0, 1)
        parameters = parameters.to(images.device, torch.float32)
        if self.has_affine:
            images = affine(images, parameters)
        for flip, dim in (("horizontal_flip", -1), ("vertical_flip", -2)):
            chosen = parameters[:, INDEX[flip]] > 0.5
            if chosen.any():
                images = torch.where(chosen[:, None, None, None], images.flip(dim), images)
        images = colour_jitter(images, parameters)
        mean = torch.tensor(self.mean, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=images.device).view(1, 3, 1, 1)
        return images.sub_(mean).div_(std)


    def views(self, pixels: Tensor, parameters: Tensor) -> Tensor:
        """The training views of a batch: `pixels` (B, H, W, 3) uint8 and `parameters` (B, V, P) -> (B, V, 3, S, S),
        computed view-major (rows v*B + i), as the model takes them, and returned as a (B, V) view of those rows."""
        batch, views = parameters.shape[:2]
        rows = self.apply(pixels.repeat(views, 1, 1, 1), parameters.transpose(0, 1).reshape(batch * views, -1))
        return rows.view(views, batch, *rows.shape[1:]).transpose(0, 1)


# ---- batched kernels ------------------------------------------------------------------------------------------
def inverse_affine_matrices(parameters: Tensor) -> Tensor:
    """(N, 2, 3): for each view, the inverse of the affine map about the image centre that torchvision's `affine`
    builds (`_get_inverse_affine_matrix` with centre (0, 0), the tensor kernel's): M = T C RSS C^-1 with
    RSS = R(angle) S(scale) SHy(shear_y) SHx(shear_x), inverted in closed form (its rotation-shear part has
    determinant 1). Computed in float64, as torchvision's Python floats."""
    p = parameters.double()
    rot = torch.deg2rad(p[:, INDEX["angle"]])
    sx, sy = torch.deg2rad(p[:, INDEX["shear_x"]]), torch.deg2rad(p[:, INDEX["shear_y"]])
    tx, ty, scale = p[:, INDEX["translate_x"]], p[:, INDEX["translate_y"]], p[:, INDEX["scale"]]
    a = torch.cos(rot - sy) / torch.cos(sy)
    b = -(a * torch.tan(sx) + torch.sin(rot))
    c = torch.sin(rot - sy) / torch.cos(sy)
    d = torch.cos(rot) - c * torch.tan(sx)
    m0, m1, m3, m4 = d / scale, -b / scale, -c / scale, a / scale
    m2 = -m0 * tx - m1 * ty  # centre (0, 0): C is the identity
    m5 = -m3 * tx - m4 * ty
    return torch.stack([m0, m1, m2, m3, m4, m5], dim=1).view(-1, 2, 3)


def affine(images: Tensor, parameters: Tensor) -> Tensor:
    """Each image (N, C, H, W) float warped by its own affine map, nearest neighbour, zeros outside, on the grid
    torchvision's tensor `affine` samples (pixel centres, normalised by half the size, align_corners False)."""
    n, _, height, width = images.shape
    theta = inverse_affine_matrices(parameters).to(images.dtype)  # torchvision: float32 from the float64 matrix
    xs = torch.linspace((1.0 - width) * 0.5, (width - 1.0) * 0.5, steps=width, device=images.device)
    ys = torch.linspace((1.0 - height) * 0.5, (height - 1.0) * 0.5, steps=height, device=images.device)
    base = torch.stack(
        [xs.expand(height, width), ys[:, None].expand(height, width), torch.ones(height, width, device=images.device)],
        dim=-1,
    ).view(1, height * width, 3)  # fmt: skip
    scale = torch.tensor([0.5 * width, 0.5 * height], dtype=images.dtype, device=images.device)
    rescaled = theta.to(images.device).transpose(1, 2) / scale  # (N, 3, 2)
    grid = torch.bmm(base.expand(n, -1, -1), rescaled).view(n, height, width, 2)
    return F.grid_sample(images, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def _grey(images: Tensor) -> Tensor:
    r, g, b = images.unbind(dim=1)
    return (r * LUMA[0] + g * LUMA[1] + b * LUMA[2]).unsqueeze(1)  # (N, 1, H, W)


def _blend(images: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    """factor * images + (1 - factor) * other, clamped to [0, 1] (torchvision's `_blend`), factor (N,)."""
    factor = factor.view(-1, 1, 1, 1)
    return (images * factor + other * (1.0 - factor)).clamp_(0.0, 1.0)


def rgb_to_hsv(images: Tensor) -> Tensor:
    """(N, 3, H, W) RGB in [0, 1] -> HSV, hue in [0, 1) (the formulas of torchvision's `_rgb_to_hsv`, after PIL's)."""
    r, g, _ = images.unbind(dim=1)
    minc, maxc = torch.aminmax(images, dim=1)
    equal = maxc == minc
    ones = torch.ones_like(maxc)
    spread = maxc - minc
    saturation = spread / torch.where(equal, ones, maxc)
    divisor = torch.where(equal, ones, spread).unsqueeze(1)
    rc, gc, bc = ((maxc.unsqueeze(1) - images) / divisor).unbind(dim=1)
    max_is_r, max_is_g = maxc == r, maxc == g
    hue = (bc - gc) * max_is_r + (2.0 + rc - bc) * (max_is_g & ~max_is_r) + (4.0 + gc - rc) * (~max_is_g & ~max_is_r)
    hue = torch.fmod(hue / 6.0 + 1.0, 1.0)
    return torch.stack((hue, saturation, maxc), dim=1)


def hsv_to_rgb(images: Tensor) -> Tensor:
    """HSV -> RGB (torchvision's `_hsv_to_rgb`: sector i of the hue picks (v, p, q, t) for each channel)."""
    h, s, v = images.unbind(dim=1)
    h6 = h * 6.0
    sector = torch.floor(h6)
    fraction = h6 - sector
    sector = sector.to(torch.long).remainder(6)
    p = ((1.0 - s) * v).clamp(0.0, 1.0)
    q = ((1.0 - s * fraction) * v).clamp(0.0, 1.0)
    t = ((1.0 - s + s * fraction) * v).clamp(0.0, 1.0)
    vpqt = torch.stack((v, p, q, t), dim=1)  # (N, 4, H, W)
    select = torch.tensor([[0, 2, 1, 1, 3, 0], [3, 0, 0, 2, 1, 1], [1, 1, 3, 0, 0, 2]], device=images.device)
    return vpqt.gather(1, select[:, sector].permute(1, 0, 2, 3))


def _adjust(images: Tensor, function: str, factor: Tensor) -> Tensor:
    if function == "brightness":
        return (images * factor.view(-1, 1, 1, 1)).clamp_(0.0, 1.0)
    if function == "contrast":
        return _blend(images, _grey(images).mean(dim=(1, 2, 3), keepdim=True), factor)
    if function == "saturation":
        return _blend(images, _grey(images), factor)
    hsv = rgb_to_hsv(images)
    hue = torch.remainder(hsv[:, 0] + factor.view(-1, 1, 1), 1.0)
    return hsv_to_rgb(torch.stack((hue, hsv[:, 1], hsv[:, 2]), dim=1))


def colour_jitter(images: Tensor, parameters: Tensor) -> Tensor:
    """ColorJitter with each view's own order and factors: at each of the four positions, every view whose order
    names a function there (with a factor: NaN means the pipeline has none) gets that function."""
    images = images.clone()
    for position in range(4):
        order = parameters[:, INDEX[f"jitter_order_{position}"]]
        for function_id, name in enumerate(JITTER_FACTORS):
            factor = parameters[:, INDEX[name]]
            chosen = (order == function_id) & ~torch.isnan(factor)
            if chosen.any():
                images[chosen] = _adjust(images[chosen], name, factor[chosen])
    return images


__all__ = ["PARAMETERS", "DeviceAugmentation", "affine", "colour_jitter", "hsv_to_rgb", "rgb_to_hsv"]
