"""``few_shot.py`` with one candidate change to the few-shot recipe that was measured and not
kept (docs/benchmarks.md, "Few-shot recipe on the H&E development split"), so the figures
can be re-made. Every other argument goes to ``few_shot.py``::

    PYTHONPATH=src python benchmarks/few_shot_variants.py --try joint-rgb-normalisation \\
        --folder ../shared/data/dsb2018-histology-dev --n-images 4 --start nuclei \\
        --epochs 12 --threads 1

``joint-rgb-normalisation``: colour images are normalised with one pair of percentiles for
all three channels (hue kept) instead of one pair per channel. ``frozen-encoder``: the
starting model's encoder, all but its first convolution (which reads the colour), is frozen
for the whole run.
"""

from __future__ import annotations

import argparse
import importlib
import sys

import numpy as np

VARIANTS = ("joint-rgb-normalisation", "frozen-encoder")


def _joint_rgb_normalisation() -> None:
    normalize = importlib.import_module("napari_live_unet.engine.normalize")
    per_channel = normalize.channel_percentiles

    def joint(image, config=None):
        low, high = per_channel(image, config)
        if len(image) != 3:
            return low, high
        config = config or normalize.NormalizationConfig()
        ndim = image[0].ndim
        stride = max(1, int(np.ceil((image[0].size * 3 / 2_000_000) ** (1 / ndim))))
        sample = np.concatenate(
            [np.asarray(c[(slice(None, None, stride),) * ndim], np.float32).ravel() for c in image]
        )
        lo, hi = np.percentile(sample, [config.low_percentile, config.high_percentile])
        return np.full(3, lo, np.float32), np.full(3, hi, np.float32)

    def joint_normalize(image, config=None):
        low, high = joint(image, config)
        return normalize.apply_normalization(image, low, high)

    for name in ("model", "regions", "data", "predict", "block_predict", "normalize"):
        module = importlib.import_module(f"napari_live_unet.engine.{name}")
        if hasattr(module, "channel_percentiles"):
            module.channel_percentiles = joint
    for name in ("sampler", "normalize"):
        importlib.import_module(f"napari_live_unet.engine.{name}").normalize = joint_normalize


def _frozen_encoder() -> None:
    train = importlib.import_module("napari_live_unet.engine.train")
    set_up = train.set_up

    def frozen_set_up(*args, **kwargs):
        run, fitted = set_up(*args, **kwargs)
        for name, parameter in run.network.named_parameters():
            if name.startswith("down.") and not name.startswith("down.0.0"):
                parameter.requires_grad_(False)
        return run, fitted

    train.set_up = frozen_set_up


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=False)
    parser.add_argument("--try", dest="variant", choices=VARIANTS, required=True)
    args, rest = parser.parse_known_args()
    {"joint-rgb-normalisation": _joint_rgb_normalisation, "frozen-encoder": _frozen_encoder}[
        args.variant
    ]()
    import few_shot

    sys.argv = ["few_shot.py", *rest]
    return few_shot.main()


if __name__ == "__main__":
    sys.exit(main())
