# The test tools of `make e2e`: iperf2 for the publisher pod and the SSM
# receiver, tcpdump to see what the receiver got on the wire, curl for the
# sidecars' /metrics. Built on the user's machine (it pulls the base image
# and Debian packages) and loaded into kind, never pulled by the cluster.
#
# iperf is pinned to the exact Debian package: the script's arithmetic
# relies on iperf 2.1.8's accounting (its client's "Sent N datagrams" counts
# one more than it puts on the wire; the receiver's Lost/Total counts the
# final datagram). The base is pinned by tag only: no registry was reachable
# where this file was written to confirm a digest.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      iperf=2.1.8+dfsg-1 tcpdump curl ca-certificates \
 && rm -rf /var/lib/apt/lists/*
