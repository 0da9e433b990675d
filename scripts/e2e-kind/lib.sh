# shellcheck shell=bash
# Helpers of scripts/e2e-kind.sh: version checks, and parsers for what
# iperf2 and the sidecar's /metrics print. Pure bash plus awk, no cluster,
# so tests/e2e_kind.rs runs them on real output here.

# version_ge A B: whether version A >= B, numerically per dot-separated part
# ("1.33.1" >= "1.32"; missing parts count as 0).
version_ge() {
	local -a a b
	local i x y
	IFS=. read -r -a a <<<"$1"
	IFS=. read -r -a b <<<"$2"
	for ((i = 0; i < ${#a[@]} || i < ${#b[@]}; i++)); do
		x=${a[i]:-0}
		y=${b[i]:-0}
		if ((10#$x > 10#$y)); then return 0; fi
		if ((10#$x < 10#$y)); then return 1; fi
	done
	return 0
}

# version_of TEXT: the first x.y or x.y.z in TEXT ("kind v0.29.0 go1.24"
# -> 0.29.0, "Client Version: v1.33.1-dispatcher" -> 1.33.1), or nothing.
version_of() {
	if [[ $1 =~ ([0-9]+\.[0-9]+(\.[0-9]+)?) ]]; then
		printf '%s\n' "${BASH_REMATCH[1]}"
	fi
}

# check_prereqs MIN_KIND MIN_HELM MIN_KUBECTL MIN_KERNEL MIN_DOCKER NEED_BUILD:
# every tool the run needs, present, new enough, and a docker engine that
# answers, new enough, on a new enough kernel (its kernel is the nodes'
# kernel: the sidecar needs tcx). With NEED_BUILD=1 (no IMAGE given, so the
# run builds it with `make image`), also make and everything that build
# needs, as scripts/ensure-deps.sh names them. Prints one line per problem,
# each naming the tool, and returns 1 if there is any. Runs nothing but the
# tools' version commands and that check.
check_prereqs() {
	local min_kind=$1 min_helm=$2 min_kubectl=$3 min_kernel=$4 min_docker=$5 need_build=$6
	local -a problems=()
	local t v out
	for t in docker kind helm kubectl; do
		if ! command -v "$t" >/dev/null 2>&1; then
			problems+=("$t: not found on PATH")
		fi
	done
	if [[ $need_build == 1 ]]; then
		local lib_dir=.
		if [[ ${BASH_SOURCE[0]} == */* ]]; then lib_dir=${BASH_SOURCE[0]%/*}; fi
		# The image's build, checked here so that it is named with the rest
		# before anything runs; the same list `make image` checks.
		if ! out=$("$BASH" "$lib_dir/../ensure-deps.sh" --check build 2>&1); then
			while IFS= read -r t; do
				if [[ -n $t ]]; then problems+=("$t"); fi
			done <<<"$out"
		fi
	fi
	if command -v docker >/dev/null 2>&1; then
		if out=$(docker info --format '{{.KernelVersion}}' 2>&1); then
			v=$(version_of "$out")
			if [[ -z $v ]]; then
				problems+=("docker: cannot tell the engine's kernel version from '$out'")
			elif ! version_ge "$v" "$min_kernel"; then
				problems+=("docker: the engine's kernel is $v, the sidecar needs $min_kernel or newer (tcx)")
			fi
			# kind's nodes are privileged containers; before Docker 23 a
			# privileged container gets neither CAP_BPF nor CAP_PERFMON
			# (moby/moby#42601), and Cilium's and the sidecar's pods ask for
			# both.
			out=$(docker version --format '{{.Server.Version}}' 2>&1) || true
			v=$(version_of "$out")
			if [[ -z $v ]]; then
				problems+=("docker: cannot tell the engine's version from '${out%%$'\n'*}'")
			elif ! version_ge "$v" "$min_docker"; then
				problems+=("docker: the engine is Docker $v; before Docker $min_docker privileged containers such as kind's nodes get no CAP_BPF or CAP_PERFMON (moby/moby#42601), which Cilium and the sidecar need: upgrade the engine")
			fi
		else
			problems+=("docker: the engine does not answer (docker info: ${out%%$'\n'*}); start it")
		fi
	fi
	if command -v kind >/dev/null 2>&1; then
		v=$(version_of "$(kind version 2>&1)")
		if [[ -z $v ]] || ! version_ge "$v" "$min_kind"; then
			problems+=("kind: version ${v:-unknown}, need v$min_kind or newer")
		fi
	fi
	if command -v helm >/dev/null 2>&1; then
		v=$(version_of "$(helm version --short 2>&1)")
		if [[ -z $v ]] || ! version_ge "$v" "$min_helm"; then
			problems+=("helm: version ${v:-unknown}, need v$min_helm or newer")
		fi
	fi
	if command -v kubectl >/dev/null 2>&1; then
		v=$(version_of "$(kubectl version --client 2>&1)")
		if [[ -z $v ]] || ! version_ge "$v" "$min_kubectl"; then
			problems+=("kubectl: version ${v:-unknown}, need v$min_kubectl or newer (within one minor of the cluster)")
		fi
	fi
	if ((${#problems[@]} > 0)); then
		printf '%s\n' "${problems[@]}"
		return 1
	fi
}

# has_label(SAMPLE, "k=v"): whether the sample's label set holds k="v" (as
# a whole label, not the tail of another one's name).
PROM_AWK_LIB='
	function has_label(sample, kv,    eq, want) {
		eq = index(kv, "=")
		want = substr(kv, 1, eq - 1) "=\"" substr(kv, eq + 1) "\""
		return index(sample, "{" want) > 0 || index(sample, "," want) > 0
	}
'

# prom_sum METRIC [LABEL=VALUE...] < exposition: the sum of METRIC's samples
# whose labels include every LABEL="VALUE" given (0 when there is none).
prom_sum() {
	local metric=$1
	shift
	awk -v metric="$metric" -v want="$*" "$PROM_AWK_LIB"'
		BEGIN { n = split(want, w, " ") }
		$1 == metric || index($1, metric "{") == 1 {
			ok = 1
			for (i = 1; i <= n; i++) {
				if (!has_label($1, w[i])) ok = 0
			}
			if (ok) sum += $NF
		}
		END { printf "%.0f\n", sum }'
}

# prom_label METRIC LABEL [LABEL=VALUE...] < exposition: LABEL's value on
# the first sample of METRIC with the given labels and a value of 1.
prom_label() {
	local metric=$1 label=$2
	shift 2
	awk -v metric="$metric" -v label="$label" -v want="$*" "$PROM_AWK_LIB"'
		BEGIN { n = split(want, w, " ") }
		(index($1, metric "{") == 1) && $NF == 1 {
			for (i = 1; i <= n; i++) {
				if (!has_label($1, w[i])) next
			}
			s = $0
			p = index(s, label "=\"")
			if (p == 0) next
			s = substr(s, p + length(label) + 2)
			print substr(s, 1, index(s, "\"") - 1)
			exit
		}'
}

# iperf_sent < client output: N of iperf2's last "Sent N datagrams".
iperf_sent() {
	awk '{ for (i = 1; i < NF; i++) if ($i == "Sent" && $(i + 2) ~ /^datagrams/) n = $(i + 1) }
		END { if (n != "") print n }'
}

# iperf_lost_total < server output: "LOST TOTAL" of the last Lost/Total
# pair ("3/402 (0.75%)"), i.e. the final report once the stream ended.
iperf_lost_total() {
	awk '{ for (i = 1; i < NF; i++)
			if ($(i + 1) ~ /^\(.*%\)$/ && $i ~ /^[0-9]+\/[0-9]+$/) { split($i, p, "/"); l = p[1]; t = p[2] }
		# iperf2 pads the total: "0/ 402 (0%)".
		for (i = 2; i < NF; i++)
			if ($(i + 1) ~ /^\(.*%\)$/ && $i ~ /^[0-9]+$/ && $(i - 1) ~ /^[0-9]+\/$/) { l = $(i - 1); sub("/", "", l); t = $i }
	} END { if (t != "") print l, t }'
}

# iperf_source < server output: the S of "connected with S port P".
iperf_source() {
	awk '{ for (i = 1; i < NF; i++) if ($i == "with" && $(i - 1) == "connected") { print $(i + 1); exit } }'
}
