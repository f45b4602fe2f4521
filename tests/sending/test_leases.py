"""Each process that sends claims rows under a name of its own."""

from __future__ import annotations

import multiprocessing
import socket

from newsletter.sending import leases
from newsletter.config import settings_from
from newsletter.sending.delivery import Deliverer
from tests.memory_transport import MemoryTransport


def _names_in_child(deliverer: Deliverer, out) -> None:
    out.put((leases.process_identity(), deliverer.identity))


def test_a_forked_child_has_its_own_identity_even_with_a_deliverer_made_before_the_fork(tmp_path):
    # As a Celery prefork pool does: the parent imports and builds, then forks.
    deliverer = Deliverer(settings_from({"NEWSLETTER_DATA_DIR": str(tmp_path)}), MemoryTransport())
    parent = deliverer.identity
    assert parent == leases.process_identity()
    context = multiprocessing.get_context("fork")
    out = context.Queue()
    children = [context.Process(target=_names_in_child, args=(deliverer, out)) for _ in range(2)]
    for child in children:
        child.start()
    names = [out.get(timeout=60) for _ in children]
    for child in children:
        child.join(timeout=60)

    identities = {process for process, _ in names}
    assert len(identities) == 2 and parent not in identities
    assert all(process == claimed for process, claimed in names)
    assert {int(name.split(":")[1]) for name in identities} == {child.pid for child in children}


def test_a_holder_on_this_host_whose_process_is_gone_is_known_at_once():
    host = socket.gethostname()
    context = multiprocessing.get_context("fork")
    child = context.Process(target=lambda: None)
    child.start()
    child.join(timeout=60)
    assert leases.holder_is_gone(f"{host}:{child.pid}:abcd1234/1")
    assert not leases.holder_is_gone(leases.process_identity() + "/1")  # this process: by its lease
    assert not leases.holder_is_gone(f"elsewhere.example.net:{child.pid}:abcd1234/1")  # another host: by its lease
