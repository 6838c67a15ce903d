"""Speed of one 3D training step (forward, backward, AdamW) on 16x64x64 patches, batch 4.

Isotropic and anisotropic (voxel 3x1x1) U-nets at the CPU defaults, float32 and bf16
autocast; synthetic data, no augmentation or data loading (see ``volumes_3d.py`` for the
whole loop). Run it on a quiet machine: on a shared CPU, thread-pool waits dominate.

    PYTHONPATH=src python benchmarks/train_step_3d.py
"""

from __future__ import annotations

import time

import torch

from napari_live_unet.engine.config import ModelConfig, anisotropic_layout
from napari_live_unet.engine.device import autocast
from napari_live_unet.engine.unet import UNet

BATCH, PATCH, STEPS = 4, (16, 64, 64), 4


def main() -> None:
    device = torch.device("cpu")
    for kind in ("isotropic", "anisotropic"):
        pooling, kernels = (
            anisotropic_layout((3, 1, 1), 3) if kind == "anisotropic" else (None, None)
        )
        config = ModelConfig(ndim=3, base_channels=8, depth=3, pooling=pooling, kernels=kernels)
        network = UNet(config).to(memory_format=torch.channels_last_3d)
        optimizer = torch.optim.AdamW(network.parameters())
        x = torch.randn(BATCH, 1, *PATCH).contiguous(memory_format=torch.channels_last_3d)
        for amp in (None, torch.bfloat16):
            for step in range(STEPS + 1):
                if step == 1:  # the first step pays for oneDNN's set-up
                    start = time.perf_counter()
                with autocast(device, amp):
                    loss = network(x).float().mean()
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
            seconds = (time.perf_counter() - start) / STEPS
            print(
                f"{kind:12s} {amp or 'float32'!s:15s} {seconds * 1000:6.0f} ms/step  "
                f"{BATCH / seconds:5.1f} patches/s"
            )


if __name__ == "__main__":
    main()
