"""Shell cells: round trip of `true` and stdout throughput, each against its floor.

    python bench/shell_bench.py [--reps 300] [--mb 200] [--rounds 3] [--cell-mb 50] [--no-jupyter]

1. Round trip: ``cell.run`` of ``true`` until ``run.finished`` over the
   WebSocket, against a bare ``reactor.spawnProcess`` of ``bash -c true`` in
   this process (what the runtime cannot avoid doing).
2. Throughput: a cell printing N MB (PIPELINE) delivered to one client,
   against reading the same pipeline's stdout directly with a ProcessProtocol;
   beside it Jupyter Server (iopub limits lifted) running the same pipeline
   as a ``!`` command in a cell (at most --cell-mb MB: IPython's ``!`` takes
   time that grows with the square of the output) and typed into a Jupyter
   terminal. The four in turn, --rounds times; medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import asyncioreactor  # noqa: E402

asyncioreactor.install()

from twisted.internet import defer, reactor, task  # noqa: E402
from twisted.internet.protocol import ProcessProtocol  # noqa: E402

from bench.common import (JUPYTER_LIFTED, PIPELINE, BenchClient, Daemon, JupyterServer, KernelChannels,  # noqa: E402
                          Terminal, add_compete_option, add_jupyter_options, aio, competing, pipeline_bytes, report,
                          require_jupyter_server, summary)


class Drain(ProcessProtocol):
    def __init__(self) -> None:
        self.bytes = 0
        self.done: defer.Deferred[None] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.bytes += len(data)

    def processEnded(self, reason: object) -> None:
        self.done.callback(None)


async def bare_spawn(argv: list[str]) -> Drain:
    drain = Drain()
    reactor.spawnProcess(drain, argv[0], argv, env=dict(os.environ), path=os.getcwd())
    await drain.done
    return drain


async def throughput(daemon: Daemon, client: BenchClient, sid: str, args: argparse.Namespace) -> None:
    """--rounds rounds of: the pipe read directly, ours, Jupyter's `!` cell, Jupyter's
    terminal (interleaved, so each sees the same machine noise); medians."""
    n = args.mb * 1000 * 1000
    script = PIPELINE.format(n=n)
    full = pipeline_bytes(n)
    # The `!` cell's size: IPython's `!` slows down with the square of its output
    # (README), so by default it runs at most 50 MB.
    cell_n = min(args.cell_mb, args.mb) * 1000 * 1000
    size = {"cell": cell_n}
    server = cell = term = None
    if args.jupyter:
        # The terminal's shell without the login scripts (terminado runs `$SHELL -l`):
        # a machine's ~/.bashrc is not what is measured, and one here waits 60 s on a lock.
        server = JupyterServer(args.jupyter_python, [*JUPYTER_LIFTED, '--ServerApp.terminado_settings='
                                                     '{"shell_command": ["/bin/bash", "--noprofile", "--norc"]}'])
    try:
        if server is not None:
            await aio(server.ready())
            cell = await KernelChannels.connect(server.channels_url(await aio(server.start_kernel())))
            await cell.execute("x = 1")
            term = await Terminal.connect(server.terminal_url(await aio(server.start_terminal())))
            await term.run("true")  # the shell is up and reading
        rates: dict[str, list[float]] = {"pipe": [], "ours": [], "cell": [], "terminal": []}
        got: dict[str, list[int]] = {"cell": [], "terminal": []}  # 'x' characters received
        rss_before = daemon.rss_mb()
        peak = [rss_before]
        sampler = task.LoopingCall(lambda: peak.__setitem__(0, max(peak[0], daemon.rss_mb())))
        cpu: list[float] = []
        load = [os.getloadavg()[0]]
        for _ in range(args.rounds):
            t = time.perf_counter()
            direct = await bare_spawn(["/bin/bash", "-c", script])
            rates["pipe"].append(direct.bytes / (time.perf_counter() - t) / 1e6)
            assert direct.bytes == full, (direct.bytes, full)

            client.stream_chars = 0
            sampler.start(0.1)
            cpu_daemon = daemon.cpu_s()
            t = time.perf_counter()
            finished = await client.run(sid, {"type": "shell", "source": script})
            rates["ours"].append(client.stream_chars / (time.perf_counter() - t) / 1e6)
            cpu.append(daemon.cpu_s() - cpu_daemon)
            sampler.stop()
            assert finished["status"] == "ok", finished
            if client.stream_chars != full:
                raise SystemExit(f"LOST OUTPUT: client got {client.stream_chars} of {full}")
            if cell is None:
                continue

            # What a Jupyter user types: a `!` command in a cell (IPython runs it under a pty).
            t = time.perf_counter()
            await cell.execute("!" + PIPELINE.format(n=cell_n))
            rates["cell"].append(cell.xs * pipeline_bytes(cell_n) / cell_n / (time.perf_counter() - t) / 1e6)
            got["cell"].append(cell.xs)
            # A Jupyter terminal: the same pipeline typed into its shell ('\170' is 'x'
            # for tr, so the echoed command line holds no 'x').
            await term.settle()
            t = time.perf_counter()
            await term.run(script.replace("'x'", "'\\170'"))
            rates["terminal"].append(term.xs * full / n / (time.perf_counter() - t) / 1e6)
            got["terminal"].append(term.xs)
        load.append(os.getloadavg()[0])
    finally:
        if cell is not None:
            cell.close()
        if term is not None:
            term.close()
        if server is not None:
            server.stop()

    pipe = statistics.median(rates["pipe"])

    def line(name: str) -> str:
        rate = statistics.median(rates[name])
        text = f"{rate:.0f} MB/s, {rate / pipe:.2f}x the pipe (rounds: {', '.join(f'{r:.0f}' for r in rates[name])})"
        if name in got:
            want = size.get(name, n)
            short = [want - x for x in got[name] if x != want]
            text += (f"; INCOMPLETE in {len(short)} rounds, up to {max(short) / 1e6:.2f} MB missing" if short
                     else "; every character")
        return text

    rows = [("read the pipe directly", line("pipe")),
            ("spinrt: a shell cell, one client", line("ours") + "; every character")]
    if cell is not None:
        rows += [(f"Jupyter Server: `!` in a cell ({cell_n // 1000000} MB)", line("cell")),
                 ("Jupyter Server: a terminal", line("terminal"))]
    rows += [("spinrt's RSS", f"{rss_before:.0f} MB before, {peak[0]:.0f} MB peak"),
             ("spinrt's CPU per run (median)", f"{statistics.median(cpu):.2f} s"),
             ("load average (1 min) before / after", " / ".join(f"{x:.1f}" for x in load))]
    rounds = f", median of {args.rounds} rounds" if args.rounds > 1 else ""
    report(f"stdout throughput: `{script}` ({args.mb} MB) to one client{rounds}", rows)


async def main(args: argparse.Namespace) -> None:
    daemon = Daemon()
    try:
        url = await daemon.url()
        client = await BenchClient.connect(url)
        sid = (await client.request("session.create", name="bench"))["session"]["id"]
        bash = "/bin/bash"
        for _ in range(20):  # warm both paths
            await client.run(sid, {"type": "shell", "source": "true"})
            await bare_spawn([bash, "-c", "true"])
        ours, bare, sub = [], [], []
        load = [os.getloadavg()[0]]
        for _ in range(args.reps):  # interleaved so all three see the same machine noise
            t = time.perf_counter()
            finished = await client.run(sid, {"type": "shell", "source": "true"})
            ours.append((time.perf_counter() - t) * 1000)
            assert finished["status"] == "ok", finished
            t = time.perf_counter()
            await bare_spawn([bash, "-c", "true"])
            bare.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            subprocess.run([bash, "-c", "true"], check=True)
            sub.append((time.perf_counter() - t) * 1000)
        load.append(os.getloadavg()[0])
        o, b, s = summary(ours), summary(bare), summary(sub)
        report("shell round trip (`true`)", [
            ("spin-runtime cell.run -> run.finished", f"median {o['median']:.2f} ms  p99 {o['p99']:.2f} ms  (n={o['n']})"),
            ("bare spawnProcess(bash -c true)", f"median {b['median']:.2f} ms  p99 {b['p99']:.2f} ms"),
            ("subprocess.run(bash -c true)", f"median {s['median']:.2f} ms  p99 {s['p99']:.2f} ms"),
            ("ratio to spawnProcess (median)", f"{o['median'] / b['median']:.2f}x  (target <= 1.5x)"),
            ("ratio to subprocess.run (median)", f"{o['median'] / s['median']:.2f}x"),
            ("load average (1 min) before / after", " / ".join(f"{x:.1f}" for x in load)),
            ("a CPU-bound process beside it (--compete)", "yes" if args.compete else "no"),
        ])
        if args.mb > 0:
            await throughput(daemon, client, sid, args)
        client.close()
    finally:
        await daemon.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=300)
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds (median)")
    parser.add_argument("--cell-mb", type=int, default=50,
                        help="MB of Jupyter's `!` cell, at most --mb (its time grows with the square of the size)")
    add_jupyter_options(parser, "the throughput")
    add_compete_option(parser)
    args = parser.parse_args()
    if args.jupyter and args.mb > 0:
        require_jupyter_server(args.jupyter_python)
    with competing(args.compete):
        task.react(lambda _: defer.Deferred.fromCoroutine(main(args)))
