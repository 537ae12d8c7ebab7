#!/bin/sh
# Entrypoint of the Parley image: runs build/parley (or `mock-llm ...`, or any
# other command given) as PID 1 via exec, so SIGTERM reaches it directly.
#
# PARLEY_CLUSTER_HOST is both the address the cluster port binds to and the
# address this node gives its peers, so 0.0.0.0 will not do. When it is
# unset, it defaults to the container's host name, which resolves to the
# container's own address (/etc/hosts) and, with `hostname:` in compose or
# a pod's hostname + subdomain in Kubernetes, is what the peers dial too.
set -eu

if [ -z "${PARLEY_CLUSTER_HOST:-}" ]; then
  PARLEY_CLUSTER_HOST=$(uname -n)
  export PARLEY_CLUSTER_HOST
fi

case "${1:-}" in
  "" | serve | --* ) exec /usr/local/bin/parley "$@" ;;
  * ) exec "$@" ;;
esac
