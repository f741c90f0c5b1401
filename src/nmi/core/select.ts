// Which identity a calling pod may use for a token request (upstream-behaviour §3.3 steps 5-6, §3.4), as a pure
// decision the server acts on. The server loops on `pending` while its wait budget lasts, waking on AAI changes.

import type {
  AzureAssignedIdentity,
  AzureIdentity,
  AzureIdentityBinding,
  AzurePodIdentityException,
  PodView,
} from '../../crds/types.js';
import type { TokenRequest } from './token-request.js';

export const BINDING_LABEL = 'aadpodidbinding';

export type Selection =
  /** Use this identity; `assigned` names the AAI it came from in standard mode. */
  | { readonly kind: 'identity'; readonly identity: AzureIdentity; readonly assigned?: AzureAssignedIdentity }
  /** Serve the node's own identity (exception or MIC pod), with the client ID the pod asked for, if any. */
  | { readonly kind: 'node'; readonly clientId?: string; readonly reason: string }
  /** Nothing usable yet; `created` says a matching AAI exists but is not Assigned yet. */
  | { readonly kind: 'pending'; readonly created: boolean; readonly reason: string }
  /** No identity will ever match this request as things stand (managed mode, or a hard mismatch). */
  | { readonly kind: 'none'; readonly reason: string };

export interface SelectPolicy {
  readonly mode: 'standard' | 'managed';
  readonly forceNamespaced: boolean;
  /** `--MICNamespace`: MIC's namespace; empty means no pod is recognised as MIC (it then needs an exception). */
  readonly micNamespace: string;
  /** `--mic-service-account`: a pod in `micNamespace` running as this ServiceAccount is MIC. */
  readonly micServiceAccount: string;
}

export interface SelectInput {
  readonly pod: PodView;
  readonly request: Pick<TokenRequest, 'clientId' | 'resourceId'>;
  /** Exceptions in the pod's namespace (others are ignored even if passed). */
  readonly exceptions: readonly AzurePodIdentityException[];
  /** Standard mode: the AAIs on this node. */
  readonly assigned: readonly AzureAssignedIdentity[];
  /** Managed mode: bindings and identities (only the pod's namespace is considered). */
  readonly bindings: readonly AzureIdentityBinding[];
  readonly identities: readonly AzureIdentity[];
}

/** Decides for one request at one instant. Exceptions first, then the mode's identity lookup. */
export function selectIdentity(input: SelectInput, policy: SelectPolicy): Selection {
  const exception = matchingException(input.pod, input.exceptions);
  if (exception !== undefined) {
    return nodeSelection(input, `pod matches AzurePodIdentityException ${exception.namespace}/${exception.name}`);
  }
  if (isMicPod(input.pod, policy)) {
    return nodeSelection(input, `pod runs as MIC's ServiceAccount ${policy.micNamespace}/${policy.micServiceAccount}`);
  }
  return policy.mode === 'managed' ? selectManaged(input, policy) : selectStandard(input, policy);
}

function nodeSelection(input: SelectInput, reason: string): Selection {
  return {
    kind: 'node',
    reason,
    ...(input.request.clientId !== undefined ? { clientId: input.request.clientId } : {}),
  };
}

/** An exception applies when any one of its label pairs is on the pod (value compared case-insensitively). */
export function matchingException(
  pod: PodView,
  exceptions: readonly AzurePodIdentityException[],
): AzurePodIdentityException | undefined {
  return [...exceptions]
    .filter((e) => e.namespace === pod.namespace && !e.deleting)
    .sort(byNamespaceName)
    .find((e) =>
      Object.entries(e.podLabels).some(
        ([key, value]) => key in pod.labels && pod.labels[key].toLowerCase() === value.toLowerCase(),
      ),
    );
}

/**
 * MIC is who it runs as: its ServiceAccount in its namespace. Names and owner references are written by whoever
 * creates the pod (the original trusted a ReplicaSet named `mic-*`); which ServiceAccount a pod may run as is limited
 * to its namespace, so only those who may create pods in MIC's namespace can pass, and they are its admins.
 */
export function isMicPod(pod: PodView, policy: Pick<SelectPolicy, 'micNamespace' | 'micServiceAccount'>): boolean {
  if (policy.micNamespace === '' || policy.micServiceAccount === '') return false;
  return pod.namespace === policy.micNamespace && pod.serviceAccountName === policy.micServiceAccount;
}

function selectStandard(input: SelectInput, policy: SelectPolicy): Selection {
  const { pod, request } = input;
  const mine = input.assigned
    .filter((a) => a.pod === pod.name && a.podNamespace === pod.namespace && a.nodeName === pod.nodeName)
    // Made for another incarnation of a pod with this name (recreated): not this pod's, whatever its name says.
    .filter((a) => a.podUid === '' || a.podUid === pod.uid)
    .filter((a) => !a.deleting && a.identityRef !== null)
    .filter((a) => !isNamespaced(a.identityRef as AzureIdentity, policy) || a.identityRef?.namespace === pod.namespace)
    .filter((a) => matchesRequest(a.identityRef as AzureIdentity, request))
    .sort(byIdentityThenName);

  const usable = mine.find((a) => a.state === 'Assigned' || a.state === '');
  if (usable !== undefined) {
    return { kind: 'identity', identity: usable.identityRef as AzureIdentity, assigned: usable };
  }
  const created = mine.some((a) => a.state === 'Created');
  return {
    kind: 'pending',
    created,
    reason: created
      ? `identity for pod ${pod.namespace}/${pod.name} is not yet Assigned`
      : `no AzureAssignedIdentity for pod ${pod.namespace}/${pod.name}${describeRequest(request)}`,
  };
}

function selectManaged(input: SelectInput, policy: SelectPolicy): Selection {
  const { pod, request } = input;
  const selector = pod.labels[BINDING_LABEL];
  if (selector === undefined || selector === '') {
    return { kind: 'none', reason: `pod ${pod.namespace}/${pod.name} has no ${BINDING_LABEL} label` };
  }
  const names = new Set(
    input.bindings
      .filter((b) => b.namespace === pod.namespace && !b.deleting && b.selector === selector)
      .map((b) => b.azureIdentity),
  );
  const candidates = input.identities
    .filter((i) => i.namespace === pod.namespace && !i.deleting && names.has(i.name))
    .filter((i) => !isNamespaced(i, policy) || i.namespace === pod.namespace)
    .filter((i) => matchesRequest(i, request))
    .sort(byNamespaceName);
  const chosen = candidates[0];
  if (chosen === undefined) {
    return {
      kind: 'none',
      reason: `no AzureIdentity bound to pod ${pod.namespace}/${pod.name}${describeRequest(request)}`,
    };
  }
  return { kind: 'identity', identity: chosen };
}

function isNamespaced(identity: AzureIdentity, policy: SelectPolicy): boolean {
  return policy.forceNamespaced || identity.namespaced;
}

/** Client and resource IDs are GUIDs and ARM IDs, both case-insensitive. */
function matchesRequest(identity: AzureIdentity, request: SelectInput['request']): boolean {
  if (request.clientId !== undefined) return identity.clientID.toLowerCase() === request.clientId.toLowerCase();
  if (request.resourceId !== undefined) {
    return identity.resourceID !== '' && identity.resourceID.toLowerCase() === request.resourceId.toLowerCase();
  }
  return true;
}

function describeRequest(request: SelectInput['request']): string {
  if (request.clientId !== undefined) return ' matching the requested client_id';
  if (request.resourceId !== undefined) return ' matching the requested msi_res_id';
  return '';
}

function byNamespaceName(a: { namespace: string; name: string }, b: { namespace: string; name: string }): number {
  return a.namespace === b.namespace ? compare(a.name, b.name) : compare(a.namespace, b.namespace);
}

// Without client_id the original picked whichever came first from the cache; we pick the same one every time.
function byIdentityThenName(a: AzureAssignedIdentity, b: AzureAssignedIdentity): number {
  const ia = a.identityRef as AzureIdentity;
  const ib = b.identityRef as AzureIdentity;
  return byNamespaceName(ia, ib) || compare(a.name, b.name);
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
