"""The pre-send size check measures the HTML as a send makes it: with counted links, longer."""

from __future__ import annotations

from dataclasses import replace

from newsletter.authoring.checks import GMAIL_CLIP_BYTES, check_size, html_as_sent
from newsletter.authoring.content import load_issue
from newsletter.authoring.render import render_issue
from newsletter.authoring.sending_block import SendingBlock
from tests.conftest import SAMPLE_ISSUE


def test_the_size_check_sees_the_longer_links_of_a_publication_that_counts_clicks():
    issue = load_issue(SAMPLE_ISSUE)
    assert issue.publication.sending.clicks == "aggregate"
    rendered = render_issue(issue)
    counted = html_as_sent(issue, rendered)
    assert counted.count("https://newsletter.example.org/c/") == 15 and len(counted) > len(rendered.html) + 1000

    plain = replace(issue, publication=replace(issue.publication, sending=SendingBlock()))
    assert html_as_sent(plain, rendered) == rendered.html


def test_links_that_fit_as_written_can_be_clipped_once_counted():
    links = "".join(f'<p><a href="https://example.org/{n:04d}">Item {n}</a></p>' for n in range(700))
    html = f"<html><body>{links}<a href=\"%%unsubscribe_url%%\">Unsubscribe</a></body></html>"
    from newsletter.authoring.counted_links import rewrite

    counted, _, _ = rewrite(html, "", keys=("k",), base_url="https://newsletter.example.org", send_id=10**9)
    assert len(html) < GMAIL_CLIP_BYTES - 30 * 1024
    assert check_size(html) == []
    assert any("clips" in p.message for p in check_size(counted))
