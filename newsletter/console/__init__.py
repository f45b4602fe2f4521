"""The comms console's library side: drafts, their checks, approval and results.

Nothing here imports Flask; ``newsletter.web.console`` is a thin layer over it.
"""
