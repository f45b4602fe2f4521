"""A send worker reuses the memory of its last chunk of messages (sending/heap.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from newsletter.sending.heap import keep_freed_memory

# A chunk as a worker holds it: a hundred 70 KB messages and a copy of each
# (the transport's dot-stuffed payload), all dropped once the chunk is sent.
CHUNKS = textwrap.dedent("""
    import resource, sys
    from newsletter.sending.heap import keep_freed_memory
    if sys.argv[1] == "keep":
        assert keep_freed_memory()
    def chunk():
        messages = [bytes([65 + n % 26]) * 72_000 for n in range(100)]
        payloads = [m + b"\\r\\n.\\r\\n" for m in messages]
        return len(payloads)
    for _ in range(3):
        chunk()  # the first chunks take their memory from the kernel
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        chunk()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def page_faults(mode: str) -> int:
    result = subprocess.run([sys.executable, "-c", CHUNKS, mode], capture_output=True, text=True, check=True)
    return int(result.stdout)


@pytest.mark.skipif(not keep_freed_memory(), reason="not glibc: its malloc cannot be told")
def test_after_the_first_chunks_a_chunk_of_messages_costs_no_page_faults():
    # 20 chunks of 2,000 messages' worth: without the setting glibc hands the
    # memory back after each chunk and faults it in again (tens of thousands).
    assert page_faults("keep") < 200
