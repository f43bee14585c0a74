"""A tiny real AdUniTrainer (40 digits at 16x16, 3 steps per epoch) shared by the trainer and checkpoint tests. Its
encoder is timm's test network (TINY_BACKBONE, tests/tiny_run.py): these tests are about the training loop. A test
that hooks resnet18's layers or is sized by its checkpoints asks for backbone="resnet18"."""

import numpy as np
import torch

from aduni_hf import AduCLoss, AdUniConfig, AdUniForImageClassification, AdUniTrainer
from aduni_hf.data import MultiViewDataset, build_augmentation, build_dataset, collate_views, split_by_fold
from aduni_hf.evaluation import build_compute_metrics
from aduni_hf.training import AdUniTrainingArguments
from tests.tiny_run import TINY_BACKBONE

IMAGE_SIZE = 16
NUM_TRAIN = 40  # 3 steps per epoch at batch 16: 16, 16, 8


class RecordingViews(MultiViewDataset):
    """Records the sampler keys it is asked for (test instrumentation, not a replacement)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.keys = []

    def __getitem__(self, key):
        self.keys.append(key)
        return super().__getitem__(key)


def digits_splits():
    return split_by_fold(build_dataset("digits_lt"), test_fold=0, val_fraction=0.1, seed=42)


def make_trainer(
    tmp_path,
    splits,
    loss_fn=None,
    num_views=2,
    epochs=3,
    callbacks=None,
    views_class=None,
    sampler="none",
    trainer_class=AdUniTrainer,
    image_size=IMAGE_SIZE,
    backbone=TINY_BACKBONE,
    eval_dataset=None,
    **overrides,
):
    train = splits.train.select(range(NUM_TRAIN))
    counts = np.bincount(train["label"], minlength=10).tolist()
    loss_fn = loss_fn if loss_fn is not None else AduCLoss(10, class_counts=counts)  # the official alpha
    args = dict(
        output_dir=str(tmp_path / "run"),
        num_train_epochs=epochs,
        per_device_train_batch_size=16,
        per_device_eval_batch_size=5,
        warmup_epochs=1,
        cosine_epochs=epochs,
        use_cpu=True,
        disable_tqdm=True,
        eval_strategy="no",
        logging_strategy="steps",
        logging_steps=1,
        seed=0,
    )
    args.update(overrides)
    torch.manual_seed(0)
    model = AdUniForImageClassification(AdUniConfig(num_labels=10, image_size=image_size, backbone=backbone))
    return trainer_class(
        model=model,
        args=AdUniTrainingArguments(**args),
        loss_fn=loss_fn,
        sampler=sampler,
        train_dataset=(views_class or RecordingViews)(
            train, build_augmentation("digits", image_size), num_views=num_views, seed=0
        ),
        data_collator=collate_views,
        eval_dataset=eval_dataset,
        compute_metrics=build_compute_metrics([str(c) for c in range(10)]),
        callbacks=callbacks,
    )
