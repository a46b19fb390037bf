"""How long a start takes to rebuild a session document from a long log.

    python bench/document_restore.py [--events 100000]

Fills a store with one session of ``--events`` events, then times
``SessionManager.restore_sync`` (what a start does before it serves):

1. output with a ``cell.set`` every 100 events (a session that ran a lot);
2. every event a ``cell.set`` (an edit-heavy session) after a crash, with
   no snapshot: the whole fold;
3. the start after that one, which loads the snapshot the previous start
   wrote.

Each ``cell.set`` carries a 150-character cell over 50 cell ids; output
events carry 150 characters.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import asyncioreactor  # noqa: E402

asyncioreactor.install()

from twisted.internet import reactor  # noqa: E402

from spinrt.sessions.manager import SessionManager  # noqa: E402
from spinrt.sessions.masking import build_inline  # noqa: E402
from spinrt.sessions.store import EventStore  # noqa: E402
from tests.test_document_store import fill  # noqa: E402
from tests.test_session_unit import ScriptedExecutor  # noqa: E402


def restore(path: str) -> tuple[float, EventStore]:
    store = EventStore(path, reactor)
    manager = SessionManager(store, ScriptedExecutor(), {}, reactor, build_masker=build_inline)
    began = time.monotonic()
    manager.restore_sync()
    return time.monotonic() - began, store


def flush(store: EventStore) -> None:
    """Write what the start queued (the snapshot), as the running daemon would."""
    store.start()
    done = store.drain().addCallback(lambda _: store.close())
    done.addBoth(lambda _: reactor.stop())
    reactor.run()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="doc-bench-")
    mostly_output = os.path.join(home, "a.sqlite3")
    fill(mostly_output, "ss_a", args.events, 100)
    took, store = restore(mostly_output)
    store._conn.close()
    print(f"{args.events} events, 1 in 100 a cell.set:     {took * 1000:8.1f} ms")
    all_edits = os.path.join(home, "b.sqlite3")
    fill(all_edits, "ss_b", args.events, 1)
    took, store = restore(all_edits)
    print(f"{args.events} cell.set events, no snapshot:  {took * 1000:8.1f} ms")
    flush(store)
    took, store = restore(all_edits)
    store._conn.close()
    print(f"the same, the next start (snapshot):     {took * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
