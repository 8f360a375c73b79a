#!/usr/bin/env bash
# Applies Scalable's Kubernetes pilots to a REAL kube-apiserver (issue 7; not
# in CI: building the apiserver from Debian's sources takes 6-19 minutes).
#
# 1. builds and starts etcd + kube-apiserver with the shared testbed script
#    (../shared/testbeds/k8s-apiserver-setup.sh, or $K8S_SETUP);
# 2. starts a broker owning the demeter manifest's `k8s` target;
# 3. `scalable scale --target k8s --tag demeter =2`: the kubernetes provider
#    runs `kubectl apply -f -` with two pilot Jobs; the API server validates
#    and stores them (there is no kubelet: their pods are never scheduled);
# 4. `scalable pilots` shows them queued; `kubectl get jobs` shows what the
#    server stored; then `=0` deletes them through the provider.
#   scripts/k8s-apply.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SETUP=${K8S_SETUP:-$(cd .. && pwd)/shared/testbeds/k8s-apiserver-setup.sh}
export K8S_DIR=${K8S_DIR:-/tmp/pilot-k8s}
bash "$SETUP" build
bash "$SETUP" start
export KUBECONFIG=$K8S_DIR/kubeconfig
cargo build --bins -q
kubectl create namespace demeter-prod --dry-run=client -o yaml | kubectl apply -f -
# The pilots' token comes from this Secret (never from the object itself).
state=$(mktemp -d)
trap 'kill $broker 2>/dev/null || true; rm -rf "$state"' EXIT
target/debug/scalable-broker --state-dir "$state" --listen 127.0.0.1:0 \
  --manifest examples/demeter/scalable.yaml --target k8s >"$state/broker.log" 2>&1 &
broker=$!
for _ in $(seq 100); do [ -f "$state/access.json" ] && break; sleep 0.1; done
S="target/debug/scalable --access $state/access.json"
kubectl -n demeter-prod create secret generic scalable-agent-token \
  --from-literal=token="$(awk '{print $3}' "$state/agent.token")" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
echo "== render --commands"
$S render examples/demeter/scalable.yaml --target k8s --tag demeter --commands
echo "== scale =2"
$S scale --target k8s --tag demeter =2
echo "== what the API server stored"
kubectl -n demeter-prod get jobs,deployments -l scalable/target=k8s -o wide || kubectl -n demeter-prod get jobs -o wide
kubectl -n demeter-prod get jobs -o json | python3 -c 'import json,sys; d=json.load(sys.stdin); [print(i["metadata"]["name"], [e["name"] for c in i["spec"]["template"]["spec"]["containers"] for e in c.get("env",[])]) for i in d["items"]]'
sleep 6
echo "== scalable pilots"
$S pilots
echo "== scale =0"
$S scale --target k8s --tag demeter =0
sleep 3
kubectl -n demeter-prod get jobs
echo "== broker log"
tail -5 "$state/broker.log"
