//! The manifests the daemon suites feed it: node-a, camera pods, and the
//! `cameras` policy that sends their 232.1.0.0/16 out through a gateway.

/// node-a (192.0.2.10), gateway label `egress: "a"`.
pub const NODE_A: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNode
metadata:
  name: node-a
  labels: {kubernetes.io/hostname: node-a, egress: "a"}
spec:
  addresses:
  - {type: InternalIP, ip: 192.0.2.10}
"#;

/// A node like node-a: `name`, labelled `egress: "<egress>"`, at `ip`.
pub fn node(name: &str, egress: &str, ip: &str) -> String {
    NODE_A
        .replace("node-a", name)
        .replace("egress: \"a\"", &format!("egress: \"{egress}\""))
        .replace("192.0.2.10", ip)
}

/// A camera pod (namespace media, identity 4001) named `name`, uid ending
/// in `n`, at `ip` on the node `node_ip`.
pub fn camera(name: &str, n: u32, ip: &str, node_ip: &str) -> String {
    format!(
        r#"
apiVersion: cilium.io/v2
kind: CiliumEndpoint
metadata: {{name: {name}, namespace: media, uid: 0f8a3b52-4444-4c8e-9a51-{n:012}}}
status:
  identity:
    id: 4001
    labels:
    - k8s:app=camera
    - k8s:io.kubernetes.pod.namespace=media
  networking:
    addressing:
    - ipv4: {ip}
    node: {node_ip}
"#
    )
}

/// The policy `name` for the camera pods: `destinations` out through the
/// node labelled `egress: "<egress>"`, on its `uplink0`.
pub fn cameras(name: &str, destinations: &str, egress: &str) -> String {
    format!(
        r#"
apiVersion: cilium.io/v2
kind: CiliumEgressGatewayPolicy
metadata: {{name: {name}}}
spec:
  selectors:
  - podSelector:
      matchLabels: {{app: camera}}
  destinationCIDRs: [{destinations}]
  egressGateway:
    nodeSelector:
      matchLabels: {{egress: "{egress}"}}
    interface: uplink0
"#
    )
}

/// node-a, its camera pod `cam-1` (198.51.100.11) and the policy that makes
/// node-a its gateway: one policy entry once a daemon on node-a has synced.
pub fn one_camera_cluster() -> String {
    let pod = camera("cam-1", 1, "198.51.100.11", "192.0.2.10");
    let policy = cameras("cameras", "232.1.0.0/16", "a");
    format!("{NODE_A}---{pod}---{policy}")
}
