import pytest

from newsletter.web import create_app


@pytest.fixture
def app(world):
    """The web app over each module's own ``world`` (``tests.console_world.make_world``)."""
    return create_app(world.settings)
