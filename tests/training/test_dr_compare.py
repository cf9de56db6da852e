"""training.dr.compare: held-out phantoms kept on disk come back as drawn."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.dr.compare import held_out_chest
from training.dr.data import sample_from_chest, synth_sample
from training.dr.synth import make_synth_chest


def test_cached_held_out_phantom_is_the_drawn_one(tmp_path: Path) -> None:
    drawn = make_synth_chest(900007)
    first = held_out_chest(900007, tmp_path)  # draws and stores
    assert (tmp_path / "900007.npz").is_file()
    again = held_out_chest(900007, tmp_path)  # reads back
    for chest in (first, again):
        assert np.array_equal(chest.image, drawn.image)
        assert chest.nodules == drawn.nodules
        assert (chest.spacing_mm, chest.view) == (drawn.spacing_mm, drawn.view)
    direct = synth_sample(900007)
    cached = sample_from_chest(again)
    assert np.array_equal(cached.image, direct.image) and cached.nodules == direct.nodules
