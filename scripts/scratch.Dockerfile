# The image `make image` builds (scripts/build-image.sh): FROM scratch, with
# a root filesystem the script assembled from this build's release binary
# and the shared libraries it loads. Nothing is pulled. The labels
# (org.opencontainers.image.*) come from the script.
#
# For a build with registry access, the multi-stage Dockerfile at the top of
# the repository builds the same binary from source.
FROM scratch
COPY rootfs/ /
# root: the BPF filesystem's pins are root-owned, mode 0600. The
# capabilities are the pod's business (BPF, NET_ADMIN, PERFMON).
USER 0:0
ENTRYPOINT ["/usr/bin/cilium-mcast-egress"]
CMD ["run"]
