"""Screenshots of the console's clicks page for the docs, 1280 and 375 px wide. Not a test:

    .venv/bin/python -m tests.screenshots_clicks docs/images

The app runs on loopback with a SQLite database in a temporary folder. Four issues are
sent through the console to 200 made-up readers; people click (a few links each,
favouring the first ones, over the hours after delivery) and a few mail gateways fetch
every link; the earlier three issues are moved back a month each.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from newsletter.audience.subscribers import unsubscribe
from newsletter.store.db import session_scope
from newsletter.web import create_app
from tests.clicks_world import age_send, click_like_readers, send_through_console
from tests.console_world import EDITOR, make_world


def main(out: Path) -> None:
    from tests.web.browser import photographer, screenshot_settings

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        settings = screenshot_settings(Path(tmp))
        base_url = settings.base_url
        world = make_world(settings, subscribers=200)
        app = create_app(settings)
        draft_id = None
        for months_back, (slug, readers) in zip((3, 2, 1, 0), (("2021-06", .30), ("2021-07", .36), ("2021-08", .27),
                                                                ("2021-09", .42))):
            draft_id, mail = send_through_console(settings, world, app, slug)
            click_like_readers(settings, app, mail, readers=readers, seed=months_back, gateways=12)
            for n in range(months_back + 1):  # a few people leave after each issue
                with session_scope(settings) as session:
                    unsubscribe(session, f"reader{150 + 4 * months_back + n:03d}@example.com")
            if months_back:
                age_send(settings, draft_id, 30 * months_back)
        client = app.test_client()
        for path, views in (("2021-09/", 23), ("2021-09/system-savings/", 9), ("2021-09/health-inequalities/", 5)):
            for _ in range(views):
                client.get(f"/{world.slug}/{path}", headers={"User-Agent": "Mozilla/5.0 Firefox/121.0"})
        app.extensions["newsletter.clicks"].flush()
        with photographer(app, settings, EDITOR, Path(tmp) / "profile") as driver:
            for width, suffix in ((1280, ""), (375, "-375")):
                driver.set_window_size(width, 900)
                driver.get(f"{base_url}/console/issues/{draft_id}/clicks")
                height = driver.execute_script("return document.documentElement.scrollHeight")
                driver.set_window_size(width, min(height + 100, 6000))
                driver.save_screenshot(str(out / f"console-clicks{suffix}.png"))
    print(f"screenshots written to {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/images"))
