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
import threading
from dataclasses import replace
from pathlib import Path

from werkzeug.serving import make_server

from newsletter.config import settings_from
from newsletter.audience.subscribers import unsubscribe
from newsletter.store.db import session_scope
from newsletter.store.migrate import upgrade
from newsletter.web import create_app
from tests.clicks_world import age_send, click_like_readers, send_through_console
from tests.conftest import free_port
from tests.console_world import EDITOR, PASSWORD, make_world


def main(out: Path) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from tests.web.browser import CHROMEDRIVER, CHROMIUM, CHROMIUM_FLAGS

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        settings = replace(settings_from({"NEWSLETTER_DATA_DIR": str(Path(tmp) / "var")}),
                           secret_keys=("screenshots",), base_url=base_url, web_copy_dir=Path(tmp) / "web")
        upgrade(settings.effective_database_url)
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
        server = make_server("127.0.0.1", port, app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()

        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={Path(tmp) / 'profile'}", "--hide-scrollbars"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        try:
            driver.set_window_size(1280, 900)
            driver.get(f"{base_url}/console/login")
            driver.find_element("id", "email").send_keys(EDITOR)
            driver.find_element("id", "password").send_keys(PASSWORD)
            driver.find_element("css selector", "main button[type=submit]").click()
            driver.find_element("css selector", "table")
            for width, suffix in ((1280, ""), (375, "-375")):
                driver.set_window_size(width, 900)
                driver.get(f"{base_url}/console/issues/{draft_id}/clicks")
                height = driver.execute_script("return document.documentElement.scrollHeight")
                driver.set_window_size(width, min(height + 100, 6000))
                driver.save_screenshot(str(out / f"console-clicks{suffix}.png"))
        finally:
            driver.quit()
            server.shutdown()
    print(f"screenshots written to {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/images"))
