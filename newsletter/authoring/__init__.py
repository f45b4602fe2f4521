"""Authoring: an issue from section files, checked and rendered.

Takes in a folder of section files (``issue.yaml`` and Markdown with front
matter) beside a ``publication.yaml``. Hands on a ``render.RenderedIssue``
(MJML compiled once to HTML, the text part, the web copy) made from an
``issue.Issue``, and the message types a send is made of (``message``:
``MessageTemplate``, ``Recipient``, ``Envelope``). Never touches the database.
"""
