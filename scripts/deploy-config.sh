#!/usr/bin/env bash
# `make deploy-config`: the deployment files for one cluster, from the
# settings that differ between clusters, written into OUT (never into
# manifests/, which stay the bases they are):
#
#   OUT/cilium-values.yaml             helm -f: the sidecar in cilium-agent's pod
#   OUT/daemonset/kustomization.yaml   kubectl apply -k: its own DaemonSet
#   OUT/monitoring/kustomization.yaml  kubectl apply -k: PodMonitors, alerts, dashboard
#
# Settings (environment):
#   IMAGE               the image as your nodes pull it, registry and tag (or
#                       digest): the name `make image` and `make push` use
#                       (default cilium-mcast-egress:<version>, which only a
#                       node that has the image loaded can run)
#   K8S_SERVICE_HOST    the API server as cilium-agent reaches it: the Cilium
#   K8S_SERVICE_PORT    chart's k8sServiceHost and k8sServicePort. Both or
#                       neither. Set them on clusters without kube-proxy:
#                       there the API server's ClusterIP works only through
#                       Cilium's socket load balancer, so it is gone while
#                       cilium-agent restarts.
#   PROMETHEUS_RELEASE  the label `release` that kube-prometheus-stack's
#                       default selectors require on PodMonitors and
#                       PrometheusRules: its Helm release name (default
#                       kube-prometheus-stack)
#   OUT                 where to write (default target/deploy)
#
# Needs bash 4 and awk; no cluster, no root.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd -P)
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$ROOT/Cargo.toml" | head -n 1)
IMAGE=${IMAGE:-cilium-mcast-egress:$version}
K8S_SERVICE_HOST=${K8S_SERVICE_HOST:-}
K8S_SERVICE_PORT=${K8S_SERVICE_PORT:-}
PROMETHEUS_RELEASE=${PROMETHEUS_RELEASE:-kube-prometheus-stack}
OUT=${OUT:-$ROOT/target/deploy}

# The name every base carries; kustomize's `images:` replaces it by name.
BASE_IMAGE_NAME=cilium-mcast-egress
VALUES=$ROOT/manifests/deploy/cilium-values.yaml

# relpath FROM TO: TO relative to FROM, both absolute without symlinks
# (kustomize takes no absolute path to a base).
relpath() {
	local common=$1 up=''
	while [[ $2 != "$common" && $2 != "$common/"* ]]; do
		common=${common%/*}
		up=../$up
		[[ -n $common ]] || break
	done
	local rest=${2#"$common"}
	rest=${rest#/}
	printf '%s\n' "$up${rest:-.}"
}

die() {
	printf 'deploy-config: %s\n' "$*" >&2
	exit 2
}

# An image reference as docker and the kubelet parse it: lowercase path
# components, an optional registry port, and a tag or a digest at the end.
component='[a-z0-9]+([._-][a-z0-9]+)*'
if ! [[ $IMAGE =~ ^$component(:[0-9]+)?(/$component)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[0-9a-f]{64})?$ ]]; then
	die "IMAGE=$IMAGE is not an image reference (registry/name:tag)"
fi
last=${IMAGE##*/}
if [[ $last != *:* && $last != *@* ]]; then
	die "IMAGE=$IMAGE has no tag or digest; name the version you pushed (…:$version)"
fi
# Name, and the tag or the digest, as kustomize's `images:` takes them.
if [[ $IMAGE == *@* ]]; then
	image_name=${IMAGE%@*}
	image_field="digest: ${IMAGE#*@}"
else
	image_name=${IMAGE%:*}
	image_field="newTag: \"${IMAGE##*:}\""
fi

if [[ -n $K8S_SERVICE_HOST || -n $K8S_SERVICE_PORT ]]; then
	[[ -n $K8S_SERVICE_HOST && -n $K8S_SERVICE_PORT ]] ||
		die "K8S_SERVICE_HOST and K8S_SERVICE_PORT go together (Cilium's k8sServiceHost and k8sServicePort)"
	[[ $K8S_SERVICE_HOST =~ ^[A-Za-z0-9]([A-Za-z0-9.:-]*[A-Za-z0-9])?$ ]] ||
		die "K8S_SERVICE_HOST=$K8S_SERVICE_HOST is not a host name or an address"
	if ! [[ $K8S_SERVICE_PORT =~ ^[0-9]{1,5}$ ]] || ((10#$K8S_SERVICE_PORT < 1 || 10#$K8S_SERVICE_PORT > 65535)); then
		die "K8S_SERVICE_PORT=$K8S_SERVICE_PORT is not a port"
	fi
fi
[[ $PROMETHEUS_RELEASE =~ ^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$ ]] ||
	die "PROMETHEUS_RELEASE=$PROMETHEUS_RELEASE is not a label value"

mkdir -p "$OUT/daemonset" "$OUT/monitoring"
OUT=$(cd "$OUT" && pwd -P)

# --- the chart's values: the base with the image, and the API server ------
# The chart renders extraContainers with toYaml, not tpl: the values must
# hold the literal settings. The base has one `image:` and one `env:` line
# of the container; anything else is a base this script does not know.
env_lines=""
if [[ -n $K8S_SERVICE_HOST ]]; then
	env_lines="  - name: KUBERNETES_SERVICE_HOST
    value: \"$K8S_SERVICE_HOST\"
  - name: KUBERNETES_SERVICE_PORT
    value: \"$K8S_SERVICE_PORT\""
fi
awk -v image="$IMAGE" -v env_lines="$env_lines" '
	/^  image: / { print "  image: " image; images++; next }
	/^  env:$/ { print; if (env_lines != "") print env_lines; envs++; next }
	{ print }
	END { if (images != 1 || envs != 1) exit 3 }
' "$VALUES" >"$OUT/cilium-values.yaml.tmp" ||
	die "$VALUES: expected one '  image:' and one '  env:' line in its container"
{
	printf '# Rendered by scripts/deploy-config.sh from manifests/deploy/cilium-values.yaml\n'
	printf '# IMAGE=%s%s\n' "$IMAGE" "${K8S_SERVICE_HOST:+ K8S_SERVICE_HOST=$K8S_SERVICE_HOST K8S_SERVICE_PORT=$K8S_SERVICE_PORT}"
	cat "$OUT/cilium-values.yaml.tmp"
} >"$OUT/cilium-values.yaml"
rm -f "$OUT/cilium-values.yaml.tmp"

# --- the DaemonSet: an overlay of manifests/deploy --------------------------
deploy_rel=$(relpath "$OUT/daemonset" "$ROOT/manifests/deploy")
{
	cat <<EOF
# Rendered by scripts/deploy-config.sh: kubectl apply -k $OUT/daemonset
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- $deploy_rel
images:
- name: $BASE_IMAGE_NAME
  newName: $image_name
  $image_field
EOF
	if [[ -n $K8S_SERVICE_HOST ]]; then
		cat <<EOF
patches:
- target: {kind: DaemonSet, name: cilium-mcast-egress}
  patch: |-
    - op: add
      path: /spec/template/spec/containers/0/env/-
      value: {name: KUBERNETES_SERVICE_HOST, value: "$K8S_SERVICE_HOST"}
    - op: add
      path: /spec/template/spec/containers/0/env/-
      value: {name: KUBERNETES_SERVICE_PORT, value: "$K8S_SERVICE_PORT"}
EOF
	fi
} >"$OUT/daemonset/kustomization.yaml"

# --- monitoring: an overlay of manifests/monitoring with the release label -
monitoring_rel=$(relpath "$OUT/monitoring" "$ROOT/manifests/monitoring")
cat >"$OUT/monitoring/kustomization.yaml" <<EOF
# Rendered by scripts/deploy-config.sh: kubectl apply -k $OUT/monitoring
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- $monitoring_rel
labels:
- pairs:
    release: "$PROMETHEUS_RELEASE"
  includeSelectors: false
EOF

printf 'deploy-config: IMAGE=%s, written to %s:\n' "$IMAGE" "$OUT"
printf '  helm upgrade cilium cilium/cilium -n kube-system --version <installed> --reuse-values -f %s/cilium-values.yaml\n' "$OUT"
printf '  kubectl apply -k %s/daemonset    (or the DaemonSet instead of the sidecar)\n' "$OUT"
printf '  kubectl apply -k %s/monitoring\n' "$OUT"
if [[ $image_name != */* ]]; then
	printf 'deploy-config: note: %s names no registry; only nodes that have it loaded (kind load) can run it\n' "$IMAGE" >&2
fi
if [[ -z $K8S_SERVICE_HOST ]]; then
	printf 'deploy-config: note: no K8S_SERVICE_HOST/K8S_SERVICE_PORT; without kube-proxy, set them to Cilium'"'"'s k8sServiceHost/k8sServicePort\n' >&2
fi
