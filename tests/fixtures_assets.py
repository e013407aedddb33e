"""Session fixtures for the real assets (models + sample photos), fetched once per test run."""

import pytest


@pytest.fixture(scope="session")
def assets():
    """name -> Path of every asset (models, photos, lfw crops); fetched into $TOOLKIT_HOME once."""
    from toolkit import assets as _assets

    return _assets.fetch(progress=False)


@pytest.fixture(scope="session")
def sample_photos(assets):
    """The real full-size sample photos (astronaut, obama*, biden, messi5, vtest frames)."""
    from toolkit import assets as _assets

    return _assets.sample_photos()
