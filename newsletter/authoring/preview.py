"""The live preview of an issue folder: the email and the web copy side by side.

``newsletter preview FOLDER`` serves a page on loopback with two frames, the
email as a sample reader gets it and the issue's web copy. A watcher
re-renders whenever a file in the folder (or the templates folder) changes;
the page polls ``/version`` and reloads itself. When the issue cannot be
rendered (bad YAML, a missing section file) the page shows the problems, with
their file and line, instead of the server stopping: the editor fixes the file
and the issue comes back.
"""

from __future__ import annotations

import html
import mimetypes
import shutil
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from newsletter.authoring import placeholders
from newsletter.authoring.build import SAMPLE_READER
from newsletter.authoring.checks import check_issue
from newsletter.authoring.content import load_issue
from newsletter.errors import InputError, Problem, in_reading_order
from newsletter.authoring.render import RenderedIssue, render_issue


class PreviewServer:
    """An HTTP server on 127.0.0.1 plus the watcher that keeps its rendering current."""

    def __init__(self, folder: Path, templates_dir: Path | None = None, port: int = 8025,
                 on_refresh: Callable[[PreviewState], None] | None = None):
        self.state = PreviewState(folder, templates_dir, on_refresh)
        self.state.refresh()
        try:
            self._http = ThreadingHTTPServer(("127.0.0.1", port), preview_handler(self.state))
        except OSError as exc:
            raise InputError(Problem("--port", f"cannot serve on 127.0.0.1:{port} ({exc.strerror})",
                                     "another preview may be running there: stop it or give another --port")) from None
        self._stop = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_port}/"

    def serve_forever(self) -> None:
        """Serve and watch until shutdown() (or Ctrl-C in the caller)."""
        watcher = threading.Thread(target=self.state.watch, args=(self._stop,), daemon=True)
        watcher.start()
        try:
            self._http.serve_forever()
        finally:
            self._stop.set()
            self._http.server_close()
            watcher.join(timeout=5)

    def shutdown(self) -> None:
        """Stop serve_forever() from another thread."""
        self._http.shutdown()


class PreviewState:
    """The latest rendering of the issue, or the problems that stopped it."""

    def __init__(self, folder: Path, templates_dir: Path | None,
                 on_refresh: Callable[[PreviewState], None] | None = None):
        self.folder, self.templates_dir = folder, templates_dir
        self.on_refresh = on_refresh
        self.version = 0
        self.rendered: RenderedIssue | None = None
        self.problems: list[Problem] = []
        self.lock = threading.Lock()
        self.watching = threading.Event()  # set once edits are seen: one made before is not

    def refresh(self) -> None:
        try:
            issue = load_issue(self.folder)
            rendered = render_issue(issue, self.templates_dir)
            rendered_problems = check_issue(issue, rendered)
        except InputError as exc:
            rendered, rendered_problems = None, exc.problems
        except Exception as exc:  # noqa: BLE001 - the preview shows it rather than dying
            rendered, rendered_problems = None, [Problem(str(self.folder), f"{type(exc).__name__}: {exc}")]
        with self.lock:
            self.rendered, self.problems = rendered, in_reading_order(rendered_problems)
            self.version += 1

    def watch(self, stop: threading.Event) -> None:
        import watchfiles

        folders = [self.folder] + ([self.templates_dir] if self.templates_dir else [])
        # The watches are in place before the first answer, a change or half a second
        # of quiet; from then on no edit is missed.
        for changes in watchfiles.watch(*folders, stop_event=stop, yield_on_timeout=True, rust_timeout=500):
            self.watching.set()
            if not changes:
                continue
            self.refresh()
            if self.on_refresh:
                self.on_refresh(self)

    def email_html(self) -> str:
        """The email as the sample reader sees it, pictures taken from the local web copy."""
        return sample_email_html(self.rendered, "/web/")


def sample_email_html(rendered: RenderedIssue, web_url: str) -> str:
    """The email as the sample reader gets it, with the issue's web address (where its
    pictures are) replaced by ``web_url``: the preview's, or a folder's file:// URL."""
    values = {"name": SAMPLE_READER.name, "email": SAMPLE_READER.email, "web_url": web_url,
              "unsubscribe_url": SAMPLE_READER.unsubscribe_url,
              "preferences_url": SAMPLE_READER.preferences_url}
    filled = placeholders.fill(rendered.html, values, escape_html=True)
    return filled.replace(rendered.issue.web_url, web_url)


def preview_handler(state: PreviewState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server name
            path = self.path.split("?", 1)[0]
            with state.lock:
                if path == "/":
                    self._send(200, _shell_page(state))
                elif path == "/version":
                    self._send(200, str(state.version), "text/plain")
                elif state.rendered is None:
                    self._send(200, _problems_page(state.problems))
                elif path == "/email":
                    self._send(200, state.email_html())
                elif path.startswith("/web/"):
                    self._send_web(path.removeprefix("/web/"))
                else:
                    self._send(404, "Not found", "text/plain")

        def _send_web(self, relative: str) -> None:
            rendered = state.rendered
            page = relative + "index.html" if relative == "" or relative.endswith("/") else relative
            if page in rendered.web_pages:
                self._send(200, rendered.web_pages[page])
            elif relative in rendered.images:
                kind = mimetypes.guess_type(relative)[0] or "application/octet-stream"
                self._send(200, rendered.images[relative].read_bytes(), kind)
            else:
                self._send(404, "Not in this issue's web copy (the archive is written by `newsletter build`)", "text/plain")

        def _send(self, status: int, body: str | bytes, kind: str = "text/html") -> None:
            data = body.encode("utf-8") if isinstance(body, str) else body
            self.send_response(status)
            self.send_header("Content-Type", f"{kind}; charset=utf-8" if kind.startswith("text/") else kind)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - quiet: one line per change is enough
            pass

    return Handler


# Polls /version and reloads the page when the issue was re-rendered.
_RELOAD_SCRIPT = """
<script>
let seen = null;
setInterval(async () => {
  try {
    const version = await (await fetch('/version')).text();
    if (seen !== null && version !== seen) location.reload();
    seen = version;
  } catch (e) {}
}, 1000);
</script>"""


def _shell_page(state: PreviewState) -> str:
    title = html.escape(state.rendered.issue.title if state.rendered else str(state.folder))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Preview: {title}</title>
<style>
  body {{ margin: 0; font-family: sans-serif; }}
  header {{ padding: .5rem 1rem; background: #eee; }}
  .panes {{ display: flex; height: calc(100vh - 3rem); }}
  .panes section {{ flex: 1; display: flex; flex-direction: column; }}
  .panes h2 {{ font-size: 1rem; margin: .25rem 1rem; }}
  iframe {{ flex: 1; border: 1px solid #ccc; width: 100%; }}
  .error {{ color: #b00; }} .warning {{ color: #a60; }}
</style></head>
<body>
<header><strong>Preview: {title}</strong> (refreshes when a file changes)</header>
{_problems_list(state.problems)}
<div class="panes">
  <section><h2>Email (as a sample reader gets it)</h2><iframe src="/email" title="Email"></iframe></section>
  <section><h2>Web copy</h2><iframe src="/web/" title="Web copy"></iframe></section>
</div>
{_RELOAD_SCRIPT}
</body></html>"""


def _problems_list(problems: list[Problem]) -> str:
    if not problems:
        return ""
    items = "".join(f'<li class="{p.severity}">{html.escape(str(p))}</li>' for p in problems)
    return f"<ul>{items}</ul>"


def _problems_page(problems: list[Problem]) -> str:
    return f"<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>Problems</title>" \
           f"<p>The issue could not be rendered:</p>{_problems_list(problems)}</html>"


def write_sample_email(rendered: RenderedIssue, folder: Path) -> Path:
    """The sample reader's email as ``folder``/email.html with its pictures beside it,
    for a browser to open from disk (screenshots, accessibility tests)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, path in rendered.images.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, folder / name)
    page = folder / "email.html"
    page.write_text(sample_email_html(rendered, "./"), encoding="utf-8")
    return page
