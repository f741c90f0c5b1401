// Namespace identity policy: the cluster admin's list, on the (cluster-scoped) Namespace object, of the Azure
// identities a namespace may use. Namespace editors cannot edit Namespaces, so a tenant cannot widen its own list.

/** Annotation on the Namespace; comma- or newline-separated entries. */
export const PERMITTED_IDENTITIES_ANNOTATION = 'aadpodidentity.k8s.io/permitted-identities';

export interface NamespacePolicy {
  /** Lower-case patterns over canonical resource IDs; `*` matches within one path segment. */
  readonly resourceIdPatterns: readonly string[];
  /** Lower-case patterns over client IDs (entries written `clientid:<id>`), for type-1 identities. */
  readonly clientIdPatterns: readonly string[];
  /** Non-empty when an entry could not be parsed: the whole policy then denies (fail closed). */
  readonly problems: readonly string[];
}

/** undefined when the annotation is absent: with enforcement on, such a namespace may use no identity. */
export function parseNamespacePolicy(annotations: Readonly<Record<string, string>>): NamespacePolicy | undefined {
  const raw = annotations[PERMITTED_IDENTITIES_ANNOTATION];
  if (raw === undefined) return undefined;
  const resourceIdPatterns: string[] = [];
  const clientIdPatterns: string[] = [];
  const problems: string[] = [];
  for (const entry of raw.split(/[,\n]/).map((e) => e.trim()).filter((e) => e !== '')) {
    const lower = entry.toLowerCase();
    if (lower.startsWith('clientid:')) {
      const id = lower.slice('clientid:'.length).trim();
      if (!/^[0-9a-f*-]+$/.test(id)) problems.push(`entry "${entry}": a client ID is hex digits, '-' and '*'`);
      else clientIdPatterns.push(id);
    } else if (lower.startsWith('/subscriptions/')) {
      if (/[\s?[\]]/.test(lower)) problems.push(`entry "${entry}": only '*' is a wildcard; no spaces, '?' or '['`);
      else resourceIdPatterns.push(lower.replace(/\/+$/, ''));
    } else {
      problems.push(`entry "${entry}": expected a resource ID starting /subscriptions/ or clientid:<client ID>`);
    }
  }
  return { resourceIdPatterns, clientIdPatterns, problems };
}

/** Namespace name → its parsed policy (undefined: no annotation). A namespace missing from the map has no policy either. */
export type NamespacePolicies = ReadonlyMap<string, NamespacePolicy | undefined>;

/** What the policy looks at in an AzureIdentity. */
export interface PolicySubject {
  readonly type: number | null;
  readonly resourceID: string;
  readonly clientID: string;
}

/**
 * Under enforcement, why a pod in `podNamespace` may not use `identity`: the identity's own namespace must permit it
 * (a tenant cannot name another's Azure identity in its AzureIdentity), and so must the pod's namespace when it
 * differs (a binding in one namespace cannot hand its identity to another's pods). undefined when both permit it.
 */
export function identityRefusal(
  policies: NamespacePolicies,
  identity: PolicySubject & { readonly namespace: string },
  podNamespace: string,
): { readonly namespace: string; readonly reason: string } | undefined {
  for (const namespace of identity.namespace === podNamespace ? [podNamespace] : [identity.namespace, podNamespace]) {
    const reason = policyRefusal(namespace, policies.get(namespace), identity);
    if (reason !== undefined) return { namespace, reason };
  }
  return undefined;
}

/** Why the namespace may not use the identity, or undefined when the policy permits it. */
export function policyRefusal(namespace: string, policy: NamespacePolicy | undefined, identity: PolicySubject): string | undefined {
  const servicePrincipal = identity.type === 1 || identity.type === 2;
  const entry = servicePrincipal ? `clientid:${identity.clientID.trim().toLowerCase()}` : canonicalId(identity.resourceID);
  const how = `a cluster admin can add "${entry}" to the ${PERMITTED_IDENTITIES_ANNOTATION} annotation of Namespace ${namespace}`;
  if (policy === undefined) {
    return `Namespace ${namespace} has no ${PERMITTED_IDENTITIES_ANNOTATION} annotation, so with --namespace-identity-policy=enforce it may use no Azure identity: ${how}`;
  }
  if (policy.problems.length > 0) {
    return `the ${PERMITTED_IDENTITIES_ANNOTATION} annotation of Namespace ${namespace} is invalid (${policy.problems.join('; ')}), so it permits nothing`;
  }
  if (identity.type === null) return `an identity of unknown type is not permitted for namespace ${namespace}`;
  if (servicePrincipal) {
    const id = identity.clientID.trim().toLowerCase();
    if (id !== '' && policy.clientIdPatterns.some((p) => globMatch(p, id))) return undefined;
    return `client ID ${identity.clientID} is not permitted for namespace ${namespace}: ${how}`;
  }
  const rid = canonicalId(identity.resourceID);
  if (rid !== '/' && policy.resourceIdPatterns.some((p) => globMatch(p, rid))) return undefined;
  return `resource ID ${identity.resourceID} is not permitted for namespace ${namespace}: ${how}`;
}

function canonicalId(id: string): string {
  return `/${id.trim().replace(/^\/+/, '').replace(/\/+$/, '')}`.toLowerCase();
}

/** Compiled patterns: NMI checks on every token request, and a cluster has few distinct entries. */
const compiled = new Map<string, RegExp>();

/** `*` matches any run of characters other than '/'; everything else literally. */
function globMatch(pattern: string, text: string): boolean {
  let re = compiled.get(pattern);
  if (re === undefined) {
    const source = pattern
      .split('*')
      .map((part) => part.replace(/[.+^${}()|\\]/g, '\\$&'))
      .join('[^/]*');
    re = new RegExp(`^${source}$`);
    if (compiled.size >= 4096) compiled.clear();
    compiled.set(pattern, re);
  }
  return re.test(text);
}
