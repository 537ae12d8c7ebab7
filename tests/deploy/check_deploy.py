#!/usr/bin/env python3
"""Checks of Parley's deployment files (deploy/) that need no container engine.

Run by ctest (label `deploy`, tests/deploy/CMakeLists.txt), one check per test:

  check_deploy.py --source DIR yaml
      Every *.yaml / *.yml file under deploy/ parses (all documents of a
      multi-document file) and is not empty; deploy/k8s/kustomization.yaml
      lists exactly the other manifests of deploy/k8s/, and they exist.

  check_deploy.py --source DIR --parley BIN settings
      Every PARLEY_* variable the deploy files set is one that
      `BIN --list-settings` prints (runtime/config.cpp's known_settings(), so
      the two cannot drift apart): Dockerfile ENV and ARG, compose
      `environment` and `env_file`, Kubernetes ConfigMap and Secret keys,
      container `env`; ConfigMaps and Secrets that containers load whole
      (envFrom) may hold known settings only, and envFrom / *KeyRef point at
      objects and keys that exist. Last, any PARLEY_* word anywhere under
      deploy/ (scripts, comments) must be a known setting too.

  check_deploy.py --source DIR compose-nodes
      deploy/compose.yaml's Parley nodes match cluster-config/node-*.env. A
      node service is one whose environment sets PARLEY_NODE_ID. Compared:
        - the set of node ids;
        - per node: PARLEY_HTTP_PORT, PARLEY_CLUSTER_PORT and
          PARLEY_FAILURE_DETECT_MS (defaults 8080, 4242, 3000 when unset);
        - PARLEY_SEEDS: resolved to the nodes they name, the same nodes in the
          same order. A cluster-config seed host:port names the node whose
          PARLEY_CLUSTER_HOST:PORT it is; a compose seed must name a node
          service (service name, hostname or network alias) and that node's
          cluster port. The node's own entry must be spelled exactly
          PARLEY_CLUSTER_HOST:PARLEY_CLUSTER_PORT, since that is how a node
          recognises and skips itself;
        - PARLEY_CLUSTER_HOST must be a name of the node's own service;
        - the HTTP port is published with the same host port as in
          cluster-config (so the URLs of `scripts/run --nodes 3` work);
        - each node depends_on the services named as hosts in PARLEY_PG_URL
          and PARLEY_REDIS_URL with condition service_healthy, and those have
          a healthcheck; stop_grace_period is at least 45 s (drain).
      Hosts, PARLEY_PG_URL and PARLEY_REDIS_URL differ on purpose (127.0.0.1
      versus service names) and are not compared.

  check_deploy.py --source DIR dockerfile
      deploy/Dockerfile: every stage is FROM debian:bookworm(-slim) or an
      earlier stage; the stage that builds (runs cmake) COPYs
      scripts/packages.txt and installs from it, and names no package of its
      own in apt-get install (one list, not two); the final stage installs no
      -dev package or compiler, runs as a non-root USER, has a HEALTHCHECK on
      /healthz, STOPSIGNAL SIGTERM and EXPOSEs 8080 and 4242; the sources it
      COPYs exist; .dockerignore keeps .git, build trees and var/ out.

  check_deploy.py --source DIR --binary BIN [--binary BIN ...] runtime-libs
      The runtime stage's lib* packages are exactly the Debian packages that
      own the shared libraries the binaries link (readelf -d NEEDED, located
      with ldd, owner by dpkg -S). Skipped (exit 77) off Debian bookworm.

  check_deploy.py --source DIR alerts
      deploy/prometheus/alerts.yaml is a rules file whose every rule has an
      alert name and an expression; every parley_* metric its expressions use
      is registered by Parley's source (a "parley_..." string literal in the
      .cpp files of net/, storage/, actors/, runtime/; histogram suffixes
      _bucket/_sum/_count stripped), so a renamed metric cannot leave an alert
      that never fires; docs/operations.md shows the same rules (compared as
      parsed YAML); `promtool check rules` when promtool is on PATH.

  check_deploy.py --source DIR cluster-tls
      Mutual TLS on the cluster port (PARLEY_CLUSTER_TLS_CERT, _KEY, _CA) is
      what the deploy files ship, from secrets:
        - compose: every node service sets all three, each to a compose
          secret the service mounts (/run/secrets/TARGET) whose top-level
          entry has a file; each node mounts its own certificate and key
          (same file stem), all the same CA; no secret is a CA's key;
        - Kubernetes: every container that sets PARLEY_NODE_ID sets all three
          to literal paths under one read-only volumeMount of a `secret`
          volume, whose defaultMode gives others no access, in a pod with an
          fsGroup (so the non-root user can read the files);
        - cluster-config/*.env set all three or none.

  check_deploy.py --source DIR kustomize
      `kubectl kustomize deploy/k8s` renders. Skipped (exit 77) without kubectl.

  check_deploy.py --source DIR networkpolicy
      deploy/k8s isolates the cluster port (issue 15): a NetworkPolicy selects
      the pods of the Parley StatefulSet (its podSelector's labels are among
      the pod template's) for Ingress; across every such policy (they add up),
      each rule that admits the cluster port (the container port named
      `cluster`; a rule without ports admits every port) admits it only from
      pods whose selector carries all the StatefulSet's selector labels, with
      no namespaceSelector or ipBlock; one rule does admit the cluster port
      from Parley pods (else no node could join), and one admits the HTTP port
      (container port `http`), since clients, probes and Prometheus need it.

  check_deploy.py --source DIR autoscaling
      deploy/k8s/hpa.yaml scales the Parley StatefulSet sanely (issue 20): an
      autoscaling/v2 HorizontalPodAutoscaler whose scaleTargetRef names the
      StatefulSet; every Pods metric is a gauge Parley's source registers and
      that a rule of deploy/prometheus/adapter-rules.yaml serves under that
      name; minReplicas keeps every pod PARLEY_SEEDS names; scale-down waits
      at least 60 s (stabilizationWindowSeconds) and removes at most one pod
      per terminationGracePeriodSeconds, so drains never overlap; and the
      StatefulSet's grace period covers its preStop pause plus the node's
      drain budget (sessions 30 s + HTTP 30 s + actors 10 s).

Exit status: 0 pass, 1 fail (each problem printed as `FILE: message`), 77 skip.
"""

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys

SKIP = 77

try:
    import yaml
except ImportError:  # pragma: no cover
    print("check_deploy: python3 module 'yaml' missing (Debian package python3-yaml, "
          "listed in scripts/packages.txt)")
    sys.exit(1)


class Problems:
    """Collects `FILE: message` lines; a check fails when any were added."""

    def __init__(self, root):
        self.root = root
        self.items = []

    def add(self, path, message):
        rel = os.path.relpath(path, self.root) if os.path.isabs(path) else path
        self.items.append(f"{rel}: {message}")

    def finish(self, check, passed_message):
        if self.items:
            print(f"FAILED {check}: {len(self.items)} problem(s)")
            for item in self.items:
                print(f"  {item}")
            return 1
        print(f"ok {check}: {passed_message}")
        return 0


# ---------------------------------------------------------------------------
# Helpers

def deploy_files(root, exts=None):
    out = []
    for base, dirs, files in os.walk(os.path.join(root, "deploy")):
        dirs.sort()
        for f in sorted(files):
            if exts is None or f.endswith(exts):
                out.append(os.path.join(base, f))
    return out


def load_yaml_docs(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def k8s_docs(root):
    """(path, document) of every manifest under deploy/k8s/ except kustomization.yaml."""
    k8s = os.path.join(root, "deploy", "k8s")
    out = []
    if not os.path.isdir(k8s):
        return out
    for f in sorted(os.listdir(k8s)):
        if f.endswith((".yaml", ".yml")) and f != "kustomization.yaml":
            path = os.path.join(k8s, f)
            for d in load_yaml_docs(path):
                if isinstance(d, dict):
                    out.append((path, d))
    return out


def read_env_file(path):
    """KEY=VALUE lines as parley --config reads them (comments, `export `, quotes)."""
    out = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("export "):
                line = line[7:].strip()
            if "=" not in line:
                raise ValueError(f"{path}:{n}: expected KEY=VALUE")
            k, v = line.split("=", 1)
            k, v = k.strip(), v.strip()
            if len(v) >= 2 and v[0] in "\"'" and v[-1] == v[0]:
                v = v[1:-1]
            out[k] = v
    return out


def compose_environment(service):
    """A compose service's environment as a dict (map or list syntax)."""
    env = service.get("environment") or {}
    if isinstance(env, dict):
        return {str(k): ("" if v is None else str(v)) for k, v in env.items()}
    out = {}
    for item in env:
        k, _, v = str(item).partition("=")
        out[k] = v
    return out


def dockerfile_instructions(path):
    """(line number, INSTRUCTION, arguments) with continuation lines joined."""
    out = []
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    i = 0
    while i < len(lines):
        start = i + 1
        line = lines[i]
        i += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        while line.rstrip().endswith("\\") and i < len(lines):
            nxt = lines[i]
            i += 1
            if nxt.lstrip().startswith("#"):
                continue
            line = line.rstrip()[:-1] + " " + nxt
        word, _, rest = line.strip().partition(" ")
        out.append((start, word.upper(), rest.strip()))
    return out


def dockerfile_stages(instructions):
    """[{name, base, line, instructions}] in order."""
    stages = []
    for n, word, rest in instructions:
        if word == "FROM":
            parts = [p for p in rest.split() if not p.startswith("--")]
            base = parts[0] if parts else ""
            name = parts[2] if len(parts) >= 3 and parts[1].lower() == "as" else str(len(stages))
            stages.append({"name": name, "base": base, "line": n, "instructions": []})
        elif stages:
            stages[-1]["instructions"].append((n, word, rest))
    return stages


def dockerfile_env(rest):
    """Names set by one ENV instruction (`K=V ...` or legacy `K V`)."""
    try:
        words = shlex.split(rest, posix=True)
    except ValueError:
        words = rest.split()
    if words and "=" not in words[0]:
        return [words[0]]
    return [w.split("=", 1)[0] for w in words if "=" in w]


APT_OPTIONS_WITH_VALUE = {"-o", "-t", "--target-release", "-c", "--config-file"}


def apt_install_packages(run):
    """Package words of every `apt-get install` in a RUN command (options and
    shell expansions left out)."""
    out = []
    for part in re.split(r"&&|\|\||;|\|", run):
        words = part.split()
        for k in range(len(words) - 1):
            if words[k] in ("apt-get", "apt") and "install" in words[k + 1:]:
                j = words.index("install", k + 1) + 1
                while j < len(words):
                    w = words[j]
                    if w in APT_OPTIONS_WITH_VALUE:
                        j += 2
                        continue
                    if not w.startswith("-"):
                        out.append(w)
                    j += 1
                break
    return out


def is_literal_package(word):
    return re.fullmatch(r"[a-z0-9][a-z0-9+.\-]+(:[a-z0-9]+)?(=[^\s]+)?", word) is not None


def packages_txt(root):
    names = []
    with open(os.path.join(root, "scripts", "packages.txt"), encoding="utf-8") as f:
        for line in f:
            line = re.sub(r"#.*", "", line).strip()
            if line:
                names.append(line)
    return names


def walk(obj):
    yield obj
    if isinstance(obj, dict):
        for v in obj.values():
            yield from walk(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from walk(v)


def pod_containers(doc):
    """Every container and init container of every pod spec inside a manifest."""
    for node in walk(doc):
        if isinstance(node, dict) and isinstance(node.get("containers"), list):
            for key in ("initContainers", "containers", "ephemeralContainers"):
                for c in node.get(key) or []:
                    if isinstance(c, dict):
                        yield key, c


# ---------------------------------------------------------------------------
# Checks

def check_yaml(root):
    p = Problems(root)
    files = deploy_files(root, (".yaml", ".yml"))
    if not files:
        p.add("deploy/", "no YAML files found")
    count = 0
    for path in files:
        try:
            docs = load_yaml_docs(path)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
            p.add(path, f"does not parse as YAML: {where}{getattr(e, 'problem', None) or e}")
            continue
        if not docs:
            p.add(path, "holds no YAML document")
        count += len(docs)
    kust = os.path.join(root, "deploy", "k8s", "kustomization.yaml")
    if os.path.isfile(kust):
        try:
            k = load_yaml_docs(kust)[0]
            listed = [str(r) for r in (k.get("resources") or [])]
            k8s = os.path.dirname(kust)
            for r in listed:
                if not os.path.exists(os.path.join(k8s, r)):
                    p.add(kust, f"resources lists '{r}', which does not exist")
            for f in sorted(os.listdir(k8s)):
                if f.endswith((".yaml", ".yml")) and f != "kustomization.yaml" and f not in listed:
                    p.add(kust, f"resources does not list '{f}' of deploy/k8s/")
        except (yaml.YAMLError, IndexError, AttributeError):
            pass  # reported above
    else:
        p.add("deploy/k8s/kustomization.yaml", "missing")
    return p.finish("yaml", f"{len(files)} files, {count} documents parse")


def known_settings(parley):
    try:
        out = subprocess.run([parley, "--list-settings"], capture_output=True, text=True,
                             timeout=30)
    except OSError as e:
        print(f"FAILED settings: cannot run {parley} --list-settings: {e}")
        sys.exit(1)
    names = [l.strip() for l in out.stdout.splitlines() if l.strip()]
    if out.returncode != 0 or not names or not all(re.fullmatch(r"PARLEY_[A-Z0-9_]+", n)
                                                   for n in names):
        print(f"FAILED settings: `{parley} --list-settings` exited {out.returncode} and printed "
              f"{out.stdout!r} {out.stderr!r}; expected one PARLEY_* name per line")
        sys.exit(1)
    return set(names)


def check_settings(root, parley):
    known = known_settings(parley)
    p = Problems(root)
    checked = 0

    reported = set()

    def need(path, name, where):
        nonlocal checked
        if name.startswith("PARLEY_"):
            checked += 1
            if name not in known:
                reported.add(name)
                p.add(path, f"{where} sets {name}, which parley does not read "
                            f"(not in `parley --list-settings`)")

    # Dockerfile
    dockerfile = os.path.join(root, "deploy", "Dockerfile")
    if os.path.isfile(dockerfile):
        for n, word, rest in dockerfile_instructions(dockerfile):
            if word == "ENV":
                for name in dockerfile_env(rest):
                    need(dockerfile, name, f"line {n}: ENV")
            elif word == "ARG":
                need(dockerfile, rest.split("=", 1)[0].strip(), f"line {n}: ARG")

    # Compose files
    for path in deploy_files(root, (".yaml", ".yml")):
        if os.path.basename(path) not in ("compose.yaml", "compose.yml", "docker-compose.yaml",
                                          "docker-compose.yml"):
            continue
        try:
            doc = load_yaml_docs(path)[0]
        except (yaml.YAMLError, IndexError):
            p.add(path, "does not parse (see the yaml check)")
            continue
        for sname, svc in (doc.get("services") or {}).items():
            for name in compose_environment(svc):
                need(path, name, f"service {sname}: environment")
            env_files = svc.get("env_file") or []
            if isinstance(env_files, (str, dict)):
                env_files = [env_files]
            for ef in env_files:
                ef_path = ef.get("path") if isinstance(ef, dict) else ef
                full = os.path.join(os.path.dirname(path), ef_path)
                if not os.path.isfile(full):
                    p.add(path, f"service {sname}: env_file {ef_path} does not exist")
                    continue
                for name in read_env_file(full):
                    need(full, name, f"(env_file of service {sname})")

    # Kubernetes manifests
    try:
        docs = k8s_docs(root)
    except yaml.YAMLError:
        docs = []
        p.add("deploy/k8s/", "a manifest does not parse (see the yaml check)")
    objects = {}
    for path, d in docs:
        kind, name = d.get("kind"), (d.get("metadata") or {}).get("name")
        if kind in ("ConfigMap", "Secret"):
            keys = set()
            for field in ("data", "stringData", "binaryData"):
                keys |= set((d.get(field) or {}).keys())
            objects[(kind, name)] = (path, keys)
            for k in sorted(keys):
                need(path, k, f"{kind} {name}: key")
    loaded_whole = set()
    for path, d in docs:
        obj = f"{d.get('kind')} {(d.get('metadata') or {}).get('name')}"
        for key, c in pod_containers(d):
            cname = c.get("name")
            for e in c.get("env") or []:
                need(path, str(e.get("name", "")), f"{obj}, container {cname}: env")
                ref = (e.get("valueFrom") or {})
                for rk, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
                    r = ref.get(rk)
                    if not r or r.get("optional"):
                        continue
                    o = objects.get((kind, r.get("name")))
                    if o is None:
                        p.add(path, f"{obj}, container {cname}: env {e.get('name')} refers to "
                                    f"{kind} {r.get('name')}, which deploy/k8s does not define")
                    elif r.get("key") not in o[1]:
                        p.add(path, f"{obj}, container {cname}: env {e.get('name')} refers to "
                                    f"key {r.get('key')} of {kind} {r.get('name')}, which it lacks")
            for ef in c.get("envFrom") or []:
                for rk, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
                    r = ef.get(rk)
                    if not r:
                        continue
                    if (kind, r.get("name")) not in objects:
                        if not r.get("optional"):
                            p.add(path, f"{obj}, container {cname}: envFrom {kind} "
                                        f"{r.get('name')}, which deploy/k8s does not define")
                        continue
                    if ef.get("prefix"):
                        p.add(path, f"{obj}, container {cname}: envFrom {kind} {r.get('name')} "
                                    f"with a prefix; PARLEY_* names must arrive unchanged")
                    loaded_whole.add((kind, r.get("name")))
    for kind, name in sorted(loaded_whole):
        opath, keys = objects[(kind, name)]
        for k in sorted(keys):
            if k not in known and k not in reported:
                reported.add(k)
                p.add(opath, f"{kind} {name} is loaded whole into a container's environment "
                             f"(envFrom) but key {k} is not a Parley setting")

    # Any PARLEY_* word anywhere under deploy/ (entrypoint, comments, probes).
    for path in deploy_files(root):
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except UnicodeDecodeError:
            continue
        for n, line in enumerate(text.split("\n"), 1):
            for m in re.finditer(r"\bPARLEY_[A-Z0-9_]*[A-Z0-9]\b", line):
                if m.group(0) not in known and m.group(0) not in reported:
                    p.add(path, f"line {n}: mentions {m.group(0)}, which is not a Parley "
                                f"setting (not in `parley --list-settings`)")

    return p.finish("settings", f"{checked} PARLEY_* assignments, all among the "
                                f"{len(known)} settings parley reads")


def split_host_port(s):
    host, _, port = s.strip().rpartition(":")
    return host, port


def parse_duration_seconds(v):
    """Compose duration ('75s', '1m30s', '1m') in seconds; None if unreadable."""
    if isinstance(v, (int, float)):
        return float(v)
    total, pos = 0.0, 0
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    for m in re.finditer(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", str(v)):
        if m.start() != pos:
            return None
        total += float(m.group(1)) * units[m.group(2)]
        pos = m.end()
    return total if pos == len(str(v)) and pos > 0 else None


def published_ports(svc):
    """(host port, container port) of a compose service's published TCP ports."""
    out = []
    for entry in svc.get("ports") or []:
        if isinstance(entry, dict):
            out.append((str(entry.get("published", "")), str(entry.get("target", ""))))
            continue
        s = str(entry).split("/")[0]
        parts = s.rsplit(":", 2)
        if len(parts) == 1:
            out.append(("", parts[0]))
        else:
            out.append((parts[-2], parts[-1]))
    return out


def check_compose_nodes(root):
    p = Problems(root)
    compose = os.path.join(root, "deploy", "compose.yaml")
    cc_dir = os.path.join(root, "cluster-config")
    cc_files = sorted(f for f in os.listdir(cc_dir) if re.fullmatch(r"node-.*\.env", f))
    if not cc_files:
        p.add("cluster-config/", "no node-*.env files")
        return p.finish("compose-nodes", "")
    try:
        doc = load_yaml_docs(compose)[0]
    except (OSError, yaml.YAMLError, IndexError) as e:
        p.add(compose, f"cannot be read: {e}")
        return p.finish("compose-nodes", "")

    defaults = {"PARLEY_HTTP_PORT": "8080", "PARLEY_CLUSTER_PORT": "4242",
                "PARLEY_CLUSTER_HOST": "127.0.0.1", "PARLEY_FAILURE_DETECT_MS": "3000"}

    def get(env, key):
        v = env.get(key, "")
        return v if v != "" else defaults.get(key, "")

    # cluster-config: node id -> settings
    cc = {}
    for f in cc_files:
        path = os.path.join(cc_dir, f)
        env = read_env_file(path)
        nid = env.get("PARLEY_NODE_ID")
        if not nid:
            p.add(path, "sets no PARLEY_NODE_ID")
            continue
        cc[nid] = (path, env)
    cc_addr = {(get(e, "PARLEY_CLUSTER_HOST"), get(e, "PARLEY_CLUSTER_PORT")): nid
               for nid, (_, e) in cc.items()}

    # compose: node id -> (service name, service, env)
    services = doc.get("services") or {}
    nodes, names_of = {}, {}
    for sname, svc in services.items():
        names = {sname}
        if svc.get("hostname"):
            names.add(str(svc["hostname"]))
        if svc.get("container_name"):
            names.add(str(svc["container_name"]))
        nets = svc.get("networks")
        if isinstance(nets, dict):
            for n in nets.values():
                names |= set((n or {}).get("aliases") or [])
        names_of[sname] = names
        env = compose_environment(svc)
        if "PARLEY_NODE_ID" in env:
            nid = env["PARLEY_NODE_ID"]
            if nid in nodes:
                p.add(compose, f"services {nodes[nid][0]} and {sname} both have "
                               f"PARLEY_NODE_ID={nid}")
            nodes[nid] = (sname, svc, env)

    for nid in sorted(set(cc) - set(nodes)):
        p.add(compose, f"no service with PARLEY_NODE_ID={nid} ({os.path.relpath(cc[nid][0], root)})")
    for nid in sorted(set(nodes) - set(cc)):
        p.add(compose, f"service {nodes[nid][0]}: PARLEY_NODE_ID={nid} has no "
                       f"cluster-config/node-*.env")

    def service_named(host):
        return [s for s, names in names_of.items() if host in names]

    for nid in sorted(set(cc) & set(nodes)):
        cpath, cenv = cc[nid]
        sname, svc, env = nodes[nid]
        where = f"service {sname} (PARLEY_NODE_ID={nid})"
        crel = os.path.relpath(cpath, root)
        for key in ("PARLEY_HTTP_PORT", "PARLEY_CLUSTER_PORT", "PARLEY_FAILURE_DETECT_MS"):
            if get(env, key) != get(cenv, key):
                p.add(compose, f"{where}: {key}={get(env, key)}, but {crel} has "
                               f"{key}={get(cenv, key)}")
        host = get(env, "PARLEY_CLUSTER_HOST")
        if sname not in service_named(host):
            p.add(compose, f"{where}: PARLEY_CLUSTER_HOST={host} is not a name of service "
                           f"{sname} (its service name, hostname or network aliases)")
        self_addr = f"{host}:{get(env, 'PARLEY_CLUSTER_PORT')}"

        # Seeds, resolved to node ids.
        cseeds = [s.strip() for s in cenv.get("PARLEY_SEEDS", "").split(",") if s.strip()]
        dseeds = [s.strip() for s in env.get("PARLEY_SEEDS", "").split(",") if s.strip()]
        cnodes = []
        for s in cseeds:
            cnodes.append(cc_addr.get(split_host_port(s), f"?{s}"))
        dnodes = []
        for s in dseeds:
            h, port = split_host_port(s)
            owners = [n for n, (sn, _, e) in nodes.items()
                      if sn in service_named(h) and get(e, "PARLEY_CLUSTER_PORT") == port]
            if not owners:
                p.add(compose, f"{where}: PARLEY_SEEDS entry '{s}' is not the cluster address "
                               f"of any node service (host = its service name, port = its "
                               f"PARLEY_CLUSTER_PORT)")
                dnodes.append(f"?{s}")
                continue
            dnodes.append(owners[0])
            if owners[0] == nid and s != self_addr:
                p.add(compose, f"{where}: its own PARLEY_SEEDS entry '{s}' must read "
                               f"'{self_addr}' (PARLEY_CLUSTER_HOST:PARLEY_CLUSTER_PORT) for "
                               f"the node to skip it")
        if cnodes != dnodes:
            p.add(compose, f"{where}: PARLEY_SEEDS={env.get('PARLEY_SEEDS', '')} names nodes "
                           f"{dnodes}, but {crel} PARLEY_SEEDS={cenv.get('PARLEY_SEEDS', '')} "
                           f"names {cnodes}")

        # Published HTTP port.
        http = get(env, "PARLEY_HTTP_PORT")
        want = get(cenv, "PARLEY_HTTP_PORT")
        pubs = published_ports(svc)
        if (want, http) not in pubs:
            p.add(compose, f"{where}: does not publish its HTTP port as {want}:{http} "
                           f"(ports: {[f'{h}:{c}' for h, c in pubs]})")

        # Health-gated start on the servers it uses.
        deps = svc.get("depends_on") or {}
        if isinstance(deps, list):
            deps = {d: {} for d in deps}
        for key in ("PARLEY_PG_URL", "PARLEY_REDIS_URL"):
            url = env.get(key, "")
            m = re.search(r"(?:@|://|host=)([A-Za-z0-9_.\-]+)", url)
            if not m or not url:
                continue
            target = service_named(m.group(1))
            if not target:
                continue  # a server outside compose
            t = target[0]
            if (deps.get(t) or {}).get("condition") != "service_healthy":
                p.add(compose, f"{where}: {key} uses service {t}, but depends_on has no "
                               f"'{t}: {{condition: service_healthy}}'")
            if not services[t].get("healthcheck"):
                p.add(compose, f"service {t}: no healthcheck, but {where} waits for it to be "
                               f"healthy")
        grace = parse_duration_seconds(svc.get("stop_grace_period", "10s"))
        if grace is None or grace < 45:
            p.add(compose, f"{where}: stop_grace_period {svc.get('stop_grace_period', '10s')} "
                           f"is shorter than 45s; a drain needs longer")

    return p.finish("compose-nodes", f"{len(nodes)} compose nodes match cluster-config "
                                     f"({', '.join(sorted(nodes))})")


COMPILERS = {"g++", "gcc", "clang", "cmake", "ninja-build", "make", "pkg-config",
             "build-essential"}


def check_dockerfile(root):
    p = Problems(root)
    path = os.path.join(root, "deploy", "Dockerfile")
    if not os.path.isfile(path):
        p.add(path, "missing")
        return p.finish("dockerfile", "")
    stages = dockerfile_stages(dockerfile_instructions(path))
    if len(stages) < 2:
        p.add(path, f"{len(stages)} stage(s); expected a build stage and a runtime stage")
        return p.finish("dockerfile", "")
    listed = set(packages_txt(root))
    seen = []
    for st in stages:
        if st["base"] not in ("debian:bookworm", "debian:bookworm-slim") and st["base"] not in seen:
            p.add(path, f"line {st['line']}: stage {st['name']} is FROM {st['base']}; expected "
                        f"debian:bookworm, debian:bookworm-slim or an earlier stage")
        seen.append(st["name"])

    build = [st for st in stages
             if any(w == "RUN" and re.search(r"\bcmake\b", r) for _, w, r in st["instructions"])]
    if not build:
        p.add(path, "no stage runs cmake (the build stage)")
    for st in build:
        copies = any(w in ("COPY", "ADD") and "scripts/packages.txt" in r
                     for _, w, r in st["instructions"])
        if not copies:
            p.add(path, f"build stage {st['name']}: does not COPY scripts/packages.txt")
        installs_from_list = False
        for n, w, r in st["instructions"]:
            if w != "RUN" or not apt_install_packages(r):
                continue
            if re.search(r"packages\.txt|parley_packages|parley_install_deps", r):
                installs_from_list = True
            for pkg in apt_install_packages(r):
                if is_literal_package(pkg):
                    where = "is already in" if pkg.split("=")[0] in listed else "belongs in"
                    p.add(path, f"line {n}: build stage {st['name']} installs '{pkg}' by name; "
                                f"it {where} scripts/packages.txt, the one list")
        if not installs_from_list:
            p.add(path, f"build stage {st['name']}: no RUN installs the packages of "
                        f"scripts/packages.txt (apt-get install from parley_packages)")

    final = stages[-1]
    words = {}
    for n, w, r in final["instructions"]:
        words.setdefault(w, []).append((n, r))
        if w == "RUN":
            for pkg in apt_install_packages(r):
                base = pkg.split("=")[0].split(":")[0]
                if base.endswith("-dev") or base in COMPILERS:
                    p.add(path, f"line {n}: runtime stage {final['name']} installs build "
                                f"package '{pkg}'; it needs runtime libraries only")
    user = (words.get("USER") or [(0, "")])[-1][1].split(":")[0]
    if user in ("", "0", "root"):
        p.add(path, f"runtime stage {final['name']}: runs as root; add USER with a non-root uid")
    hc = " ".join(r for _, r in words.get("HEALTHCHECK", []))
    if "/healthz" not in hc:
        p.add(path, f"runtime stage {final['name']}: no HEALTHCHECK on /healthz")
    if [r for _, r in words.get("STOPSIGNAL", [])] != ["SIGTERM"]:
        p.add(path, f"runtime stage {final['name']}: STOPSIGNAL must be SIGTERM (drain)")
    exposed = set(" ".join(r for _, r in words.get("EXPOSE", [])).replace("/tcp", "").split())
    for port in ("8080", "4242"):
        if port not in exposed:
            p.add(path, f"runtime stage {final['name']}: does not EXPOSE {port}")

    # COPY sources from the build context exist.
    for st in stages:
        for n, w, r in st["instructions"]:
            if w not in ("COPY", "ADD") or "--from" in r:
                continue
            try:
                args = [a for a in shlex.split(r) if not a.startswith("--")]
            except ValueError:
                continue
            for src in args[:-1]:
                if src != "." and not os.path.exists(os.path.join(root, src)):
                    p.add(path, f"line {n}: COPY source {src} does not exist")

    ignore = os.path.join(root, ".dockerignore")
    if not os.path.isfile(ignore):
        p.add(ignore, "missing")
    else:
        with open(ignore, encoding="utf-8") as f:
            pats = {l.strip().rstrip("/") for l in f if l.strip() and not l.startswith("#")}
        for want in (".git", "build*", "var"):
            if want not in pats:
                p.add(ignore, f"does not exclude {want}")
    return p.finish("dockerfile", f"{len(stages)} stages; the build stage installs from "
                                  f"scripts/packages.txt ({len(listed)} packages)")


def debian_major():
    try:
        with open("/etc/debian_version", encoding="utf-8") as f:
            return f.read().strip().split(".")[0]
    except OSError:
        return ""


def owner_package(lib_path):
    candidates = [lib_path, os.path.realpath(lib_path)]
    for c in list(candidates):
        if c.startswith("/usr/lib/"):
            candidates.append(c[4:])
        elif c.startswith("/lib/"):
            candidates.append("/usr" + c)
    for c in candidates:
        r = subprocess.run(["dpkg", "-S", c], capture_output=True, text=True)
        if r.returncode == 0 and r.stdout.strip():
            line = r.stdout.strip().splitlines()[0]
            return line.split(":", 1)[0].split(",")[0].strip()
    return None


def check_runtime_libs(root, binaries):
    for tool in ("readelf", "ldd", "dpkg"):
        if not shutil.which(tool):
            print(f"SKIP runtime-libs: {tool} not found")
            return SKIP
    if debian_major() != "12":
        print("SKIP runtime-libs: this machine is not Debian 12 (bookworm), so its package "
              "names need not be the image's")
        return SKIP
    p = Problems(root)
    path = os.path.join(root, "deploy", "Dockerfile")
    stages = dockerfile_stages(dockerfile_instructions(path))
    final = stages[-1]
    installed = {}
    for n, w, r in final["instructions"]:
        if w == "RUN":
            for pkg in apt_install_packages(r):
                installed[pkg.split("=")[0].split(":")[0]] = n
    needed = {}
    for b in binaries:
        if not os.path.isfile(b):
            p.add(b, "binary not found (build it first)")
            continue
        r = subprocess.run(["readelf", "-d", b], capture_output=True, text=True)
        sonames = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", r.stdout)
        ldd = subprocess.run(["ldd", b], capture_output=True, text=True).stdout
        where = dict(re.findall(r"^\s*(\S+) => (\S+)", ldd, re.M))
        for so in sonames:
            lib = where.get(so)
            pkg = owner_package(lib) if lib and lib != "not" else None
            if not pkg:
                p.add(b, f"links {so}, but no Debian package owns it here ({lib or 'not found'})")
                continue
            needed.setdefault(pkg, set()).add(f"{os.path.basename(b)}: {so}")
    for pkg in sorted(needed):
        if pkg not in installed:
            p.add(path, f"runtime stage {final['name']} does not install {pkg} "
                        f"(needed for {', '.join(sorted(needed[pkg]))})")
    for pkg, n in sorted(installed.items()):
        if pkg.startswith("lib") and pkg not in needed:
            p.add(path, f"line {n}: runtime stage {final['name']} installs {pkg}, which no "
                        f"binary links; remove it to keep the image slim")
    return p.finish("runtime-libs", f"runtime stage installs the {len(needed)} library packages "
                                    f"the binaries link: {', '.join(sorted(needed))}")


def registered_metrics(root):
    names = set()
    for folder in ("net", "storage", "actors", "runtime"):
        for base, _, files in os.walk(os.path.join(root, folder)):
            for f in files:
                if f.endswith((".cpp", ".hpp")):
                    with open(os.path.join(base, f), encoding="utf-8", errors="replace") as fh:
                        names |= set(re.findall(r'"(parley_[a-z0-9_]+)"', fh.read()))
    return names


def check_alerts(root):
    p = Problems(root)
    path = os.path.join(root, "deploy", "prometheus", "alerts.yaml")
    try:
        rules = load_yaml_docs(path)[0]
        groups = rules["groups"]
    except (OSError, yaml.YAMLError, IndexError, KeyError, TypeError) as e:
        p.add(path, f"not a Prometheus rules file with 'groups': {e}")
        return p.finish("alerts", "")
    metrics = registered_metrics(root)
    count = 0
    for g in groups:
        for r in g.get("rules") or []:
            count += 1
            name = r.get("alert") or r.get("record")
            if not name or not r.get("expr"):
                p.add(path, f"group {g.get('name')}: a rule without alert name or expr: {r}")
                continue
            for m in sorted(set(re.findall(r"\bparley_[a-z0-9_]+", str(r["expr"])))):
                base = re.sub(r"_(bucket|sum|count)$", "", m)
                if m not in metrics and base not in metrics:
                    p.add(path, f"rule {name} uses metric {m}, which no Parley source registers")
    docs = os.path.join(root, "docs", "operations.md")
    if os.path.isfile(docs):
        with open(docs, encoding="utf-8") as f:
            blocks = re.findall(r"^```yaml\n(.*?)^```", f.read(), re.M | re.S)
        shown = []
        for b in blocks:
            try:
                d = yaml.safe_load(b)
            except yaml.YAMLError as e:
                p.add(docs, f"a yaml block does not parse: {e}")
                continue
            if isinstance(d, dict) and "groups" in d:
                shown.append(d)
        if not shown:
            p.add(docs, "shows no alert rules (a ```yaml block with 'groups:')")
        elif all(d != rules for d in shown):
            p.add(docs, "its alert rules differ from deploy/prometheus/alerts.yaml; "
                        "keep the two the same")
    promtool = shutil.which("promtool")
    if promtool:
        r = subprocess.run([promtool, "check", "rules", path], capture_output=True, text=True)
        if r.returncode != 0:
            p.add(path, f"promtool check rules failed:\n{r.stdout}{r.stderr}")
    else:
        print("note alerts: promtool not found; PromQL syntax not checked")
    return p.finish("alerts", f"{count} rules, their metrics exist, docs/operations.md shows "
                              f"the same rules")


TLS_SETTINGS = ("PARLEY_CLUSTER_TLS_CERT", "PARLEY_CLUSTER_TLS_KEY", "PARLEY_CLUSTER_TLS_CA")


def compose_secret_mounts(svc):
    """A compose service's secrets as {container path: source name}."""
    out = {}
    for e in svc.get("secrets") or []:
        if isinstance(e, dict):
            src = e.get("source")
            tgt = str(e.get("target") or src)
        else:
            src = tgt = str(e)
        out[tgt if tgt.startswith("/") else "/run/secrets/" + tgt] = src
    return out


def check_cluster_tls(root):
    p = Problems(root)
    nodes = 0

    # Compose
    path = os.path.join(root, "deploy", "compose.yaml")
    try:
        doc = load_yaml_docs(path)[0]
    except (OSError, yaml.YAMLError, IndexError):
        doc = {}
        p.add(path, "missing or does not parse")
    top = doc.get("secrets") or {}
    certs, cas = [], set()
    for sname, svc in (doc.get("services") or {}).items():
        env = compose_environment(svc)
        if "PARLEY_NODE_ID" not in env:
            continue
        nodes += 1
        mounts = compose_secret_mounts(svc)
        files = {}
        for name in TLS_SETTINGS:
            v = env.get(name, "")
            if not v:
                p.add(path, f"service {sname}: {name} is not set, so its cluster port is plain")
                continue
            src = mounts.get(v)
            if src is None:
                p.add(path, f"service {sname}: {name}={v} is not a secret the service mounts")
                continue
            sec = top.get(src)
            if not isinstance(sec, dict) or not sec.get("file"):
                p.add(path, f"service {sname}: secret {src} ({name}) has no top-level entry "
                            f"with a file")
                continue
            files[name] = os.path.normpath(str(sec["file"]))
        if len(files) == 3:
            cert, key, ca = (files[n] for n in TLS_SETTINGS)
            if os.path.splitext(cert)[0] != os.path.splitext(key)[0]:
                p.add(path, f"service {sname}: certificate {cert} and key {key} are not a pair "
                            f"(different names)")
            certs.append(cert)
            cas.add(ca)
    if len(set(certs)) != len(certs):
        p.add(path, f"node services share a certificate: {sorted(certs)}")
    if len(cas) > 1:
        p.add(path, f"node services trust different CAs: {sorted(cas)}")
    for src, sec in top.items():
        if isinstance(sec, dict) and os.path.basename(str(sec.get("file", ""))) == "ca.key":
            p.add(path, f"secret {src} is the CA's private key; no node needs it")

    # Kubernetes
    try:
        docs = k8s_docs(root)
    except yaml.YAMLError:
        docs = []
        p.add("deploy/k8s/", "a manifest does not parse (see the yaml check)")
    for path, d in docs:
        obj = f"{d.get('kind')} {(d.get('metadata') or {}).get('name')}"
        for spec in walk(d):
            if not (isinstance(spec, dict) and isinstance(spec.get("containers"), list)):
                continue
            volumes = {v.get("name"): v for v in spec.get("volumes") or [] if isinstance(v, dict)}
            for c in spec["containers"]:
                env = {e.get("name"): e for e in c.get("env") or [] if isinstance(e, dict)}
                if "PARLEY_NODE_ID" not in env:
                    continue
                nodes += 1
                where = f"{obj}, container {c.get('name')}"
                used = set()
                for name in TLS_SETTINGS:
                    v = (env.get(name) or {}).get("value")
                    if not v:
                        p.add(path, f"{where}: {name} has no literal value, so the cluster port "
                                    f"may be plain")
                        continue
                    mount = None
                    for m in c.get("volumeMounts") or []:
                        mp = str(m.get("mountPath", "")).rstrip("/")
                        if mp and v.startswith(mp + "/"):
                            mount = m
                    if mount is None:
                        p.add(path, f"{where}: {name}={v} lies under no volumeMount")
                        continue
                    if not mount.get("readOnly"):
                        p.add(path, f"{where}: the mount of {name} is not readOnly")
                    vol = volumes.get(mount.get("name")) or {}
                    secret = vol.get("secret")
                    if not isinstance(secret, dict) or not secret.get("secretName"):
                        p.add(path, f"{where}: {name} comes from volume {mount.get('name')}, "
                                    f"which is not a Secret")
                        continue
                    used.add(secret["secretName"])
                    mode = secret.get("defaultMode", 0o644)
                    if not isinstance(mode, int) or mode & 0o007:
                        p.add(path, f"{where}: Secret volume {mount.get('name')} has defaultMode "
                                    f"{mode!r}; others must get no access (e.g. 0440)")
                    if not (spec.get("securityContext") or {}).get("fsGroup"):
                        p.add(path, f"{obj}: no fsGroup, so user-only Secret files are "
                                    f"unreadable to a non-root node")
                if len(used) > 1:
                    p.add(path, f"{where}: the three files come from different Secrets "
                                f"{sorted(used)}")

    # cluster-config
    cc = os.path.join(root, "cluster-config")
    for f in sorted(os.listdir(cc)) if os.path.isdir(cc) else []:
        if f.endswith(".env"):
            env = read_env_file(os.path.join(cc, f))
            have = [n for n in TLS_SETTINGS if env.get(n)]
            if have and len(have) != 3:
                p.add(os.path.join(cc, f), f"sets {', '.join(have)} but not all three "
                                           f"PARLEY_CLUSTER_TLS_* (a fatal error at start-up)")

    if nodes == 0:
        p.add("deploy/", "no Parley node found in compose.yaml or deploy/k8s")
    return p.finish("cluster-tls", f"{nodes} node definitions take mutual TLS on the cluster "
                                   f"port from secrets")


def check_kustomize(root):
    kubectl = shutil.which("kubectl")
    if not kubectl:
        print("SKIP kustomize: kubectl not found")
        return SKIP
    r = subprocess.run([kubectl, "kustomize", os.path.join(root, "deploy", "k8s")],
                       capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        print(f"FAILED kustomize: deploy/k8s: `kubectl kustomize` failed:\n{r.stderr}")
        return 1
    kinds = re.findall(r"^kind: (\S+)", r.stdout, re.M)
    print(f"ok kustomize: deploy/k8s renders {len(kinds)} objects ({', '.join(kinds)})")
    return 0


def port_matches(entry, number, name):
    """Whether one NetworkPolicy `ports` entry admits TCP `number` (named `name`)."""
    if not isinstance(entry, dict):
        return False
    if entry.get("protocol", "TCP") != "TCP":
        return False
    port = entry.get("port")
    if port is None:
        return True  # every port of the protocol
    if isinstance(port, str) and not port.isdigit():
        return port == name
    lo = int(port)
    hi = int(entry.get("endPort", lo))
    return lo <= number <= hi


def check_networkpolicy(root):
    p = Problems(root)
    try:
        docs = k8s_docs(root)
    except yaml.YAMLError:
        p.add("deploy/k8s/", "a manifest does not parse (see the yaml check)")
        return p.finish("networkpolicy", "")
    workload = None
    for path, d in docs:
        if d.get("kind") != "StatefulSet":
            continue
        template = ((d.get("spec") or {}).get("template") or {})
        for _, c in pod_containers(template):
            if c.get("name") == "parley":
                workload = (path, d, template, c)
    if workload is None:
        p.add("deploy/k8s/", "no StatefulSet with a container named parley")
        return p.finish("networkpolicy", "")
    wpath, ss, template, container = workload
    pod_labels = ((template.get("metadata") or {}).get("labels") or {})
    ident = (((ss.get("spec") or {}).get("selector") or {}).get("matchLabels") or {})
    ports = {pt.get("name"): pt.get("containerPort") for pt in container.get("ports") or []}
    if "cluster" not in ports or "http" not in ports:
        p.add(wpath, "the parley container names no `cluster` and `http` ports")
        return p.finish("networkpolicy", "")
    cluster, http = ports["cluster"], ports["http"]

    def selects_parley(selector):
        labels = (selector or {}).get("matchLabels") or {}
        return bool(ident) and all(labels.get(k) == v for k, v in ident.items())

    policies = 0
    cluster_from_parley = False
    http_open = False
    for path, d in docs:
        if d.get("kind") != "NetworkPolicy":
            continue
        spec = d.get("spec") or {}
        name = (d.get("metadata") or {}).get("name")
        sel = (spec.get("podSelector") or {}).get("matchLabels") or {}
        if not all(pod_labels.get(k) == v for k, v in sel.items()):
            continue  # selects other pods
        types = spec.get("policyTypes") or ["Ingress"]
        if "Ingress" not in types:
            continue
        policies += 1
        for n, rule in enumerate(spec.get("ingress") or [], 1):
            rule = rule or {}
            entries = rule.get("ports") or [{}]
            peers = rule.get("from") or []
            admits_cluster = any(port_matches(e, cluster, "cluster") for e in entries)
            if any(port_matches(e, http, "http") for e in entries):
                http_open = True
            if not admits_cluster:
                continue
            where = f"NetworkPolicy {name}, ingress rule {n}"
            if not peers:
                p.add(path, f"{where} admits the cluster port {cluster} from anywhere")
                continue
            ok = True
            for peer in peers:
                extra = sorted(set(peer) - {"podSelector"})
                if extra or not selects_parley(peer.get("podSelector")):
                    ok = False
                    what = ", ".join(extra) if extra else "a podSelector without the labels " + \
                        ", ".join(f"{k}={v}" for k, v in ident.items())
                    p.add(path, f"{where} admits the cluster port {cluster} from {what}: "
                                f"only Parley pods may reach it")
            cluster_from_parley = cluster_from_parley or ok
    if policies == 0:
        p.add("deploy/k8s/", "no NetworkPolicy selects the Parley pods for Ingress, so every "
                             "pod of the cluster can reach the cluster port")
    else:
        if not cluster_from_parley:
            p.add("deploy/k8s/", f"no NetworkPolicy rule admits the cluster port {cluster} from "
                                 "Parley pods: nodes could not form a cluster")
        if not http_open:
            p.add("deploy/k8s/", f"no NetworkPolicy rule admits the HTTP port {http}")
    return p.finish("networkpolicy", f"{policies} policy(ies): cluster port {cluster} only from "
                                     f"Parley pods, HTTP port {http} admitted")


# The node's own stop budget after SIGTERM (runtime/node.cpp): session
# hand-over, in-flight HTTP requests, actors.
DRAIN_BUDGET_SECONDS = 30 + 30 + 10


def check_autoscaling(root):
    p = Problems(root)
    try:
        docs = k8s_docs(root)
    except yaml.YAMLError:
        p.add("deploy/k8s/", "a manifest does not parse (see the yaml check)")
        return p.finish("autoscaling", "")
    hpas = [(path, d) for path, d in docs if d.get("kind") == "HorizontalPodAutoscaler"]
    sets = {d.get("metadata", {}).get("name"): (path, d) for path, d in docs
            if d.get("kind") == "StatefulSet"}
    if not hpas:
        p.add("deploy/k8s/", "no HorizontalPodAutoscaler")
        return p.finish("autoscaling", "")
    rules_path = os.path.join(root, "deploy", "prometheus", "adapter-rules.yaml")
    served = set()
    try:
        for r in (load_yaml_docs(rules_path)[0].get("rules") or []):
            name = (r.get("name") or {}).get("as") or r.get("seriesQuery", "").split("{")[0]
            served.add(name)
    except (OSError, yaml.YAMLError, IndexError, AttributeError) as e:
        p.add(rules_path, f"not a prometheus-adapter rules file: {e}")
    metrics = registered_metrics(root)
    seeds = []
    for path, d in docs:
        if d.get("kind") == "ConfigMap":
            v = (d.get("data") or {}).get("PARLEY_SEEDS")
            if v:
                seeds = [x for x in str(v).split(",") if x.strip()]
    for path, h in hpas:
        spec = h.get("spec") or {}
        if h.get("apiVersion") != "autoscaling/v2":
            p.add(path, f"apiVersion {h.get('apiVersion')}, expected autoscaling/v2")
        ref = spec.get("scaleTargetRef") or {}
        target = sets.get(ref.get("name")) if ref.get("kind") == "StatefulSet" else None
        if target is None:
            p.add(path, f"scaleTargetRef {ref} names no StatefulSet of deploy/k8s")
            continue
        for m in spec.get("metrics") or []:
            if m.get("type") != "Pods":
                continue
            name = ((m.get("pods") or {}).get("metric") or {}).get("name")
            if name not in metrics:
                p.add(path, f"metric {name} is registered by no Parley source")
            if name not in served:
                p.add(path, f"metric {name} is served by no rule of {os.path.relpath(rules_path, root)}")
        if len(seeds) > int(spec.get("minReplicas") or 1):
            p.add(path, f"minReplicas {spec.get('minReplicas')} is below the {len(seeds)} pods "
                        "PARLEY_SEEDS names")
        tpl = ((target[1].get("spec") or {}).get("template") or {}).get("spec") or {}
        grace = int(tpl.get("terminationGracePeriodSeconds") or 30)
        pause = 0
        for c in tpl.get("containers") or []:
            cmd = ((((c.get("lifecycle") or {}).get("preStop") or {}).get("exec") or {})
                   .get("command") or [])
            if len(cmd) == 2 and cmd[0] == "sleep":
                pause = max(pause, int(cmd[1]))
        if grace < pause + DRAIN_BUDGET_SECONDS:
            p.add(target[0], f"terminationGracePeriodSeconds {grace} < preStop {pause} s + "
                             f"drain budget {DRAIN_BUDGET_SECONDS} s")
        down = (spec.get("behavior") or {}).get("scaleDown") or {}
        if int(down.get("stabilizationWindowSeconds", 300)) < 60:
            p.add(path, "scaleDown.stabilizationWindowSeconds under 60 s")
        policies = down.get("policies") or []
        if not policies:
            p.add(path, "no scaleDown policies: the default may remove many pods at once")
        for pol in policies:
            if pol.get("type") != "Pods" or int(pol.get("value", 0)) > 1 or \
                    int(pol.get("periodSeconds", 0)) < grace:
                p.add(path, f"scaleDown policy {pol} may start a drain before the last one "
                            f"ended (one pod per >= {grace} s)")
    return p.finish("autoscaling", f"{len(hpas)} autoscaler(s): metric served and registered, "
                                   "drains never overlap, seeds kept")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source", required=True, help="the repository root")
    ap.add_argument("--parley", help="the built parley binary (settings)")
    ap.add_argument("--binary", action="append", default=[],
                    help="a built binary that goes into the image (runtime-libs)")
    ap.add_argument("check", choices=["yaml", "settings", "compose-nodes", "dockerfile",
                                      "runtime-libs", "alerts", "cluster-tls", "kustomize",
                                      "networkpolicy", "autoscaling"])
    a = ap.parse_args()
    root = os.path.abspath(a.source)
    if a.check == "yaml":
        return check_yaml(root)
    if a.check == "settings":
        if not a.parley:
            ap.error("settings needs --parley")
        return check_settings(root, a.parley)
    if a.check == "compose-nodes":
        return check_compose_nodes(root)
    if a.check == "dockerfile":
        return check_dockerfile(root)
    if a.check == "runtime-libs":
        if not a.binary:
            ap.error("runtime-libs needs --binary")
        return check_runtime_libs(root, a.binary)
    if a.check == "alerts":
        return check_alerts(root)
    if a.check == "networkpolicy":
        return check_networkpolicy(root)
    if a.check == "autoscaling":
        return check_autoscaling(root)
    if a.check == "cluster-tls":
        return check_cluster_tls(root)
    return check_kustomize(root)


if __name__ == "__main__":
    sys.exit(main())
