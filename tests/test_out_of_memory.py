"""CUDA out-of-memory is answered by a smaller batch and a message, in training and prediction.

The GPU is simulated: a network raises torch.cuda.OutOfMemoryError when given a batch larger
than it 'fits', which is what a real GPU does.
"""

import numpy as np
import torch

from napari_live_unet.engine import (
    ModelConfig,
    Notice,
    SegmentationModel,
    TrainConfig,
    TrainingFinished,
    make_pair,
    train,
)

from .conftest import predict_one, synthetic_nuclei


class FitsAtMost(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module, limit: int) -> None:
        super().__init__()
        self.inner, self.limit, self.seen = inner, limit, []

    def forward(self, x):
        self.seen.append(len(x))
        if len(x) > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.inner(x)


def test_prediction_retries_with_smaller_batch_and_says_so():
    model = SegmentationModel.create(ModelConfig(base_channels=4, depth=2)).network.eval()
    net = FitsAtMost(model, 2)
    messages = []
    image = np.random.default_rng(0).random((1, 128, 128)).astype(np.float32)
    out = predict_one(
        net,
        image,
        mode="distance",
        size_multiple=4,
        tile_shape=(32, 32),
        overlap=0,
        batch_size=8,
        on_message=messages.append,
    )
    expected = predict_one(
        model, image, mode="distance", size_multiple=4, tile_shape=(32, 32), overlap=0, batch_size=1
    )
    np.testing.assert_allclose(out.astype(np.float32), expected.astype(np.float32), atol=1e-3)
    assert messages and "batch size 2" in messages[-1]
    assert max(net.seen[-3:]) <= 2


def test_training_halves_batch_on_out_of_memory():
    initial = SegmentationModel.create(ModelConfig(base_channels=4, depth=2))
    initial.network = FitsAtMost(initial.network, 3)
    pairs = [make_pair(*synthetic_nuclei((64, 64), seed=i)) for i in range(3)]
    cfg = TrainConfig(epochs=1, steps_per_epoch=3, batch_size=8, patch_size=32, val_fraction=0.0)
    events = list(train(pairs, cfg, initial_model=initial, device="cpu"))
    notices = [e.message for e in events if isinstance(e, Notice)]
    assert any("batch size 4" in m for m in notices)
    assert any("batch size 2" in m for m in notices)
    assert isinstance(events[-1], TrainingFinished) and events[-1].steps == 3
