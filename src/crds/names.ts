// Names the original fixed on the wire: API group, kinds, label and annotation keys, AzureAssignedIdentity
// naming, and the client-ID redaction used in every log line.
//
// The only import is node:crypto, for a short stable hash when an AzureAssignedIdentity name would be
// too long: it is deterministic and does no I/O (allowed by test/unit/architecture.test.ts).
import { createHash } from 'node:crypto';

export const GROUP = 'aadpodidentity.k8s.io';
export const VERSION = 'v1';
export const API_VERSION = `${GROUP}/${VERSION}`;

export const Kinds = {
  AzureIdentity: 'AzureIdentity',
  AzureIdentityBinding: 'AzureIdentityBinding',
  AzureAssignedIdentity: 'AzureAssignedIdentity',
  AzurePodIdentityException: 'AzurePodIdentityException',
} as const;
export type Kind = (typeof Kinds)[keyof typeof Kinds];

export const Plurals = {
  AzureIdentity: 'azureidentities',
  AzureIdentityBinding: 'azureidentitybindings',
  AzureAssignedIdentity: 'azureassignedidentities',
  AzurePodIdentityException: 'azurepodidentityexceptions',
} as const satisfies Record<Kind, string>;

/** Pod label whose value is compared with AzureIdentityBinding spec.selector. */
export const POD_LABEL = 'aadpodidbinding';
/** AzureAssignedIdentity label holding the node name; NMI filters its watch on it. */
export const NODE_NAME_LABEL = 'nodename';
/**
 * AzureAssignedIdentity label holding the uid of the pod it was made for (ours): NMI serves an AAI only to that pod
 * incarnation, so a pod recreated under the same name never inherits its predecessor's identity.
 */
export const POD_UID_LABEL = 'aadpodidentity.k8s.io/pod-uid';
export const ASSIGNED_IDENTITY_FINALIZER = 'azureassignedidentity.finalizers.aadpodidentity.k8s.io';
/** Key and value are compared exactly (case-sensitive), as the original does. */
export const BEHAVIOR_ANNOTATION = 'aadpodidentity.k8s.io/Behavior';
export const BEHAVIOR_NAMESPACED = 'namespaced';
/** Where AzureAssignedIdentities live unless namespaced (back-compat with the original). */
export const DEFAULT_ASSIGNED_NAMESPACE = 'default';

/** Kubernetes' limit for a DNS-1123 subdomain, which custom resource names must be. */
export const MAX_NAME_LENGTH = 253;
const HASH_LENGTH = 10;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/**
 * `<pod>-<podNamespace>-<identity>` as the original names AzureAssignedIdentities. When that is not a name the
 * API server accepts (longer than 253 characters, or not a DNS-1123 subdomain), the result is a sanitised,
 * truncated prefix plus `-` and a hash of the three parts, so it is stable across restarts and distinct per
 * (pod, namespace, identity).
 */
export function assignedIdentityName(podName: string, podNamespace: string, identityName: string): string {
  const joined = `${podName}-${podNamespace}-${identityName}`;
  if (isDns1123Subdomain(joined)) return joined;
  // NUL separators: the joined form is ambiguous ("a-b","c" vs "a","b-c"), the hashed one must not be.
  const hash = createHash('sha256').update(`${podName}\0${podNamespace}\0${identityName}`).digest('hex');
  const room = MAX_NAME_LENGTH - HASH_LENGTH - 1;
  const prefix = sanitize(joined).slice(0, room).replace(/-+$/, '');
  return prefix === '' ? hash.slice(0, HASH_LENGTH) : `${prefix}-${hash.slice(0, HASH_LENGTH)}`;
}

export function isDns1123Subdomain(name: string): boolean {
  return name.length > 0 && name.length <= MAX_NAME_LENGTH && DNS1123_SUBDOMAIN.test(name);
}

/** Identity namespace when the identity is namespaced (annotation or --forceNamespaced), else `default`. */
export function assignedIdentityNamespace(
  identity: { readonly namespace: string; readonly namespaced: boolean },
  forceNamespaced: boolean,
): string {
  return identity.namespaced || forceNamespaced ? identity.namespace : DEFAULT_ASSIGNED_NAMESPACE;
}

/** True when the annotations carry `aadpodidentity.k8s.io/Behavior: namespaced` exactly. */
export function isNamespacedBehavior(annotations: Readonly<Record<string, string>>): boolean {
  return annotations[BEHAVIOR_ANNOTATION] === BEHAVIOR_NAMESPACED;
}

/** Label selector string for the pods MIC lists (label present, any value). */
export const POD_LABEL_SELECTOR = POD_LABEL;

/** Label selector for one node's AzureAssignedIdentities. */
export function nodeLabelSelector(nodeName: string): string {
  return `${NODE_NAME_LABEL}=${nodeName}`;
}

/**
 * The original's redaction: first four and last four characters kept, `##### REDACTED #####` between.
 * Divergence: values too short for that (under 8 characters, or with whitespace at the kept ends) are
 * fully replaced, where the original printed them unchanged.
 */
export function redactClientID(clientID: string): string {
  if (clientID === '') return '';
  const m = /^(\S{4})[\s\S]*(\S{4})$/.exec(clientID);
  return m ? `${m[1]}##### REDACTED #####${m[2]}` : '##### REDACTED #####';
}

/** Path of a collection of one of our kinds, namespaced or across all namespaces. */
export function collectionPath(plural: string, namespace?: string): string {
  return namespace === undefined || namespace === ''
    ? `/apis/${GROUP}/${VERSION}/${plural}`
    : `/apis/${GROUP}/${VERSION}/namespaces/${encodeURIComponent(namespace)}/${plural}`;
}

/** Path of one object of one of our kinds. */
export function objectPath(plural: string, namespace: string, name: string): string {
  return `${collectionPath(plural, namespace)}/${encodeURIComponent(name)}`;
}

/** Maps every run of characters outside [a-z0-9] (dots included) to one '-', so no bad label boundary remains. */
function sanitize(text: string): string {
  return text
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+/, '');
}
