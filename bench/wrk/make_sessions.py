#!/usr/bin/env python3
"""Creates an API key and N sessions on a running node and writes them as a
Lua file for wrk/turn.lua: make_sessions.py PORT N ADMIN_TOKEN OUT.lua"""
import http.client, json, sys

port, n, token, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
c = http.client.HTTPConnection("127.0.0.1", port)
c.request("POST", "/admin/v1/api-keys", json.dumps({"user": "bench"}),
          {"Authorization": "Bearer " + token, "Content-Type": "application/json"})
key = json.loads(c.getresponse().read())["api_key"]
ids = []
for _ in range(n):
    c.request("POST", "/v1/sessions", "{}",
              {"Authorization": "Bearer " + key, "Content-Type": "application/json"})
    ids.append(json.loads(c.getresponse().read())["id"])
with open(out, "w") as f:
    f.write("key=%s\nsessions={%s}\n" % (json.dumps(key), ",".join(json.dumps(i) for i in ids)))
