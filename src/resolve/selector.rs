//! Label selectors as Cilium's egress-gateway manager applies them.
//!
//! Cilium matches a policy's selectors against a plain map of the
//! endpoint's security-identity labels (`Labels.K8sStringMap()`), with the
//! selector keys taken as written. So a selector key `app` matches the
//! identity label `k8s:app=...`; labels of other sources (`reserved:`,
//! `container:`, ...) are not reachable by a Kubernetes selector.
//! `namespaceSelector` keys get Cilium's namespace-label prefix first, and an
//! empty `namespaceSelector` means "any namespace".

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Key prefix under which Cilium puts a pod's namespace labels into its
/// identity (`k8sConst.PodNamespaceMetaLabels`, joined with a dot).
pub(super) const NAMESPACE_LABELS_PREFIX: &str = "io.cilium.k8s.namespace.labels.";
/// Identity label holding the pod's namespace (`k8sConst.PodNamespaceLabel`).
pub(super) const POD_NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";

/// Labels as a selector sees them: key -> value.
pub type LabelMap = BTreeMap<String, String>;

/// Sources whose labels a Kubernetes selector reaches: Cilium's
/// `K8sStringMap` strips these and keeps every other source's labels under
/// a `source.` prefix no selector key of a CEGP is written with.
const K8S_SOURCES: [&str; 3] = ["k8s", "any", "unspec"];

/// The selectable labels of an endpoint, from its identity labels
/// (`source:key=value` strings, as in `status.identity.labels`).
pub fn endpoint_labels(labels: &[String]) -> LabelMap {
    labels
        .iter()
        .filter_map(|label| {
            let (source, key, value) = parse_label(label);
            let selectable = source.is_none_or(|s| K8S_SOURCES.contains(&s));
            (selectable && !key.is_empty()).then(|| (key.to_string(), value.to_string()))
        })
        .collect()
}

/// Split a Cilium label string into (source, key, value) the way
/// `labels.ParseLabel` does: `$key` is a reserved label; the source ends at
/// the first `:` unless a `=` comes before it; the value follows the first
/// `=` of the rest.
fn parse_label(label: &str) -> (Option<&str>, &str, &str) {
    let (source, rest) = if let Some(rest) = label.strip_prefix('$') {
        (Some("reserved"), rest)
    } else {
        match (label.find(':'), label.find('=')) {
            (Some(colon), Some(eq)) if eq < colon => (None, label),
            (Some(colon), _) => (Some(&label[..colon]), &label[colon + 1..]),
            (None, _) => (None, label),
        }
    };
    match rest.split_once('=') {
        Some((key, value)) => (source, key, value),
        None => (source, rest, ""),
    }
}

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    /// `key In (values)`; `matchLabels` entries are the one-value case.
    In(String, BTreeSet<String>),
    /// `key NotIn (values)`: also true when the key is absent.
    NotIn(String, BTreeSet<String>),
    Exists(String),
    DoesNotExist(String),
}

impl Requirement {
    fn matches(&self, labels: &LabelMap) -> bool {
        match self {
            Requirement::In(key, values) => labels.get(key).is_some_and(|v| values.contains(v)),
            Requirement::NotIn(key, values) => labels.get(key).is_none_or(|v| !values.contains(v)),
            Requirement::Exists(key) => labels.contains_key(key),
            Requirement::DoesNotExist(key) => !labels.contains_key(key),
        }
    }
}

/// A compiled label selector: all requirements must hold. No requirement at
/// all selects everything, as an empty Kubernetes selector does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Selector {
    requirements: Vec<Requirement>,
}

impl Selector {
    /// Compile a Kubernetes selector, prefixing every key with `prefix`.
    /// Rejects what `LabelSelectorAsSelector` rejects: an unknown operator,
    /// `In`/`NotIn` without values, `Exists`/`DoesNotExist` with values.
    pub(super) fn compile(selector: &LabelSelector, prefix: &str) -> Result<Selector, String> {
        let mut requirements = Vec::new();
        for (key, value) in selector.match_labels.iter().flatten() {
            requirements.push(Requirement::In(
                format!("{prefix}{key}"),
                BTreeSet::from([value.clone()]),
            ));
        }
        for expr in selector.match_expressions.iter().flatten() {
            let key = format!("{prefix}{}", expr.key);
            let values: BTreeSet<String> = expr.values.iter().flatten().cloned().collect();
            let requirement = match expr.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(format!(
                        "matchExpressions on {:?}: operator {} needs at least one value",
                        expr.key, expr.operator
                    ))
                }
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(format!(
                        "matchExpressions on {:?}: operator {} takes no values",
                        expr.key, expr.operator
                    ))
                }
                "In" => Requirement::In(key, values),
                "NotIn" => Requirement::NotIn(key, values),
                "Exists" => Requirement::Exists(key),
                "DoesNotExist" => Requirement::DoesNotExist(key),
                other => {
                    return Err(format!(
                        "matchExpressions on {:?}: unknown operator {other:?} \
                         (expected In, NotIn, Exists or DoesNotExist)",
                        expr.key
                    ))
                }
            };
            requirements.push(requirement);
        }
        Ok(Selector { requirements })
    }

    /// A `namespaceSelector` as Cilium rewrites it: keys under the
    /// namespace-label prefix, and an empty one turned into "the endpoint
    /// has a namespace" so that it selects every namespace but nothing
    /// namespace-less.
    pub(super) fn namespace(selector: &LabelSelector) -> Result<Selector, String> {
        let empty = selector.match_labels.as_ref().is_none_or(|m| m.is_empty())
            && selector
                .match_expressions
                .as_ref()
                .is_none_or(|e| e.is_empty());
        if empty {
            return Ok(Selector {
                requirements: vec![Requirement::Exists(POD_NAMESPACE_LABEL.to_string())],
            });
        }
        Selector::compile(selector, NAMESPACE_LABELS_PREFIX)
    }

    /// Both selectors at once (Cilium merges a rule's namespace and pod
    /// selectors into one endpoint selector).
    pub(super) fn and(mut self, other: Selector) -> Selector {
        self.requirements.extend(other.requirements);
        self
    }

    pub(super) fn matches(&self, labels: &LabelMap) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }
}
