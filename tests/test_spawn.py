"""spinrt.cells.spawn: one exec for a shell cell, in its own session and
directory, with nothing of the daemon's but fds 0-2 (issue 18)."""

from __future__ import annotations

import os
import signal
import tempfile

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.trial import unittest

from spinrt.cells import spawn


class Collect(ProcessProtocol):
    def __init__(self) -> None:
        self.out = b""
        self.err = b""
        self.ended: Deferred = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: object) -> None:
        self.ended.callback(reason.value)  # type: ignore[attr-defined]


def run(source: str, cwd: str, env: dict[str, str] | None = None) -> tuple[Collect, spawn.SessionProcess]:
    p = Collect()
    transport = spawn.spawn_process(reactor, p, "/bin/bash", ["/bin/bash", "-c", source],
                                    env if env is not None else {"PATH": os.environ["PATH"]}, cwd,
                                    {0: "w", 1: "r", 2: "r"})
    return p, transport


def holding(needle: bytes) -> list[object]:
    """The dicts, lists and tuples in this process holding a string or
    bytes value that contains ``needle``. Each is copied in one C call
    before it is read: other threads (a store's, a pool's) may change theirs."""
    import gc

    found = []
    for o in gc.get_objects():
        if isinstance(o, dict):
            values: tuple = tuple(o.values())
        elif isinstance(o, (list, tuple)):
            values = tuple(o)
        else:
            continue
        if any(needle in (v if isinstance(v, bytes) else v.encode("utf-8", "replace"))
               for v in values if isinstance(v, (str, bytes))):
            found.append(o)
    return found


class SpawnTests(unittest.TestCase):
    def setUp(self) -> None:
        if not spawn.available():
            raise unittest.SkipTest("glibc without posix_spawn chdir/setsid")  # the launcher is used then
        self.dir = tempfile.mkdtemp()

    async def test_own_session_directory_fds_env_and_signals(self) -> None:
        for signum in (signal.SIGPIPE, signal.SIGHUP, signal.SIGUSR2):  # SIGPIPE: as in the daemon
            self.addCleanup(signal.signal, signum, signal.signal(signum, signal.SIG_IGN))
        p, transport = run('echo "$$"; ps -o pgid=,sid= -p $$; pwd; ls /proc/$$/fd; '
                           'grep SigIgn /proc/$$/status; echo "$X|$0"; echo err >&2; exit 7',
                           self.dir, {"X": "a b", "PATH": os.environ["PATH"]})
        started = transport.pid
        reason = await p.ended
        lines = p.out.decode().split("\n")
        pid = int(lines[0])
        self.assertEqual(pid, started)
        self.assertEqual(lines[1].split(), [str(pid), str(pid)])  # group and session leader
        self.assertEqual(lines[2], os.path.realpath(self.dir))
        self.assertEqual(lines[3:6], ["0", "1", "2"])  # nothing else of the daemon's is open
        self.assertTrue(lines[6].startswith("SigIgn:"), lines)
        sigign = int(lines[6].split()[1], 16)
        for signum in (signal.SIGPIPE, signal.SIGHUP, signal.SIGUSR2):  # none stays ignored
            self.assertFalse(sigign & (1 << (signum - 1)), (signum, lines[6]))
        self.assertEqual(lines[7], "a b|/bin/bash")
        self.assertEqual(p.err, b"err\n")
        self.assertEqual(reason.exitCode, 7)

    async def test_killpg_ends_the_whole_tree(self) -> None:
        p, transport = run("sleep 60 & echo $!; wait", self.dir)
        while b"\n" not in p.out:
            d: Deferred = Deferred()
            reactor.callLater(0.01, d.callback, None)
            await d
        grandchild = int(p.out)
        os.killpg(transport.pid, signal.SIGKILL)
        await p.ended
        for _ in range(200):
            try:
                os.kill(grandchild, 0)
            except ProcessLookupError:
                break
            d = Deferred()
            reactor.callLater(0.01, d.callback, None)
            await d
        with self.assertRaises(ProcessLookupError):
            os.kill(grandchild, 0)

    def test_a_missing_directory_is_an_oserror_naming_it(self) -> None:
        missing = os.path.join(self.dir, "gone")
        with self.assertRaises(OSError) as caught:
            run("true", missing)
        self.assertEqual(caught.exception.filename, missing)

    def test_a_parent_fd_below_3_is_left_to_the_launcher(self) -> None:
        with self.assertRaises(spawn.Unsupported):
            spawn.spawn("/bin/true", ["/bin/true"], {}, self.dir, {0: 1})

    async def test_nothing_of_a_cells_environment_stays_behind(self) -> None:
        """A cell's variables may be large or hold secrets filled in from
        templates: the spawn encodes them for the child and keeps none of
        them, whether the child starts or the kernel refuses the value
        (E2BIG: one environment string over 128 KiB)."""
        import gc
        import errno

        secret = "s3cr3t-" + os.urandom(8).hex()
        p, _ = run("true", self.dir, {"PATH": os.environ["PATH"], "TOKEN": secret})
        await p.ended

        def refused() -> int | None:
            try:
                run("true", self.dir, {"PATH": os.environ["PATH"], "BIG": "x" * 200_000 + secret})
            except OSError as e:
                return e.errno  # the exception (and the frames it holds) ends here
            return None

        self.assertEqual(refused(), errno.E2BIG)
        gc.collect()
        needle = secret.encode()
        self.assertEqual(holding(needle), [])


    async def test_an_encoded_base_with_a_cells_own_variables(self) -> None:
        """The runtime's environment is encoded once; a cell's variables are
        added at each spawn (one named in both wins) and none of them is kept."""
        import gc

        base = spawn.EncodedEnvironment({"PATH": os.environ["PATH"], "A": "base", "B": "base"})
        secret = "s3cr3t-" + os.urandom(8).hex()
        p, _ = run('echo "$A|$B|${#C}"; env | grep -c "^B="', self.dir, base.with_extra({"B": "cell", "C": secret}))
        await p.ended
        self.assertEqual(p.out, f"base|cell|{len(secret)}\n1\n".encode())
        p, _ = run('echo "$A|$B|${C-unset}"', self.dir, base.with_extra({}))
        await p.ended
        self.assertEqual(p.out, b"base|base|unset\n")
        gc.collect()
        needle = secret.encode()
        self.assertEqual(holding(needle), [])


class LargePieces(unittest.TestCase):
    def test_the_pipe_grows_at_the_first_output_only(self) -> None:
        """A child that prints nothing costs no fcntl; at the first output
        the pipe grows to 1 MiB (F_GETPIPE_SZ, Linux fcntl 1032), so the
        later reads take up to that much each."""
        import fcntl

        from spinrt.cells.shell_protocol import PIPE_SIZE, read_in_large_pieces

        r, w = os.pipe()
        self.addCleanup(os.close, w)
        self.addCleanup(os.close, r)
        os.set_blocking(r, False)
        got: list[bytes] = []

        class Reader:
            fd = r
            dataReceived = got.append

        reader = Reader()
        read_in_large_pieces(reader)
        default = fcntl.fcntl(r, 1032)
        self.assertIsNone(reader.doRead())  # nothing written yet: EAGAIN
        self.assertEqual(fcntl.fcntl(r, 1032), default)
        os.write(w, b"x" * 1000)
        self.assertIsNone(reader.doRead())
        self.assertEqual(got, [b"x" * 1000])
        self.assertEqual(fcntl.fcntl(r, 1032), self.allowed_size(default))

    def allowed_size(self, default: int) -> int:
        """What F_SETPIPE_SZ of PIPE_SIZE gives a new pipe here: PIPE_SIZE,
        or the default where pipe-max-size (or the user's pipe quota) is
        lower and the process may not go over it."""
        import fcntl

        from spinrt.cells.shell_protocol import PIPE_SIZE

        r, w = os.pipe()
        try:
            return fcntl.fcntl(r, 1031, PIPE_SIZE)
        except OSError:
            return default
        finally:
            os.close(r)
            os.close(w)
