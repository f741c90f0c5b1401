// explain's inputs, read once from the cluster the kubeconfig points at (and ARM, when a cloud config is given),
// normalised with the same code MIC and NMI use, so legacy capitalised manifests read the same way here.

import type { TokenCredential } from '@azure/core-auth';
import { ComputeManagementClient } from '@azure/arm-compute';
import { CoreV1Api, CustomObjectsApi, type KubeConfig } from '@kubernetes/client-node';
import { parseProviderId } from '../azure/resource-id.js';
import { parseNamespacePolicy, type NamespacePolicy } from '../crds/namespace-policy.js';
import {
  GROUP,
  VERSION,
  Plurals,
  normalizeAssignedIdentity,
  normalizeAzureIdentity,
  normalizeBinding,
  normalizeException,
  podViewFrom,
  type CredentialPolicy,
  type Normalized,
} from '../crds/index.js';
import type { ArmView, ExplainInput } from './analyze.js';

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
  opts: { forceNamespaced: boolean; namespaceIdentityPolicy?: 'off' | 'enforce'; arm?: ArmAccess; credentials?: CredentialPolicy },
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
  return {
    pod,
    bindings: keep('AzureIdentityBinding', rawBindings, normalizeBinding),
    identities: keep('AzureIdentity', rawIdentities, normalizeAzureIdentity),
    assigned,
    exceptions: keep('AzurePodIdentityException', rawExceptions, normalizeException),
    forceNamespaced: opts.forceNamespaced,
    ...(opts.credentials ? { credentials: opts.credentials } : {}),
    ...(namespacePolicy ? { namespacePolicy } : {}),
    arm: await armView(core, pod.nodeName, opts.arm),
    ignored,
  };
}

/** Every Namespace's permitted-identities policy, as MIC and NMI read them. */
async function namespacePolicies(core: CoreV1Api): Promise<Map<string, NamespacePolicy | undefined>> {
  const list = await core.listNamespace({});
  return new Map(list.items.map((ns) => [ns.metadata?.name ?? '', parseNamespacePolicy(ns.metadata?.annotations ?? {})]));
}

async function armView(core: CoreV1Api, nodeName: string, arm: ArmAccess | undefined): Promise<ArmView> {
  if (!arm) return { kind: 'unavailable', reason: 'no cloud config given (--cloudconfig or --sandbox)' };
  if (nodeName === '') return { kind: 'unavailable', reason: 'the pod is not scheduled to a node' };
  try {
    const node = await core.readNode({ name: nodeName });
    const target = parseProviderId(node.spec?.providerID ?? '');
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
    return {
      kind: 'ok',
      target: `${target.kind === 'vm' ? 'VM' : 'VMSS'} ${target.resourceGroup}/${target.name}`,
      userAssigned: Object.keys(resource.identity?.userAssignedIdentities ?? {}),
      systemAssigned: /SystemAssigned/i.test(type),
    };
  } catch (error) {
    return { kind: 'unavailable', reason: `ARM lookup failed: ${error instanceof Error ? error.message.split('\n')[0] : String(error)}` };
  }
}
