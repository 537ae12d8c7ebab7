#!/usr/bin/env python3
"""A flood of random API keys, for bench/run's authflood scenario.

  bench/auth_flood.py PORT RATE SECONDS OUT.json [--procs N]

Sends RATE requests a second (GET /v1/sessions, each with a new random bearer key) to
127.0.0.1:PORT for SECONDS, over keep-alive connections from N processes [2], paced per
process; writes the answers' status counts and the rate reached to OUT.json. Every key is
unknown, so a node answers 401 after a storage lookup, or 429 rate_limited once the client
address's bucket of unknown-key lookups is spent (PARLEY_AUTH_FAILURES_PER_MIN)."""
import http.client, json, multiprocessing, os, sys, time


def worker(port, rate, seconds, out):
    counts, sent = {}, 0
    conn = None
    start = time.perf_counter()
    while True:
        now = time.perf_counter() - start
        if now >= seconds:
            break
        due = sent / rate
        if due > now:
            time.sleep(min(due - now, 0.05))
            continue
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/v1/sessions",
                         headers={"Authorization": "Bearer pk_" + os.urandom(16).hex()})
            r = conn.getresponse()
            r.read()
            key = str(r.status)
            if r.getheader("Connection", "").lower() == "close":
                conn.close()
                conn = None
        except (OSError, http.client.HTTPException):
            key = "error"
            if conn is not None:
                conn.close()
            conn = None
        counts[key] = counts.get(key, 0) + 1
        sent += 1
    out.put((counts, sent, time.perf_counter() - start))


def main():
    port, rate, seconds, path = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    procs = int(sys.argv[sys.argv.index("--procs") + 1]) if "--procs" in sys.argv else 2
    q = multiprocessing.Queue()
    ps = [multiprocessing.Process(target=worker, args=(port, rate / procs, seconds, q))
          for _ in range(procs)]
    for p in ps:
        p.start()
    results = [q.get() for _ in ps]
    for p in ps:
        p.join()
    counts, sent = {}, 0
    for c, s, _ in results:
        sent += s
        for k, v in c.items():
            counts[k] = counts.get(k, 0) + v
    took = max(t for _, _, t in results)
    summary = {"target_per_s": rate, "sent": sent, "per_s": round(sent / took, 1),
               "statuses": counts}
    with open(path, "w") as f:
        json.dump(summary, f)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
