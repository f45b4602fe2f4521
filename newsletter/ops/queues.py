"""Queue names: the Procfile's worker lines consume exactly these (a test checks)."""

CONTROL = "control"  # the beat tick: start due sends, re-enqueue, finish
SEND = "send"  # one task per batch of recipients

ALL = (CONTROL, SEND)
