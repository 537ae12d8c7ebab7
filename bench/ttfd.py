#!/usr/bin/env python3
"""Time to first delta: Parley's streamed turn against the mock upstream's own.

  bench/ttfd.py PARLEY_PORT MOCK_PORT ADMIN_TOKEN [N]

Runs N (default 200) streamed turns through Parley (each on its own session, one at a time)
and N streamed completions straight at the mock, timing each from the request's last byte to
the first SSE event with content; prints p50/p99 of both and of the difference."""
import http.client, json, socket, sys, time

parley_port, mock_port, token = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
n = int(sys.argv[4]) if len(sys.argv) > 4 else 200


def first_event(port, path, headers, body, marker):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.connect()
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    t0 = time.perf_counter()
    c.request("POST", path, body, headers)
    r = c.getresponse()
    buf = b""
    while marker not in buf:
        chunk = r.read1(65536)
        if not chunk:
            raise RuntimeError("stream ended before the first delta: %r" % buf[:200])
        buf += chunk
    t = time.perf_counter() - t0
    r.read()
    c.close()
    return t


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100.0 * len(xs)))]


c = http.client.HTTPConnection("127.0.0.1", parley_port)
c.request("POST", "/admin/v1/api-keys", json.dumps({"user": "ttfd"}),
          {"Authorization": "Bearer " + token, "Content-Type": "application/json"})
key = json.loads(c.getresponse().read())["api_key"]
auth = {"Authorization": "Bearer " + key, "Content-Type": "application/json"}
via, direct = [], []
for i in range(n):
    c.request("POST", "/v1/sessions", "{}", auth)
    sid = json.loads(c.getresponse().read())["id"]
    via.append(first_event(parley_port, "/v1/sessions/%s/messages" % sid, auth,
                           json.dumps({"content": "time to first delta %d" % i, "stream": True}),
                           b"event: delta"))
    direct.append(first_event(mock_port, "/v1/chat/completions",
                              {"Content-Type": "application/json"},
                              json.dumps({"model": "mock", "stream": True, "messages": [
                                  {"role": "user", "content": "time to first delta %d" % i}]}),
                              b'"content"'))
ms = lambda s: "%.2f ms" % (s * 1000)
print("turns: %d" % n)
print("mock directly : p50 %s  p99 %s" % (ms(pct(direct, 50)), ms(pct(direct, 99))))
print("through Parley: p50 %s  p99 %s" % (ms(pct(via, 50)), ms(pct(via, 99))))
print("added by Parley: p50 %s  p99 %s" % (ms(pct(via, 50) - pct(direct, 50)),
                                          ms(pct(via, 99) - pct(direct, 99))))
