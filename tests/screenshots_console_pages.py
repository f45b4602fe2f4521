"""Screenshots of the console's publication, list and picture pages for the docs. Not a test;
run it after changing how they look:

    .venv/bin/python -m tests.screenshots_console_pages docs/images

It runs the app on loopback with a SQLite database in a temporary folder, adds a
picture and a list through the console's own forms, and photographs the pages in
headless Chromium (the publication's form with a faint text colour typed, so the
contrast check has something to say).
"""

from __future__ import annotations

import io
import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

from newsletter.web import create_app
from tests.console_world import ADMIN, log_in, make_world, post


def chart() -> bytes:
    picture = Image.new("RGB", (480, 300), "#ffffff")
    draw = ImageDraw.Draw(picture)
    for n, height in enumerate((220, 180, 140, 90)):
        draw.rectangle((40 + n * 110, 280 - height, 120 + n * 110, 280), fill="#005eb8" if n % 2 == 0 else "#41b6e6")
    out = io.BytesIO()
    picture.save(out, "PNG")
    return out.getvalue()


def main(out: Path) -> None:
    from tests.web.browser import photographer, screenshot_settings

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        settings = screenshot_settings(Path(tmp))
        base_url = settings.base_url
        world = make_world(settings, subscribers=5)
        app = create_app(settings)
        admin = app.test_client()
        log_in(admin, ADMIN)
        library = f"/console/pictures?publication={world.slug}"
        post(admin, "/console/pictures", {"publication": world.slug, "alt": "Bar chart: doses given each month",
                                          "image": (io.BytesIO(chart()), "doses.png")},
             page=library, content_type="multipart/form-data")
        new_list = f"/console/lists/new?publication={world.slug}"
        post(admin, "/console/lists/new", {"publication": world.slug, "slug": "staff", "name": "Staff news",
                                           "description": "News for everyone who works in the partnership."},
             page=new_list)
        with photographer(app, settings, ADMIN, Path(tmp) / "profile") as driver:
            driver.set_window_size(1280, 1700)
            driver.get(f"{base_url}/console/publications/{world.slug}/edit")
            field = driver.find_element("id", "f-colours-primary")
            field.clear()
            field.send_keys("#41b6e6")  # too light for white text on the band: the check says so
            driver.execute_script("window.scrollTo(0, 0)")
            driver.save_screenshot(str(out / "console-publication.png"))
            driver.set_window_size(1280, 900)
            driver.get(f"{base_url}/console/lists/{world.slug}/staff")
            driver.save_screenshot(str(out / "console-list.png"))
            driver.set_window_size(1280, 1150)
            driver.get(f"{base_url}{library}")
            driver.save_screenshot(str(out / "console-pictures.png"))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/images"))
