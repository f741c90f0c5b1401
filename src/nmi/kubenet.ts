// The original refuses to run on kubenet (ARP spoofing, CVE-2021-1677) unless told to; it detects kubenet by this
// literal in the kubelet's defaults file. Weak (kubenet+calico passes), kept for compatibility.

export function kubeletUsesKubenet(kubeletDefaults: string): boolean {
  return kubeletDefaults.includes('--network-plugin=kubenet');
}

export const KUBENET_REFUSAL =
  'AAD Pod Identity is not supported for Kubenet: a pod with CAP_NET_RAW could spoof another pod\'s IP and get its ' +
  'token. Review the security model (docs/security.md) and pass --allow-network-plugin-kubenet=true to run anyway.';
