"""Shared fixture: `fdf_dir`, a small FDF-format dataset built by `toolkit data build` from real photos."""

import pytest

FDF_FIXTURE_SIZE = 64


@pytest.fixture(scope="session")
def fdf_dir(tmp_path_factory):
    """Path of an FDF-format dataset (train/ + val/, 64x64 crops) built from the real sample photos.

    Built once per test session with `toolkit.data.build.build_dataset` (the code behind `toolkit data build`)
    from every person `toolkit.detect` finds in `toolkit.assets.sample_photos()` (faces down to 12 px, so the
    small pedestrians of vtest.avi count too). Shared by many tests: treat it as read-only.
    """
    from toolkit.assets import sample_photos
    from toolkit.data.build import build_dataset

    out = tmp_path_factory.mktemp("fdf") / "fdf64"
    build_dataset(list(sample_photos()), out, size=FDF_FIXTURE_SIZE, val_fraction=0.1, seed=0, min_face=12,
                  progress=False)
    return out
