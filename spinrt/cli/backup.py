"""``spin backup FILE``: a consistent copy of the runtime's store, while it runs.

SQLite's online backup API (``sqlite3.Connection.backup``) copies the store
through a read transaction in one step, so the copy is the database as it
was at one instant, committed writes only, whatever the runtime writes
meanwhile (in WAL mode readers do not stop writers). The copy is checked
(``PRAGMA integrity_check``), written next to FILE and renamed into place,
mode 0600 (it holds the sessions' history). FILE must not exist.

Restoring: stop the runtime, put the copy in place of
``SPIN_HOME/var/spin.sqlite3`` and delete ``spin.sqlite3-wal`` and
``spin.sqlite3-shm`` next to it, start the runtime (docs/teams.rst).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
from typing import Any, Mapping, TextIO

from twisted.internet.threads import deferToThreadPool

STORE = os.path.join("var", "spin.sqlite3")


def add_command(commands: Any) -> None:
    backup = commands.add_parser("backup", help="copy the runtime's store consistently, while it runs",
                                 description="Copy SPIN_HOME/var/spin.sqlite3 to FILE with SQLite's online backup "
                                             "API: a consistent copy even while the runtime writes. Run it where "
                                             "SPIN_HOME is (in the container, on the host).")
    backup.add_argument("file", metavar="FILE", help="where to write the copy (must not exist)")
    backup.add_argument("--home", metavar="DIR", help="the runtime's state directory (default: $SPIN_HOME, "
                                                     "else /opt/spin)")


def copy_store(source: str, target: str) -> dict[str, Any]:
    """Back ``source`` up into ``target`` (new file); what it holds. Blocking: run in a thread."""
    partial = target + ".partial"
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        dst = sqlite3.connect(partial)
        try:
            src.backup(dst)  # one step: a single read transaction, so one instant
            (check,) = dst.execute("PRAGMA integrity_check").fetchone()
            if check != "ok":
                raise sqlite3.DatabaseError(f"the copy fails its integrity check: {check}")
            facts = {
                "schema": dst.execute("PRAGMA user_version").fetchone()[0],
                "sessions": dst.execute("SELECT COUNT(*) FROM sessions").fetchone()[0],
                "events": dst.execute("SELECT COUNT(*) FROM events").fetchone()[0],
            }
        finally:
            dst.close()
        os.replace(partial, target)
    except BaseException:
        try:
            os.unlink(partial)
        except OSError:
            pass
        raise
    finally:
        src.close()
    facts["bytes"] = os.path.getsize(target)
    return facts


async def backup_command(args: argparse.Namespace, reactor: Any, environ: Mapping[str, str],
                         stdout: TextIO, stderr: TextIO) -> int:
    from .main import EXIT_USAGE

    home = os.path.abspath(os.path.expanduser(args.home or environ.get("SPIN_HOME") or "/opt/spin"))
    source = os.path.join(home, STORE)
    target = os.path.abspath(args.file)
    if not os.path.isfile(source):
        stderr.write(f"spin: no store at {source}: give the runtime's --home or SPIN_HOME\n")
        return EXIT_USAGE
    if os.path.exists(target):
        stderr.write(f"spin: {target} exists; a backup never overwrites a file\n")
        return EXIT_USAGE
    if not os.path.isdir(os.path.dirname(target)):
        stderr.write(f"spin: the directory of {target} does not exist\n")
        return EXIT_USAGE
    try:
        facts = await deferToThreadPool(reactor, reactor.getThreadPool(), copy_store, source, target)
    except (sqlite3.Error, OSError) as e:
        stderr.write(f"spin: cannot back up {source}: {e}\n")
        return 1
    stderr.write(f"spin: backed up {source} to {target}: {facts['sessions']} sessions, {facts['events']} events, "
                 f"{facts['bytes'] / 1048576:.1f} MiB (schema {facts['schema']})\n")
    return 0
