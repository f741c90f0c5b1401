// NMI's second check of the namespace identity policy (--namespace-identity-policy=enforce): MIC should never have
// assigned an identity the namespaces do not permit, but an AzureAssignedIdentity can be written by anyone allowed
// to, so NMI decides again, from the Namespace annotations it watches, before serving a bound identity's token.
import { identityRefusal, PERMITTED_IDENTITIES_ANNOTATION, type NamespacePolicies } from '../../crds/namespace-policy.js';
import type { AzureIdentity, PodView } from '../../crds/types.js';

export interface PolicyDenial {
  readonly status: 403;
  /** Sent to the pod: names the annotation and the pod's own namespace, never another namespace or object. */
  readonly body: string;
  /** For NMI's log: the full reason, with the refusing namespace and the entry an admin would add. */
  readonly reason: string;
}

/** undefined when the pod's namespace and the identity's namespace both permit the identity. */
export function namespacePolicyDenial(policies: NamespacePolicies, pod: PodView, identity: AzureIdentity): PolicyDenial | undefined {
  const refusal = identityRefusal(policies, identity, pod.namespace);
  if (refusal === undefined) return undefined;
  return {
    status: 403,
    body:
      `identity not permitted for pod ${pod.namespace}/${pod.name} by the namespace identity policy ` +
      `(Namespace annotation ${PERMITTED_IDENTITIES_ANNOTATION}); ask a cluster admin to permit it`,
    reason: refusal.reason,
  };
}
