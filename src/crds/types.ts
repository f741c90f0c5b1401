// Types for aadpodidentity.k8s.io/v1 objects and the few core objects MIC and NMI look at.
//
// Two layers:
// - *Wire types* describe JSON as the API server serves it (every field optional; values may still be anything,
//   so code reading raw objects goes through normalize.ts rather than trusting these). Writers (MIC creating
//   AzureAssignedIdentities) use them to build request bodies.
// - *View types* are our normalised, readonly, plain-data view. Built once at the edge (normalize.ts,
//   podViewFrom, nodeViewFrom); everything inside (mic/core, nmi/core) trusts them.

/* ------------------------------------------------------------------------------------------------ views */

/** 0 = user-assigned managed identity, 1 = service principal + secret, 2 = service principal + certificate. */
export type IdentityType = 0 | 1 | 2;

export const IdentityTypes = {
  UserAssignedMSI: 0,
  ServicePrincipal: 1,
  ServicePrincipalCertificate: 2,
} as const satisfies Record<string, IdentityType>;

/**
 * How pods get an AzureIdentity's tokens (spec.mode). `Attached` (the original's way, and the default when absent or
 * empty): MIC attaches the identity to the node's VM/VMSS and NMI asks IMDS. `Federated`: no VM identity; MIC keeps a
 * federated identity credential on the user-assigned identity and NMI exchanges the pod's service-account token.
 */
export type IdentityMode = 'Attached' | 'Federated';

export const IdentityModes = { Attached: 'Attached', Federated: 'Federated' } as const satisfies Record<string, IdentityMode>;

/**
 * AzureAssignedIdentity `status.status`. `''` is what MIC < 1.5 left (a status object without `status`), treated
 * as Assigned by MIC and NMI. An object with no status object at all normalises to 'Created' (see normalize.ts).
 */
export type AssignedIdentityState = 'Created' | 'Assigned' | 'Unassigned' | '';

/** Metadata every view carries. */
export interface ObjectView {
  readonly namespace: string;
  readonly name: string;
  readonly uid: string;
  readonly resourceVersion: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly annotations: Readonly<Record<string, string>>;
  /** RFC 3339 text as served, '' when absent. */
  readonly creationTimestamp: string;
  readonly finalizers: readonly string[];
  /** metadata.deletionTimestamp is set. */
  readonly deleting: boolean;
}

export interface SecretRef {
  readonly name: string;
  readonly namespace: string;
}

export interface AzureIdentity extends ObjectView {
  /** null when spec.type was present but not 0, 1 or 2; see invalidType. A missing type means 0, as in the original. */
  readonly type: IdentityType | null;
  /** The offending spec.type rendered as text when type is null, else ''. */
  readonly invalidType: string;
  readonly resourceID: string;
  readonly clientID: string;
  /** null when neither name nor namespace is set. */
  readonly clientPassword: SecretRef | null;
  readonly tenantID: string;
  readonly auxiliaryTenantIDs: readonly string[];
  readonly adEndpoint: string;
  readonly adResourceID: string;
  /** Annotation `aadpodidentity.k8s.io/Behavior: namespaced` (exact key and value). */
  readonly namespaced: boolean;
  /**
   * spec.mode; null when present but neither Attached nor Federated (see invalidMode). normalize.ts always sets it;
   * views built by hand may leave it out, which means Attached. Read it through `identityMode()`.
   */
  readonly mode?: IdentityMode | null;
  /** The offending spec.mode rendered as text when mode is null, else '' (or absent). */
  readonly invalidMode?: string;
}

/** An identity's mode with the default applied: absent means Attached; null (an invalid spec.mode) stays null. */
export function identityMode(id: AzureIdentity): IdentityMode | null {
  return id.mode === undefined ? 'Attached' : id.mode;
}

export interface AzureIdentityBinding extends ObjectView {
  /** Name of an AzureIdentity in the binding's own namespace. */
  readonly azureIdentity: string;
  /** Compared for exact equality with the pod label `aadpodidbinding`. */
  readonly selector: string;
  /** Declared by the original, never used; null when absent. */
  readonly weight: number | null;
}

export interface AzurePodIdentityException extends ObjectView {
  readonly podLabels: Readonly<Record<string, string>>;
}

export interface AzureAssignedIdentity extends ObjectView {
  /** Normalised copy of spec.azureIdentityRef; null when missing or unusable. */
  readonly identityRef: AzureIdentity | null;
  /** Normalised copy of spec.azureBindingRef; null when missing or unusable. */
  readonly bindingRef: AzureIdentityBinding | null;
  readonly pod: string;
  readonly podNamespace: string;
  /** spec.nodename (lower-case key on the wire). */
  readonly nodeName: string;
  readonly state: AssignedIdentityState;
  /** Label `aadpodidentity.k8s.io/pod-uid`: the pod incarnation this AAI is for; '' on AAIs written without it. */
  readonly podUid: string;
}

export interface OwnerReferenceView {
  readonly apiVersion: string;
  readonly kind: string;
  readonly name: string;
  readonly uid: string;
  readonly controller: boolean;
}

/** The parts of a Pod that MIC and NMI use. */
export interface PodView {
  readonly namespace: string;
  readonly name: string;
  readonly uid: string;
  readonly resourceVersion: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly nodeName: string;
  readonly podIP: string;
  /** status.podIPs[].ip, falling back to [podIP]. */
  readonly podIPs: readonly string[];
  readonly phase: string;
  readonly hostNetwork: boolean;
  readonly deleting: boolean;
  readonly ownerReferences: readonly OwnerReferenceView[];
  /** spec.serviceAccountName (or the deprecated spec.serviceAccount); absent or empty never matches MIC's. */
  readonly serviceAccountName?: string;
  /** status.startTime (else metadata.creationTimestamp) in epoch ms; absent when neither is readable. */
  readonly startedAtMs?: number;
}

/** The parts of a Node that MIC uses (providerID locates the VM or VMSS instance). */
export interface NodeView {
  readonly name: string;
  readonly uid: string;
  readonly providerID: string;
  readonly labels: Readonly<Record<string, string>>;
}

/** What every normaliser returns: the view (null when the input cannot be one), plus what it had to do. */
export interface Normalized<T> {
  readonly value: T | null;
  /** Legacy spellings whose values were used, as JSON paths, e.g. `spec.ResourceID`. */
  readonly legacyFields: readonly string[];
  /** Human-readable notes on input that was ignored or wrong (never thrown). */
  readonly problems: readonly string[];
}

/* ------------------------------------------------------------------------------------------------- wire */

export interface ObjectMetaWire {
  name?: string;
  generateName?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generation?: number;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  finalizers?: string[];
  ownerReferences?: Array<{ apiVersion?: string; kind?: string; name?: string; uid?: string; controller?: boolean }>;
}

export interface SecretRefWire {
  name?: string;
  namespace?: string;
}

export interface AzureIdentitySpecWire {
  type?: number;
  resourceID?: string;
  clientID?: string;
  clientPassword?: SecretRefWire;
  tenantID?: string;
  auxiliaryTenantIDs?: string[] | null;
  adEndpoint?: string;
  adResourceID?: string;
  /** Attached (default when absent) or Federated. */
  mode?: IdentityMode;
  replicas?: number | null;
}

export interface AzureIdentityWire {
  apiVersion?: string;
  kind?: string;
  metadata?: ObjectMetaWire;
  spec?: AzureIdentitySpecWire;
  status?: { availableReplicas?: number };
}

export interface AzureIdentityBindingSpecWire {
  azureIdentity?: string;
  selector?: string;
  weight?: number;
}

export interface AzureIdentityBindingWire {
  apiVersion?: string;
  kind?: string;
  metadata?: ObjectMetaWire;
  spec?: AzureIdentityBindingSpecWire;
  status?: { availableReplicas?: number };
}

export interface AzurePodIdentityExceptionWire {
  apiVersion?: string;
  kind?: string;
  metadata?: ObjectMetaWire;
  spec?: { podLabels?: Record<string, string> };
  status?: { status?: string };
}

export interface AzureAssignedIdentitySpecWire {
  azureIdentityRef?: AzureIdentityWire;
  azureBindingRef?: AzureIdentityBindingWire;
  pod?: string;
  podNamespace?: string;
  nodename?: string;
  replicas?: number | null;
}

export interface AzureAssignedIdentityWire {
  apiVersion?: string;
  kind?: string;
  metadata?: ObjectMetaWire;
  spec?: AzureAssignedIdentitySpecWire;
  status?: { status?: AssignedIdentityState; availableReplicas?: number };
}

/* ----------------------------------------------------------------------------------- pod / node builders */

/** Builds a PodView from a pod as client-node hands it out (plain JSON from watches, class instances from lists). */
export function podViewFrom(raw: unknown): PodView | null {
  const pod = asRecord(raw);
  const meta = asRecord(pod.metadata);
  const name = asString(meta.name);
  if (name === '') return null;
  const spec = asRecord(pod.spec);
  const status = asRecord(pod.status);
  const podIP = asString(status.podIP);
  const podIPs = asArray(status.podIPs)
    .map((entry) => asString(asRecord(entry).ip))
    .filter((ip) => ip !== '');
  return {
    namespace: asString(meta.namespace),
    name,
    uid: asString(meta.uid),
    resourceVersion: asString(meta.resourceVersion),
    labels: asStringMap(meta.labels),
    nodeName: asString(spec.nodeName),
    podIP,
    podIPs: podIPs.length > 0 ? podIPs : podIP !== '' ? [podIP] : [],
    phase: asString(status.phase),
    hostNetwork: spec.hostNetwork === true,
    serviceAccountName: asString(spec.serviceAccountName) || asString(spec.serviceAccount),
    deleting: isSet(meta.deletionTimestamp),
    ...startedAt(status.startTime, meta.creationTimestamp),
    ownerReferences: asArray(meta.ownerReferences).map((entry) => {
      const ref = asRecord(entry);
      return {
        apiVersion: asString(ref.apiVersion),
        kind: asString(ref.kind),
        name: asString(ref.name),
        uid: asString(ref.uid),
        controller: ref.controller === true,
      };
    }),
  };
}

/**
 * When the kubelet started the pod (status.startTime), else when it was created; lists give Dates, watches text.
 * Both are whole seconds on the wire: the latest instant of that second is taken, so a pod never looks older than it is.
 */
function startedAt(startTime: unknown, created: unknown): { startedAtMs?: number } {
  for (const value of [startTime, created]) {
    const ms = value instanceof Date ? value.getTime() : typeof value === 'string' && value !== '' ? Date.parse(value) : NaN;
    if (Number.isFinite(ms)) return { startedAtMs: ms % 1000 === 0 ? ms + 999 : ms };
  }
  return {};
}

/** Builds a NodeView from a node (plain JSON or client-node class instance). */
export function nodeViewFrom(raw: unknown): NodeView | null {
  const node = asRecord(raw);
  const meta = asRecord(node.metadata);
  const name = asString(meta.name);
  if (name === '') return null;
  return {
    name,
    uid: asString(meta.uid),
    providerID: asString(asRecord(node.spec).providerID),
    labels: asStringMap(meta.labels),
  };
}

/* -------------------------------------------------------------------------- unknown-safe readers (shared) */

export type UnknownRecord = Readonly<Record<string, unknown>>;

const EMPTY: UnknownRecord = Object.freeze({});

/** A plain object or class instance as a record; anything else (null, arrays, scalars) as {}. */
export function asRecord(value: unknown): UnknownRecord {
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as UnknownRecord) : EMPTY;
}

export function asString(value: unknown): string {
  return typeof value === 'string' ? value : '';
}

export function asArray(value: unknown): readonly unknown[] {
  return Array.isArray(value) ? value : [];
}

/** Keeps only string values: a label map is string -> string on the wire. */
export function asStringMap(value: unknown): Readonly<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(asRecord(value))) if (typeof v === 'string') out[k] = v;
  return out;
}

/** Timestamps are strings in watch JSON and Date objects in client-node list results. */
export function timestampText(value: unknown): string {
  if (typeof value === 'string') return value;
  if (value instanceof Date && !Number.isNaN(value.getTime())) return value.toISOString().replace(/\.\d{3}Z$/, 'Z');
  return '';
}

function isSet(value: unknown): boolean {
  return value !== undefined && value !== null && value !== '';
}
