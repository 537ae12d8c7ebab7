#!/usr/bin/env python3
"""Set-up work of bench/run, done before the measured window: many HTTP calls
over a few keep-alive connections (asyncio, standard library only).

  loader.py key PORT ADMIN_TOKEN USER            prints a new API key of USER
  loader.py sessions PORT KEY N OUT [-c C]       creates N sessions, their ids to OUT
  loader.py activate PORT KEY IDS OUT [-c C] [--run R] [--json LOAD]
                                                 one turn on every session of IDS (its first
                                                 column), "id sent acked" per session to OUT
  loader.py owners PORT ADMIN_TOKEN IDS OUT      "id node" per session (GET /admin/v1/sessions)
  loader.py chains PORT KEY N OUT EXPECT [-c C] [--run R]
                                                 starts N response chains (POST /v1/responses
                                                 with no previous response: a new conversation
                                                 each); "session response-id" per chain to OUT,
                                                 "id sent acked" per session to EXPECT
  loader.py probe PORT N [-c C] [--stream] [--content TEXT]
                                                 N chat completions straight at the mock, C at
                                                 a time; prints {"p50_ms", "p99_ms", ...} JSON

Every command exits non-zero when a call fails (activate: when any turn is not
answered 200), so the driver never measures on a half-made set-up."""
import argparse
import asyncio
import json
import sys
import time


class Conn:
    """One HTTP/1.1 keep-alive connection to 127.0.0.1:port."""

    def __init__(self, port):
        self.port = port
        self.reader = self.writer = None

    async def call(self, method, path, body=b"", headers=None):
        """(status, headers with lower-case names, body bytes); reconnects when needed."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        head = "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n" % (
            method, path, len(body))
        for k, v in (headers or {}).items():
            head += "%s: %s\r\n" % (k, v)
        self.writer.write(head.encode() + b"\r\n" + body)
        status_line, hdrs = await self._head()
        status = int(status_line.split()[1])
        if hdrs.get("transfer-encoding", "").lower() == "chunked":
            data = await self._chunked()
        else:
            data = await self.reader.readexactly(int(hdrs.get("content-length", "0")))
        if hdrs.get("connection", "").lower() == "close":
            self.close()
        return status, hdrs, data

    async def _head(self):
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        hdrs = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                hdrs[k.strip().lower()] = v.strip()
        return lines[0], hdrs

    async def _chunked(self):
        out = b""
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")
                return out
            out += await self.reader.readexactly(size)
            await self.reader.readexactly(2)

    def close(self):
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def run_all(port, items, concurrency, work):
    """Runs work(conn, item) for every item on `concurrency` connections."""
    queue = list(reversed(items))

    async def worker():
        conn = Conn(port)
        try:
            while queue:
                await work(conn, queue.pop())
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(items))))))


def fail(what):
    sys.exit("loader.py: " + what)


def read_ids(path):
    with open(path) as f:
        return [line.split()[0] for line in f if line.strip()]


def json_headers(bearer):
    return {"Authorization": "Bearer " + bearer, "Content-Type": "application/json"}


def cmd_key(a):
    async def go():
        conn = Conn(a.port)
        status, _, body = await conn.call("POST", "/admin/v1/api-keys",
                                          json.dumps({"user": a.user}).encode(),
                                          json_headers(a.token))
        conn.close()
        if status != 201:
            fail("creating an API key: %d %s" % (status, body[:200]))
        print(json.loads(body)["api_key"])

    asyncio.run(go())


def cmd_sessions(a):
    ids = []

    async def one(conn, _):
        status, _, body = await conn.call("POST", "/v1/sessions", b"{}", json_headers(a.key))
        if status != 201:
            fail("creating a session: %d %s" % (status, body[:200]))
        ids.append(json.loads(body)["id"])

    t0 = time.monotonic()
    asyncio.run(run_all(a.port, list(range(a.n)), a.concurrency, one))
    with open(a.out, "w") as f:
        f.writelines(i + "\n" for i in ids)
    dt = time.monotonic() - t0
    print("created %d sessions in %.1f s (%.0f/s)" % (len(ids), dt, len(ids) / dt), file=sys.stderr)


def histogram_key(us):
    """The bucket of bench/wrk/turn.lua: exact below 10 ms, 4 significant digits above."""
    v, scale = int(us), 1
    while v >= 10000 * scale:
        scale *= 10
    return v - v % scale


def cmd_activate(a):
    ids = read_ids(a.ids)
    failed, hist = {}, {}

    async def one(conn, sid):
        body = json.dumps({"content": "bench activation of " + sid,
                           "client_message_id": "%s-activate" % a.run}).encode()
        t0 = time.perf_counter()
        status, _, data = await conn.call("POST", "/v1/sessions/%s/messages" % sid, body,
                                          json_headers(a.key))
        if status != 200:
            failed[sid] = "%d %s" % (status, data[:200])
            return
        k = histogram_key((time.perf_counter() - t0) * 1e6)
        hist[k] = hist.get(k, 0) + 1

    t0 = time.monotonic()
    asyncio.run(run_all(a.port, ids, a.concurrency, one))
    dt = time.monotonic() - t0
    with open(a.out, "w") as f:
        f.writelines("%s\t1\t%d\n" % (i, 0 if i in failed else 1) for i in ids)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"duration_us": int(dt * 1e6), "requests": len(ids), "threads": [{
                "answers": {"200": len(ids) - len(failed)},
                "totals": {"sent": len(ids), "acked": len(ids) - len(failed)},
                "hist": {"all": sorted(hist.items())}}]}, f)
    print("activated %d sessions in %.1f s (%.0f/s)" % (len(ids) - len(failed), dt,
                                                        (len(ids) - len(failed)) / dt),
          file=sys.stderr)
    if failed:
        fail("%d activation turns failed, e.g. %s" % (len(failed), next(iter(failed.values()))))


def cmd_owners(a):
    ids = read_ids(a.ids)
    owner = {}

    async def one(conn, sid):
        status, _, body = await conn.call("GET", "/admin/v1/sessions/" + sid, b"",
                                          {"Authorization": "Bearer " + a.token})
        if status != 200:
            fail("looking up session %s: %d %s" % (sid, status, body[:200]))
        owner[sid] = json.loads(body)["node"]

    asyncio.run(run_all(a.port, ids, 16, one))
    with open(a.out, "w") as f:
        f.writelines("%s\t%s\n" % (i, owner[i]) for i in ids)


def cmd_chains(a):
    chains, failed = [], []

    async def one(conn, i):
        headers = dict(json_headers(a.key), **{"Idempotency-Key": "%s-chain-%d" % (a.run, i)})
        body = json.dumps({"input": "bench chain %d" % i}).encode()
        status, _, data = await conn.call("POST", "/v1/responses", body, headers)
        if status != 200:
            failed.append("%d %s" % (status, data[:200]))
            return
        r = json.loads(data)
        chains.append((r["conversation"]["id"][len("conv_"):], r["id"]))

    t0 = time.monotonic()
    asyncio.run(run_all(a.port, list(range(a.n)), a.concurrency, one))
    dt = time.monotonic() - t0
    with open(a.out, "w") as f:
        f.writelines("%s\t%s\n" % c for c in chains)
    with open(a.expect, "w") as f:
        f.writelines("%s\t1\t1\n" % c[0] for c in chains)
    print("started %d response chains in %.1f s (%.0f/s)" % (len(chains), dt, len(chains) / dt),
          file=sys.stderr)
    if failed:
        fail("%d first responses failed, e.g. %s" % (len(failed), failed[0]))


def cmd_probe(a):
    lat = []
    body = json.dumps({"model": "mock", "stream": a.stream,
                       "messages": [{"role": "user", "content": a.content}]}).encode()

    async def one(conn, _):
        t0 = time.perf_counter()
        status, _, data = await conn.call("POST", "/v1/chat/completions", body,
                                          {"Content-Type": "application/json"})
        lat.append(time.perf_counter() - t0)
        if status != 200:
            fail("the mock answered %d %s" % (status, data[:200]))

    asyncio.run(run_all(a.port, list(range(a.n)), a.concurrency, one))
    lat.sort()
    pct = lambda p: round(lat[min(len(lat) - 1, int(p / 100.0 * len(lat)))] * 1000, 3)
    print(json.dumps({"n": len(lat), "concurrency": a.concurrency, "stream": a.stream,
                      "p50_ms": pct(50), "p99_ms": pct(99), "max_ms": pct(100)}))


def command(sub, func, positional, concurrency=None):
    """A sub-command whose positional arguments are named in `positional`
    ("port" is a number), with -c/--concurrency when it has a default."""
    s = sub.add_parser(func.__name__[len("cmd_"):])
    for name in positional.split():
        s.add_argument(name, type=int if name in ("port", "n") else str)
    if concurrency is not None:
        s.add_argument("-c", "--concurrency", type=int, default=concurrency)
    s.set_defaults(func=func)
    return s


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    command(sub, cmd_key, "port token user")
    command(sub, cmd_sessions, "port key n out", 32)
    s = command(sub, cmd_activate, "port key ids out", 32)
    s.add_argument("--run", default="bench")
    s.add_argument("--json", help="also write the load's figures here, as bench/wrk/turn.lua does")
    command(sub, cmd_owners, "port token ids out")
    s = command(sub, cmd_chains, "port key n out expect", 32)
    s.add_argument("--run", default="bench")
    s = command(sub, cmd_probe, "port n", 1)
    s.add_argument("--stream", action="store_true")
    s.add_argument("--content", default="bench turn 0-1")
    a = p.parse_args()
    a.func(a)


if __name__ == "__main__":
    main()
