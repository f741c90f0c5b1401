// Desired state: which AzureAssignedIdentity should exist for which pod, following the original's
// createDesiredAssignedIdentityList, with every refusal returned as a Skip instead of a log line.
import {
  assignedIdentityName,
  assignedIdentityNamespace,
  POD_LABEL,
} from '../../crds/names.js';
import { identityRefusal, type NamespacePolicies } from '../../crds/namespace-policy.js';
import { identityMode, type AzureIdentity, type AzureIdentityBinding, type PodView } from '../../crds/types.js';
import { credentialRefusals, type CredentialPolicy } from '../../crds/credential-policy.js';
import { validateAzureIdentity, validateBinding } from '../../crds/validate.js';
import { cmp, compareSkips, skip, type Skip } from './skip.js';
import { assignedKey, type ClusterSnapshot, type MicPolicy } from './snapshot.js';

/** One AzureAssignedIdentity that should exist. */
export interface DesiredAssignment {
  /** `namespace/name` of the AAI (see assignedKey). */
  readonly key: string;
  readonly namespace: string;
  readonly name: string;
  readonly identity: AzureIdentity;
  readonly binding: AzureIdentityBinding;
  readonly pod: string;
  readonly podNamespace: string;
  /** The pod's uid, written as a label so NMI serves the AAI to this pod incarnation only. */
  readonly podUid: string;
  readonly nodeName: string;
}

export interface DesiredState {
  /** Sorted by key. */
  readonly assignments: readonly DesiredAssignment[];
  /** Sorted by subject, then code. */
  readonly skipped: readonly Skip[];
}

type DesiredInput = Pick<ClusterSnapshot, 'pods' | 'identities' | 'bindings' | 'namespacePolicies'>;

export function computeDesired(
  snapshot: DesiredInput,
  policy: Pick<MicPolicy, 'forceNamespaced' | 'credentials' | 'namespaceIdentityPolicy' | 'federation'>,
): DesiredState {
  const skipped: Skip[] = [];
  // undefined: the namespace policy is off and nothing is checked.
  const policies = policy.namespaceIdentityPolicy === 'enforce' ? (snapshot.namespacePolicies ?? new Map()) : undefined;
  const identities = usableIdentities(snapshot.identities, policy.credentials, policies, policy.federation, skipped);
  const bindingsBySelector = indexBindings(snapshot.bindings, identities, skipped);
  const assignments: DesiredAssignment[] = [];

  for (const pod of snapshot.pods) {
    const selector = pod.labels[POD_LABEL];
    if (selector === undefined) continue; // not opted in: the original does not even list such pods
    const refusal = podRefusal(pod, selector);
    if (refusal !== undefined) {
      skipped.push(refusal);
      continue;
    }
    const matches = bindingsBySelector.get(selector);
    if (matches === undefined) {
      skipped.push(
        skip('Pod', pod.namespace, pod.name, 'NoMatchingBinding', `no usable AzureIdentityBinding has selector "${selector}"`),
      );
      continue;
    }
    assignments.push(...assignmentsForPod(pod, matches, policy.forceNamespaced, policies, skipped));
  }

  assignments.sort((a, b) => cmp(a.key, b.key));
  skipped.sort(compareSkips);
  return { assignments, skipped };
}

/** A binding together with the (valid) identity it names. */
interface ResolvedBinding {
  readonly binding: AzureIdentityBinding;
  readonly identity: AzureIdentity;
}

function assignmentsForPod(
  pod: PodView,
  matches: readonly ResolvedBinding[],
  forceNamespaced: boolean,
  policies: NamespacePolicies | undefined,
  skipped: Skip[],
): DesiredAssignment[] {
  const out: DesiredAssignment[] = [];
  // matches are sorted by binding namespace/name, so "first wins" below is the original's namespace order.
  const winners = new Map<string, ResolvedBinding>();
  for (const match of matches) {
    const { binding, identity } = match;
    if ((forceNamespaced || identity.namespaced) && pod.namespace !== binding.namespace) {
      skipped.push(
        skip(
          'Pod',
          pod.namespace,
          pod.name,
          'NamespaceMismatch',
          `binding ${binding.namespace}/${binding.name} and identity ${identity.namespace}/${identity.name} are namespaced ` +
            `and the pod is in namespace ${pod.namespace}`,
        ),
      );
      continue;
    }
    // The identity's own namespace was checked in usableIdentities; here the pod's, when it is another one.
    const refusal = policies === undefined ? undefined : identityRefusal(policies, identity, pod.namespace);
    if (refusal !== undefined) {
      skipped.push(
        skip('Pod', pod.namespace, pod.name, 'IdentityNotPermitted',
          `binding ${binding.namespace}/${binding.name} names identity ${identity.namespace}/${identity.name}: ${refusal.reason}`),
      );
      continue;
    }
    const namespace = assignedIdentityNamespace(identity, forceNamespaced);
    const name = assignedIdentityName(pod.name, pod.namespace, identity.name);
    const key = assignedKey(namespace, name);
    const winner = winners.get(key);
    if (winner !== undefined) {
      skipped.push(
        skip(
          'Pod',
          pod.namespace,
          pod.name,
          'NameConflict',
          `binding ${binding.namespace}/${binding.name} (identity ${identity.namespace}/${identity.name}) would reuse ` +
            `AzureAssignedIdentity ${key}, already taken by binding ${winner.binding.namespace}/${winner.binding.name} ` +
            `(identity ${winner.identity.namespace}/${winner.identity.name})`,
        ),
      );
      continue;
    }
    winners.set(key, match);
    out.push({
      key,
      namespace,
      name,
      identity,
      binding,
      pod: pod.name,
      podNamespace: pod.namespace,
      podUid: pod.uid,
      nodeName: pod.nodeName,
    });
  }
  return out;
}

function podRefusal(pod: PodView, selector: string): Skip | undefined {
  if (selector === '') {
    return skip('Pod', pod.namespace, pod.name, 'NoMatchingBinding', `label ${POD_LABEL} is empty`);
  }
  if (pod.nodeName === '') {
    return skip('Pod', pod.namespace, pod.name, 'PodNotScheduled', 'pod has no spec.nodeName yet');
  }
  if (pod.deleting) {
    return skip('Pod', pod.namespace, pod.name, 'PodDeleting', 'pod is being deleted');
  }
  // A finished pod will never ask for a token again; keeping its identity would only hold the VM's slot.
  if (pod.phase === 'Succeeded' || pod.phase === 'Failed') {
    return skip('Pod', pod.namespace, pod.name, 'PodFinished', `pod phase is ${pod.phase}`);
  }
  return undefined;
}

/**
 * Identities keyed `namespace/name`, leaving out (with a Skip) the invalid and the deleting ones, the service
 * principals whose Secret or authority the credential policy refuses, and under an enforced namespace policy
 * those their own namespace does not permit.
 */
function usableIdentities(
  identities: readonly AzureIdentity[],
  credentials: CredentialPolicy,
  policies: NamespacePolicies | undefined,
  federation: MicPolicy['federation'],
  skipped: Skip[],
): Map<string, AzureIdentity> {
  const out = new Map<string, AzureIdentity>();
  for (const identity of identities) {
    if (identity.deleting) {
      skipped.push(skip('AzureIdentity', identity.namespace, identity.name, 'IdentityDeleting', 'identity is being deleted'));
      continue;
    }
    const reasons = validateAzureIdentity(identity);
    if (reasons.length > 0) {
      skipped.push(skip('AzureIdentity', identity.namespace, identity.name, 'IdentityInvalid', reasons.join('; ')));
      continue;
    }
    const refusals = credentialRefusals(identity, credentials);
    if (refusals.length > 0) {
      const code = (refusals[0] as (typeof refusals)[number]).code;
      skipped.push(skip('AzureIdentity', identity.namespace, identity.name, code, refusals.map((r) => r.reason).join('; ')));
      continue;
    }
    const refusal = policies === undefined ? undefined : identityRefusal(policies, identity, identity.namespace);
    if (refusal !== undefined) {
      skipped.push(skip('AzureIdentity', identity.namespace, identity.name, 'IdentityNotPermitted', refusal.reason));
      continue;
    }
    const unfederated = federationRefusal(identity, federation);
    if (unfederated !== undefined) {
      skipped.push(unfederated);
      continue;
    }
    out.set(`${identity.namespace}/${identity.name}`, identity);
  }
  return out;
}

/** A Federated identity MIC cannot federate is skipped, never attached instead (that would give the VM its token). */
function federationRefusal(identity: AzureIdentity, federation: MicPolicy['federation']): Skip | undefined {
  if (identityMode(identity) !== 'Federated') return undefined;
  if (federation?.enabled !== true) {
    return skip('AzureIdentity', identity.namespace, identity.name, 'FederationDisabled',
      'spec.mode is Federated and MIC runs without --enable-federated-identities: the identity is neither federated nor ' +
        'attached to any VM (start MIC with --enable-federated-identities, or set spec.mode: Attached)');
  }
  if (federation.issuer === '') {
    return skip('AzureIdentity', identity.namespace, identity.name, 'FederationIssuerUnknown',
      "spec.mode is Federated and the cluster's service-account issuer is not known (the API server publishes none): " +
        'set --service-account-issuer on MIC');
  }
  return undefined;
}

/** Bindings grouped by selector, each list sorted by binding namespace/name; unusable bindings become Skips. */
function indexBindings(
  bindings: readonly AzureIdentityBinding[],
  identities: ReadonlyMap<string, AzureIdentity>,
  skipped: Skip[],
): Map<string, ResolvedBinding[]> {
  const out = new Map<string, ResolvedBinding[]>();
  for (const binding of bindings) {
    if (binding.deleting) {
      skipped.push(
        skip('AzureIdentityBinding', binding.namespace, binding.name, 'BindingDeleting', 'binding is being deleted'),
      );
      continue;
    }
    const reasons = validateBinding(binding);
    if (reasons.length > 0) {
      skipped.push(skip('AzureIdentityBinding', binding.namespace, binding.name, 'BindingInvalid', reasons.join('; ')));
      continue;
    }
    const identity = identities.get(`${binding.namespace}/${binding.azureIdentity}`);
    if (identity === undefined) {
      // Invalid identities already carry their own Skip; this one says the binding is inert because of it.
      skipped.push(
        skip(
          'AzureIdentityBinding',
          binding.namespace,
          binding.name,
          'IdentityNotFound',
          `no usable AzureIdentity ${binding.namespace}/${binding.azureIdentity}`,
        ),
      );
      continue;
    }
    const list = out.get(binding.selector);
    if (list === undefined) out.set(binding.selector, [{ binding, identity }]);
    else list.push({ binding, identity });
  }
  for (const list of out.values()) {
    list.sort((a, b) => cmp(a.binding.namespace, b.binding.namespace) || cmp(a.binding.name, b.binding.name));
  }
  return out;
}
