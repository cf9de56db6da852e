"""training.dr.data.cached_chest: held-out phantoms kept on disk come back as drawn."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.dr.data import cached_chest, sample_from_chest, synth_sample
from training.dr.synth import SynthConfig, make_synth_chest


def test_cached_held_out_phantom_is_the_drawn_one(tmp_path: Path) -> None:
    drawn = make_synth_chest(900007)
    first = cached_chest(900007, tmp_path)  # draws and stores
    assert (tmp_path / "900007.npz").is_file()
    again = cached_chest(900007, tmp_path)  # reads back
    for chest in (first, again):
        assert np.array_equal(chest.image, drawn.image)
        assert chest.nodules == drawn.nodules
        assert (chest.spacing_mm, chest.view) == (drawn.spacing_mm, drawn.view)
    direct = synth_sample(900007)
    cached = sample_from_chest(again)
    assert np.array_equal(cached.image, direct.image) and cached.nodules == direct.nodules


def test_cache_of_another_config_keeps_that_config(tmp_path: Path) -> None:
    roomy = SynthConfig(headroom=True)
    drawn = make_synth_chest(900011, roomy)
    cached_chest(900011, tmp_path, roomy)
    back = cached_chest(900011, tmp_path, roomy)
    assert np.array_equal(back.image, drawn.image) and back.nodules == drawn.nodules
