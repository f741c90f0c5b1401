// Which identity a calling pod may use for a token request (upstream-behaviour §3.3 steps 5-6, §3.4), as a pure
// decision the server acts on. The server loops on `pending` while its wait budget lasts, waking on AAI changes.

import type {
  AzureAssignedIdentity,
  AzureIdentity,
  AzureIdentityBinding,
  AzurePodIdentityException,
  PodView,
} from '../../crds/types.js';
import { validateAzureIdentity } from '../../crds/validate.js';
import type { TokenRequest } from './token-request.js';

export const BINDING_LABEL = 'aadpodidbinding';

export type Selection =
  /**
   * Use this identity; `assigned` names the AAI it came from in standard mode. `live`: the AzureIdentity itself as NMI
   * watches it (standard mode; undefined when NMI does not see it). Its spec.mode decides the token source: the AAI's
   * copy loses `mode` where the original's AAI schema is still installed (the API server prunes it).
   */
  | { readonly kind: 'identity'; readonly identity: AzureIdentity; readonly assigned?: AzureAssignedIdentity; readonly live?: AzureIdentity }
  /** Serve the node's own identity (exception or MIC pod), with the client ID the pod asked for, if any. */
  | { readonly kind: 'node'; readonly via: 'exception' | 'mic'; readonly clientId?: string; readonly reason: string }
  /** Nothing usable yet; `created` says a matching AAI exists but is not Assigned yet. */
  | { readonly kind: 'pending'; readonly created: boolean; readonly reason: string }
  /** No identity will ever match this request as things stand (managed mode, or a hard mismatch). */
  | { readonly kind: 'none'; readonly reason: string }
  /**
   * Settled: nothing more is coming for this pod, and none of its identities is the one asked for. IMDS answers that
   * at once with 400 `Identity not found`, and clients move on at once; so does NMI.
   */
  | { readonly kind: 'unbound'; readonly reason: string };

export interface SelectPolicy {
  readonly mode: 'standard' | 'managed';
  readonly forceNamespaced: boolean;
  /** `--MICNamespace`: MIC's namespace; empty means no pod is recognised as MIC (it then needs an exception). */
  readonly micNamespace: string;
  /** `--mic-service-account`: a pod in `micNamespace` running as this ServiceAccount is MIC. */
  readonly micServiceAccount: string;
  /**
   * A pod started this long ago has had its assignments made (the original's wait for a pod with nothing assigned);
   * absent: pod age never settles a request.
   */
  readonly settleAfterMs?: number;
}

/** A binding whose selector is the pod's label, with the AzureIdentity it names (undefined: not there). */
export interface PodBinding {
  readonly binding: AzureIdentityBinding;
  readonly identity: AzureIdentity | undefined;
}

export interface SelectInput {
  readonly pod: PodView;
  readonly request: Pick<TokenRequest, 'clientId' | 'resourceId' | 'objectId'>;
  /** Exceptions in the pod's namespace (others are ignored even if passed). */
  readonly exceptions: readonly AzurePodIdentityException[];
  /** Standard mode: the AAIs on this node. */
  readonly assigned: readonly AzureAssignedIdentity[];
  /** Managed mode: bindings and identities (only the pod's namespace is considered). */
  readonly bindings: readonly AzureIdentityBinding[];
  readonly identities: readonly AzureIdentity[];
  /** Bindings (any namespace) whose selector is the pod's label; absent: unknown, and nothing is ever settled. */
  readonly podBindings?: readonly PodBinding[];
  /** Every informer the settled check reads (AAIs, bindings, identities) has listed. */
  readonly viewComplete?: boolean;
  /** Principal (object) IDs known for identities, by principalKey(identity), lower case (from their own tokens). */
  readonly principalIds?: ReadonlyMap<string, string>;
  /** Epoch ms of the decision (pod age); absent: pod age never settles a request. */
  readonly nowMs?: number;
  /** The AzureIdentity namespace/name as NMI watches it now (any namespace); absent: not known. */
  readonly liveIdentity?: (namespace: string, name: string) => AzureIdentity | undefined;
}

/** Decides for one request at one instant. Exceptions first, then the mode's identity lookup. */
export function selectIdentity(input: SelectInput, policy: SelectPolicy): Selection {
  const exception = matchingException(input.pod, input.exceptions);
  if (exception !== undefined) {
    return nodeSelection(input, 'exception', `pod matches AzurePodIdentityException ${exception.namespace}/${exception.name}`);
  }
  if (isMicPod(input.pod, policy)) {
    return nodeSelection(input, 'mic', `pod runs as MIC's ServiceAccount ${policy.micNamespace}/${policy.micServiceAccount}`);
  }
  return policy.mode === 'managed' ? selectManaged(input, policy) : selectStandard(input, policy);
}

function nodeSelection(input: SelectInput, via: 'exception' | 'mic', reason: string): Selection {
  return {
    kind: 'node',
    via,
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
  const all = podAssigned(input, policy);
  const mine = all.filter((a) => matchesRequest(a.identityRef as AzureIdentity, request, input.principalIds));

  const usable = mine.find((a) => a.state === 'Assigned' || a.state === '');
  if (usable !== undefined) {
    const identity = usable.identityRef as AzureIdentity;
    const live = input.liveIdentity?.(identity.namespace, identity.name);
    return { kind: 'identity', identity, assigned: usable, ...(live !== undefined ? { live } : {}) };
  }
  const created = mine.some((a) => a.state === 'Created');
  if (!created && standardSettled(input, policy, all)) {
    return { kind: 'unbound', reason: `no identity bound to pod ${pod.namespace}/${pod.name}${describeRequest(request)}` };
  }
  return {
    kind: 'pending',
    created,
    reason: created
      ? `identity for pod ${pod.namespace}/${pod.name} is not yet Assigned`
      : `no AzureAssignedIdentity for pod ${pod.namespace}/${pod.name}${describeRequest(request)}`,
  };
}

/** This pod's AAIs that NMI may serve from (whatever the request asks), in a stable order. */
function podAssigned(input: SelectInput, policy: SelectPolicy): AzureAssignedIdentity[] {
  const { pod } = input;
  return input.assigned
    .filter((a) => a.pod === pod.name && a.podNamespace === pod.namespace && a.nodeName === pod.nodeName)
    // Made for another incarnation of a pod with this name (recreated): not this pod's, whatever its name says.
    .filter((a) => a.podUid === '' || a.podUid === pod.uid)
    .filter((a) => !a.deleting && a.identityRef !== null)
    .filter((a) => !isNamespaced(a.identityRef as AzureIdentity, policy) || a.identityRef?.namespace === pod.namespace)
    .sort(byIdentityThenName);
}

/**
 * Whether this pod's assignments are settled for this request: no binding that could still give the pod the identity
 * asked for lacks its Assigned AAI, and either the pod started longer ago than the wait window (and has an identity,
 * or no binding label), or MIC is visibly done with it (it has AAIs, all Assigned, one for every binding that selects
 * it). Anything unknown: not settled.
 */
function standardSettled(input: SelectInput, policy: SelectPolicy, all: readonly AzureAssignedIdentity[]): boolean {
  const { pod, request } = input;
  if (input.viewComplete !== true || input.podBindings === undefined) return false;
  const assignedFor = (b: AzureIdentityBinding, identity: AzureIdentity) =>
    all.find(
      (a) =>
        a.bindingRef?.namespace === b.namespace &&
        a.bindingRef.name === b.name &&
        a.identityRef?.namespace === identity.namespace &&
        a.identityRef.name === identity.name,
    );
  let everyBindingAssigned = true;
  for (const { binding, identity } of input.podBindings) {
    if (binding.deleting || binding.selector !== pod.labels[BINDING_LABEL]) continue;
    // Named identity not there (yet): it may be created with any client ID.
    if (identity === undefined) return false;
    // MIC never assigns an identity being deleted or one it cannot use (it says why in an event on it).
    if (identity.deleting || validateAzureIdentity(identity).length > 0) continue;
    // MIC never assigns a namespaced identity across namespaces.
    if (isNamespaced(identity, policy) && binding.namespace !== pod.namespace) continue;
    const aai = assignedFor(binding, identity);
    const done = aai !== undefined && (aai.state === 'Assigned' || aai.state === '') && sameIdentity(aai.identityRef, identity);
    if (done) continue;
    if (mayMatchRequest(identity, request, input.principalIds)) return false;
    everyBindingAssigned = false;
  }
  // Past the window, a pod with identities has them all; one with none is settled only if it never asked for one
  // (no label): a labelled pod's binding may still be on its way, and clients retry the original's 404 until it is.
  const label = pod.labels[BINDING_LABEL];
  if (podStartedBefore(input, policy) && (all.length > 0 || label === undefined || label === '')) return true;
  return everyBindingAssigned && all.length > 0 && all.every((a) => a.state === 'Assigned' || a.state === '');
}

function podStartedBefore(input: SelectInput, policy: SelectPolicy): boolean {
  const { nowMs } = input;
  const started = input.pod.startedAtMs;
  if (nowMs === undefined || started === undefined || policy.settleAfterMs === undefined) return false;
  return nowMs - started >= policy.settleAfterMs;
}

/** The AAI still carries the identity as it is now (MIC rewrites it when the AzureIdentity changed). */
function sameIdentity(ref: AzureIdentity | null, identity: AzureIdentity): boolean {
  return (
    ref !== null &&
    ref.clientID.toLowerCase() === identity.clientID.toLowerCase() &&
    ref.resourceID.toLowerCase() === identity.resourceID.toLowerCase()
  );
}

function selectManaged(input: SelectInput, policy: SelectPolicy): Selection {
  const { pod, request } = input;
  const bound = managedBound(input, policy);
  if (bound === undefined) {
    const reason = `pod ${pod.namespace}/${pod.name} has no ${BINDING_LABEL} label`;
    return podStartedBefore(input, policy) && input.viewComplete === true ? { kind: 'unbound', reason } : { kind: 'none', reason };
  }
  const chosen = bound.find((i) => matchesRequest(i, request, input.principalIds));
  if (chosen !== undefined) return { kind: 'identity', identity: chosen };
  const reason = `no AzureIdentity bound to pod ${pod.namespace}/${pod.name}${describeRequest(request)}`;
  return managedSettled(input, bound) ? { kind: 'unbound', reason } : { kind: 'none', reason };
}

/** Managed mode: the identities the pod's bindings name in its namespace; undefined when it has no binding label. */
function managedBound(input: SelectInput, policy: SelectPolicy): AzureIdentity[] | undefined {
  const { pod } = input;
  const selector = pod.labels[BINDING_LABEL];
  if (selector === undefined || selector === '') return undefined;
  const names = new Set(
    input.bindings
      .filter((b) => b.namespace === pod.namespace && !b.deleting && b.selector === selector)
      .map((b) => b.azureIdentity),
  );
  return input.identities
    .filter((i) => i.namespace === pod.namespace && !i.deleting && names.has(i.name))
    .filter((i) => !isNamespaced(i, policy) || i.namespace === pod.namespace)
    .sort(byNamespaceName);
}

/**
 * Managed mode has no assignment to wait for: the bindings are all there is. Settled once NMI has listed them, none
 * names an identity that is not there yet, and the pod has an identity. A labelled pod with nothing bound keeps the
 * original's immediate 404 (clients retry it while its binding is created).
 */
function managedSettled(input: SelectInput, bound: readonly AzureIdentity[]): boolean {
  const { pod } = input;
  if (input.viewComplete !== true) return false;
  const selector = pod.labels[BINDING_LABEL];
  const dangling = input.bindings.some(
    (b) =>
      b.namespace === pod.namespace &&
      !b.deleting &&
      b.selector === selector &&
      !input.identities.some((i) => i.namespace === b.namespace && i.name === b.azureIdentity),
  );
  return !dangling && bound.length > 0;
}

/**
 * The identities this pod may be served right now, whatever it asks for (exceptions and MIC's pod aside): the shell
 * reads their principal IDs from their own tokens to match an `object_id`.
 */
export function servableIdentities(input: Omit<SelectInput, 'request'>, policy: SelectPolicy): AzureIdentity[] {
  const full: SelectInput = { ...input, request: {} };
  if (policy.mode === 'managed') return managedBound(full, policy) ?? [];
  return podAssigned(full, policy)
    .filter((a) => a.state === 'Assigned' || a.state === '')
    .map((a) => a.identityRef as AzureIdentity);
}

/** Key of an identity's principal ID: the identity as it is now (a changed client or resource ID is another key). */
export function principalKey(identity: AzureIdentity): string {
  return `${identity.namespace}/${identity.name}/${identity.uid}/${identity.clientID.toLowerCase()}/${identity.resourceID.toLowerCase()}`;
}

function isNamespaced(identity: AzureIdentity, policy: SelectPolicy): boolean {
  return policy.forceNamespaced || identity.namespaced;
}

/** Client, object and resource IDs are GUIDs and ARM IDs, all case-insensitive. */
function matchesRequest(identity: AzureIdentity, request: SelectInput['request'], principals: SelectInput['principalIds']): boolean {
  if (request.clientId !== undefined) return identity.clientID.toLowerCase() === request.clientId.toLowerCase();
  if (request.resourceId !== undefined) {
    return identity.resourceID !== '' && identity.resourceID.toLowerCase() === request.resourceId.toLowerCase();
  }
  if (request.objectId !== undefined) return principals?.get(principalKey(identity)) === request.objectId.toLowerCase();
  return true;
}

/** Could this identity be the one asked for? An object ID not yet known could be anyone's. */
function mayMatchRequest(identity: AzureIdentity, request: SelectInput['request'], principals: SelectInput['principalIds']): boolean {
  if (request.objectId !== undefined && principals?.get(principalKey(identity)) === undefined) return true;
  return matchesRequest(identity, request, principals);
}

function describeRequest(request: SelectInput['request']): string {
  if (request.clientId !== undefined) return ' matching the requested client_id';
  if (request.resourceId !== undefined) return ' matching the requested msi_res_id';
  if (request.objectId !== undefined) return ' matching the requested object_id';
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
