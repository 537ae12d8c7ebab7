#!/usr/bin/env python3
"""Fast-fail latency with an open circuit:
  bench/open_circuit.py PARLEY_PORT ADMIN_TOKEN [N]
The node's upstream must fail (e.g. the mock with fail_status 500) and its circuit must open
after the first failures (PARLEY_LLM_BREAKER_THRESHOLD small, cool-down long). Sends N turns
one after another on a keep-alive connection and prints the latency of the 503 answers."""
import http.client, json, sys, time

port, token = int(sys.argv[1]), sys.argv[2]
n = int(sys.argv[3]) if len(sys.argv) > 3 else 500
c = http.client.HTTPConnection("127.0.0.1", port)
c.request("POST", "/admin/v1/api-keys", json.dumps({"user": "circuit"}),
          {"Authorization": "Bearer " + token, "Content-Type": "application/json"})
key = json.loads(c.getresponse().read())["api_key"]
auth = {"Authorization": "Bearer " + key, "Content-Type": "application/json"}
c.request("POST", "/v1/sessions", "{}", auth)
sid = json.loads(c.getresponse().read())["id"]
lat, codes = [], {}
for i in range(n + 5):
    t0 = time.perf_counter()
    c.request("POST", "/v1/sessions/%s/messages" % sid, json.dumps({"content": "x%d" % i}), auth)
    r = c.getresponse()
    body = r.read()
    dt = time.perf_counter() - t0
    code = json.loads(body).get("error", {}).get("code", str(r.status))
    codes[code] = codes.get(code, 0) + 1
    if i >= 5 and code == "upstream_unavailable":
        lat.append(dt)
lat.sort()
p = lambda q: "%.2f ms" % (lat[min(len(lat) - 1, int(q * len(lat)))] * 1000)
print("answers:", codes)
print("open circuit, %d fast fails: p50 %s  p99 %s  max %s" % (len(lat), p(0.5), p(0.99), p(1.0)))
