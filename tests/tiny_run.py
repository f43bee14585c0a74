"""A run small enough for the tests of a run's mechanics (resuming, checkpoints, the Hub, processes, model
selection), where the encoder is not what is tested: timm's own test network, `test_resnet` (a ResNet of
0.37 M parameters and 96 features, which timm's tests use likewise), at 16x16. A checkpoint of it is 3 MB where
resnet18's is 135 MB, and a step takes a twelfth of the time. The tests of the model, the recipes and the demo keep
resnet18."""

TINY_BACKBONE = "test_resnet"
TINY_RUN = ("--backbone", TINY_BACKBONE, "--image_size", "16")
