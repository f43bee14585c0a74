"""transformers' own common model tests (`ModelTesterMixin`, tests/test_modeling_common.py) run against AdUni.

The tests are not in the transformers wheel; they are in its source distribution on PyPI. They are taken, for the
installed transformers version, from:

1. the folder named by the environment variable `TRANSFORMERS_TESTS_DIR` (a `tests/` folder of a transformers
   checkout or source distribution of the installed version), else
2. `~/.cache/aduni_hf/transformers-<version>-tests` (under `$XDG_CACHE_HOME` when set), filled on first use with
   the top-level `tests/*.py` files of `pip download transformers==<version> --no-binary :all: --no-deps`.

Without either (no network on first use) the module is skipped, saying how to provide the folder.

The source distribution has only the top-level test files. `test_modeling_common.py` also imports two mixins from
sub-folders it lacks: `GenerationTesterMixin` (only used to check that models which cannot generate do not
inherit it) and `ExportTesterMixin` (the base class of `ModelTesterMixin`, with the export tests). Where those
files are missing, empty stand-ins take their place, so the export tests of transformers do not run here;
`test_torch_export_matches_eager` below exports both classes with `torch.export` instead.
"""

from __future__ import annotations

import copy
import importlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import types
import unittest
import unittest.mock
import warnings
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # tests/conftest.py sets it too; nothing here may reach the Hub

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers.models.auto import modeling_auto  # noqa: E402

from aduni_hf import AdUniConfig, AdUniForImageClassification, AdUniModel  # noqa: E402

pytest.importorskip(
    "parameterized", reason="transformers' common tests need `parameterized` (the test extra)"
)

VERSION = transformers.__version__
PACKAGE = "_transformers_tests_" + "".join(c if c.isalnum() else "_" for c in VERSION)
HOW_TO = (
    f"set TRANSFORMERS_TESTS_DIR to the tests/ folder of transformers {VERSION} (from its source distribution: "
    f"`pip download transformers=={VERSION} --no-binary :all: --no-deps`, then unpack "
    f"transformers-{VERSION}/tests/)"
)


def _cache_dir() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "aduni_hf" / f"transformers-{VERSION}-tests"


def _download_tests(target: Path) -> None:
    """Fill `target` with the top-level tests/*.py files of the transformers source distribution, atomically:
    unpacked into a temporary sibling folder first, which is then renamed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as download:
        command = [sys.executable, "-m", "pip", "download", f"transformers=={VERSION}"]
        command += ["--no-binary", ":all:", "--no-deps", "--disable-pip-version-check", "-d", download]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as err:
            pytest.skip(
                f"could not download transformers {VERSION}'s tests ({err}); {HOW_TO}",
                allow_module_level=True,
            )
        archives = sorted(Path(download).glob("transformers-*.tar.gz"))
        if result.returncode != 0 or not archives:
            reason = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no archive"]
            pytest.skip(
                f"could not download transformers {VERSION}'s tests ({reason[0]}); {HOW_TO}",
                allow_module_level=True,
            )
        unpacked = Path(tempfile.mkdtemp(dir=target.parent, prefix=".unpack-"))
        try:
            prefix = f"transformers-{VERSION}/tests/"
            with tarfile.open(archives[0], "r:gz") as archive:
                for member in archive.getmembers():
                    name = member.name.removeprefix(prefix)
                    if not member.isfile() or name == member.name or "/" in name or not name.endswith(".py"):
                        continue
                    (unpacked / name).write_bytes(archive.extractfile(member).read())
            if not (unpacked / "test_modeling_common.py").is_file():
                pytest.fail(f"{archives[0].name} has no {prefix}test_modeling_common.py")
            try:
                os.rename(unpacked, target)
            except OSError:
                if not (target / "test_modeling_common.py").is_file():  # not another process's finished copy
                    raise
        finally:
            shutil.rmtree(unpacked, ignore_errors=True)


def transformers_tests_dir() -> Path:
    if os.environ.get("TRANSFORMERS_TESTS_DIR"):
        directory = Path(os.environ["TRANSFORMERS_TESTS_DIR"])
        if not (directory / "test_modeling_common.py").is_file():
            pytest.fail(f"TRANSFORMERS_TESTS_DIR={directory} has no test_modeling_common.py; {HOW_TO}")
        return directory
    directory = _cache_dir()
    if not (directory / "test_modeling_common.py").is_file():
        _download_tests(directory)
    return directory


def _stand_in(name: str, **attributes) -> None:
    """Register an (empty) module `PACKAGE.name`, and its parent packages, in sys.modules."""
    parts = f"{PACKAGE}.{name}".split(".")
    for depth in range(2, len(parts) + 1):
        module_name = ".".join(parts[:depth])
        if module_name not in sys.modules:
            module = types.ModuleType(module_name)
            if depth < len(parts):
                module.__path__ = []
            sys.modules[module_name] = module
    sys.modules[f"{PACKAGE}.{name}"].__dict__.update(attributes)


def import_modeling_common(directory: Path) -> types.ModuleType:
    """transformers' test_modeling_common, imported as `PACKAGE.test_modeling_common` (its relative imports
    resolve inside `directory`), with stand-ins for the two mixins a source distribution lacks."""
    if PACKAGE not in sys.modules:
        package = types.ModuleType(PACKAGE)
        package.__path__ = [str(directory)]
        sys.modules[PACKAGE] = package
    if not (directory / "exporters" / "test_export.py").is_file():
        _stand_in("exporters.test_export", ExportTesterMixin=type("ExportTesterMixin", (), {}))
    if not (directory / "generation" / "test_utils.py").is_file():
        _stand_in("generation.test_utils", GenerationTesterMixin=type("GenerationTesterMixin", (), {}))
    with (
        warnings.catch_warnings()
    ):  # its marks (flash_attn_test, ...) are registered by transformers' conftest
        warnings.simplefilter("ignore", pytest.PytestUnknownMarkWarning)
        return importlib.import_module(f"{PACKAGE}.test_modeling_common")


ModelTesterMixin = import_modeling_common(transformers_tests_dir()).ModelTesterMixin


class AdUniModelTester:
    """Tiny AdUni models and inputs for the common tests: a ResNet-18 shaped encoder (timm's `resnet18` with one
    BasicBlock per stage and narrow stages, about 40k parameters), 32x32 RGB images, 3 labels."""

    def __init__(
        self,
        parent: unittest.TestCase,
        batch_size: int = 3,
        image_size: int = 32,
        num_channels: int = 3,
        num_labels: int = 3,
        stage_channels: tuple[int, ...] = (8, 16, 16, 32),
        projection_dim: int = 16,
        is_training: bool = True,
    ) -> None:
        self.parent = parent
        self.batch_size = batch_size
        self.image_size = image_size
        self.num_channels = num_channels
        self.num_labels = num_labels
        self.stage_channels = list(stage_channels)
        self.num_stages = len(stage_channels)
        self.projection_dim = projection_dim
        self.is_training = is_training

    def get_config(self) -> AdUniConfig:
        return AdUniConfig(
            backbone="resnet18",
            backbone_kwargs={"layers": [1] * self.num_stages, "channels": self.stage_channels},
            projection_dim=self.projection_dim,
            image_size=self.image_size,
            num_labels=self.num_labels,
        )

    def prepare_config_and_inputs(self) -> tuple[AdUniConfig, torch.Tensor, torch.Tensor]:
        pixel_values = torch.randn(self.batch_size, self.num_channels, self.image_size, self.image_size)
        labels = torch.randint(0, self.num_labels, (self.batch_size,))
        return self.get_config(), pixel_values, labels

    def prepare_config_and_inputs_for_common(self) -> tuple[AdUniConfig, dict[str, torch.Tensor]]:
        config, pixel_values, _ = self.prepare_config_and_inputs()
        return config, {"pixel_values": pixel_values}


class AdUniModelTest(ModelTesterMixin, unittest.TestCase):
    """`ModelTesterMixin` on `AdUniModel` and `AdUniForImageClassification`."""

    all_model_classes = (AdUniModel, AdUniForImageClassification)
    # Flags for what a CNN does not have: attention weights, token or position embeddings.
    has_attentions = False
    test_resize_embeddings = False
    test_resize_position_embeddings = False
    # `test_can_init_all_missing_weights` skips models whose configuration file has no copyright line of 2023
    # or later ("not a prioritized model") unless this is set; it applies to AdUni as to any model.
    test_can_init_all_missing_weights_before_2023 = True

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        # The common tests tell a bare model from a classifier by the class names in transformers' Auto
        # mappings (a bare model has no loss to train; a classifier gets labels and the problem-type tests).
        # aduni_hf registers its classes with `AutoModel.register`, which those name tables do not see: add
        # them for the duration of this class. `aduni` is not in CONFIG_MAPPING_NAMES, so the lazy Auto
        # mappings ignore them.
        cls._mapping_patches = [
            unittest.mock.patch.dict(modeling_auto.MODEL_MAPPING_NAMES, {"aduni": "AdUniModel"}),
            unittest.mock.patch.dict(
                modeling_auto.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES,
                {"aduni": "AdUniForImageClassification"},
            ),
        ]
        for patch in cls._mapping_patches:
            patch.start()

    @classmethod
    def tearDownClass(cls) -> None:
        for patch in reversed(cls._mapping_patches):
            patch.stop()
        super().tearDownClass()

    def setUp(self) -> None:
        self.model_tester = AdUniModelTester(self)

    @unittest.skip(reason="a CNN has no token embeddings (nn.Embedding) to get or set")
    def test_model_get_set_embeddings(self):
        pass

    def test_hidden_states_output(self):
        """A CNN's hidden states are feature maps, not (sequence, hidden) arrays, so the mixin's shape check
        (`[seq_length, hidden_size]`) is replaced by this one, as transformers' own CNN tests (ResNet, ConvNeXt)
        do: the stem's map and then one per stage, with timm's channels and strides, asked for by argument and
        by the config."""
        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
        size = self.model_tester.image_size
        expected = [(64, size // 2)] + [
            (channels, size // 4 // 2**stage)
            for stage, channels in enumerate(self.model_tester.stage_channels)
        ]
        batch = self.model_tester.batch_size
        expected_shapes = [(batch, channels, side, side) for channels, side in expected]

        def check(model_class, config, **kwargs):
            model = model_class(copy.deepcopy(config)).eval()
            with torch.no_grad():
                outputs = model(**self._prepare_for_class(inputs_dict, model_class), **kwargs)
            self.assertEqual([tuple(h.shape) for h in outputs.hidden_states], expected_shapes)
            feature_info = model.base_model.backbone.feature_info
            self.assertEqual([info["num_chs"] for info in feature_info], [c for c, _ in expected])
            if model_class is AdUniModel:
                self.assertTrue(torch.equal(outputs.hidden_states[-1], outputs.last_hidden_state))

        for model_class in self.all_model_classes:
            check(model_class, config, output_hidden_states=True)
            with_config = copy.deepcopy(config)
            with_config.output_hidden_states = True
            check(model_class, with_config)

    def test_torch_export_matches_eager(self):
        """`torch.export` of both classes (static shapes, and a dynamic batch size) gives the eager outputs.
        Stands in for transformers' export tests, which a source distribution does not ship."""
        if not self.test_torch_exportable:
            self.skipTest(reason="the model is not torch-exportable")
        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
        pixel_values = inputs_dict["pixel_values"]
        for model_class in self.all_model_classes:
            model = model_class(copy.deepcopy(config)).eval()
            with torch.no_grad():
                expected = model(pixel_values)
            for dynamic in (False, True):
                with self.subTest(model_class=model_class.__name__, dynamic=dynamic):
                    shapes = (
                        {"pixel_values": {0: torch.export.Dim("batch", min=1, max=64)}} if dynamic else None
                    )
                    program = torch.export.export(model, (pixel_values,), dynamic_shapes=shapes)
                    for batch in (
                        (pixel_values, torch.cat([pixel_values, pixel_values.flip(0)]))
                        if dynamic
                        else (pixel_values,)
                    ):
                        with torch.no_grad():
                            got = program.module()(batch)
                            reference = model(batch) if batch is not pixel_values else expected
                        for key, value in reference.items():
                            torch.testing.assert_close(got[key], value, msg=key)

    def test_timm_activation_checkpointing(self):
        """AdUni checkpoints activations with timm's own `set_grad_checkpointing`, as transformers' TimmWrapper
        models do: the classes leave `supports_gradient_checkpointing` False, so the mixin's checks of the
        `GradientCheckpointingLayer` contract pass over them, and every instance whose encoder supports it sets it
        True. This checks that mechanism as those tests check theirs: `activation_checkpointing_enable` and
        `_disable` (and the legacy `config.gradient_checkpointing`) switch it, the encoder's blocks run a second time
        in the backward pass, and the gradients are those of the run without checkpointing."""
        for model_class in self.all_model_classes:
            self.assertFalse(model_class.supports_gradient_checkpointing)
            config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
            config.classifier_dropout = 0.0
            inputs = self._prepare_for_class(inputs_dict, model_class, return_labels=True)
            model = model_class(copy.deepcopy(config)).train()
            self.assertTrue(model.supports_gradient_checkpointing)
            self.assertFalse(model.is_activation_checkpointing)
            block = model.base_model.backbone.layer1[0]
            calls = []
            block.register_forward_pre_hook(lambda *_, calls=calls: calls.append(1))

            def gradients(model, inputs):
                model.zero_grad(set_to_none=True)
                output = model(**inputs)
                loss = (
                    output.features.sum()
                )  # AdUniModel has no loss: its features' gradient flows everywhere
                if getattr(output, "loss", None) is not None:
                    loss = loss + output.loss
                loss.backward()
                return {name: p.grad.clone() for name, p in model.named_parameters()}

            expected = gradients(model, inputs)
            for kwargs in (None, {"use_reentrant": False}, {"use_reentrant": True}):
                with self.subTest(model_class=model_class.__name__, kwargs=kwargs):
                    model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
                    self.assertTrue(model.is_activation_checkpointing)
                    self.assertTrue(model.base_model.backbone.grad_checkpointing)
                    calls.clear()
                    got = gradients(model, inputs)
                    self.assertEqual(len(calls), 2)  # the forward, then its recomputation
                    for name, value in expected.items():
                        torch.testing.assert_close(got[name], value, rtol=0, atol=1e-6, msg=name)
                    model.activation_checkpointing_disable()
                    self.assertFalse(model.is_activation_checkpointing)
                    self.assertFalse(model.base_model.backbone.grad_checkpointing)

            legacy = copy.deepcopy(config)
            legacy.gradient_checkpointing = True
            model = model_class(legacy)
            self.assertTrue(
                model.is_activation_checkpointing and model.base_model.backbone.grad_checkpointing
            )
            self.assertFalse(hasattr(model.config, "gradient_checkpointing"))
