"""How fast an issue compiles and how fast each recipient's message is built.

    python bench/render.py [--messages 5000] [--reference-messages 300]

Prints the time to load and render the sample issue and one four times its
size, then complete personalised messages per second in this one process:
the fast builder (``MessageTemplate.build``), the same with each recipient's
signed unsubscribe and preferences links made as a send makes them, and the
reference builder (``email.message``). Each figure is the best of three runs,
the one least disturbed by whatever else the machine is doing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from newsletter.config import Settings  # noqa: E402
from newsletter.authoring.content import load_issue  # noqa: E402
from newsletter.authoring.issue import Issue  # noqa: E402
from newsletter.authoring.message import MessageTemplate, Recipient, build_reference, make_message_id, publication_template  # noqa: E402
from newsletter.authoring.render import RenderedIssue, render_issue  # noqa: E402
from newsletter.audience.tokens import preferences_url, unsubscribe_url  # noqa: E402

SAMPLE_ISSUE = ROOT / "examples" / "together-were-better" / "issues" / "2021-09"
RUNS = 3
# A mix like a real list: most names plain, some accented or quoted, some unknown.
NAMES = ["Ann Lee", "Zoë Müller", "Lee, Ann", "", "Siobhán O'Brien", "Raj Patel", "J. R. Smith", "Chloé Dubois"]


def best_of(runs: int, work: Callable[[], object]) -> float:
    """The shortest wall time of ``runs`` calls, in seconds."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def four_times_as_long(issue: Issue) -> Issue:
    """The issue with its sections repeated four times, anchors and slugs kept unique."""
    sections = []
    for copy in range(4):
        for section in issue.sections:
            items = tuple(replace(item, slug=f"{item.slug}-{copy}") for item in section.items)
            sections.append(replace(section, id=f"{section.id}-{copy}", items=items))
    return replace(issue, sections=tuple(sections))


def template_for(rendered: RenderedIssue) -> MessageTemplate:
    issue = rendered.issue
    return publication_template(
        issue.publication, subject=issue.subject, html=rendered.html, text=rendered.text,
        feedback_id=f"1:{issue.publication.slug}:newsletter",
    )


def recipient(settings: Settings, template: MessageTemplate, web_url: str, number: int) -> Recipient:
    subscriber_id = 100_000 + number
    return Recipient(
        email=f"subscriber{number}@example.net",
        name=NAMES[number % len(NAMES)],
        message_id=make_message_id(template.domain, 1, number),
        unsubscribe_url=unsubscribe_url(settings, 1, subscriber_id),
        preferences_url=preferences_url(settings, subscriber_id),
        web_url=web_url,
    )


def per_second(count: int, seconds: float) -> str:
    return f"{count / seconds:>9,.0f} messages/s {seconds / count * 1e6:>8,.0f} µs/message"


def bench_compile(issue: Issue) -> RenderedIssue:
    rendered = render_issue(issue)
    big = four_times_as_long(issue)
    big_rendered = render_issue(big)
    load = best_of(RUNS, lambda: load_issue(SAMPLE_ISSUE))
    one = best_of(RUNS, lambda: render_issue(issue))
    four = best_of(RUNS, lambda: render_issue(big))
    print("compile (load_issue, render_issue: Jinja2 -> MJML -> HTML, text, web copy)")
    print(f"  load sample issue          {load * 1000:8.1f} ms")
    print(f"  render sample issue        {one * 1000:8.1f} ms   HTML {len(rendered.html) / 1024:6.1f} KiB")
    print(f"  render 4x sample issue     {four * 1000:8.1f} ms   HTML {len(big_rendered.html) / 1024:6.1f} KiB")
    return rendered


def bench_messages(rendered: RenderedIssue, count: int, reference_count: int, settings: Settings) -> None:
    template = template_for(rendered)
    web_url = rendered.issue.web_url
    people = [recipient(settings, template, web_url, n) for n in range(count)]
    fast = best_of(RUNS, lambda: [template.build(p) for p in people])
    with_links = best_of(RUNS, lambda: [template.build(recipient(settings, template, web_url, n)) for n in range(count)])
    reference = best_of(RUNS, lambda: [build_reference(template, p) for p in people[:reference_count]])
    size = sum(len(template.build(p)) for p in people[:100]) / 100
    print(f"personalised complete messages, one process (about {size / 1024:.0f} KiB each)")
    print(f"  fast builder               {per_second(count, fast)}")
    print(f"  fast builder + link tokens {per_second(count, with_links)}")
    print(f"  reference (email.message)  {per_second(reference_count, reference)}")
    print(f"  fast / reference           {reference / reference_count / (fast / count):9.1f} x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000, help="messages per fast run")
    parser.add_argument("--reference-messages", type=int, default=300, help="messages per reference run")
    args = parser.parse_args()
    issue = load_issue(SAMPLE_ISSUE)
    rendered = bench_compile(issue)
    with tempfile.TemporaryDirectory() as data_dir:
        settings = Settings(data_dir=Path(data_dir), secret_keys=("bench-key",),
                            base_url="https://newsletter.example.org")
        bench_messages(rendered, args.messages, args.reference_messages, settings)


if __name__ == "__main__":
    main()
