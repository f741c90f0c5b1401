// explain's reasoning, as a pure function: from what the cluster (and ARM) say about one pod, which bindings matched
// and why the others did not, the pod's AzureAssignedIdentities, whether each identity is on the node's VM/VMSS,
// whether an exception applies, and what NMI would answer now. No I/O here: gather.ts collects, render.ts prints.

import {
  credentialRefusals,
  POD_LABEL,
  validateAzureIdentity,
  type CredentialPolicy,
  type AzureAssignedIdentity,
  type AzureIdentity,
  type AzureIdentityBinding,
  type AzurePodIdentityException,
  type PodView,
} from '../crds/index.js';
import { canonicalResourceId } from '../azure/resource-id.js';
import { identityRefusal, type NamespacePolicies } from '../crds/namespace-policy.js';
import { namespacePolicyDenial } from '../nmi/core/namespace-policy.js';
import { matchingException, selectIdentity } from '../nmi/core/select.js';

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
  /** NMI's `--MICNamespace` (default empty: no pod is MIC by who it runs as). */
  readonly micNamespace?: string;
  /** NMI's `--mic-service-account`. */
  readonly micServiceAccount?: string;
  /** Identities on the node's VM/VMSS from ARM, or why ARM was not asked. */
  readonly arm: ArmView;
  /** Client and principal IDs Azure has for user-assigned identities, by canonical resource ID (when ARM was asked). */
  readonly azureIdentities?: ReadonlyMap<string, AzureIdentityFacts>;
  /**
   * The clientPassword-namespace and adEndpoint rules MIC and NMI apply (their `--allow-cross-namespace-secrets`,
   * `--allowed-ad-endpoints`, the known clouds' authorities); without it, only the defaults' cross-namespace rule.
   */
  readonly credentials?: CredentialPolicy;
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
  readonly nmi: NmiAnswer;
  readonly ignored: ExplainInput['ignored'];
  /** One line: does the pod get a token, and if not, the first thing to fix. */
  readonly verdict: string;
}

const TYPE_NAMES: Readonly<Record<number, string>> = { 0: 'user-assigned managed identity', 1: 'service principal (secret)', 2: 'service principal (certificate)' };

export function explain(input: ExplainInput): ExplainReport {
  const { pod } = input;
  const label = pod.labels[POD_LABEL];
  const identityByKey = new Map(input.identities.map((i) => [`${i.namespace}/${i.name}`, i]));
  // The exception rule NMI applies (any one label pair, value case-insensitive), from NMI's own pure core.
  const exception = matchingException(pod, input.exceptions);

  const bindings: BindingVerdict[] = [];
  const matchedIdentities: AzureIdentity[] = [];
  for (const b of [...input.bindings].sort((x, y) => `${x.namespace}/${x.name}`.localeCompare(`${y.namespace}/${y.name}`))) {
    const reasons: string[] = [];
    const identity = identityByKey.get(`${b.namespace}/${b.azureIdentity}`);
    if (label === undefined) reasons.push(`the pod has no ${POD_LABEL} label`);
    else if (b.selector !== label) reasons.push(`selector "${b.selector}" ≠ the pod's ${POD_LABEL} "${label}"`);
    const namespaced = input.forceNamespaced || identity?.namespaced === true;
    if (namespaced && b.namespace !== pod.namespace) {
      reasons.push(`namespaced matching (${input.forceNamespaced ? '--forceNamespaced' : 'identity annotation'}): binding is in ${b.namespace}, pod in ${pod.namespace}`);
    }
    const selectorMatched = reasons.length === 0;
    if (!identity) reasons.push(`AzureIdentity ${b.namespace}/${b.azureIdentity} does not exist`);
    else {
      const problems = identityProblems(identity);
      const refusals = refusalsOf(identity, input.credentials);
      const refusal =
        enforced(input) && problems.length === 0 && refusals.length === 0
          ? identityRefusal(input.namespacePolicy.policies, identity, pod.namespace)
          : undefined;
      if (problems.length > 0) reasons.push(`AzureIdentity ${b.namespace}/${b.azureIdentity} is invalid: ${problems.join('; ')}`);
      else if (refusals.length > 0) {
        reasons.push(`AzureIdentity ${b.namespace}/${b.azureIdentity} is refused (MIC skips it, NMI denies it): ${refusals.join('; ')}`);
      } else if (refusal !== undefined) reasons.push(`IdentityNotPermitted: ${refusal.reason}`);
      else if (selectorMatched && !matchedIdentities.includes(identity)) matchedIdentities.push(identity);
    }
    bindings.push({ namespace: b.namespace, name: b.name, selector: b.selector, identity: b.azureIdentity, matched: selectorMatched, reasons });
  }

  const assigned = input.assigned.map((a) => ({
    name: a.name,
    identity: a.identityRef ? `${a.identityRef.namespace}/${a.identityRef.name}` : '?',
    state: a.state === '' ? '(legacy, no state)' : a.state,
    node: a.nodeName,
    clientID: a.identityRef?.clientID ?? '',
  }));
  const armIds = input.arm.kind === 'ok' ? new Set(input.arm.userAssigned.map((id) => id.toLowerCase())) : undefined;
  const identities: IdentityVerdict[] = matchedIdentities.map((i) => {
    const aai = input.assigned.find((a) => a.identityRef?.name === i.name && a.identityRef.namespace === i.namespace);
    return {
      namespace: i.namespace,
      name: i.name,
      type: i.type === null ? `invalid (${i.invalidType})` : (TYPE_NAMES[i.type] ?? String(i.type)),
      clientID: i.clientID,
      resourceID: i.resourceID,
      problems: identityProblems(i),
      assignment: aai ? (aai.state === '' ? '(legacy, no state)' : aai.state) : 'none',
      onNode: i.type === 0 && armIds ? armIds.has(i.resourceID.toLowerCase()) : undefined,
      ...azureFactsOf(i, input.azureIdentities),
    };
  });

  const nmi = nmiAnswer(input, exception);
  return {
    pod: { namespace: pod.namespace, name: pod.name, node: pod.nodeName, podIP: pod.podIP, phase: pod.phase, label },
    exception: exception ? `${exception.namespace}/${exception.name}` : undefined,
    bindings,
    identities,
    assigned: assigned.map(({ clientID: _c, ...rest }) => rest),
    arm: input.arm,
    nmi,
    ignored: input.ignored,
    verdict: verdict(nmi, bindings, identities, label),
  };
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

function enforced(input: ExplainInput): input is ExplainInput & { namespacePolicy: NonNullable<ExplainInput['namespacePolicy']> } {
  return input.namespacePolicy?.mode === 'enforce';
}

function identityProblems(identity: AzureIdentity): string[] {
  return validateAzureIdentity(identity);
}

const DEFAULT_CREDENTIALS: CredentialPolicy = { allowCrossNamespaceSecrets: false, allowedAuthorities: new Set() };

/** Why MIC and NMI refuse this identity's Secret or authority (the defaults' Secret rule when no policy is given). */
function refusalsOf(identity: AzureIdentity, credentials: CredentialPolicy | undefined): string[] {
  const refusals = credentialRefusals(identity, credentials ?? DEFAULT_CREDENTIALS);
  // Without the admin's settings an adEndpoint cannot be judged: say nothing rather than guess.
  return refusals.filter((r) => credentials !== undefined || r.code !== 'AdEndpointNotAllowed').map((r) => r.reason);
}

/** What NMI does for this pod now (standard mode): its own pure decision, on the same inputs. */
function nmiAnswer(input: ExplainInput, exception: AzurePodIdentityException | undefined): NmiAnswer {
  const { pod } = input;
  if (pod.podIP === '' || (pod.phase !== 'Running' && pod.phase !== 'Pending')) {
    return { status: 500, summary: `NMI cannot tell this pod's requests apart: it has no pod IP or is ${pod.phase || 'not running'}` };
  }
  if (exception) return { status: 200, summary: `200 with the node's identity (from IMDS as the node; never one an AzureIdentity declares: 403): exception ${exception.namespace}/${exception.name} applies` };
  const selection = selectIdentity(
    { pod, request: {}, exceptions: [], assigned: input.assigned, bindings: [], identities: [] },
    { mode: 'standard', forceNamespaced: input.forceNamespaced, micNamespace: input.micNamespace ?? '', micServiceAccount: input.micServiceAccount ?? '' },
  );
  switch (selection.kind) {
    case 'identity': {
      const denial = enforced(input) ? namespacePolicyDenial(input.namespacePolicy.policies, pod, selection.identity) : undefined;
      if (denial !== undefined) return { status: 403, summary: `403, IdentityNotPermitted: ${denial.reason}` };
      const ready = input.assigned.filter((a) => (a.state === 'Assigned' || a.state === '') && a.nodeName === pod.nodeName);
      const names = ready.map((a) => `${a.identityRef?.namespace}/${a.identityRef?.name}`).join(', ');
      return {
        status: 200,
        summary: `200 with a token for ${ready.length <= 1 ? `${selection.identity.namespace}/${selection.identity.name}` : `the identity asked for by client_id/msi_res_id (no id: ${selection.identity.namespace}/${selection.identity.name}, of ${names})`}`,
      };
    }
    case 'node':
      return { status: 200, summary: `200 with the node's identity: ${selection.reason}` };
    case 'pending':
      return selection.created
        ? { status: 404, summary: 'waits while MIC attaches the identity (AzureAssignedIdentity Created), then 404 if it never becomes Assigned — check MIC logs and events' }
        : { status: 404, summary: 'waits for an AzureAssignedIdentity that will not come, then 404 (503 with --set-retry-after-header): no binding gives this pod an identity on its node' };
    case 'none':
      return { status: 404, summary: `404: ${selection.reason}` };
    case 'unbound':
      return { status: 400, summary: `400 Identity not found, at once (as IMDS): ${selection.reason}` };
  }
}

function verdict(nmi: NmiAnswer, bindings: readonly BindingVerdict[], identities: readonly IdentityVerdict[], label: string | undefined): string {
  const mismatched = identities.find((i) => i.clientIdMismatch !== undefined);
  if (mismatched !== undefined) return `no token: AzureIdentity ${mismatched.namespace}/${mismatched.name}: ${mismatched.clientIdMismatch}`;
  if (nmi.status === 200) {
    const missing = identities.filter((i) => i.onNode === false && i.assignment === 'Assigned');
    return missing.length > 0
      ? `works for now, but ${missing.map((i) => i.name).join(', ')} is Assigned yet missing on the node in ARM (MIC's periodic check re-attaches it)`
      : 'works: the pod gets a token';
  }
  if (label === undefined) return `no token: the pod has no ${POD_LABEL} label`;
  const matched = bindings.filter((b) => b.matched);
  const refused = matched.flatMap((b) => b.reasons).find((r) => r.startsWith('IdentityNotPermitted: '));
  if (nmi.status === 403 || (identities.length === 0 && refused !== undefined)) {
    return `no token: the namespace identity policy does not permit the identity (${refused ?? nmi.summary})`;
  }
  if (matched.length === 0) return `no token: no AzureIdentityBinding has selector "${label}"${bindings.length > 0 ? ' (see the bindings below)' : ''}`;
  if (identities.length === 0) return `no token: the matching binding(s) point at a missing or invalid AzureIdentity: ${matched.flatMap((b) => b.reasons).join('; ')}`;
  if (identities.some((i) => i.assignment === 'Created')) return 'no token yet: the identity is not attached to the node yet (AzureAssignedIdentity Created)';
  return 'no token: MIC has not created an AzureAssignedIdentity for this pod (is MIC running and leading?)';
}
