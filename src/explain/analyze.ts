// explain's reasoning, as a pure function: from what the cluster (and ARM) say about one pod, what MIC's own core
// (computeDesired, plan) decides for it and why, and what NMI's own core (selectIdentity, the node path, the namespace
// policy) answers it now. Nothing here restates their rules: it builds their inputs and puts their answers in words.
// No I/O here: gather.ts collects, render.ts prints.

import { authorityOrigin, POD_LABEL, type CredentialPolicy } from '../crds/index.js';
import type { AzureAssignedIdentity, AzureIdentity, AzureIdentityBinding, AzurePodIdentityException, PodView } from '../crds/types.js';
import { canonicalResourceId } from '../azure/resource-id.js';
import type { NamespacePolicies } from '../crds/namespace-policy.js';
import { computeDesired, type DesiredAssignment, type DesiredState } from '../mic/core/desired.js';
import { plan, type Plan } from '../mic/core/plan.js';
import type { Skip } from '../mic/core/skip.js';
import type { ClusterSnapshot, FederationState, MicPolicy, SnapshotNode, TargetAttachment } from '../mic/core/snapshot.js';
import { namespacePolicyDenial } from '../nmi/core/namespace-policy.js';
import { declaredIdentitiesOf, NODE_PATH_REMEDY, nodeRequestRefusal } from '../nmi/core/node-path.js';
import { matchingException, principalKey, selectIdentity, type PodBinding } from '../nmi/core/select.js';
import type { TokenRequest } from '../nmi/core/token-request.js';

export interface ExplainInput {
  readonly pod: PodView;
  readonly bindings: readonly AzureIdentityBinding[];
  readonly identities: readonly AzureIdentity[];
  /** AzureAssignedIdentities whose spec.pod / spec.podNamespace are this pod. */
  readonly assigned: readonly AzureAssignedIdentity[];
  readonly exceptions: readonly AzurePodIdentityException[];
  readonly forceNamespaced: boolean;
  /** `--namespace-identity-policy=enforce`, with the Namespaces' parsed policies; absent or 'off': not checked. */
  readonly namespacePolicy?: { readonly mode: 'off' | 'enforce'; readonly policies: NamespacePolicies };
  /**
   * The token request to answer for (`client_id`, `msi_res_id`/`mi_res_id`, `object_id`, parsed by NMI's own parser);
   * absent: a request naming no identity.
   */
  readonly request?: Pick<TokenRequest, 'clientId' | 'resourceId' | 'objectId'>;
  /** NMI's `--MICNamespace` (default empty: no pod is MIC by who it runs as). */
  readonly micNamespace?: string;
  /** NMI's `--mic-service-account`. */
  readonly micServiceAccount?: string;
  /** Identities on the node's VM/VMSS from ARM, or why ARM was not asked. */
  readonly arm: ArmView;
  /**
   * The pod's node as MIC resolves it (its VM/VMSS from spec.providerID); null: the cluster has no such node;
   * absent: not read (taken as known, its VM/VMSS unknown).
   */
  readonly node?: SnapshotNode | null;
  /** Client and principal IDs Azure has for user-assigned identities, by canonical resource ID (when ARM was asked). */
  readonly azureIdentities?: ReadonlyMap<string, AzureIdentityFacts>;
  /**
   * The clientPassword-namespace and adEndpoint rules MIC and NMI apply (their `--allow-cross-namespace-secrets`,
   * `--allowed-ad-endpoints`, the known clouds' authorities); without it, only the defaults' cross-namespace rule.
   */
  readonly credentials?: CredentialPolicy;
  /**
   * MIC's --enable-federated-identities and its service-account issuer, with the federated credentials Azure holds for
   * the pod's identities when ARM was asked; absent: federation off (a Federated identity is skipped, as MIC does).
   */
  readonly federation?: { readonly enabled: boolean; readonly issuer: string; readonly credentials?: FederationState };
  /** Objects that could not be read (legacy or malformed), with their problems. */
  readonly ignored: readonly { readonly kind: string; readonly name: string; readonly problems: readonly string[] }[];
}

export type ArmView =
  | { readonly kind: 'unavailable'; readonly reason: string }
  | { readonly kind: 'ok'; readonly target: string; readonly userAssigned: readonly string[]; readonly systemAssigned: boolean };

/** What Azure says about a user-assigned identity (from the node's VM/VMSS identity map, else MSI), by canonical ID. */
export interface AzureIdentityFacts {
  readonly clientId?: string;
  readonly principalId?: string;
  /** Why Azure could not say (not found, no access). */
  readonly error?: string;
}

export interface BindingVerdict {
  readonly namespace: string;
  readonly name: string;
  readonly selector: string;
  readonly identity: string;
  readonly matched: boolean;
  /** Why it did not match, or why its identity cannot be used; empty when it matched with a usable identity. */
  readonly reasons: readonly string[];
}

export interface IdentityVerdict {
  readonly namespace: string;
  readonly name: string;
  readonly type: string;
  readonly clientID: string;
  readonly resourceID: string;
  readonly problems: readonly string[];
  /** AAI state for this pod and identity ('' legacy, Created, Assigned, Unassigned), or 'none'. */
  readonly assignment: string;
  /** Whether ARM shows it on the node's VM/VMSS; undefined when unknown or not applicable (service principal). */
  readonly onNode: boolean | undefined;
  /** Its principal (object) ID as Azure reports it: what a pod passes as `object_id`; undefined when unknown. */
  readonly principalId?: string;
  /** Set when Azure has another client ID for its resourceID than spec.clientID: IMDS refuses tokens asked that way. */
  readonly clientIdMismatch?: string;
}

/** What MIC's core decides for this pod, from a snapshot of what explain read. */
export interface MicAnswer {
  /** The AzureAssignedIdentities MIC wants for this pod (`namespace/name`), with the binding and identity of each. */
  readonly assignments: readonly { readonly aai: string; readonly binding: string; readonly identity: string }[];
  /** Why MIC assigns this pod nothing whatever its bindings say (not scheduled, being deleted, finished, node unknown). */
  readonly refusal?: string;
  /** MIC's next cycle for this pod's AzureAssignedIdentities, in words (its plan); empty: nothing to do. */
  readonly next: readonly string[];
  /** What MIC's plan declined for this pod's AzureAssignedIdentities and why. */
  readonly waiting: readonly string[];
}

export interface NmiAnswer {
  readonly status: number;
  readonly summary: string;
}

export interface ExplainReport {
  readonly pod: {
    readonly namespace: string;
    readonly name: string;
    readonly node: string;
    readonly podIP: string;
    readonly phase: string;
    readonly label: string | undefined;
  };
  readonly exception: string | undefined;
  readonly bindings: readonly BindingVerdict[];
  readonly identities: readonly IdentityVerdict[];
  readonly assigned: readonly { readonly name: string; readonly identity: string; readonly state: string; readonly node: string }[];
  readonly arm: ArmView;
  readonly mic: MicAnswer;
  readonly nmi: NmiAnswer;
  readonly ignored: ExplainInput['ignored'];
  /** One line: does the pod get a token, and if not, the first thing to fix. */
  readonly verdict: string;
}

const TYPE_NAMES: Readonly<Record<number, string>> = { 0: 'user-assigned managed identity', 1: 'service principal (secret)', 2: 'service principal (certificate)' };

/** Skip codes that refuse the pod itself, whatever its bindings say. */
const POD_WIDE = new Set(['PodNotScheduled', 'PodDeleting', 'PodFinished', 'NodeNotFound']);

export function explain(input: ExplainInput): ExplainReport {
  const { pod } = input;
  const label = pod.labels[POD_LABEL];
  const policy = micPolicy(input);
  const snapshot = clusterSnapshot(input);
  // MIC's own decision for this pod: its desired state and its plan, from the same kind of snapshot MIC builds.
  const desired = computeDesired(snapshot, policy);
  const micPlan = plan(snapshot, desired, policy);
  const live = desired.assignments.filter((d) => !micPlan.skipped.some((s) => s.code === 'NodeNotFound' && isPodSkip(s, pod)));
  // The empty label is MIC's NoMatchingBinding for the pod itself, before any binding is looked at.
  const podWide = [...desired.skipped, ...micPlan.skipped].find(
    (s) => isPodSkip(s, pod) && (POD_WIDE.has(s.code) || (s.code === 'NoMatchingBinding' && label === '')),
  );

  const bindings = sortByName(input.bindings).map((b) => bindingVerdict(input, b, policy, live, podWide));
  const identityByKey = new Map<string, AzureIdentity>();
  for (const d of sortBy(live, (d) => `${d.binding.namespace}/${d.binding.name}`)) identityByKey.set(`${d.identity.namespace}/${d.identity.name}`, d.identity);

  const assigned = input.assigned.map((a) => ({
    name: a.name,
    identity: a.identityRef ? `${a.identityRef.namespace}/${a.identityRef.name}` : '?',
    state: stateText(a.state),
    node: a.nodeName,
  }));
  const armIds = input.arm.kind === 'ok' ? new Set(input.arm.userAssigned.map((id) => id.toLowerCase())) : undefined;
  const identities: IdentityVerdict[] = [...identityByKey.values()].map((i) => {
    const aai = input.assigned.find((a) => a.identityRef?.name === i.name && a.identityRef.namespace === i.namespace);
    return {
      namespace: i.namespace,
      name: i.name,
      type: i.type === null ? `invalid (${i.invalidType})` : (TYPE_NAMES[i.type] ?? String(i.type)),
      clientID: i.clientID,
      resourceID: i.resourceID,
      problems: [],
      assignment: aai ? stateText(aai.state) : 'none',
      onNode: i.type === 0 && armIds ? armIds.has(i.resourceID.toLowerCase()) : undefined,
      ...azureFactsOf(i, input.azureIdentities),
    };
  });

  const mic = micAnswer(input, live, micPlan, podWide);
  const nmi = nmiAnswer(input, mic.assignments.length > 0);
  return {
    pod: { namespace: pod.namespace, name: pod.name, node: pod.nodeName, podIP: pod.podIP, phase: pod.phase, label },
    exception: nmi.exception,
    bindings,
    identities,
    assigned,
    arm: input.arm,
    mic,
    nmi: { status: nmi.status, summary: nmi.summary },
    ignored: input.ignored,
    verdict: verdict(nmi, mic, bindings, identities, label),
  };
}

/* ----------------------------------------------------------------------------------- MIC's side */

/** MIC's policy from the flags explain was given (the same flags MIC runs with). */
function micPolicy(input: ExplainInput): MicPolicy {
  return {
    forceNamespaced: input.forceNamespaced,
    immutableClientIds: new Set(),
    immutableResourceIds: new Set(),
    credentials: input.credentials ?? unjudgedAuthorities(input.identities),
    namespaceIdentityPolicy: input.namespacePolicy?.mode ?? 'off',
    ...(input.federation !== undefined ? { federation: { enabled: input.federation.enabled, issuer: input.federation.issuer } } : {}),
  };
}

/**
 * Without the admin's settings an adEndpoint cannot be judged: every identity's own authority counts as allowed,
 * so explain says nothing rather than guess; the clientPassword Secret rule is the default's.
 */
function unjudgedAuthorities(identities: readonly AzureIdentity[]): CredentialPolicy {
  const origins = identities.flatMap((i) => {
    const parsed = authorityOrigin(i.adEndpoint);
    return i.adEndpoint !== '' && parsed.ok ? [parsed.origin] : [];
  });
  return { allowCrossNamespaceSecrets: false, allowedAuthorities: new Set(origins) };
}

/**
 * The ClusterSnapshot MIC's core takes, as far as this pod goes: the pod, its node (with the VM/VMSS it resolves to),
 * every identity and binding, the pod's AzureAssignedIdentities, and what ARM shows on the node's VM/VMSS.
 */
function clusterSnapshot(input: ExplainInput, bindings: readonly AzureIdentityBinding[] = input.bindings, identities: readonly AzureIdentity[] = input.identities): ClusterSnapshot {
  const { pod } = input;
  const node = podNode(input);
  const attachments = new Map<string, TargetAttachment | undefined>();
  if (node?.target !== undefined && input.arm.kind === 'ok') {
    attachments.set(node.target.key, { ids: input.arm.userAssigned.map(canonicalResourceId), systemAssigned: input.arm.systemAssigned });
  }
  return {
    pods: [pod],
    nodes: node === undefined ? [] : [node],
    identities,
    bindings,
    assigned: input.assigned,
    attachments,
    pending: { created: new Set(), deleted: new Set() },
    ...(input.namespacePolicy?.mode === 'enforce' ? { namespacePolicies: input.namespacePolicy.policies } : {}),
    ...(input.federation?.credentials !== undefined ? { federation: input.federation.credentials } : {}),
  };
}

function podNode(input: ExplainInput): SnapshotNode | undefined {
  const { pod } = input;
  if (pod.nodeName === '' || input.node === null) return undefined;
  if (input.node !== undefined) return input.node;
  // Not read: known to exist, its VM/VMSS unknown to explain (never "without a VM").
  return { name: pod.nodeName, uid: '', providerID: '', labels: {}, target: { kind: 'vm', name: pod.nodeName, key: `node/${pod.nodeName}` } };
}

/**
 * One binding's verdict: MIC's core asked about this binding alone (and the identity it names), so each reason is
 * the skip MIC itself records; then, against every binding, whether its AzureAssignedIdentity name was taken first.
 */
function bindingVerdict(
  input: ExplainInput,
  b: AzureIdentityBinding,
  policy: MicPolicy,
  live: readonly DesiredAssignment[],
  podWide: Skip | undefined,
): BindingVerdict {
  const { pod } = input;
  const label = pod.labels[POD_LABEL];
  const reasons: string[] = [];
  if (label === undefined) reasons.push(`the pod has no ${POD_LABEL} label`);
  else if (b.selector !== label) reasons.push(`selector "${b.selector}" ≠ the pod's ${POD_LABEL} "${label}"`);
  let matched = reasons.length === 0;
  const named = input.identities.filter((i) => i.namespace === b.namespace && i.name === b.azureIdentity);
  const alone: DesiredState = computeDesired(clusterSnapshot(input, [b], named), policy);
  const identitySkip = alone.skipped.find((s) => s.subject.kind === 'AzureIdentity');
  for (const s of alone.skipped) {
    const name = `${s.subject.namespace}/${s.subject.name}`;
    switch (s.code) {
      case 'BindingDeleting':
        reasons.push('the binding is being deleted');
        break;
      case 'BindingInvalid':
        reasons.push(`the binding is invalid: ${s.reason}`);
        break;
      case 'IdentityNotFound':
        if (identitySkip === undefined) reasons.push(`AzureIdentity ${b.namespace}/${b.azureIdentity} does not exist`);
        break;
      case 'IdentityDeleting':
        reasons.push(`AzureIdentity ${name} is being deleted`);
        break;
      case 'IdentityInvalid':
        reasons.push(`AzureIdentity ${name} is invalid: ${s.reason}`);
        break;
      case 'CrossNamespaceSecret':
      case 'AdEndpointNotAllowed':
        reasons.push(`AzureIdentity ${name} is refused (MIC skips it, NMI denies it): ${s.reason}`);
        break;
      case 'IdentityNotPermitted':
        reasons.push(`IdentityNotPermitted: ${s.reason}`);
        break;
      case 'FederationDisabled':
      case 'FederationIssuerUnknown':
        reasons.push(`AzureIdentity ${name} is skipped by MIC (${s.code}): ${s.reason}`);
        break;
      case 'NamespaceMismatch':
        matched = false;
        reasons.push(
          `namespaced matching (${input.forceNamespaced ? '--forceNamespaced' : 'identity annotation'}): binding is in ${b.namespace}, pod in ${pod.namespace}`,
        );
        break;
      default:
        break; // pod-wide skips are said once below; NoMatchingBinding is the selector line above
    }
  }
  if (matched && podWide !== undefined) reasons.unshift(`MIC assigns nothing to this pod: ${podWide.reason}`);
  const mine = alone.assignments[0];
  if (matched && podWide === undefined && mine !== undefined) {
    const winner = live.find((d) => d.key === mine.key);
    if (winner !== undefined && (winner.binding.namespace !== b.namespace || winner.binding.name !== b.name)) {
      reasons.push(
        `AzureAssignedIdentity ${mine.key} is already taken by binding ${winner.binding.namespace}/${winner.binding.name} ` +
          `(identity ${winner.identity.namespace}/${winner.identity.name}): MIC makes one per pod and identity name`,
      );
    }
  }
  return { namespace: b.namespace, name: b.name, selector: b.selector, identity: b.azureIdentity, matched, reasons };
}

/** The plan's steps and skips that concern this pod's AzureAssignedIdentities. */
function micAnswer(input: ExplainInput, live: readonly DesiredAssignment[], p: Plan, podWide: Skip | undefined): MicAnswer {
  const ours = new Set([...live.map((d) => d.key), ...input.assigned.map((a) => `${a.namespace}/${a.name}`)]);
  const next: string[] = [];
  for (const c of p.createAssigned) if (ours.has(c.key)) next.push(`create AzureAssignedIdentity ${c.key} (${c.state})`);
  for (const u of p.updateAssigned) if (ours.has(u.after.key)) next.push(`update AzureAssignedIdentity ${u.after.key} (${u.after.state})`);
  for (const op of p.targetOps) for (const id of op.add) next.push(`attach ${id} to ${op.target.kind === 'vm' ? 'VM' : 'VMSS'} ${op.target.name}`);
  for (const s of p.statusUpdates) {
    if (ours.has(s.key)) next.push(`mark AzureAssignedIdentity ${s.key} Assigned${s.afterTarget !== undefined ? ' once ARM has the identity' : ''}`);
  }
  for (const d of p.deleteAssigned) if (ours.has(d.key)) next.push(`delete AzureAssignedIdentity ${d.key} (${d.cause === 'NotDesired' ? 'no longer desired' : d.cause})`);
  const waiting = p.skipped
    .filter((s) => (s.subject.kind === 'AzureAssignedIdentity' && ours.has(`${s.subject.namespace}/${s.subject.name}`)) || (s.subject.kind === 'Node' && s.subject.name === input.pod.nodeName))
    .map((s) => `${s.code}: ${s.reason}`);
  return {
    assignments: live.map((d) => ({ aai: d.key, binding: `${d.binding.namespace}/${d.binding.name}`, identity: `${d.identity.namespace}/${d.identity.name}` })),
    ...(podWide !== undefined ? { refusal: podWide.reason } : {}),
    next,
    waiting,
  };
}

function isPodSkip(s: Skip, pod: PodView): boolean {
  return s.subject.kind === 'Pod' && s.subject.namespace === pod.namespace && s.subject.name === pod.name;
}

function stateText(state: AzureAssignedIdentity['state']): string {
  return state === '' ? '(legacy, no state)' : state;
}

function sortByName<T extends { readonly namespace: string; readonly name: string }>(xs: readonly T[]): T[] {
  return sortBy(xs, (x) => `${x.namespace}/${x.name}`);
}

function sortBy<T>(xs: readonly T[], key: (x: T) => string): T[] {
  return [...xs].sort((x, y) => key(x).localeCompare(key(y)));
}

/** The principal ID Azure reports for a managed identity, and whether its client ID is the one spec.clientID says. */
function azureFactsOf(identity: AzureIdentity, facts: ExplainInput['azureIdentities']): { principalId?: string; clientIdMismatch?: string } {
  if (identity.type !== 0 || facts === undefined) return {};
  const known = facts.get(canonicalResourceId(identity.resourceID));
  if (known === undefined || known.error !== undefined) return {};
  const mismatch =
    known.clientId !== undefined && known.clientId.toLowerCase() !== identity.clientID.trim().toLowerCase()
      ? `spec.clientID ${identity.clientID} is not the client ID Azure has for ${identity.resourceID} (${known.clientId}): IMDS refuses a token asked by it; set spec.clientID to ${known.clientId}`
      : undefined;
  return {
    ...(known.principalId !== undefined ? { principalId: known.principalId } : {}),
    ...(mismatch !== undefined ? { clientIdMismatch: mismatch } : {}),
  };
}

/* ----------------------------------------------------------------------------------- NMI's side */

interface NmiDecision extends NmiAnswer {
  /** `namespace/name` of the AzurePodIdentityException NMI applies, if any. */
  readonly exception?: string;
}

/** What NMI does for this pod's token request now (standard mode): its own pure decision, on the same inputs. */
function nmiAnswer(input: ExplainInput, micAssigns: boolean): NmiDecision {
  const { pod } = input;
  if (pod.podIP === '' || (pod.phase !== 'Running' && pod.phase !== 'Pending')) {
    return { status: 500, summary: `NMI cannot tell this pod's requests apart: it has no pod IP or is ${pod.phase || 'not running'}` };
  }
  const label = pod.labels[POD_LABEL];
  const podBindings: PodBinding[] = input.bindings
    .filter((b) => b.selector === label)
    .map((b) => ({ binding: b, identity: input.identities.find((i) => i.namespace === b.namespace && i.name === b.azureIdentity) }));
  const request = input.request ?? {};
  const asked = describeRequest(request);
  const selection = selectIdentity(
    {
      pod, request, exceptions: input.exceptions, assigned: input.assigned, bindings: [], identities: [], podBindings, viewComplete: true,
      principalIds: principalIds(input),
    },
    { mode: 'standard', forceNamespaced: input.forceNamespaced, micNamespace: input.micNamespace ?? '', micServiceAccount: input.micServiceAccount ?? '' },
  );
  switch (selection.kind) {
    case 'identity': {
      const denial = input.namespacePolicy?.mode === 'enforce' ? namespacePolicyDenial(input.namespacePolicy.policies, pod, selection.identity) : undefined;
      if (denial !== undefined) return { status: 403, summary: `403, IdentityNotPermitted: ${denial.reason}` };
      const ready = input.assigned.filter((a) => (a.state === 'Assigned' || a.state === '') && a.nodeName === pod.nodeName);
      const names = ready.map((a) => `${a.identityRef?.namespace}/${a.identityRef?.name}`).join(', ');
      if (asked !== '') return { status: 200, summary: `200 with a token for ${selection.identity.namespace}/${selection.identity.name} (${asked})` };
      return {
        status: 200,
        summary: `200 with a token for ${ready.length <= 1 ? `${selection.identity.namespace}/${selection.identity.name}` : `the identity asked for by client_id/msi_res_id (no id: ${selection.identity.namespace}/${selection.identity.name}, of ${names})`}`,
      };
    }
    case 'node': {
      const refusal = nodeRequestRefusal(request, declaredIdentitiesOf(input.identities));
      const e = matchingException(pod, input.exceptions);
      const exception = e === undefined ? undefined : `${e.namespace}/${e.name}`;
      if (refusal !== undefined) {
        return { status: 400, summary: `400 Identity not found, at once (the node path): ${refusal.reason}; ${NODE_PATH_REMEDY}`, ...(exception ? { exception } : {}) };
      }
      if (selection.via === 'mic') return { status: 200, summary: `200 with the node's identity: ${selection.reason}` };
      return {
        status: 200,
        summary: `200 with the node's identity (from IMDS as the node${nodePathNote(input)}): exception ${exception ?? '?'} applies`,
        ...(exception ? { exception } : {}),
      };
    }
    case 'pending':
      return selection.created
        ? { status: 404, summary: 'waits while MIC attaches the identity (AzureAssignedIdentity Created), then 404 if it never becomes Assigned — check MIC logs and events' }
        : micAssigns
          ? { status: 404, summary: 'waits while MIC creates the AzureAssignedIdentity (see MIC above), then 404 (503 with --set-retry-after-header) if none is Assigned in time' }
          : { status: 404, summary: 'waits for an AzureAssignedIdentity that will not come, then 404 (503 with --set-retry-after-header): no binding gives this pod an identity on its node' };
    case 'none':
      return { status: 404, summary: `404: ${selection.reason}` };
    case 'unbound':
      return { status: 400, summary: `400 Identity not found, at once (as IMDS): ${selection.reason}` };
  }
}

/** Principal IDs Azure reports for the pod's assigned identities, keyed as NMI keys them, for an `object_id` request. */
function principalIds(input: ExplainInput): Map<string, string> {
  const out = new Map<string, string>();
  for (const a of input.assigned) {
    const identity = a.identityRef;
    if (identity === null || identity.type !== 0) continue;
    const principal = input.azureIdentities?.get(canonicalResourceId(identity.resourceID))?.principalId;
    if (principal !== undefined) out.set(principalKey(identity), principal.toLowerCase());
  }
  return out;
}

function describeRequest(request: NonNullable<ExplainInput['request']>): string {
  if (request.clientId !== undefined) return `asked by client_id ${request.clientId}`;
  if (request.resourceId !== undefined) return `asked by msi_res_id ${request.resourceId}`;
  if (request.objectId !== undefined) return `asked by object_id ${request.objectId}`;
  return '';
}

/** The node path never serves an identity an AzureIdentity declares: which of the node's identities that leaves out. */
function nodePathNote(input: ExplainInput): string {
  const declared = declaredIdentitiesOf(input.identities);
  if (input.arm.kind !== 'ok') return '; never one an AzureIdentity declares: 400 Identity not found';
  const refused = input.arm.userAssigned.filter((id) => nodeRequestRefusal({ resourceId: id }, declared) !== undefined);
  return refused.length === 0
    ? '; none of its user-assigned identities is declared by an AzureIdentity'
    : `; ${refused.length} of its ${input.arm.userAssigned.length} user-assigned identities are declared by AzureIdentities and refused: 400 Identity not found`;
}

function verdict(nmi: NmiAnswer, mic: MicAnswer, bindings: readonly BindingVerdict[], identities: readonly IdentityVerdict[], label: string | undefined): string {
  const mismatched = identities.find((i) => i.clientIdMismatch !== undefined);
  if (mismatched !== undefined) return `no token: AzureIdentity ${mismatched.namespace}/${mismatched.name}: ${mismatched.clientIdMismatch}`;
  if (nmi.status === 200) {
    const missing = identities.filter((i) => i.onNode === false && i.assignment === 'Assigned');
    return missing.length > 0
      ? `works for now, but ${missing.map((i) => i.name).join(', ')} is Assigned yet missing on the node in ARM (MIC's periodic check re-attaches it)`
      : 'works: the pod gets a token';
  }
  if (label === undefined) return `no token: the pod has no ${POD_LABEL} label`;
  if (mic.refusal !== undefined) return `no token: MIC assigns no identity to this pod: ${mic.refusal}`;
  const matched = bindings.filter((b) => b.matched);
  const refused = matched.flatMap((b) => b.reasons).find((r) => r.startsWith('IdentityNotPermitted: '));
  if (nmi.status === 403 || (identities.length === 0 && refused !== undefined)) {
    return `no token: the namespace identity policy does not permit the identity (${refused ?? nmi.summary})`;
  }
  if (matched.length === 0) return `no token: no AzureIdentityBinding has selector "${label}"${bindings.length > 0 ? ' (see the bindings below)' : ''}`;
  if (identities.length === 0) return `no token: the matching binding(s) point at a missing or invalid AzureIdentity: ${matched.flatMap((b) => b.reasons).join('; ')}`;
  if (identities.some((i) => i.assignment === 'Created')) return 'no token yet: the identity is not attached to the node yet (AzureAssignedIdentity Created)';
  if (mic.waiting.length > 0) return `no token yet: MIC is waiting: ${mic.waiting.join('; ')}`;
  return 'no token: MIC has not created an AzureAssignedIdentity for this pod (is MIC running and leading?)';
}
