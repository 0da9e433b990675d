//! Read-only types for the Cilium objects the controller consumes, all
//! `cilium.io/v2`: `CiliumEgressGatewayPolicy` (cluster-scoped),
//! `CiliumNode` (cluster-scoped) and `CiliumEndpoint` (namespaced).
//!
//! They cover the fields the resolution rules use, with the spellings of
//! Cilium's CRD schemas (`pkg/k8s/apis/cilium.io/v2`); every other field is
//! ignored on input. The controller never writes these objects.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::{ClusterResourceScope, NamespaceResourceScope};
use kube::Resource;
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "cilium.io";
pub const VERSION: &str = "v2";
pub const API_VERSION: &str = "cilium.io/v2";

/// `CiliumEgressGatewayPolicy`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CiliumEgressGatewayPolicy {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: CiliumEgressGatewayPolicySpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CiliumEgressGatewayPolicySpec {
    /// Which endpoints the policy applies to: any rule matching selects.
    #[serde(default)]
    pub selectors: Vec<EgressRule>,
    /// Destinations that leave through the gateway; only the multicast ones
    /// (inside 224.0.0.0/4) are ours.
    #[serde(default, rename = "destinationCIDRs")]
    pub destination_cidrs: Vec<String>,
    /// Destinations carved out of `destinationCIDRs`.
    #[serde(default, rename = "excludedCIDRs")]
    pub excluded_cidrs: Vec<String>,
    #[serde(default)]
    pub egress_gateway: Option<EgressGateway>,
    /// Cilium 1.18+: several gateways; overrides `egressGateway` when
    /// non-empty.
    #[serde(default)]
    pub egress_gateways: Vec<EgressGateway>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EgressRule {
    #[serde(default)]
    pub namespace_selector: Option<LabelSelector>,
    #[serde(default)]
    pub pod_selector: Option<LabelSelector>,
    /// Newer Cilium: only endpoints on nodes matching this.
    #[serde(default)]
    pub node_selector: Option<LabelSelector>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EgressGateway {
    #[serde(default)]
    pub node_selector: Option<LabelSelector>,
    #[serde(default)]
    pub interface: Option<String>,
    #[serde(default, rename = "egressIP")]
    pub egress_ip: Option<String>,
}

/// `CiliumNode`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CiliumNode {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: CiliumNodeSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CiliumNodeSpec {
    #[serde(default)]
    pub addresses: Vec<NodeAddress>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeAddress {
    /// `InternalIP`, `ExternalIP`, `CiliumInternalIP`, ...
    #[serde(default, rename = "type")]
    pub type_: String,
    #[serde(default)]
    pub ip: String,
}

/// `CiliumEndpoint`: all it carries is in `status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CiliumEndpoint {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub status: CiliumEndpointStatus,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CiliumEndpointStatus {
    /// Cilium's endpoint ID on its node.
    #[serde(default)]
    pub id: Option<i64>,
    #[serde(default)]
    pub identity: Option<EndpointIdentity>,
    #[serde(default)]
    pub networking: Option<EndpointNetworking>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EndpointIdentity {
    #[serde(default)]
    pub id: i64,
    /// `source:key=value`, e.g. `k8s:app=camera`,
    /// `k8s:io.kubernetes.pod.namespace=media`.
    #[serde(default)]
    pub labels: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EndpointNetworking {
    #[serde(default)]
    pub addressing: Vec<AddressPair>,
    /// The IP of the node the endpoint runs on.
    #[serde(default)]
    pub node: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AddressPair {
    #[serde(default)]
    pub ipv4: Option<String>,
    #[serde(default)]
    pub ipv6: Option<String>,
}

macro_rules! cilium_resource {
    ($ty:ty, $kind:literal, $plural:literal, $scope:ty) => {
        impl Resource for $ty {
            type DynamicType = ();
            type Scope = $scope;

            fn kind(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($kind)
            }
            fn group(_: &()) -> Cow<'_, str> {
                Cow::Borrowed(GROUP)
            }
            fn version(_: &()) -> Cow<'_, str> {
                Cow::Borrowed(VERSION)
            }
            fn plural(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($plural)
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

cilium_resource!(
    CiliumEgressGatewayPolicy,
    "CiliumEgressGatewayPolicy",
    "ciliumegressgatewaypolicies",
    ClusterResourceScope
);
cilium_resource!(
    CiliumNode,
    "CiliumNode",
    "ciliumnodes",
    ClusterResourceScope
);
cilium_resource!(
    CiliumEndpoint,
    "CiliumEndpoint",
    "ciliumendpoints",
    NamespaceResourceScope
);
