"""``spin run NOTEBOOK.ipynb``: the command line, its checks and its exit codes.

Exit codes: 0 every cell ok; 1 a cell failed; 2 bad usage or an unreadable
notebook; 3 ``--max-duration`` exceeded; 4 the runtime cannot be reached or
refuses the token. Each non-zero exit prints one ``spin: <reason>`` line on
stderr. ``main()`` is the console script; tests ``await cli(argv, reactor)``
on their own reactor.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
from typing import Any, Mapping, NoReturn, Sequence, TextIO

import attrs
from autobahn.websocket.util import parse_url
from twisted.internet import ssl
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from .. import __version__
from ..config import ConfigError
from ..outbound import load_trust
from . import admin, backup, notebook
from .notebook import FAILED, CellRun, NotebookError
from .report import Summary, error_line, reporter
from .client import Connection, RequestFailed, RuntimeUnavailable, shown_url
from .runner import EmbeddedRuntime, HomeInUse, NotebookRun

_log = Logger()

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_MAX_DURATION, EXIT_UNAVAILABLE = 0, 1, 2, 3, 4


class UsageError(Exception):
    """Bad command line or environment (exit 2)."""


class _Exit(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


class _Parser(argparse.ArgumentParser):
    # argparse exits the process on errors; in-process callers need a code.
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            sys.stderr.write(message)
        raise _Exit(status)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="spin", description="Run SPIN notebooks headless (CI, cron, oneshot containers).")
    parser.add_argument("--version", action="version", version=f"spin {__version__}")
    commands = parser.add_subparsers(dest="command", parser_class=_Parser)
    run = commands.add_parser(
        "run", help="run a notebook from start to end",
        description="Run NOTEBOOK's cells in order on an embedded runtime (default) or on the "
                    "runtime at --url (token from SPIN_TOKEN or --token-file). Exit codes: 0 all "
                    "cells ok, 1 a cell failed, 2 bad usage or notebook, 3 --max-duration exceeded, "
                    "4 runtime unreachable or token refused.")
    run.add_argument("notebook", metavar="NOTEBOOK", help="the .ipynb file to run")
    run.add_argument("-o", "--output", metavar="PATH", help="write the executed notebook here")
    run.add_argument("--format", choices=("logs", "json"), default="logs",
                     help="logs: human, live (default); json: one document at the end")
    run.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                     help="session variable (JSON value if it parses, else a string); repeatable")
    run.add_argument("--secret", action="append", default=[], metavar="NAME",
                     help="send the environment variable NAME as a secret (masked in outputs); repeatable")
    run.add_argument("--max-duration", metavar="DURATION",
                     help="stop after e.g. 90s, 10m, 1h or plain seconds (default: $MAX_DURATION, else none)")
    run.add_argument("--url", metavar="WS_URL", help="a running runtime, ws(s)://host:port/ws")
    run.add_argument("--token-file", metavar="PATH", help="file holding the runtime's token (default: $SPIN_TOKEN)")
    run.add_argument("--ca-file", metavar="PATH",
                     help="CA certificates (PEM file or c_rehash directory) for a wss:// runtime "
                          "(default: $REQUESTS_CA_BUNDLE, else the system's)")
    run.add_argument("--home", metavar="DIR",
                     help="state directory of the embedded runtime (default: $SPIN_HOME, else a temporary one)")
    run.add_argument("-v", "--verbose", action="store_true", help="also print the runtime's log on stderr")
    admin.add_commands(commands, _Parser)
    backup.add_command(commands)
    return parser


_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?$")


def parse_duration(text: str) -> float:
    """'90s', '10m', '1h', '1h30m', '45' (seconds) -> seconds."""
    match = _DURATION.match(re.sub(r"\s+", "", text.lower()))
    if not match or not any(match.groups()):
        raise UsageError(f"--max-duration {text!r} is not a duration: use e.g. 90s, 10m, 1h or seconds")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise UsageError("--max-duration must be longer than 0 s")
    return total


def parse_params(items: Sequence[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            raise UsageError(f"-p {item!r}: expected NAME=VALUE with NAME an identifier")
        try:
            params[name] = json.loads(raw)
        except ValueError:
            params[name] = raw
    return params


def trust_root(path: str, source: str) -> Any:
    """The CAs to verify a wss:// runtime with: a PEM bundle or a c_rehash directory."""
    if not os.path.exists(path):
        raise UsageError(f"{source} {path} does not exist")
    try:
        _, certificates = load_trust(path)
    except ConfigError:
        raise UsageError(f"{source} {path} holds no usable CA certificates "
                         f"(expected a PEM bundle or a c_rehash directory)") from None
    return ssl.trustRootFromCertificates(certificates)


@attrs.define
class Settings:
    max_duration: float | None
    params: dict[str, Any]
    secrets: dict[str, str] = attrs.field(repr=False)
    token: str | None = attrs.field(repr=False)
    trust: Any = None


def settings_of(args: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    """Everything the command line and the environment ask for, checked; UsageError."""
    duration_text = args.max_duration or environ.get("MAX_DURATION") or ""
    max_duration = parse_duration(duration_text) if duration_text.strip() else None
    secret_values: dict[str, str] = {}
    for name in args.secret:
        if name not in environ:
            raise UsageError(f"--secret {name}: {name} is not set in the environment")
        secret_values[name] = environ[name]
    if args.output and not os.path.isdir(os.path.dirname(os.path.abspath(args.output))):
        raise UsageError(f"-o {args.output}: its directory does not exist")
    token = None
    trust = None
    if args.url:
        try:
            parse_url(args.url)
        except Exception as e:
            raise UsageError(f"--url: {e}") from None
        if args.home:
            raise UsageError("--home is for the embedded runtime; the runtime at --url has its own")
        token = _token(args.token_file, environ)
        ca, source = (args.ca_file, "--ca-file") if args.ca_file else (environ.get("REQUESTS_CA_BUNDLE"), "REQUESTS_CA_BUNDLE")
        if ca and args.url.lower().startswith("wss:"):  # else the system's CAs
            trust = trust_root(ca, source)
    elif args.token_file or args.ca_file:
        raise UsageError("--token-file and --ca-file need --url (the embedded runtime makes its own token)")
    return Settings(max_duration, parse_params(args.param), secret_values, token, trust)


def _token(path: str | None, environ: Mapping[str, str]) -> str:
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                token = f.read().strip()
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"--token-file {path}: {getattr(e, 'strerror', None) or e}") from None
        if not token:
            raise UsageError(f"--token-file {path} is empty")
        return token
    token = environ.get("SPIN_TOKEN", "").strip()
    if not token:
        raise UsageError("--url needs the runtime's token: export SPIN_TOKEN or pass --token-file")
    return token


@attrs.define
class Control:
    """How a signal reaches a run in progress (see main)."""

    run: NotebookRun | None = None
    signal: int | None = None

    def interrupt(self, signum: int) -> None:
        self.signal = signum
        if self.run is not None:
            self.run.stop(f"interrupted by {signal.Signals(signum).name}")


def _cells(n: int) -> str:
    return f"{n} cell" if n == 1 else f"{n} cells"


def _failure_reason(run: CellRun) -> str:
    reason = f"cell {run.number} ({run.type}{': ' + run.headline if run.headline else ''}) {run.status}: {error_line(run)}"
    if (run.error or {}).get("code") == "template_error":
        reason += " (give missing values with -p NAME=VALUE or --secret NAME)"
    return reason


def verdict(nrun: NotebookRun, control: Control, max_text: str) -> tuple[int, str]:
    runs = nrun.runs
    if control.signal is not None:
        return 128 + control.signal, f"interrupted by {signal.Signals(control.signal).name}"
    if nrun.lost is not None and any(r.status is None for r in runs):
        return EXIT_UNAVAILABLE, nrun.lost
    if nrun.stopped is not None and any(r.status != "ok" for r in runs):
        stopped = next((r for r in runs if r.status in FAILED or r.status is None), None)
        where = f" while cell {stopped.number} ({stopped.type}) ran" if stopped else ""
        left = sum(1 for r in runs if r.status in ("skipped", None))
        return EXIT_MAX_DURATION, f"max duration {max_text} exceeded{where}; {_cells(left)} not run"
    failed = next((r for r in runs if r.status != "ok" and r.status != "skipped"), None)
    if failed is not None:
        return EXIT_FAILED, _failure_reason(failed)
    return EXIT_OK, ""


async def cli(argv: Sequence[str] | None, reactor: Any, *, environ: Mapping[str, str] | None = None,
              stdout: TextIO | None = None, stderr: TextIO | None = None,
              control: Control | None = None) -> int:
    """Run the command line to completion on ``reactor``; the exit code."""
    environ = os.environ if environ is None else environ
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as e:
        stderr.write(f"spin: error: {e}\n")
        return EXIT_USAGE
    except _Exit as e:
        return e.status
    if args.command in ("token", "audit", "backup"):
        command = {"token": admin.token_command, "audit": admin.audit_command,
                   "backup": backup.backup_command}[args.command]
        try:
            return await command(args, reactor, environ, stdout, stderr)
        except UsageError as e:
            stderr.write(f"spin: {e}\n")
            return EXIT_USAGE
        except RuntimeUnavailable as e:
            stderr.write(f"spin: {e}\n")
            return EXIT_UNAVAILABLE
    if args.command != "run":
        parser.print_usage(stderr)
        stderr.write("spin: error: a command is required: spin run NOTEBOOK.ipynb, spin token, spin audit or spin backup\n")
        return EXIT_USAGE
    return await run_notebook(args, reactor, environ, stdout, stderr, control or Control())


async def run_notebook(args: argparse.Namespace, reactor: Any, environ: Mapping[str, str],
                       stdout: TextIO, stderr: TextIO, control: Control) -> int:
    started = reactor.seconds()
    report = reporter(args.format, stdout)
    nb = None
    runs: list[CellRun] = []
    runtime: dict[str, Any] = {"mode": "remote" if args.url else "embedded"}

    def finish(code: int, reason: str) -> int:
        output = None
        if nb is not None and args.output:
            try:
                notebook.write(notebook.executed(nb, runs), args.output)
                output = args.output
            except OSError as e:
                reason = "; ".join(filter(None, [reason, f"cannot write {args.output}: {e.strerror or e}"]))
                code = code or EXIT_USAGE
        duration = int(round((reactor.seconds() - started) * 1000))
        report.end(Summary(notebook=args.notebook, exit_code=code, reason=reason, duration_ms=duration,
                           runs=runs, runtime=runtime, output=output))
        if reason:
            stderr.write(f"spin: {reason}\n")
            stderr.flush()
        return code

    try:
        settings = settings_of(args, environ)
        nb = notebook.load(args.notebook)
        runs = notebook.plan(nb)
    except (UsageError, NotebookError) as e:
        return finish(EXIT_USAGE, str(e))

    embedded: EmbeddedRuntime | None = None
    conn: Connection | None = None
    timer = None
    try:
        if args.url:
            url, token, target = args.url, settings.token or "", shown_url(args.url)
            runtime["url"] = target
        else:
            embedded = EmbeddedRuntime(reactor, environ, args.home or environ.get("SPIN_HOME") or None)
            url, token, target = embedded.start(), embedded.token, "an embedded runtime"
            runtime["home"] = None if embedded.temporary else embedded.home
        conn = await Connection.open(reactor, url, token, settings.trust)
        hello = (await conn.request("hello"))["runtime"]
        runtime["version"] = hello.get("version")
        known = set(hello.get("cell_types") or ())
        unknown = next((r for r in runs if r.type not in known), None)
        if unknown is not None:
            return finish(EXIT_USAGE, f"cell {unknown.number} (notebook cell {unknown.index + 1}) has unknown "
                                      f"cell type {unknown.type!r}; this runtime has: {', '.join(sorted(known))}")
        if control.signal is not None:
            return finish(128 + control.signal, f"interrupted by {signal.Signals(control.signal).name}")
        report.begin(args.notebook, runs, target)
        nrun = control.run = NotebookRun(conn, runs, report, reactor)
        max_text = args.max_duration or environ.get("MAX_DURATION") or ""
        if settings.max_duration is not None:
            left = max(0.0, settings.max_duration - (reactor.seconds() - started))
            timer = reactor.callLater(left, nrun.stop, f"the notebook exceeded --max-duration {max_text}: this cell was stopped")
        await nrun.start(f"spin run {os.path.basename(args.notebook)}", settings.params, settings.secrets)
        await nrun.finished
        code, reason = verdict(nrun, control, max_text.strip())
        await nrun.close()
        return finish(code, reason)
    except HomeInUse as e:
        return finish(EXIT_USAGE, str(e))
    except RuntimeUnavailable as e:
        return finish(EXIT_UNAVAILABLE, str(e))
    except RequestFailed as e:
        return finish(EXIT_UNAVAILABLE, f"the runtime refused {e}")
    except Exception as e:  # a bug on either side: still a clear line and the partial notebook
        _log.failure("spin run failed")
        return finish(EXIT_UNAVAILABLE, f"spin failed while talking to the runtime: {type(e).__name__}: {e}")
    finally:
        control.run = None
        if timer is not None and timer.active():
            timer.cancel()
        if conn is not None:
            await conn.close()
        if embedded is not None:
            await embedded.stop()


# -- the console script ------------------------------------------------------------------------


def _begin_logging(verbose: bool) -> None:
    from twisted.logger import (FilteringLogObserver, LogLevel, LogLevelFilterPredicate, globalLogBeginner,
                                textFileLogObserver)

    level = LogLevel.info if verbose else LogLevel.error
    observer: Any = FilteringLogObserver(textFileLogObserver(sys.stderr),  # type: ignore[arg-type]
                                         [LogLevelFilterPredicate(defaultLogLevel=level)])  # type: ignore[list-item]
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """The ``spin`` console script: the asyncio reactor (Python cells need it), then cli()."""
    if "twisted.internet.reactor" not in sys.modules:
        from twisted.internet import asyncioreactor

        asyncioreactor.install()
    from twisted.internet import reactor
    from twisted.internet.task import react

    argv = list(sys.argv[1:] if argv is None else argv)
    control = Control()
    _begin_logging("-v" in argv or "--verbose" in argv)

    async def run(reactor: Any) -> None:
        finished = Deferred.fromCoroutine(cli(argv, reactor, control=control))

        def on_signal() -> Deferred[Any] | None:
            # SIGINT/SIGTERM stop the reactor: first stop the cells (their
            # process groups would outlive us), write what ran, then exit.
            signum = getattr(reactor, "_exitSignal", None)
            if signum is None or finished.called:
                return None
            control.interrupt(signum)
            done: Deferred[None] = Deferred()

            def release(result: Any) -> Any:
                done.callback(None)
                return result

            finished.addBoth(release)
            return done

        reactor.addSystemEventTrigger("before", "shutdown", on_signal)
        raise SystemExit(await finished)

    react(run, [], reactor)


if __name__ == "__main__":
    main()
