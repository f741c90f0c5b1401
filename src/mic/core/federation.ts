// Federated mode, pure part: from the assignments MIC's core already decided (tenant rules applied there, so
// federation can never grant what attachment would not), the federated identity credentials each user-assigned
// identity should carry: one per (issuer, namespace, service account) that a bound pod runs as.
import {
  FEDERATED_AUDIENCE,
  federatedCredentialName,
  serviceAccountSubject,
} from '../../crds/federation.js';
import type { AzureIdentity, PodView } from '../../crds/types.js';
import { identityMode } from '../../crds/types.js';
import { parseUserAssignedIdentityID } from '../../crds/validate.js';
import type { DesiredAssignment } from './desired.js';
import { cmp, type SubjectRef } from './skip.js';

/** A federated identity used by a pod running as `serviceAccount` in `namespace`. */
export interface FederatedUse {
  readonly identity: AzureIdentity;
  readonly namespace: string;
  readonly serviceAccount: string;
}

export interface DesiredCredential {
  readonly name: string;
  readonly issuer: string;
  readonly subject: string;
  readonly audiences: readonly string[];
}

/** What one user-assigned identity (by ARM ID) should carry; `credentials` empty means "none of ours". */
export interface DesiredIdentityCredentials {
  /** The resource ID in lower case (ARM compares IDs case-insensitively). */
  readonly key: string;
  readonly resourceID: string;
  readonly subscriptionID: string;
  readonly resourceGroup: string;
  /** The user-assigned identity's resource name. */
  readonly name: string;
  /** Sorted by subject. */
  readonly credentials: readonly DesiredCredential[];
  /** `namespace/name` of the AzureIdentities naming this ARM identity in Federated mode, sorted. */
  readonly azureIdentities: readonly string[];
}

export type FederationSkipCode = 'ServiceAccountUnknown';

export interface FederationSkip {
  readonly subject: SubjectRef;
  readonly code: FederationSkipCode;
  readonly reason: string;
}

/**
 * The federated uses among desired assignments: those whose identity is Federated, with the pod's service account.
 * A pod with no service account name (the API server always sets one) gets no credential, with a skip saying so.
 */
export function federatedUses(
  assignments: readonly DesiredAssignment[],
  podOf: (namespace: string, name: string) => PodView | undefined,
): { uses: FederatedUse[]; skipped: FederationSkip[] } {
  const uses: FederatedUse[] = [];
  const skipped: FederationSkip[] = [];
  for (const a of assignments) {
    if (identityMode(a.identity) !== 'Federated') continue;
    const pod = podOf(a.podNamespace, a.pod);
    if (pod === undefined) continue; // not in this snapshot: the next cycle sees it
    const serviceAccount = pod.serviceAccountName ?? '';
    if (serviceAccount === '') {
      skipped.push({
        subject: { kind: 'Pod', namespace: a.podNamespace, name: a.pod },
        code: 'ServiceAccountUnknown',
        reason: `pod has no spec.serviceAccountName, so no federated credential can name it for identity ${a.identity.namespace}/${a.identity.name}`,
      });
      continue;
    }
    uses.push({ identity: a.identity, namespace: a.podNamespace, serviceAccount });
  }
  return { uses, skipped };
}

/**
 * The credentials each federated user-assigned identity should carry. `identities` are every usable Federated
 * AzureIdentity (so one whose last pod went away still appears, with no credentials, and MIC removes ours);
 * identities whose resourceID does not parse are left out (validation already refused them). Deterministic.
 */
export function desiredFederatedCredentials(
  issuer: string,
  identities: readonly AzureIdentity[],
  uses: readonly FederatedUse[],
): DesiredIdentityCredentials[] {
  interface Acc {
    readonly resourceID: string;
    readonly subscriptionID: string;
    readonly resourceGroup: string;
    readonly name: string;
    readonly credentials: Map<string, DesiredCredential>;
    readonly azureIdentities: Set<string>;
  }
  const byKey = new Map<string, Acc>();
  const accFor = (identity: AzureIdentity): Acc | undefined => {
    if (identityMode(identity) !== 'Federated') return undefined;
    const parsed = parseUserAssignedIdentityID(identity.resourceID);
    if ('error' in parsed) return undefined;
    const key = identity.resourceID.toLowerCase();
    let acc = byKey.get(key);
    if (acc === undefined) {
      acc = {
        resourceID: identity.resourceID,
        subscriptionID: parsed.subscriptionID,
        resourceGroup: parsed.resourceGroup,
        name: parsed.name,
        credentials: new Map(),
        azureIdentities: new Set(),
      };
      byKey.set(key, acc);
    }
    acc.azureIdentities.add(`${identity.namespace}/${identity.name}`);
    return acc;
  };
  for (const identity of identities) accFor(identity);
  for (const use of uses) {
    const acc = accFor(use.identity);
    if (acc === undefined) continue;
    const subject = serviceAccountSubject(use.namespace, use.serviceAccount);
    if (!acc.credentials.has(subject)) {
      acc.credentials.set(subject, {
        name: federatedCredentialName(issuer, subject),
        issuer,
        subject,
        audiences: [FEDERATED_AUDIENCE],
      });
    }
  }
  return [...byKey.entries()]
    .sort(([a], [b]) => cmp(a, b))
    .map(([key, acc]) => ({
      key,
      resourceID: acc.resourceID,
      subscriptionID: acc.subscriptionID,
      resourceGroup: acc.resourceGroup,
      name: acc.name,
      credentials: [...acc.credentials.values()].sort((a, b) => cmp(a.subject, b.subject)),
      azureIdentities: [...acc.azureIdentities].sort(cmp),
    }));
}
