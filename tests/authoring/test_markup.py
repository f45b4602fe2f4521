"""Markdown to email-safe HTML and to plain text, and reports of unsafe markup."""

from __future__ import annotations

from newsletter.authoring.markup import to_html, to_text, unsafe_markup


def test_html_keeps_formatting_and_ordinary_links():
    html = to_html("Read **this** and *that* at [our site](https://example.org/news).\n\n- one\n- two\n")
    assert "<strong>this</strong>" in html
    assert "<em>that</em>" in html
    assert '<a href="https://example.org/news">our site</a>' in html
    assert "<ul>\n<li>one</li>\n<li>two</li>\n</ul>" in html


def test_html_links_get_no_target_and_mailto_is_kept():
    html = to_html('<a href="https://example.org" target="_blank">site</a> [write](mailto:team@example.org)')
    assert "target" not in html
    assert 'href="mailto:team@example.org"' in html


def test_html_removes_script_with_its_content():
    html = to_html("Hello\n\n<script>alert('hi')</script>\n\nafter <script>steal()</script> text\n")
    assert "script" not in html
    assert "alert" not in html and "steal" not in html
    assert "Hello" in html and "after" in html


def test_html_removes_event_handlers_and_styles():
    html = to_html('<p onclick="steal()" style="color:red">Hi <img src="https://example.org/a.png" onerror="x()" alt="a"></p>')
    assert "onclick" not in html and "onerror" not in html and "style" not in html
    assert '<img src="https://example.org/a.png" alt="a">' in html


def test_html_removes_javascript_and_data_urls():
    html = to_html(
        "[click](javascript:alert(1)) <a href=\"JaVa&#x09;Script:alert(2)\">two</a> "
        "![x](data:image/png;base64,AAAA)"
    )
    assert "javascript" not in html.lower()
    assert "data:" not in html
    assert ">click</a>" in html and ">two</a>" in html


def test_html_headings_stay_below_the_section_title():
    html = to_html("# Top\n\n## Second\n\n###### Deep\n")
    assert "<h1>" not in html
    assert "<h2>Top</h2>" in html and "<h2>Second</h2>" in html and "<h4>Deep</h4>" in html


def test_text_headings_stand_alone_and_are_underlined():
    text = to_text("Intro.\n\n## Our vision\n\nWords.\n")
    assert text.split("\n") == ["Intro.", "", "Our vision", "==========", "", "Words."]


def test_text_lists_are_marked_and_numbered():
    text = to_text("- apples\n- pears\n\n3. third\n4. fourth\n")
    assert "- apples\n- pears" in text
    assert "3. third\n4. fourth" in text


def test_text_links_show_their_address_unless_the_text_is_the_address():
    text = to_text("See [the plan](https://example.org/plan), <https://example.org/b> or [us](mailto:a@example.org).", width=200)
    assert "the plan (https://example.org/plan)" in text
    assert "https://example.org/b" in text and "(https://example.org/b)" not in text
    assert "us (a@example.org)" in text


def test_text_drops_emphasis_markers_and_wraps_paragraphs():
    words = "**Bold** start " + "word " * 40
    text = to_text(words, width=40)
    assert "*" not in text
    lines = text.split("\n")
    assert lines[0].startswith("Bold start")
    assert len(lines) > 1 and all(len(line) <= 40 for line in lines)


def test_text_never_breaks_a_long_url():
    url = "https://example.org/" + "a" * 80
    text = to_text(f"Go to [this page]({url}) today.", width=40)
    assert url in text


def test_text_wraps_list_items_under_their_marker():
    text = to_text("- " + "long " * 20, width=30)
    lines = text.split("\n")
    assert lines[0].startswith("- long")
    assert all(line.startswith("  long") for line in lines[1:])


def test_text_leaves_out_script_in_raw_html():
    text = to_text("<div>\n<script>alert(1)</script>\nVisible words\n</div>\n")
    assert "alert" not in text
    assert "Visible words" in text


def test_unsafe_markup_reports_each_problem_on_its_line():
    markdown = "\n".join([
        "A clean paragraph.",                                   # 0
        "",                                                     # 1
        "Some text with <a href=\"javascript:go()\">a link</a>",  # 2
        "and on the next line <b onclick=\"x()\">bold</b>.",    # 3
        "",                                                     # 4
        "<script>",                                             # 5
        "alert(1)",                                             # 6
        "</script>",                                            # 7
        "",                                                     # 8
        "[bad](javascript:alert(2))",                           # 9
    ])
    assert unsafe_markup(markdown) == [
        (2, "a javascript: link"),
        (3, "an onclick attribute"),
        (5, "a <script> element"),
        (9, "a javascript: link"),
    ]


def test_unsafe_markup_finds_lines_inside_html_blocks():
    markdown = "Intro\n\n<div>\n<p>fine</p>\n<img src=\"data:image/png;base64,AA\" alt=\"x\">\n</div>\n"
    assert unsafe_markup(markdown) == [(2, "a <div> element"), (4, "a data: image")]


def test_unsafe_markup_is_empty_for_ordinary_markdown():
    markdown = "# Title\n\nText with [a link](https://example.org) and <strong>bold</strong>.\n\n- a\n- b\n"
    assert unsafe_markup(markdown) == []
