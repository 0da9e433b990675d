#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Write a manifests directory that looks like a large Cilium cluster.

    scripts/gen-cluster.py DIR [--nodes 500] [--endpoints 10000] [--policies 100]

DIR gets nodes.yaml (the CiliumNodes), policies.yaml (the
CiliumEgressGatewayPolicies) and endpoints-NNN.yaml (the CiliumEndpoints,
grouped by namespace, as `kubectl get -o yaml` per namespace would give
them). Existing *.yaml files in DIR are replaced; nothing else is touched.
The output depends on the arguments only, so two runs compare equal.

The shape, for `cilium-mcast-egress run --manifests DIR --node-name node-0000`:

- Nodes node-0000.. ; the first ten carry `egress-gateway: gw-N` and are the
  gateways. Node N's InternalIP is address N of the pool.
- Endpoints spread round-robin over the nodes, 50 namespaces and 200 apps,
  with a uid (Cilium hashes it to pick one of several gateways), a security
  identity per (namespace, app) and the identity labels Cilium writes.
- Each policy selects two apps (so every endpoint is selected once), with
  /16, /24 and /32 multicast destinations in turn, an exclusion in every
  /16, 0.0.0.0/0 (Cilium's unicast egress) in every fifth policy, and an
  `egressGateways` list of two gateways in every fourth instead of
  `egressGateway`.

Addresses: by default every address comes from the documentation ranges
(192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, RFC 5737), which hold 762
hosts; past that they repeat, so many endpoints share an address and the
policy map holds fewer entries than a real cluster would. `--ipv4-pool CIDR`
takes them from another range instead (with enough room, each endpoint and
node has an address of its own); do so only where nothing is routed.
"""

import argparse
import ipaddress
import os
import sys

NAMESPACES = 50
APPS = 200
GATEWAYS = 10
DOC_RANGES = ["192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"]


def pool(cidrs):
    out = []
    for cidr in cidrs:
        out.extend(str(a) for a in ipaddress.ip_network(cidr).hosts())
    if not out:
        sys.exit("gen-cluster: the address pool is empty")
    return out


def uid(kind, n):
    # A fixed, UUID-shaped uid per object: stable across runs.
    return "0f8a3b52-%04x-4c8e-9a51-%012x" % (kind, n)


def node(n, addresses):
    labels = ["kubernetes.io/hostname: node-%04d" % n]
    if n < GATEWAYS:
        labels.append("egress-gateway: gw-%d" % n)
    return (
        "apiVersion: cilium.io/v2\n"
        "kind: CiliumNode\n"
        "metadata:\n"
        "  name: node-%04d\n"
        "  uid: %s\n"
        "  labels:\n%s"
        "spec:\n"
        "  addresses:\n"
        "  - {type: InternalIP, ip: %s}\n"
    ) % (
        n,
        uid(1, n),
        "".join("    %s\n" % l for l in labels),
        addresses[n % len(addresses)],
    )


def endpoint(i, nodes, addresses):
    ns = i % NAMESPACES
    app = i % APPS
    host = i % nodes
    identity = 10000 + ns * APPS + app
    # Endpoint addresses follow the nodes' in the pool.
    ip = addresses[(nodes + i) % len(addresses)]
    return (
        "apiVersion: cilium.io/v2\n"
        "kind: CiliumEndpoint\n"
        "metadata:\n"
        "  name: app-%03d-%05d\n"
        "  namespace: ns-%02d\n"
        "  uid: %s\n"
        "status:\n"
        "  id: %d\n"
        "  identity:\n"
        "    id: %d\n"
        "    labels:\n"
        "    - k8s:app=app-%03d\n"
        "    - k8s:io.kubernetes.pod.namespace=ns-%02d\n"
        "    - k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=ns-%02d\n"
        "  networking:\n"
        "    addressing:\n"
        "    - {ipv4: %s}\n"
        "    node: %s\n"
    ) % (
        app,
        i,
        ns,
        uid(2, i),
        1 + i % 4000,
        identity,
        app,
        ns,
        ns,
        ip,
        addresses[host % len(addresses)],
    )


def policy(k):
    if k % 3 == 0:
        dest = ["232.%d.0.0/16" % (10 + k % 200)]
        excl = ["232.%d.255.0/24" % (10 + k % 200)]
    elif k % 3 == 1:
        dest = ["232.1.%d.0/24" % (k % 256), "232.2.%d.0/24" % (k % 256)]
        excl = []
    else:
        dest = ["232.3.%d.%d/32" % (k // 256 % 256, k % 256)]
        excl = []
    if k % 5 == 0:
        dest.append("0.0.0.0/0")
    apps = ["app-%03d" % ((2 * k) % APPS), "app-%03d" % ((2 * k + 1) % APPS)]
    text = (
        "apiVersion: cilium.io/v2\n"
        "kind: CiliumEgressGatewayPolicy\n"
        "metadata:\n"
        "  name: policy-%03d\n"
        "spec:\n"
        "  selectors:\n"
        "  - podSelector:\n"
        "      matchExpressions:\n"
        "      - {key: app, operator: In, values: [%s]}\n"
        "  destinationCIDRs: [%s]\n"
    ) % (k, ", ".join(apps), ", ".join(dest))
    if excl:
        text += "  excludedCIDRs: [%s]\n" % ", ".join(excl)
    gateways = [k % GATEWAYS]
    if k % 4 == 0:
        gateways.append((k + 1) % GATEWAYS)
        text += "  egressGateways:\n"
        for g in gateways:
            text += (
                "  - nodeSelector:\n"
                "      matchLabels: {egress-gateway: gw-%d}\n"
                "    interface: uplink0\n"
            ) % g
    else:
        text += (
            "  egressGateway:\n"
            "    nodeSelector:\n"
            "      matchLabels: {egress-gateway: gw-%d}\n"
            "    interface: uplink0\n"
        ) % gateways[0]
    return text


def write(path, documents):
    # Write beside, then rename: a watching daemon never reads half a file.
    tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp")
    with open(tmp, "w") as f:
        f.write("---\n".join(documents))
    os.replace(tmp, path)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("dir")
    p.add_argument("--nodes", type=int, default=500)
    p.add_argument("--endpoints", type=int, default=10000)
    p.add_argument("--policies", type=int, default=100)
    p.add_argument(
        "--ipv4-pool",
        action="append",
        metavar="CIDR",
        help="take addresses from CIDR (repeatable) instead of the documentation ranges",
    )
    a = p.parse_args()
    if a.nodes < 1:
        sys.exit("gen-cluster: at least one node")
    addresses = pool(a.ipv4_pool or DOC_RANGES)

    os.makedirs(a.dir, exist_ok=True)
    for name in os.listdir(a.dir):
        if name.endswith(".yaml") and not name.startswith("."):
            os.remove(os.path.join(a.dir, name))

    write(os.path.join(a.dir, "nodes.yaml"), [node(n, addresses) for n in range(a.nodes)])
    write(os.path.join(a.dir, "policies.yaml"), [policy(k) for k in range(a.policies)])
    by_namespace = [[] for _ in range(NAMESPACES)]
    for i in range(a.endpoints):
        by_namespace[i % NAMESPACES].append(endpoint(i, a.nodes, addresses))
    for ns, documents in enumerate(by_namespace):
        if documents:
            write(os.path.join(a.dir, "endpoints-%03d.yaml" % ns), documents)


if __name__ == "__main__":
    main()
