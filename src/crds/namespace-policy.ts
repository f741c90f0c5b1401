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

/** Why the namespace may not use the identity, or undefined when the policy permits it. */
export function policyRefusal(
  namespace: string,
  policy: NamespacePolicy | undefined,
  identity: { readonly type: number | null; readonly resourceID: string; readonly clientID: string },
): string | undefined {
  const how = `set annotation ${PERMITTED_IDENTITIES_ANNOTATION} on Namespace ${namespace}`;
  if (policy === undefined) return `namespace ${namespace} permits no Azure identity: ${how}`;
  if (policy.problems.length > 0) {
    return `the ${PERMITTED_IDENTITIES_ANNOTATION} annotation of Namespace ${namespace} is invalid (${policy.problems.join('; ')}), so it permits nothing`;
  }
  if (identity.type === 1) {
    const id = identity.clientID.trim().toLowerCase();
    if (policy.clientIdPatterns.some((p) => globMatch(p, id))) return undefined;
    return `client ID ${identity.clientID} is not permitted for namespace ${namespace}: ${how}`;
  }
  const rid = `/${identity.resourceID.trim().replace(/^\/+/, '').replace(/\/+$/, '')}`.toLowerCase();
  if (policy.resourceIdPatterns.some((p) => globMatch(p, rid))) return undefined;
  return `resource ID ${identity.resourceID} is not permitted for namespace ${namespace}: ${how}`;
}

/** `*` matches any run of characters other than '/'; everything else literally. */
function globMatch(pattern: string, text: string): boolean {
  const source = pattern
    .split('*')
    .map((part) => part.replace(/[.+^${}()|\\]/g, '\\$&'))
    .join('[^/]*');
  return new RegExp(`^${source}$`).test(text);
}
