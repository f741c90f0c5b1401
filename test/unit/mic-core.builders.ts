// Builders for MIC core tests: plain view objects with sensible defaults, so each case states only what matters.
import { ASSIGNED_IDENTITY_FINALIZER, BEHAVIOR_ANNOTATION, POD_LABEL } from '../../src/crds/names.js';
import type {
  AssignedIdentityState,
  AzureAssignedIdentity,
  AzureIdentity,
  AzureIdentityBinding,
  IdentityType,
  PodView,
} from '../../src/crds/types.js';
import {
  assignedKey,
  computeDesired,
  plan,
  type AssignedSpec,
  type ClusterSnapshot,
  type ComputeTargetRef,
  type MicPolicy,
  type Plan,
  type SnapshotNode,
  type TargetAttachment,
} from '../../src/mic/core/index.js';

export const SUB = '00000000-1111-2222-3333-444444444444';

/** A user-assigned identity's ARM ID, in the mixed case users write. */
export function rid(name: string): string {
  return `/subscriptions/${SUB}/resourceGroups/RG/providers/Microsoft.ManagedIdentity/userAssignedIdentities/${name}`;
}

/** The same ID as the core emits it (canonical, lower-case). */
export function cid(name: string): string {
  return rid(name).toLowerCase();
}

/** A GUID client ID derived from a name, stable per name. */
export function clientId(name: string): string {
  let h = 0;
  for (const ch of name) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
  return `11111111-2222-3333-4444-${h.toString(16).padStart(12, '0').slice(-12)}`;
}

const meta = {
  uid: '',
  labels: {},
  annotations: {},
  creationTimestamp: '',
  finalizers: [] as readonly string[],
  deleting: false,
};

export interface IdentityOpts {
  type?: IdentityType;
  resourceID?: string;
  clientID?: string;
  rv?: string;
  namespaced?: boolean;
  deleting?: boolean;
}

export function identity(namespace: string, name: string, opts: IdentityOpts = {}): AzureIdentity {
  const type = opts.type ?? 0;
  const namespaced = opts.namespaced ?? false;
  return {
    ...meta,
    namespace,
    name,
    uid: `uid-id-${namespace}-${name}`,
    resourceVersion: opts.rv ?? '1',
    annotations: namespaced ? { [BEHAVIOR_ANNOTATION]: 'namespaced' } : {},
    deleting: opts.deleting ?? false,
    type,
    invalidType: '',
    resourceID: opts.resourceID ?? (type === 0 ? rid(name) : ''),
    clientID: opts.clientID ?? clientId(`${namespace}/${name}`),
    clientPassword: type === 0 ? null : { name: `${name}-secret`, namespace },
    tenantID: type === 0 ? '' : 'tenant',
    auxiliaryTenantIDs: [],
    adEndpoint: '',
    adResourceID: '',
    namespaced,
  };
}

export function binding(
  namespace: string,
  name: string,
  azureIdentity: string,
  selector: string,
  opts: { rv?: string; deleting?: boolean } = {},
): AzureIdentityBinding {
  return {
    ...meta,
    namespace,
    name,
    uid: `uid-b-${namespace}-${name}`,
    resourceVersion: opts.rv ?? '1',
    deleting: opts.deleting ?? false,
    azureIdentity,
    selector,
    weight: null,
  };
}

export function pod(
  namespace: string,
  name: string,
  selector: string | undefined,
  nodeName: string,
  opts: { phase?: string; deleting?: boolean } = {},
): PodView {
  return {
    namespace,
    name,
    uid: `uid-p-${namespace}-${name}`,
    resourceVersion: '1',
    labels: selector === undefined ? {} : { [POD_LABEL]: selector },
    nodeName,
    podIP: '',
    podIPs: [],
    phase: opts.phase ?? 'Running',
    hostNetwork: false,
    deleting: opts.deleting ?? false,
    ownerReferences: [],
  };
}

export function vmTarget(name: string): ComputeTargetRef {
  return { kind: 'vm', name, key: `vm/${name}` };
}

export function vmssTarget(name: string): ComputeTargetRef {
  return { kind: 'vmss', name, key: `vmss/${name}` };
}

export function vmNode(name: string): SnapshotNode {
  return node(name, vmTarget(name));
}

export function vmssNode(name: string, scaleSet: string): SnapshotNode {
  return node(name, vmssTarget(scaleSet));
}

export function node(name: string, target: ComputeTargetRef | undefined): SnapshotNode {
  return { name, uid: `uid-n-${name}`, providerID: '', labels: {}, target };
}

/** The AAI spec the core should emit for (pod, binding, identity) with default (non-namespaced) placement. */
export function expectedSpec(
  p: PodView,
  b: AzureIdentityBinding,
  id: AzureIdentity,
  state: 'Created' | 'Assigned' = 'Created',
  namespace = 'default',
): AssignedSpec {
  const name = `${p.name}-${p.namespace}-${id.name}`;
  return {
    key: assignedKey(namespace, name),
    namespace,
    name,
    identityRef: id,
    bindingRef: b,
    pod: p.name,
    podNamespace: p.namespace,
    nodeName: p.nodeName,
    labels: { nodename: p.nodeName, 'aadpodidentity.k8s.io/pod-uid': p.uid },
    finalizers: [ASSIGNED_IDENTITY_FINALIZER],
    state,
  };
}

/** An existing AAI as the cache would hold it after MIC wrote `spec`. */
export function assigned(
  s: AssignedSpec,
  state: AssignedIdentityState,
  opts: { rv?: string; deleting?: boolean; finalizers?: readonly string[] } = {},
): AzureAssignedIdentity {
  return {
    ...meta,
    namespace: s.namespace,
    name: s.name,
    uid: `uid-a-${s.key}`,
    resourceVersion: opts.rv ?? '7',
    labels: s.labels,
    finalizers: opts.finalizers ?? s.finalizers,
    deleting: opts.deleting ?? false,
    identityRef: s.identityRef,
    bindingRef: s.bindingRef,
    pod: s.pod,
    podNamespace: s.podNamespace,
    podUid: s.labels['aadpodidentity.k8s.io/pod-uid'] ?? '',
    nodeName: s.nodeName,
    state,
  };
}

/** Shorthand: the AAI that exists for (pod, binding, identity) in the given state. */
export function aai(
  p: PodView,
  b: AzureIdentityBinding,
  id: AzureIdentity,
  state: AssignedIdentityState = 'Assigned',
  namespace = 'default',
): AzureAssignedIdentity {
  return assigned(expectedSpec(p, b, id, 'Created', namespace), state);
}

export function attached(ids: readonly string[], systemAssigned = false): TargetAttachment {
  return { ids, systemAssigned };
}

export function snapshot(parts: Partial<ClusterSnapshot> = {}): ClusterSnapshot {
  return {
    pods: [],
    nodes: [],
    identities: [],
    bindings: [],
    assigned: [],
    attachments: new Map(),
    pending: { created: new Set(), deleted: new Set() },
    ...parts,
  };
}

export function policy(parts: Partial<MicPolicy> = {}): MicPolicy {
  return {
    forceNamespaced: false,
    immutableClientIds: new Set(),
    immutableResourceIds: new Set(),
    credentials: { allowCrossNamespaceSecrets: false, allowedAuthorities: new Set(['https://login.microsoftonline.com']) },
    ...parts,
  };
}

/** What the reconciler does: desired state, then plan. */
export function run(s: ClusterSnapshot, pol: MicPolicy = policy()): Plan {
  return plan(s, computeDesired(s, pol), pol);
}

/** A plan with every list empty except those given. */
export function planOf(parts: Partial<Plan>): Plan {
  return {
    createAssigned: [],
    updateAssigned: [],
    deleteAssigned: [],
    statusUpdates: [],
    targetOps: [],
    skipped: [],
    ...parts,
  };
}
