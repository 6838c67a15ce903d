"""``python -m napari_live_unet.cli``: the same as the ``live-unet`` command."""

import sys

from . import main

sys.exit(main())
