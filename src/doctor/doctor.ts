// `doctor`: a cluster-wide preflight for admins. Reads the cluster the kubeconfig points at and (with a cloud
// config) Azure as the cluster principal sees it, and returns one result per check, each failing one with the exact
// command that fixes it. The checks are the known problems of reference/operations.md §2 that can be read without
// waiting for a failure: CRDs, MIC's leader, NMI per node (its rules, kubenet), and every AzureIdentity in use.

import type { TokenCredential } from '@azure/core-auth';
import { ComputeManagementClient } from '@azure/arm-compute';
import { ManagedServiceIdentityClient } from '@azure/arm-msi';
import { ApiextensionsV1Api, CoordinationV1Api, CoreV1Api, CustomObjectsApi, type KubeConfig, type V1Pod } from '@kubernetes/client-node';
import { Agent, fetch, type Dispatcher } from 'undici';
import type { AzureCloudConfig } from '../azure/cloud-config.js';
import { parseProviderId, parseUserAssignedIdentityId, type ComputeTarget } from '../azure/resource-id.js';
import { GROUP, Plurals, VERSION, normalizeAzureIdentity, normalizeBinding, type AzureIdentity } from '../crds/index.js';
import { identityMode } from '../crds/types.js';
import { parseEndpointsRecord, parseTime, LEADER_ANNOTATION } from '../kube/resourcelock.js';
import { actionAllowed, parsePermissions, type PermissionEntry } from './permissions.js';
import { realClock } from '../common/clock.js';

export type CheckStatus = 'pass' | 'fail';

export interface CheckResult {
  /** Stable key for machines and for --skip: crds, mic-leader, mic-health, nmi, nmi-rules, kubenet, identity, role, vm-role, identity-limit. */
  readonly check: string;
  readonly status: CheckStatus;
  /** One line: what was checked and what was found. */
  readonly summary: string;
  /** Commands or steps that fix a failure (empty when it passed). */
  readonly fix: readonly string[];
}

export interface DoctorReport {
  readonly ok: boolean;
  readonly checks: readonly CheckResult[];
}

export interface DoctorArm {
  readonly cloud: AzureCloudConfig;
  readonly credential: TokenCredential;
  /** ARM base URL (the cloud's, or an emulator's). */
  readonly endpoint: string;
  readonly caPem?: string;
}

export interface DoctorOptions {
  readonly arm?: DoctorArm;
  /** MIC's --leader-election-namespace / --leader-election-name (defaults: default, aad-pod-identity-mic). */
  readonly leaderElectionNamespace?: string;
  readonly leaderElectionName?: string;
  /** Label selectors of the MIC and NMI pods (default app.kubernetes.io/component=mic / =nmi). */
  readonly micSelector?: string;
  readonly nmiSelector?: string;
  /** Check keys not to run. */
  readonly skip?: ReadonlySet<string>;
  readonly now?: () => number;
  /** Per HTTP probe of MIC/NMI (default 5 s). */
  readonly probeTimeoutMs?: number;
}

/** User-assigned identities per request (and what MIC chunks to), reference/operations.md §1.7. */
export const IDENTITY_LIMIT = 150;
export const ASSIGN_ACTION = 'Microsoft.ManagedIdentity/userAssignedIdentities/assign/action';
/** What MIC does under a Federated identity (Managed Identity Contributor has it; Operator does not). */
export const FIC_WRITE_ACTION = 'Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/write';
const CRD_PLURALS = [Plurals.AzureIdentity, Plurals.AzureIdentityBinding, Plurals.AzureAssignedIdentity, Plurals.AzurePodIdentityException];

export async function runDoctor(kubeConfig: KubeConfig, opts: DoctorOptions = {}): Promise<DoctorReport> {
  const skip = opts.skip ?? new Set<string>();
  const core = kubeConfig.makeApiClient(CoreV1Api);
  const checks: CheckResult[] = [];
  const add = (r: CheckResult | CheckResult[]) => {
    for (const c of Array.isArray(r) ? r : [r]) if (!skip.has(c.check)) checks.push(c);
  };
  // A group runs unless every check it yields is skipped; a group that throws is one failed check.
  const guarded = async (keys: readonly string[], what: string, fn: () => Promise<CheckResult | CheckResult[]>) => {
    if (keys.every((k) => skip.has(k))) return;
    try {
      add(await fn());
    } catch (error) {
      add(fail(keys.find((k) => !skip.has(k)) ?? keys[0] ?? what, `${what}: ${message(error)}`, ['fix the access problem above and run doctor again']));
    }
  };

  await guarded(['crds'], 'CRDs', () => crdChecks(kubeConfig));
  await guarded(['mic-leader', 'mic-health'], 'MIC leader', () => micChecks(kubeConfig, core, opts));
  await guarded(['nmi', 'nmi-rules', 'kubenet'], 'NMI', () => nmiChecks(core, opts));
  await guarded(['identity', 'role', 'vm-role', 'identity-limit'], 'AzureIdentities', () => identityChecks(kubeConfig, core, opts));
  return { ok: checks.every((c) => c.status === 'pass'), checks };
}

// --- CRDs ----------------------------------------------------------------------------------------------------------

async function crdChecks(kubeConfig: KubeConfig): Promise<CheckResult[]> {
  const api = kubeConfig.makeApiClient(ApiextensionsV1Api);
  const results: CheckResult[] = [];
  const fixCrds = ['kubectl apply --server-side -f config/crd/   # or the chart\'s crds/ directory: Helm never upgrades CRDs'];
  for (const plural of CRD_PLURALS) {
    const name = `${plural}.${GROUP}`;
    let crd: Awaited<ReturnType<ApiextensionsV1Api['readCustomResourceDefinition']>>;
    try {
      crd = await api.readCustomResourceDefinition({ name });
    } catch (error) {
      if (statusOf(error) === 404) {
        results.push(fail('crds', `CRD ${name} is not installed`, fixCrds));
        continue;
      }
      throw error;
    }
    const version = crd.spec.versions.find((v) => v.name === VERSION);
    if (!version?.served) {
      results.push(fail('crds', `CRD ${name} does not serve ${VERSION} (versions: ${crd.spec.versions.map((v) => v.name).join(', ')})`, fixCrds));
      continue;
    }
    const shape =
      plural === Plurals.AzureAssignedIdentity
        ? version.subresources?.status
          ? ' (this project\'s: status subresource)'
          : ' (the original\'s: no status subresource; MIC writes status with the object)'
        : '';
    results.push(pass('crds', `CRD ${name} serves ${VERSION}${shape}`));
  }
  return results;
}

// --- MIC -----------------------------------------------------------------------------------------------------------

async function micChecks(kubeConfig: KubeConfig, core: CoreV1Api, opts: DoctorOptions): Promise<CheckResult[]> {
  const namespace = opts.leaderElectionNamespace ?? 'default';
  const name = opts.leaderElectionName ?? 'aad-pod-identity-mic';
  const selector = opts.micSelector ?? 'app.kubernetes.io/component=mic';
  const now = (opts.now ?? realClock.now)();
  const where = `${namespace}/${name}`;
  const logs = `kubectl logs -A -l ${selector} --tail=50   # why MIC is not leading`;

  let holder = '';
  let expiresMs: number | undefined;
  let lock = '';
  try {
    const lease = await kubeConfig.makeApiClient(CoordinationV1Api).readNamespacedLease({ namespace, name });
    holder = lease.spec?.holderIdentity ?? '';
    const renewed = parseTime(lease.spec?.renewTime);
    if (renewed !== undefined) expiresMs = renewed + (lease.spec?.leaseDurationSeconds ?? 15) * 1000;
    lock = 'Lease';
  } catch (error) {
    if (statusOf(error) !== 404) throw error;
  }
  if (lock === '') {
    try {
      const ep = await core.readNamespacedEndpoints({ namespace, name });
      const raw = ep.metadata?.annotations?.[LEADER_ANNOTATION];
      if (raw !== undefined) {
        const record = parseEndpointsRecord(raw, `Endpoints ${where}`);
        holder = record.holderIdentity;
        const renewed = parseTime(record.renewTime);
        if (renewed !== undefined) expiresMs = renewed + record.leaseDurationSeconds * 1000;
        lock = 'Endpoints';
      }
    } catch (error) {
      if (statusOf(error) !== 404) throw error;
    }
  }
  if (lock === '' || holder === '') {
    return [fail('mic-leader', `MIC has no leader: no Lease or Endpoints lock ${where} with a holder`, [
      `kubectl get pods -A -l ${selector}   # is MIC running? (its --leader-election-namespace must be ${namespace}, else pass --leader-election-namespace)`,
      logs,
    ])];
  }
  if (expiresMs !== undefined && expiresMs < now) {
    return [fail('mic-leader', `MIC's leader lock ${lock} ${where} (holder ${holder}) expired ${Math.round((now - expiresMs) / 1000)} s ago`, [logs])];
  }
  const pods = (await core.listPodForAllNamespaces({ labelSelector: selector })).items;
  const pod = pods.find((p) => p.metadata?.name === holder);
  if (!pod) {
    return [fail('mic-leader', `MIC's leader ${holder} (${lock} ${where}) is not a pod labelled ${selector}`, [`kubectl get pods -A -l ${selector}`, logs])];
  }
  const podName = `${pod.metadata?.namespace ?? ''}/${holder}`;
  if (!podReady(pod)) {
    return [fail('mic-leader', `MIC's leader pod ${podName} is not Ready`, [`kubectl describe pod -n ${pod.metadata?.namespace ?? ''} ${holder}`])];
  }
  const results = [pass('mic-leader', `MIC leader ${podName} holds ${lock} ${where} and is Ready`)];
  const health = await probe(pod, '/healthz', 8080, opts.probeTimeoutMs);
  results.push(
    health.ok && health.body.trim() === 'Active'
      ? pass('mic-health', `MIC leader ${podName} /healthz: Active`)
      : fail('mic-health', `MIC leader ${podName} /healthz: ${health.ok ? JSON.stringify(health.body.trim()) : health.error}`, [
          `kubectl logs -n ${pod.metadata?.namespace ?? ''} ${holder} --tail=50`,
        ]),
  );
  return results;
}

// --- NMI -----------------------------------------------------------------------------------------------------------

interface NmiStatusBody {
  readonly rules?: string;
  readonly synced?: boolean;
  readonly kubenet?: string;
}

async function nmiChecks(core: CoreV1Api, opts: DoctorOptions): Promise<CheckResult[]> {
  const selector = opts.nmiSelector ?? 'app.kubernetes.io/component=nmi';
  const [nodes, pods] = await Promise.all([core.listNode({}), core.listPodForAllNamespaces({ labelSelector: selector })]);
  const results: CheckResult[] = [];
  for (const node of nodes.items) {
    const nodeName = node.metadata?.name ?? '';
    const onNode = pods.items.filter((p) => p.spec?.nodeName === nodeName && !p.metadata?.deletionTimestamp);
    if (onNode.length === 0) {
      results.push(fail('nmi', `node ${nodeName}: no NMI pod (${selector}): its pods can reach the node's IMDS directly`, [
        `kubectl describe daemonset -A -l ${selector}   # tolerations / nodeSelector must admit node ${nodeName}`,
        `kubectl describe node ${nodeName}   # taints`,
      ]));
      continue;
    }
    const nmi = onNode.find(podReady) ?? onNode[0];
    const podName = `${nmi?.metadata?.namespace ?? ''}/${nmi?.metadata?.name ?? ''}`;
    if (onNode.length > 1) {
      results.push(fail('nmi', `node ${nodeName}: ${onNode.length} NMI pods (${onNode.map((p) => p.metadata?.name).join(', ')}): they fight over the node's rules`, [
        `kubectl get pods -A -l ${selector} --field-selector spec.nodeName=${nodeName}   # remove the extra installation (e.g. the AKS pod-identity add-on)`,
      ]));
      continue;
    }
    if (!nmi || !podReady(nmi)) {
      results.push(fail('nmi', `node ${nodeName}: NMI pod ${podName} is not Ready`, [`kubectl logs -n ${nmi?.metadata?.namespace ?? ''} ${nmi?.metadata?.name ?? ''} --tail=50`]));
      continue;
    }
    results.push(pass('nmi', `node ${nodeName}: NMI pod ${podName} is Ready`));
    const reply = await probe(nmi, '/status', 8085, opts.probeTimeoutMs);
    let status: NmiStatusBody | undefined;
    if (reply.ok) {
      try {
        status = JSON.parse(reply.body) as NmiStatusBody;
      } catch {
        status = undefined;
      }
    }
    const logs = `kubectl logs -n ${nmi.metadata?.namespace ?? ''} ${nmi.metadata?.name ?? ''} | grep -i iptables`;
    if (status === undefined) {
      const why = reply.ok ? 'answers no JSON' : reply.error;
      results.push(fail('nmi-rules', `node ${nodeName}: NMI rules unknown: ${podName} /status ${why}`, ['run an NMI that serves /status on its probe port (this project\'s NMI)']));
      results.push(fail('kubenet', `node ${nodeName}: kubenet unknown: ${podName} /status ${why}`, ['run an NMI that serves /status on its probe port (this project\'s NMI)']));
      continue;
    }
    if (status.rules === 'in-place') results.push(pass('nmi-rules', `node ${nodeName}: iptables chain aad-metadata in place`));
    else if (status.rules === 'not-managed') results.push(pass('nmi-rules', `node ${nodeName}: NMI runs with --manage-iptables=false: interception is the node's own`));
    else {
      results.push(fail('nmi-rules', `node ${nodeName}: iptables chain aad-metadata ${status.rules === 'missing' ? 'missing or not as NMI makes it' : 'could not be read'}: pods' metadata traffic is not intercepted`, [
        logs,
        `kubectl delete pod -n ${nmi.metadata?.namespace ?? ''} ${nmi.metadata?.name ?? ''}   # NMI rewrites the rules at start`,
      ]));
    }
    if (status.kubenet === 'kubenet-allowed') {
      results.push(fail('kubenet', `node ${nodeName}: kubenet-shaped pod network, allowed by --allow-network-plugin-kubenet: a pod with NET_RAW can spoof another pod's IP`, [
        'use Azure CNI, Calico or Cilium; or keep the flag and drop NET_RAW from every pod (Gatekeeper K8sPSPCapabilities requiredDropCapabilities: ["NET_RAW"])',
      ]));
    } else {
      results.push(pass('kubenet', `node ${nodeName}: kubenet ${status.kubenet === 'not-kubenet' ? 'not in use (CNI network found)' : 'not found (no kubenet flag or bridge CNI network seen)'}`));
    }
  }
  if (nodes.items.length === 0) results.push(fail('nmi', 'the cluster has no nodes', ['kubectl get nodes']));
  return results;
}

// --- AzureIdentities in use ----------------------------------------------------------------------------------------

async function identityChecks(kubeConfig: KubeConfig, core: CoreV1Api, opts: DoctorOptions): Promise<CheckResult[]> {
  const custom = kubeConfig.makeApiClient(CustomObjectsApi);
  const list = async (plural: string) => ((await custom.listClusterCustomObject({ group: GROUP, version: VERSION, plural })) as { items?: unknown[] }).items ?? [];
  const [rawIdentities, rawBindings] = await Promise.all([list(Plurals.AzureIdentity), list(Plurals.AzureIdentityBinding)]);
  const identities = rawIdentities.flatMap((raw) => {
    const n = normalizeAzureIdentity(raw);
    return n.value ? [n.value] : [];
  });
  const bound = new Set(rawBindings.flatMap((raw) => {
    const b = normalizeBinding(raw).value;
    return b ? [`${b.namespace}/${b.azureIdentity}`] : [];
  }));
  const inUse = identities.filter((i) => i.type === 0 && bound.has(`${i.namespace}/${i.name}`));
  const arm = opts.arm;
  if (!arm) {
    return inUse.length === 0
      ? [pass('identity', 'no user-assigned AzureIdentity is bound (nothing to check in Azure)')]
      : [fail('identity', `${inUse.length} bound AzureIdentit${inUse.length === 1 ? 'y' : 'ies'} not checked in Azure: no cloud config given`, ['run doctor with --cloudconfig <azure.json> (the file MIC reads)'])];
  }
  const assignee = assigneeOf(arm.cloud);
  const results: CheckResult[] = [];
  const tls: Dispatcher | undefined = arm.caPem ? new Agent({ connect: { ca: arm.caPem } }) : undefined;
  const permissions = permissionsReader(arm, tls);
  // The SDKs ask for `${endpoint}/.default` unless told the cloud's audience (reference/sdk-notes.md).
  const audience = arm.cloud.environment.resourceManagerAudience.replace(/\/+$/, '');
  const clientOpts = { endpoint: arm.endpoint, credentialScopes: [`${audience}/.default`], ...(arm.caPem ? { tlsOptions: { ca: arm.caPem } } : {}), retryOptions: { maxRetries: 1 } };

  // The compute the nodes run on: VM Contributor on its resource group, and its identity count.
  const targets = new Map<string, ComputeTarget>();
  for (const node of (await core.listNode({})).items) {
    try {
      const t = parseProviderId(node.spec?.providerID ?? '');
      const key = `${t.subscriptionId}/${t.resourceGroup}/${t.kind}/${t.name}`.toLowerCase();
      targets.set(key, { ...t, instanceId: undefined } as ComputeTarget);
    } catch {
      results.push(fail('vm-role', `node ${node.metadata?.name ?? ''}: providerID ${JSON.stringify(node.spec?.providerID ?? '')} is not an Azure VM or VMSS`, ['MIC can only assign identities to Azure VMs and VMSS nodes']));
    }
  }
  const checkedGroups = new Set<string>();
  for (const t of targets.values()) {
    const scope = `/subscriptions/${t.subscriptionId}/resourceGroups/${t.resourceGroup}`;
    if (checkedGroups.has(scope.toLowerCase())) continue;
    checkedGroups.add(scope.toLowerCase());
    const action = t.kind === 'vmss' ? 'Microsoft.Compute/virtualMachineScaleSets/write' : 'Microsoft.Compute/virtualMachines/write';
    results.push(await roleCheck('vm-role', permissions, scope, action, 'Virtual Machine Contributor', `node resource group ${t.resourceGroup}`, assignee));
  }

  const msi = new Map<string, ManagedServiceIdentityClient>();
  for (const identity of inUse) {
    const label = `AzureIdentity ${identity.namespace}/${identity.name}`;
    let id;
    try {
      id = parseUserAssignedIdentityId(identity.resourceID);
    } catch (error) {
      results.push(fail('identity', `${label}: spec.resourceID ${JSON.stringify(identity.resourceID)} is not a user-assigned identity ID: ${message(error)}`, [
        `kubectl edit azureidentity -n ${identity.namespace} ${identity.name}   # resourceID: /subscriptions/<sub>/resourcegroups/<rg>/providers/Microsoft.ManagedIdentity/userAssignedIdentities/<name>`,
      ]));
      continue;
    }
    let client = msi.get(id.subscriptionId);
    if (!client) {
      client = new ManagedServiceIdentityClient(arm.credential, id.subscriptionId, clientOpts);
      msi.set(id.subscriptionId, client);
    }
    let clientId = '';
    try {
      const found = await client.userAssignedIdentities.get(id.resourceGroup, id.name);
      clientId = found.clientId ?? '';
    } catch (error) {
      if (statusOf(error) === 404) {
        results.push(fail('identity', `${label}: ${identity.resourceID} does not exist in Azure`, [
          `az identity create -g ${id.resourceGroup} -n ${id.name} --subscription ${id.subscriptionId}   # then set spec.clientID to its clientId`,
          `or: kubectl edit azureidentity -n ${identity.namespace} ${identity.name}   # point spec.resourceID at an existing identity`,
        ]));
        continue;
      }
      results.push(fail('identity', `${label}: reading ${identity.resourceID} failed: ${message(error)}`, [
        `az role assignment create --assignee ${assignee} --role "Managed Identity Operator" --scope ${identity.resourceID}   # if the cluster principal may not read it`,
      ]));
      results.push(await roleCheck('role', permissions, identity.resourceID, ASSIGN_ACTION, 'Managed Identity Operator', `${label} (${id.name})`, assignee));
      continue;
    }
    if (clientId.toLowerCase() !== identity.clientID.trim().toLowerCase()) {
      results.push(fail('identity', `${label}: spec.clientID ${identity.clientID} ≠ the identity's clientId ${clientId}`, [
        `kubectl patch azureidentity -n ${identity.namespace} ${identity.name} --type merge -p '{"spec":{"clientID":"${clientId}"}}'`,
      ]));
    } else {
      results.push(pass('identity', `${label}: ${id.name} exists, clientID matches`));
    }
    results.push(
      identityMode(identity) === 'Federated'
        ? await roleCheck('role', permissions, identity.resourceID, FIC_WRITE_ACTION, 'Managed Identity Contributor', `${label} (${id.name}, Federated)`, assignee)
        : await roleCheck('role', permissions, identity.resourceID, ASSIGN_ACTION, 'Managed Identity Operator', `${label} (${id.name})`, assignee),
    );
  }

  // Per VM/VMSS: what is on it now plus what the bound identities would add.
  const compute = new Map<string, ComputeManagementClient>();
  // A Federated identity is never put on a VM/VMSS.
  const wanted = new Set(inUse.filter((i) => identityMode(i) !== 'Federated').map((i) => i.resourceID.trim().toLowerCase()));
  for (const t of targets.values()) {
    let client = compute.get(t.subscriptionId);
    if (!client) {
      client = new ComputeManagementClient(arm.credential, t.subscriptionId, clientOpts);
      compute.set(t.subscriptionId, client);
    }
    const name = `${t.kind === 'vmss' ? 'VMSS' : 'VM'} ${t.resourceGroup}/${t.name}`;
    try {
      const resource = t.kind === 'vmss' ? await client.virtualMachineScaleSets.get(t.resourceGroup, t.name) : await client.virtualMachines.get(t.resourceGroup, t.name);
      const on = Object.keys(resource.identity?.userAssignedIdentities ?? {}).map((k) => k.toLowerCase());
      const total = new Set([...on, ...wanted]).size;
      results.push(
        total <= IDENTITY_LIMIT
          ? pass('identity-limit', `${name}: ${total} user-assigned identit${total === 1 ? 'y' : 'ies'} with every bound one (limit ${IDENTITY_LIMIT})`)
          : fail('identity-limit', `${name}: ${total} user-assigned identities with every bound one, over ARM's ${IDENTITY_LIMIT}`, [
              `spread the workloads over more node pools (each VMSS holds at most ${IDENTITY_LIMIT}), or remove unused identities: az vmss identity remove -g ${t.resourceGroup} -n ${t.name} --identities <id>`,
            ]),
      );
    } catch (error) {
      results.push(fail('identity-limit', `${name}: reading it failed: ${message(error)}`, [
        `az role assignment create --assignee ${assignee} --role "Virtual Machine Contributor" --scope /subscriptions/${t.subscriptionId}/resourceGroups/${t.resourceGroup}`,
      ]));
    }
  }
  if (inUse.length === 0) results.push(pass('identity', 'no user-assigned AzureIdentity is bound'));
  return results;
}

type PermissionsReader = (scope: string) => Promise<PermissionEntry[]>;

/** GET {scope}/providers/Microsoft.Authorization/permissions: what the caller (the cluster principal) may do there. */
function permissionsReader(arm: DoctorArm, dispatcher: Dispatcher | undefined): PermissionsReader {
  const audience = arm.cloud.environment.resourceManagerAudience.replace(/\/+$/, '');
  return async (scope) => {
    const token = await arm.credential.getToken(`${audience}/.default`);
    if (!token) throw new Error('no ARM token for the cluster principal');
    let url: string | undefined = `${arm.endpoint.replace(/\/+$/, '')}${scope}/providers/Microsoft.Authorization/permissions?api-version=2022-04-01`;
    const entries: PermissionEntry[] = [];
    for (let page = 0; url !== undefined && page < 50; page++) {
      const res = await fetch(url, { headers: { authorization: `Bearer ${token.token}` }, ...(dispatcher ? { dispatcher } : {}) });
      const text = await res.text();
      if (res.status !== 200) throw new Error(`permissions at ${scope}: HTTP ${res.status} ${text.slice(0, 300)}`);
      const parsed = parsePermissions(JSON.parse(text) as unknown);
      entries.push(...parsed.entries);
      url = parsed.nextLink;
    }
    return entries;
  };
}

async function roleCheck(
  check: string,
  permissions: PermissionsReader,
  scope: string,
  action: string,
  role: string,
  what: string,
  assignee: string,
): Promise<CheckResult> {
  const fix = [`az role assignment create --assignee ${assignee} --role "${role}" --scope ${scope}`];
  let entries: PermissionEntry[];
  try {
    entries = await permissions(scope);
  } catch (error) {
    return fail(check, `${what}: cannot read the cluster principal's permissions: ${message(error)}`, fix);
  }
  return actionAllowed(entries, action)
    ? pass(check, `${what}: the cluster principal may ${action}`)
    : fail(check, `${what}: the cluster principal may not ${action} (granted in the last 10 minutes? wait and retry)`, fix);
}

/** Who `az role assignment create --assignee` should name: the principal MIC authenticates as. */
export function assigneeOf(cloud: AzureCloudConfig): string {
  if (cloud.auth.kind === 'servicePrincipal') return cloud.auth.clientId;
  return cloud.auth.userAssignedIdentityId || '<principalId of the nodes\' system-assigned identity>';
}

// --- helpers -------------------------------------------------------------------------------------------------------

function pass(check: string, summary: string): CheckResult {
  return { check, status: 'pass', summary, fix: [] };
}

function fail(check: string, summary: string, fix: readonly string[]): CheckResult {
  return { check, status: 'fail', summary, fix };
}

function podReady(pod: V1Pod): boolean {
  return pod.status?.phase === 'Running' && (pod.status.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True');
}

/** GET a path on the pod's probe port (its readiness probe's port, else the default). */
async function probe(pod: V1Pod, path: string, defaultPort: number, timeoutMs = 5000): Promise<{ ok: true; body: string } | { ok: false; error: string }> {
  const container = pod.spec?.containers[0];
  const declared = container?.readinessProbe?.httpGet?.port ?? container?.livenessProbe?.httpGet?.port;
  const port = typeof declared === 'number' ? declared : Number(declared) || defaultPort;
  const ip = pod.status?.podIP ?? pod.status?.hostIP ?? '';
  if (ip === '') return { ok: false, error: 'the pod has no IP' };
  const url = `http://${ip.includes(':') ? `[${ip}]` : ip}:${port}${path}`;
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
    const body = await res.text();
    return res.status === 200 ? { ok: true, body } : { ok: false, error: `HTTP ${res.status} from ${url}` };
  } catch (error) {
    return { ok: false, error: `${url} unreachable: ${message(error)}` };
  }
}

function statusOf(error: unknown): number | undefined {
  const e = error as { code?: unknown; statusCode?: unknown } | null;
  if (typeof e?.code === 'number') return e.code;
  if (typeof e?.statusCode === 'number') return e.statusCode;
  return undefined;
}

function message(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const cause = error.cause instanceof Error ? `: ${error.cause.message}` : '';
  return `${error.message.split('\n')[0] ?? ''}${cause}`.slice(0, 600);
}

export type { AzureIdentity };
