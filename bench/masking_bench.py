"""Secret masking: what ``secrets.set`` of a large key costs the reactor, and
shell output throughput while a session has such a secret.

    python bench/masking_bench.py [--reps 5] [--bits 4096] [--mb 100]

1. ``secrets.set`` of a fresh RSA key (PKCS#8 PEM) in a new session, ``--reps``
   times. Meanwhile a second connection sends ``ping`` after ``ping``: the
   longest ping round trip while the set is in progress is how long the
   runtime's reactor could not answer anyone (idle: well under 1 ms).
2. A cell printing ``--mb`` MB (``head | tr | fold``, lines of 99 characters)
   delivered to one client, in a session without secrets and in one with the
   key set: what masking costs per byte of ordinary output.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import asyncioreactor  # noqa: E402

asyncioreactor.install()

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402
from twisted.internet import defer, task  # noqa: E402

from bench.common import BenchClient, Daemon, report, summary  # noqa: E402

PIPELINE = "head -c {n} /dev/zero | tr '\\0' 'x' | fold -w 99"


def pem(bits: int) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


async def stalls_during(client: BenchClient, pinger: BenchClient, sid: str, secret: str) -> tuple[float, float, int]:
    """(reply time, longest ping round trip meanwhile, pings), in ms."""
    done = [False]
    longest = [0.0]
    count = [0]

    async def ping_loop() -> None:
        while not done[0]:
            t = time.perf_counter()
            await pinger.request("ping")
            longest[0] = max(longest[0], (time.perf_counter() - t) * 1000)
            count[0] += 1

    pinging = defer.Deferred.fromCoroutine(ping_loop())
    t = time.perf_counter()
    reply = await client.request("secrets.set", session=sid, secrets={"KEY": secret})
    took = (time.perf_counter() - t) * 1000
    done[0] = True
    await pinging
    assert "error" not in reply, reply
    return took, longest[0], count[0]


async def throughput(client: BenchClient, sid: str, megabytes: int) -> float:
    n = megabytes * 1000 * 1000
    client.stream_chars = 0
    t = time.perf_counter()
    finished = await client.run(sid, {"type": "shell", "source": PIPELINE.format(n=n)})
    took = time.perf_counter() - t
    assert finished["status"] == "ok", finished
    expected = n + (n - 1) // 99  # fold's line breaks
    if client.stream_chars != expected:
        raise SystemExit(f"LOST OUTPUT: client got {client.stream_chars} of {expected}")
    return expected / took / 1e6


async def main(reps: int, bits: int, megabytes: int) -> None:
    daemon = Daemon()
    try:
        url = await daemon.url()
        client = await BenchClient.connect(url)
        pinger = await BenchClient.connect(url)
        idle = []
        for _ in range(200):
            t = time.perf_counter()
            await pinger.request("ping")
            idle.append((time.perf_counter() - t) * 1000)
        keys = [pem(bits) for _ in range(reps)]
        replies, stalls = [], []
        for key in keys:
            sid = (await client.request("session.create", name="bench"))["session"]["id"]
            took, longest, _ = await stalls_during(client, pinger, sid, key)
            replies.append(took)
            stalls.append(longest)
        r, s, i = summary(replies), summary(stalls), summary(idle)
        report(f"secrets.set of a {bits}-bit PEM ({len(keys[0])} chars), new session each time", [
            ("reply time", f"median {r['median']:.1f} ms  max {max(replies):.1f} ms  (n={r['n']})"),
            ("longest ping meanwhile", f"median {s['median']:.1f} ms  max {max(stalls):.1f} ms"),
            ("ping when idle", f"median {i['median']:.2f} ms  p99 {i['p99']:.2f} ms"),
        ])

        plain = (await client.request("session.create", name="plain"))["session"]["id"]
        secret = (await client.request("session.create", name="secret"))["session"]["id"]
        await client.request("secrets.set", session=secret, secrets={"KEY": keys[0]})
        await throughput(client, plain, 10)  # warm up
        rates: dict[str, list[float]] = {"plain": [], "secret": []}
        for _ in range(3):  # interleaved so both see the same machine noise
            rates["plain"].append(await throughput(client, plain, megabytes))
            rates["secret"].append(await throughput(client, secret, megabytes))
        best = {k: max(v) for k, v in rates.items()}
        report(f"shell stdout throughput ({megabytes} MB, best of 3)", [
            ("no secrets", f"{best['plain']:.0f} MB/s"),
            (f"a {bits}-bit PEM secret set", f"{best['secret']:.0f} MB/s ({best['secret'] / best['plain']:.2f}x)"),
        ])
        client.close()
        pinger.close()
    finally:
        await daemon.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--bits", type=int, default=4096)
    parser.add_argument("--mb", type=int, default=100)
    args = parser.parse_args()
    task.react(lambda _: defer.Deferred.fromCoroutine(main(args.reps, args.bits, args.mb)))
