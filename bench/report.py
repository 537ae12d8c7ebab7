#!/usr/bin/env python3
"""Measurements and reports of bench/run (standard library only).

  report.py snapshot OUT [--metrics URL]... NAME=PID[+]...
      CPU seconds (utime+stime), VmRSS and VmHWM of each named process (PID+:
      with all its descendants, e.g. PostgreSQL's backends), machine CPU and
      load average, and the Parley metrics bench/run reads, as JSON.
  report.py verify PGPORT OUT EXPECT...
      Checks in PostgreSQL, for every session of the EXPECT files ("id sent
      acked" lines, summed over the files), that seqs run 1..n without a gap,
      messages alternate user/assistant with reply_to = seq - 1, and that
      acked <= stored turns <= sent. JSON to OUT; exits 1 when it does not hold.
  report.py window PGPORT IDS CONTEXT
      Bytes of the context window a session of IDS holds, on average (see
      RESULTS.md, "memory"), as JSON.
  report.py summary PHASEDIR [--jsonl FILE]
      The summary of one measured phase from what bench/run left in PHASEDIR
      (config.env, load-*.json, before.json, after.json, and, when present,
      upstream.json, verify.json, memory.json, pgbench.json): printed, written
      to PHASEDIR/summary.json and appended as one line to FILE.
  report.py compare BASE.json OTHER.json   differences of two phase summaries
  report.py table FILE [N]                 the last N [20] results of FILE, one per line
"""
import glob
import json
import os
import subprocess
import sys
import time
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")
# Metrics summed over their label sets: counters and gauges, and histograms
# (their _sum and _count).
METRICS = ("parley_sessions_active", "parley_session_activations_total",
           "parley_session_passivations_total", "parley_load_shed_total",
           "parley_rate_limited_total", "parley_storage_batch_size",
           "parley_storage_commit_seconds", "parley_llm_latency_seconds")


# ----------------------------------------------------------------------------
# snapshot

def proc_stat(pid):
    """(ppid, cpu seconds) of a live process."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_mem(pid):
    mem = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                mem[line.split(":")[0]] = int(line.split()[1])
    return mem.get("VmRSS", 0), mem.get("VmHWM", 0)


def descendants(root):
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                children.setdefault(proc_stat(int(d))[0], []).append(int(d))
            except (OSError, IndexError):
                pass  # gone meanwhile
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def scrape(url):
    sums = {}
    with urllib.request.urlopen(url, timeout=10) as r:
        for line in r.read().decode().splitlines():
            if not line or line.startswith("#"):
                continue
            name = line.split("{")[0].split(" ")[0]
            base = name[:-4] if name.endswith("_sum") else name[:-6] if name.endswith(
                "_count") else name
            if base in METRICS:
                sums[name] = sums.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return sums


def cmd_snapshot(args):
    out, rest = args[0], args[1:]
    flags = ("--metrics", "--wal")
    urls = [rest[i + 1] for i, a in enumerate(rest) if a == "--metrics"]
    wal = [int(rest[i + 1]) for i, a in enumerate(rest) if a == "--wal"]
    named = [a for i, a in enumerate(rest) if a not in flags and (i == 0 or rest[i - 1] not in flags)]
    procs = {}
    for spec in named:
        name, pid = spec.split("=")
        tree = pid.endswith("+")
        pids = descendants(int(pid.rstrip("+"))) if tree else [int(pid)]
        cpu = rss = hwm = 0
        for p in pids:
            try:
                cpu += proc_stat(p)[1]
                r, h = proc_mem(p)
                rss, hwm = rss + r, max(hwm, h)
            except OSError:
                pass  # a backend that just exited
        procs[name] = {"pids": len(pids), "cpu_s": cpu, "rss_kb": rss, "hwm_kb": hwm}
    with open("/proc/stat") as f:
        cpu = [int(x) for x in f.readline().split()[1:]]
    with open("/proc/loadavg") as f:
        load = [float(x) for x in f.read().split()[:3]]
    metrics = {}
    for url in urls:
        for k, v in scrape(url).items():
            metrics[k] = metrics.get(k, 0.0) + v
    snap = {"t": time.monotonic(), "loadavg": load, "procs": procs, "metrics": metrics,
            "cpu_busy": (sum(cpu) - cpu[3] - cpu[4]) / CLK_TCK, "cpu_all": sum(cpu) / CLK_TCK}
    if wal:
        snap["wal_bytes"] = wal[0]  # PostgreSQL's WAL position, in bytes
    with open(out, "w") as f:
        json.dump(snap, f)


# ----------------------------------------------------------------------------
# PostgreSQL checks

def psql(port, sql):
    r = subprocess.run(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
                        "-p", str(port), "-U", "postgres", "-d", "postgres"],
                       input=sql, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit("report.py: psql failed: " + r.stderr.strip())
    return r.stdout.strip().splitlines()[-1]


VERIFY_SQL = r"""
CREATE TEMP TABLE bench_expect (id text PRIMARY KEY, sent bigint NOT NULL, acked bigint NOT NULL);
\copy bench_expect FROM '%s'
CREATE TEMP TABLE bench_stored AS
  SELECT session_id AS id, count(*) AS n, min(seq) AS lo, max(seq) AS hi,
         count(*) FILTER (WHERE role = CASE seq %% 2 WHEN 1 THEN 'user' ELSE 'assistant' END
                          AND (role = 'user' OR reply_to = seq - 1)) AS in_order,
         count(*) FILTER (WHERE role = 'assistant') AS turns
  FROM messages WHERE session_id IN (SELECT id FROM bench_expect) GROUP BY session_id;
SELECT json_build_object(
  'sessions', count(*),
  'touched', count(*) FILTER (WHERE e.sent > 0),
  'sent', sum(e.sent), 'acked', sum(e.acked),
  'stored_turns', coalesce(sum(s.turns), 0), 'stored_messages', coalesce(sum(s.n), 0),
  'gaps', count(*) FILTER (WHERE s.lo <> 1 OR s.hi <> s.n),
  'out_of_order', count(*) FILTER (WHERE s.n <> s.in_order),
  'user_without_reply', count(*) FILTER (WHERE s.n %% 2 = 1),
  'acked_not_stored', count(*) FILTER (WHERE coalesce(s.turns, 0) < e.acked),
  'stored_not_sent', count(*) FILTER (WHERE coalesce(s.turns, 0) > e.sent))
FROM bench_expect e LEFT JOIN bench_stored s USING (id);
"""


def cmd_verify(args):
    port, out, files = args[0], args[1], args[2:]
    expect = {}
    for path in files:
        with open(path) as f:
            for line in f:
                sid, sent, acked = line.split()
                e = expect.setdefault(sid, [0, 0])
                e[0] += int(sent)
                e[1] += int(acked)
    merged = out + ".expect.tsv"
    with open(merged, "w") as f:
        f.writelines("%s\t%d\t%d\n" % (k, v[0], v[1]) for k, v in expect.items())
    v = json.loads(psql(port, VERIFY_SQL % merged))
    bad = ("gaps", "out_of_order", "user_without_reply", "acked_not_stored", "stored_not_sent")
    v["ok"] = all(v[k] == 0 for k in bad)
    with open(out, "w") as f:
        json.dump(v, f)
    print("verify: %s: %d sessions (%d touched), %d turns acknowledged, %d stored, %d sent; %s"
          % ("ok" if v["ok"] else "FAILED", v["sessions"], v["touched"], v["acked"],
             v["stored_turns"], v["sent"], ", ".join("%s %d" % (k, v[k]) for k in bad)),
          file=sys.stderr)
    sys.exit(0 if v["ok"] else 1)


# The window as a plain data structure must hold it: per message its
# message_record (8 + 5 x 32 + 8 = 176 bytes with libstdc++'s 32-byte
# std::string) and the heap block of every string longer than the 15 bytes
# kept inline (glibc: length + 1 + 8 rounded up to 16, at least 32 bytes).
WINDOW_SQL = r"""
CREATE TEMP TABLE bench_ids (id text PRIMARY KEY);
\copy bench_ids FROM '%s'
CREATE FUNCTION pg_temp.heap(n int) RETURNS int LANGUAGE sql IMMUTABLE
  AS 'SELECT CASE WHEN n <= 15 THEN 0 ELSE greatest(32, (n + 1 + 8 + 15) / 16 * 16) END';
WITH w AS (
  SELECT m.*, row_number() OVER (PARTITION BY m.session_id ORDER BY m.seq DESC) AS k
  FROM messages m JOIN bench_ids b ON b.id = m.session_id)
SELECT json_build_object(
  'sessions', count(DISTINCT session_id),
  'messages_per_session', count(*)::float8 / count(DISTINCT session_id),
  'content_bytes_per_session', sum(octet_length(content))::float8 / count(DISTINCT session_id),
  'window_bytes_per_session', sum(176 + pg_temp.heap(octet_length(content))
      + pg_temp.heap(27) + pg_temp.heap(octet_length(role))
      + pg_temp.heap(coalesce(octet_length(model), 0))
      + pg_temp.heap(coalesce(octet_length(client_message_id), 0)))::float8
    / count(DISTINCT session_id))
FROM w WHERE k <= %d;
"""


def cmd_window(args):
    port, ids, context = args[0], args[1], int(args[2])
    tmp = ids + ".ids"
    with open(ids) as f, open(tmp, "w") as g:
        g.writelines(line.split()[0] + "\n" for line in f if line.strip())
    print(psql(port, WINDOW_SQL % (tmp, context)))


# ----------------------------------------------------------------------------
# summary

def load_json(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def read_config(path):
    cfg = {}
    with open(path) as f:
        for line in f:
            if "=" in line:
                k, v = line.rstrip("\n").split("=", 1)
                cfg[k] = v
    return cfg


def merge_loads(paths):
    """One load from the outputs of the wrk processes (or loader) that ran together."""
    m = {"duration_us": 0, "requests": 0, "socket_errors": {}, "answers": {}, "totals": {},
         "hist": {}}
    for p in paths:
        d = load_json(p)
        m["duration_us"] = max(m["duration_us"], d["duration_us"])
        m["requests"] += d.get("requests", 0)
        if "pieces" in d:  # bench/stream_load
            pc = m.setdefault("pieces", {"hist": {}, "read_hist": {}})
            for k, v in d["pieces"].items():
                if k in ("hist", "read_hist"):
                    for us, n in v:
                        pc[k][us] = pc[k].get(us, 0) + n
                elif k in ("expected_per_turn", "ramp_ms"):
                    pc[k] = v
                else:
                    pc[k] = pc.get(k, 0) + v
        for k, v in d.get("socket_errors", {}).items():
            m["socket_errors"][k] = m["socket_errors"].get(k, 0) + v
        for t in d["threads"]:
            for field in ("answers", "totals"):
                for k, v in t[field].items():
                    m[field][k] = m[field].get(k, 0) + v
            for cls, rows in t["hist"].items():
                h = m["hist"].setdefault(cls, {})
                for us, n in rows:
                    h[us] = h.get(us, 0) + n
    return m


def percentiles(hist):
    """p50, p90, p99, p99.9 and max of a {microseconds: count} histogram, in ms."""
    total = sum(hist.values())
    if total == 0:
        return None
    keys = sorted(hist)
    out, acc, i = {}, 0, 0
    wanted = [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99_9", 0.999)]
    for us in keys:
        acc += hist[us]
        while i < len(wanted) and acc >= wanted[i][1] * total:
            out[wanted[i][0]] = us / 1000.0
            i += 1
    out["max"] = keys[-1] / 1000.0
    return out


def delta(after, before, key):
    return after.get(key, 0.0) - before.get(key, 0.0)


def mean_of(after, before, name, scale=1.0):
    n = delta(after, before, name + "_count")
    return round(delta(after, before, name + "_sum") / n * scale, 3) if n > 0 else None


def summarize(phase_dir):
    cfg = read_config(os.path.join(phase_dir, "config.env"))
    before = load_json(os.path.join(phase_dir, "before.json"))
    after = load_json(os.path.join(phase_dir, "after.json"))
    load = merge_loads(sorted(glob.glob(os.path.join(phase_dir, "load-*.json"))))
    up = load_json(os.path.join(phase_dir, "upstream.json"))
    ver = load_json(os.path.join(phase_dir, "..", "verify.json"))
    secs = load["duration_us"] / 1e6
    acked = load["totals"].get("acked", 0)
    lat = percentiles(load["hist"].get("all", {}))
    up_ms = up["p50_ms"] if up else 0.0
    s = {"scenario": cfg["scenario"], "phase": cfg["phase"], "time": cfg["time"],
         "git": cfg["git"], "config": cfg,
         "turns": acked, "duration_s": round(secs, 3),
         "durable_turns_per_s": round(acked / secs, 1) if secs else 0,
         "latency_ms": lat, "upstream_ms": up,
         "overhead_ms": {"p50": round(lat["p50"] - up_ms, 3),
                         "p99": round(lat["p99"] - up_ms, 3)} if lat else None,
         "answers": load["answers"],
         "errors": {k: v for k, v in load["answers"].items() if k != "200"},
         "socket_errors": {k: v for k, v in load["socket_errors"].items() if v},
         "sessions_overlap": load["totals"].get("overlap", 0),
         "unmatched_answers": load["totals"].get("unmatched", 0),
         "verify": ver}
    for cls in ("owner", "hop"):
        if load["hist"].get(cls):
            s["latency_ms_" + cls] = percentiles(load["hist"][cls])
    procs = {}
    for name, a in after["procs"].items():
        b = before["procs"].get(name, {"cpu_s": 0, "rss_kb": 0})
        procs[name] = {"cpu_s": round(a["cpu_s"] - b["cpu_s"], 2),
                       "rss_mib": round(a["rss_kb"] / 1024, 1),
                       "peak_rss_mib": round(a["hwm_kb"] / 1024, 1)}
    wrk = [open(p).read().split() for p in glob.glob(os.path.join(phase_dir, "wrk-*.cpu"))]
    if wrk:
        procs["wrk"] = {"cpu_s": round(sum(float(u) + float(k) for u, k in wrk), 2)}
    s["processes"] = procs
    parley = [v for k, v in procs.items() if k.startswith("parley")]
    cpu = sum(p["cpu_s"] for p in parley)
    s["parley_cpu_s"] = round(cpu, 2)
    s["parley_cpu_s_per_1k_turns"] = round(cpu / (acked / 1000.0), 3) if acked else None
    s["parley_peak_rss_mib"] = max(p["peak_rss_mib"] for p in parley) if parley else None
    span = after["cpu_all"] - before["cpu_all"]
    busy = after["cpu_busy"] - before["cpu_busy"]
    s["machine_busy"] = round(busy / span, 3) if span else None
    # What the benchmark's own processes cost per turn, and so the most turns
    # per second this machine's cores could give them with nothing else on it.
    ours = sum(p["cpu_s"] for p in procs.values())
    s["machine_cpu_s"] = {"cores": int(cfg["machine_cores"]), "busy": round(busy, 1),
                          "benchmark": round(ours, 1), "everything_else": round(busy - ours, 1)}
    s["cpu_ms_per_turn_all_processes"] = round(ours / acked * 1000, 3) if acked else None
    s["cpu_bound_turns_per_s"] = round(int(cfg["machine_cores"]) * acked / ours) if ours else None
    s["loadavg"] = {"before": before["loadavg"], "after": after["loadavg"]}
    ma, mb = after["metrics"], before["metrics"]
    s["storage"] = {"mean_batch": mean_of(ma, mb, "parley_storage_batch_size"),
                    "mean_commit_ms": mean_of(ma, mb, "parley_storage_commit_seconds", 1000)}
    s["llm_mean_ms"] = mean_of(ma, mb, "parley_llm_latency_seconds", 1000)
    if "wal_bytes" in after and "wal_bytes" in before and acked:
        s["wal_bytes_per_turn"] = round((after["wal_bytes"] - before["wal_bytes"]) / acked)
    pg = procs.get("postgres")
    s["postgres_cpu_us_per_turn"] = round(pg["cpu_s"] / acked * 1e6) if pg and acked else None
    s["sessions_active"] = ma.get("parley_sessions_active")
    s["passivations"] = delta(ma, mb, "parley_session_passivations_total")
    s["load_shed"] = delta(ma, mb, "parley_load_shed_total")
    if "pieces" in load:
        pc = load["pieces"]
        s["pieces"] = {k: v for k, v in pc.items() if k not in ("hist", "read_hist")}
        s["pieces"]["added_latency_ms"] = percentiles(pc["hist"])
        if pc.get("read_hist"):
            s["pieces"]["read_latency_ms"] = percentiles(pc["read_hist"])
    during = load_json(os.path.join(phase_dir, "during.json"))
    if during:
        node = [k for k in during["procs"] if k.startswith("parley")][0]
        grown = (during["procs"][node]["rss_kb"] - before["procs"][node]["rss_kb"]) * 1024
        n = int(cfg["connections"])
        s["streams"] = {"open": n, "rss_mib_before": round(before["procs"][node]["rss_kb"] / 1024, 1),
                        "rss_mib_during": round(during["procs"][node]["rss_kb"] / 1024, 1),
                        "rss_bytes_per_stream": round(grown / n)}
    mem = load_json(os.path.join(phase_dir, "memory.json"))
    if mem:
        node = [k for k in after["procs"] if k.startswith("parley")][0]
        grown = (after["procs"][node]["rss_kb"] - before["procs"][node]["rss_kb"]) * 1024
        n = int(cfg["memory_sessions"])
        s["memory"] = dict(mem, sessions_activated=n, rss_growth_mib=round(grown / 2**20, 1),
                           rss_bytes_per_session=round(grown / n),
                           bytes_beyond_window=round(grown / n - mem["window_bytes_per_session"]))
    pgb = load_json(os.path.join(phase_dir, "..", "pgbench.json"))
    if pgb:
        s["pgbench"] = pgb
    return s


def ms(v):
    return "-" if v is None else "%.2f" % v


def print_summary(s):
    c = s["config"]
    lat, ov = s["latency_ms"] or {}, s["overhead_ms"] or {}
    p = print
    p("== %s / %s   %s   git %s   %s build" % (s["scenario"], s["phase"], s["time"], s["git"],
                                              c.get("build", "")))
    upstream = "upstream %s ms%s; %s node(s)" % (
        c["upstream_ms"], " streamed, %s ms between pieces" % c["chunk_ms"]
        if c.get("stream") == "1" else "", c["nodes"])
    if c["wrk_processes"] == "0":
        p("   load        one turn on each of %s sessions (bench/loader.py, %s connections); %s" % (
            c["sessions"], c["connections"], upstream))
    else:
        p("   load        %s connections (%s wrk threads, %s wrk process%s), %s sessions, %s s; %s"
          % (c["connections"], c["wrk_threads"], c["wrk_processes"],
             "" if c["wrk_processes"] == "1" else "es", c["sessions"], c["duration_s"], upstream))
    v = s["verify"] or {}
    # The responses scenario's chained phase: each turn is a chained response.
    unit = "responses" if s["scenario"] == "responses" and s["phase"] == "chained" else "turns"
    p("   durable     %s %s/s  (%d acknowledged in %.1f s)" % (
        "{:,.0f}".format(s["durable_turns_per_s"]), unit, s["turns"], s["duration_s"]))
    p("   verified    %s: whole run %s turns acknowledged, %s stored, %s sent (stored beyond "
      "acknowledged: turns in flight when wrk stopped)" % (
          "ok" if v.get("ok") else "FAILED" if v else "-", v.get("acked", "-"),
          v.get("stored_turns", "-"), v.get("sent", "-")))
    p("   latency ms  p50 %s  p90 %s  p99 %s  p99.9 %s  max %s" % (
        ms(lat.get("p50")), ms(lat.get("p90")), ms(lat.get("p99")), ms(lat.get("p99_9")),
        ms(lat.get("max"))))
    up = s["upstream_ms"]
    p("   overhead ms p50 %s  p99 %s   (latency minus the mock's own p50 %s ms; Parley's mean "
      "upstream call %s ms)" % (ms(ov.get("p50")), ms(ov.get("p99")),
                                ms(up["p50_ms"]) if up else "0", ms(s["llm_mean_ms"])))
    for cls in ("owner", "hop"):
        if s.get("latency_ms_" + cls):
            q = s["latency_ms_" + cls]
            p("   at %-8s p50 %s  p90 %s  p99 %s" % (cls, ms(q["p50"]), ms(q["p90"]), ms(q["p99"])))
    errs = dict(s["errors"], **{"socket " + k: v for k, v in s["socket_errors"].items()})
    p("   errors      %s%s" % (", ".join("%s: %d" % kv for kv in sorted(errs.items())) or "none",
                               "; sessions reused while in flight: %d" % s["sessions_overlap"]
                               if s["sessions_overlap"] else ""))
    p("   parley      peak RSS %s MiB, CPU %.1f s = %s s per 1,000 turns" % (
        s["parley_peak_rss_mib"], s["parley_cpu_s"], s["parley_cpu_s_per_1k_turns"]))
    others = ", ".join("%s %.1f s" % (k, v["cpu_s"]) for k, v in sorted(s["processes"].items())
                       if not k.startswith("parley"))
    m = s["machine_cpu_s"]
    p("   other CPU   %s; the rest of the machine %.1f s (busy %.0f%% of %d cores); load "
      "average %.2f -> %.2f" % (others, m["everything_else"], 100 * (s["machine_busy"] or 0),
                                m["cores"], s["loadavg"]["before"][0], s["loadavg"]["after"][0]))
    p("   CPU bound   %s ms of CPU per turn in all benchmark processes: at most %s turns/s on "
      "%d cores with nothing else running" % (s["cpu_ms_per_turn_all_processes"],
                                               "{:,}".format(s["cpu_bound_turns_per_s"] or 0),
                                               m["cores"]))
    st = s["storage"]
    p("   storage     mean batch %s turns, mean commit %s ms; PostgreSQL fsync=%s "
      "synchronous_commit=%s" % (st["mean_batch"], st["mean_commit_ms"], c.get("pg_fsync"),
                                 c.get("pg_synchronous_commit")))
    if s.get("wal_bytes_per_turn") is not None:
        p("   per turn    Parley %s us, PostgreSQL %s us of CPU; %s bytes of WAL" % (
            round(s["parley_cpu_s_per_1k_turns"] * 1000), s["postgres_cpu_us_per_turn"],
            "{:,}".format(s["wal_bytes_per_turn"])))
    if "pieces" in s:
        pc, q = s["pieces"], s["pieces"]["added_latency_ms"] or {}
        p("   pieces      %s received (%s per answer), %s out of order, %s missing, %s extra%s"
          % ("{:,}".format(pc.get("received", 0)), pc.get("expected_per_turn"),
             pc.get("out_of_order", 0), pc.get("missing", 0), pc.get("extra", 0),
             ", %s pieces measured after a %s ms ramp" % ("{:,}".format(pc["measured"]),
                                                           pc["ramp_ms"])
             if pc.get("ramp_ms") else ", streams started at once"))
        p("   added ms    by Parley: the client socket's kernel receive time minus the mock's write: "
          "p50 %s  p90 %s  p99 %s  p99.9 %s  max %s%s"
          % (ms(q.get("p50")), ms(q.get("p90")), ms(q.get("p99")), ms(q.get("p99_9")),
             ms(q.get("max")), "  (%s reads unstamped, taken as read)" % pc["unstamped_reads"]
             if pc.get("unstamped_reads") else ""))
        r = pc.get("read_latency_ms")
        if r:
            p("   read ms     as the client process read it (adds its own wait for a core): "
              "p50 %s  p90 %s  p99 %s  p99.9 %s  max %s"
              % (ms(r.get("p50")), ms(r.get("p90")), ms(r.get("p99")), ms(r.get("p99_9")),
                 ms(r.get("max"))))
    if "streams" in s:
        st = s["streams"]
        p("   streams     %d open at once: Parley RSS %s MiB before, %s MiB half-way = %s B per "
          "streamed turn" % (st["open"], st["rss_mib_before"], st["rss_mib_during"],
                             "{:,}".format(st["rss_bytes_per_stream"])))
    if "memory" in s:
        m = s["memory"]
        p("   memory      %d sessions activated and idle (%s active): RSS +%s MiB = %s B per "
          "session; window %.0f B (%.1f messages, %.0f B of text) -> %s B per session beyond "
          "its window" % (m["sessions_activated"], s["sessions_active"], m["rss_growth_mib"],
                          m["rss_bytes_per_session"], m["window_bytes_per_session"],
                          m["messages_per_session"], m["content_bytes_per_session"],
                          m["bytes_beyond_window"]))
    if "pgbench" in s:
        p("   postgres    own commit rate (pgbench, same server, fsync on): " +
          ", ".join("%s %s/s" % (k, "{:,.0f}".format(v)) for k, v in s["pgbench"].items()))


def cmd_summary(args):
    s = summarize(args[0])
    with open(os.path.join(args[0], "summary.json"), "w") as f:
        json.dump(s, f, indent=1)
    if "--jsonl" in args:
        with open(args[args.index("--jsonl") + 1], "a") as f:
            f.write(json.dumps(s) + "\n")
    print_summary(s)


def cmd_compare(args):
    a, b = load_json(args[0]), load_json(args[1])
    la, lb = a["latency_ms"], b["latency_ms"]
    print("== %s: %s against %s" % (a["scenario"], b["phase"], a["phase"]))
    print("   turns/s %+.0f (%s -> %s)   latency p50 %+.2f ms   p99 %+.2f ms" % (
        b["durable_turns_per_s"] - a["durable_turns_per_s"], "{:,.0f}".format(
            a["durable_turns_per_s"]), "{:,.0f}".format(b["durable_turns_per_s"]),
        lb["p50"] - la["p50"], lb["p99"] - la["p99"]))


def cmd_table(args):
    with open(args[0]) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    rows = [r for r in rows if "durable_turns_per_s" in r]  # pgbench lines have their own shape
    n = int(args[1]) if len(args) > 1 else 20
    print("%-20s %-12s %-8s %-9s %5s %9s %8s %8s %8s %9s %8s %6s" % (
        "time", "scenario", "phase", "git", "conns", "turns/s", "p50 ms", "p99 ms",
        "ovh p99", "cpu/1k s", "rss MiB", "ok"))
    for s in rows[-n:]:
        lat, ov = s.get("latency_ms") or {}, s.get("overhead_ms") or {}
        print("%-20s %-12s %-8s %-9s %5s %9.0f %8s %8s %8s %9s %8s %6s" % (
            s["time"][:19], s["scenario"], s["phase"], s["git"][:9], s["config"]["connections"],
            s["durable_turns_per_s"], ms(lat.get("p50")), ms(lat.get("p99")),
            ms(ov.get("p99")), s["parley_cpu_s_per_1k_turns"], s["parley_peak_rss_mib"],
            "ok" if (s.get("verify") or {}).get("ok") else "FAIL"))


def main():
    cmds = {"snapshot": cmd_snapshot, "verify": cmd_verify, "window": cmd_window,
            "summary": cmd_summary, "compare": cmd_compare, "table": cmd_table}
    if len(sys.argv) < 3 or sys.argv[1] not in cmds:
        sys.exit(__doc__)
    cmds[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    main()
