"""Fixtures of the console's tests. Each module has its own ``world``
(``tests.console_world.make_world`` and what the module adds to it): ``app``
serves that world, ``editor`` is a client logged in to it as its editor."""

import pytest

from newsletter.web import create_app
from tests.console_world import EDITOR, client_of


@pytest.fixture
def app(world):
    """The web app over each module's own ``world`` (``tests.console_world.make_world``)."""
    return create_app(world.settings)


@pytest.fixture
def editor(app):
    return client_of(app, EDITOR)
