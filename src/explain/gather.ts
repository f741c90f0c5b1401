// explain's inputs, read once from the cluster the kubeconfig points at (and ARM, when a cloud config is given),
// normalised with the same code MIC and NMI use, so legacy capitalised manifests read the same way here.

import type { TokenCredential } from '@azure/core-auth';
import { ComputeManagementClient } from '@azure/arm-compute';
import { ManagedServiceIdentityClient } from '@azure/arm-msi';
import { CoreV1Api, CustomObjectsApi, type KubeConfig } from '@kubernetes/client-node';
import { canonicalResourceId, parseProviderId, parseUserAssignedIdentityId } from '../azure/resource-id.js';
import { parseNamespacePolicy, type NamespacePolicy } from '../crds/namespace-policy.js';
import {
  GROUP,
  VERSION,
  Plurals,
  normalizeAssignedIdentity,
  normalizeAzureIdentity,
  normalizeBinding,
  normalizeException,
  nodeViewFrom,
  podViewFrom,
  type CredentialPolicy,
  type Normalized,
} from '../crds/index.js';
import type { AzureIdentity } from '../crds/types.js';
import { resolveNode } from '../mic/adapters/targets.js';
import { federationKey, type FederationRefusal, type FederationState, type SnapshotNode } from '../mic/core/snapshot.js';
import { FEDERATED_AUDIENCE, MAX_FEDERATED_CREDENTIALS, serviceAccountSubject } from '../crds/federation.js';
import { identityMode } from '../crds/types.js';
import { discoverServiceAccountIssuer } from '../kube/issuer.js';
import { msiFederatedCredentialPort } from '../mic/federation/credentials.js';
import type { ArmView, AzureIdentityFacts, ExplainInput } from './analyze.js';

export interface ArmAccess {
  readonly credential: TokenCredential;
  /** ARM base URL, e.g. https://management.azure.com or the emulator's. */
  readonly endpoint: string;
  /** Extra CA for the endpoint (the emulator's); real clouds need none. */
  readonly caPem?: string;
}

export class PodNotFoundError extends Error {
  override readonly name = 'PodNotFoundError';
}

export async function gatherExplainInput(
  kubeConfig: KubeConfig,
  namespace: string,
  podName: string,
  opts: {
    forceNamespaced: boolean;
    namespaceIdentityPolicy?: 'off' | 'enforce';
    arm?: ArmAccess;
    credentials?: CredentialPolicy;
    /** MIC's --enable-federated-identities and --service-account-issuer ('' : discovered, as MIC does). */
    federation?: { enabled: boolean; issuer: string };
  },
): Promise<ExplainInput> {
  const core = kubeConfig.makeApiClient(CoreV1Api);
  const custom = kubeConfig.makeApiClient(CustomObjectsApi);
  let rawPod: unknown;
  try {
    rawPod = await core.readNamespacedPod({ namespace, name: podName });
  } catch (error) {
    if ((error as { code?: number }).code === 404) throw new PodNotFoundError(`pod ${namespace}/${podName} not found`, { cause: error });
    throw new Error(`reading pod ${namespace}/${podName}`, { cause: error });
  }
  const pod = podViewFrom(JSON.parse(JSON.stringify(rawPod)) as unknown);
  if (!pod) throw new Error(`pod ${namespace}/${podName} could not be read`);

  const list = async (plural: string): Promise<unknown[]> => {
    const res = (await custom.listClusterCustomObject({ group: GROUP, version: VERSION, plural })) as { items?: unknown[] };
    return res.items ?? [];
  };
  const [rawBindings, rawIdentities, rawAssigned, rawExceptions] = await Promise.all([
    list(Plurals.AzureIdentityBinding),
    list(Plurals.AzureIdentity),
    list(Plurals.AzureAssignedIdentity),
    list(Plurals.AzurePodIdentityException),
  ]);
  const ignored: Array<{ kind: string; name: string; problems: readonly string[] }> = [];
  const keep = <T>(kind: string, raws: unknown[], normalize: (raw: unknown) => Normalized<T>): T[] =>
    raws.flatMap((raw) => {
      const n = normalize(raw);
      if (n.value === null) {
        const meta = (raw as { metadata?: { name?: string; namespace?: string } }).metadata;
        ignored.push({ kind, name: `${meta?.namespace ?? ''}/${meta?.name ?? ''}`, problems: n.problems });
        return [];
      }
      return [n.value];
    });

  const namespacePolicy =
    opts.namespaceIdentityPolicy === 'enforce' ? { mode: 'enforce' as const, policies: await namespacePolicies(core) } : undefined;
  const assigned = keep('AzureAssignedIdentity', rawAssigned, normalizeAssignedIdentity).filter((a) => a.pod === pod.name && a.podNamespace === pod.namespace);
  const bindings = keep('AzureIdentityBinding', rawBindings, normalizeBinding);
  const identities = keep('AzureIdentity', rawIdentities, normalizeAzureIdentity);
  const node = await podNode(core, pod.nodeName);
  const arm = await armView(pod.nodeName, node, opts.arm);
  // The managed identities this pod's bindings name: what Azure says about them (principal ID, client ID).
  const label = pod.labels['aadpodidbinding'];
  const named = identities.filter(
    (i) => i.type === 0 && bindings.some((b) => b.selector === label && b.namespace === i.namespace && b.azureIdentity === i.name),
  );
  const azureIdentities = opts.arm === undefined ? undefined : await azureIdentityFacts(named, arm, opts.arm);
  const federation = opts.federation?.enabled === true ? await federationOf(kubeConfig, opts.federation.issuer, pod, named, opts.arm) : undefined;
  return {
    pod,
    bindings,
    identities,
    assigned,
    exceptions: keep('AzurePodIdentityException', rawExceptions, normalizeException),
    forceNamespaced: opts.forceNamespaced,
    ...(opts.credentials ? { credentials: opts.credentials } : {}),
    ...(namespacePolicy ? { namespacePolicy } : {}),
    arm: arm.view,
    ...(node !== undefined ? { node } : {}),
    ...(azureIdentities !== undefined ? { azureIdentities } : {}),
    ...(federation !== undefined ? { federation } : {}),
    ignored,
  };
}

/**
 * MIC's federation settings and, with ARM access, what Azure holds for the pod's Federated identities: the same
 * FederationState MIC's writer reports (a credential for the pod's service account, or Azure's limit reached without one).
 */
async function federationOf(
  kubeConfig: KubeConfig,
  flagIssuer: string,
  pod: { namespace: string; serviceAccountName?: string },
  identities: readonly AzureIdentity[],
  access: ArmAccess | undefined,
): Promise<NonNullable<ExplainInput['federation']>> {
  let issuer = flagIssuer;
  if (issuer === '') issuer = await discoverServiceAccountIssuer(kubeConfig).catch(() => '');
  if (issuer === '' || access === undefined) return { enabled: true, issuer };
  const port = msiFederatedCredentialPort({ credential: access.credential, endpoint: access.endpoint, ...(access.caPem ? { caPem: access.caPem } : {}) });
  const subject = serviceAccountSubject(pod.namespace, pod.serviceAccountName || 'default');
  const ready = new Map<string, ReadonlySet<string>>();
  const refused = new Map<string, ReadonlyMap<string, FederationRefusal>>();
  for (const identity of identities.filter((i) => identityMode(i) === 'Federated')) {
    const key = federationKey(identity.resourceID);
    try {
      const id = parseUserAssignedIdentityId(identity.resourceID);
      const records = await port.list({ subscriptionID: id.subscriptionId, resourceGroup: id.resourceGroup, name: id.name });
      const subjects = records.filter((r) => r.issuer === issuer && r.audiences.includes(FEDERATED_AUDIENCE)).map((r) => r.subject);
      ready.set(key, new Set(subjects));
      if (!subjects.includes(subject) && records.length >= MAX_FEDERATED_CREDENTIALS) {
        refused.set(key, new Map([[subject, {
          code: 'FederatedCredentialLimit',
          reason: `identity ${id.name} already has ${records.length} federated identity credentials (Azure's limit is ${MAX_FEDERATED_CREDENTIALS}); none for ${subject}`,
        }]]));
      }
    } catch {
      // Unreadable: nothing known, so MIC's core says it waits for the credential.
    }
  }
  return { enabled: true, issuer, credentials: { ready, refused } };
}

/** From the node's identity map when it has the identity, else from MSI (one GET per identity). */
async function azureIdentityFacts(
  identities: readonly AzureIdentity[],
  arm: { readonly facts: ReadonlyMap<string, AzureIdentityFacts> },
  access: ArmAccess,
): Promise<Map<string, AzureIdentityFacts>> {
  const out = new Map<string, AzureIdentityFacts>();
  for (const identity of identities) {
    const key = canonicalResourceId(identity.resourceID);
    const onNode = arm.facts.get(key);
    if (onNode !== undefined) {
      out.set(key, onNode);
      continue;
    }
    try {
      const id = parseUserAssignedIdentityId(identity.resourceID);
      const msi = new ManagedServiceIdentityClient(access.credential, id.subscriptionId, {
        endpoint: access.endpoint,
        credentialScopes: ['https://management.azure.com/.default'],
        retryOptions: { maxRetries: 1 },
        ...(access.caPem ? { tlsOptions: { ca: access.caPem } } : {}),
      });
      const found = await msi.userAssignedIdentities.get(id.resourceGroup, id.name);
      out.set(key, {
        ...(found.clientId !== undefined ? { clientId: found.clientId } : {}),
        ...(found.principalId !== undefined ? { principalId: found.principalId } : {}),
      });
    } catch (error) {
      out.set(key, { error: error instanceof Error ? error.message.split('\n')[0] ?? 'lookup failed' : String(error) });
    }
  }
  return out;
}

/** Every Namespace's permitted-identities policy, as MIC and NMI read them. */
async function namespacePolicies(core: CoreV1Api): Promise<Map<string, NamespacePolicy | undefined>> {
  const list = await core.listNamespace({});
  return new Map(list.items.map((ns) => [ns.metadata?.name ?? '', parseNamespacePolicy(ns.metadata?.annotations ?? {})]));
}

/**
 * The pod's node as MIC resolves it (MIC's own resolveNode); null when the cluster has no such node, undefined when
 * the pod is unscheduled or the node could not be read (then MIC's core is told nothing either way).
 */
async function podNode(core: CoreV1Api, nodeName: string): Promise<SnapshotNode | null | undefined> {
  if (nodeName === '') return undefined;
  try {
    const view = nodeViewFrom(JSON.parse(JSON.stringify(await core.readNode({ name: nodeName }))) as unknown);
    return view === null ? undefined : resolveNode(view).node;
  } catch (error) {
    return (error as { code?: number }).code === 404 ? null : undefined;
  }
}

async function armView(
  nodeName: string,
  node: SnapshotNode | null | undefined,
  arm: ArmAccess | undefined,
): Promise<{ view: ArmView; facts: ReadonlyMap<string, AzureIdentityFacts> }> {
  const none = new Map<string, AzureIdentityFacts>();
  if (!arm) return { view: { kind: 'unavailable', reason: 'no cloud config given (--cloudconfig or --sandbox)' }, facts: none };
  if (nodeName === '') return { view: { kind: 'unavailable', reason: 'the pod is not scheduled to a node' }, facts: none };
  if (node === undefined) return { view: { kind: 'unavailable', reason: `node ${nodeName} could not be read` }, facts: none };
  if (node === null) return { view: { kind: 'unavailable', reason: `node ${nodeName} does not exist` }, facts: none };
  try {
    const target = parseProviderId(node.providerID);
    const client = new ComputeManagementClient(arm.credential, target.subscriptionId, {
      endpoint: arm.endpoint,
      ...(arm.caPem ? { tlsOptions: { ca: arm.caPem } } : {}),
      retryOptions: { maxRetries: 1 },
    });
    const resource =
      target.kind === 'vm'
        ? await client.virtualMachines.get(target.resourceGroup, target.name)
        : await client.virtualMachineScaleSets.get(target.resourceGroup, target.name);
    const type = resource.identity?.type ?? 'None';
    const map = resource.identity?.userAssignedIdentities ?? {};
    const facts = new Map<string, AzureIdentityFacts>();
    for (const [id, value] of Object.entries(map)) {
      facts.set(canonicalResourceId(id), {
        ...(value?.clientId ? { clientId: value.clientId } : {}),
        ...(value?.principalId ? { principalId: value.principalId } : {}),
      });
    }
    return {
      view: {
        kind: 'ok',
        target: `${target.kind === 'vm' ? 'VM' : 'VMSS'} ${target.resourceGroup}/${target.name}`,
        userAssigned: Object.keys(map),
        systemAssigned: /SystemAssigned/i.test(type),
      },
      facts,
    };
  } catch (error) {
    return { view: { kind: 'unavailable', reason: `ARM lookup failed: ${error instanceof Error ? error.message.split('\n')[0] : String(error)}` }, facts: none };
  }
}
