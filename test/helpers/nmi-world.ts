/**
 * Test helper: a small world for NMI. The Kubernetes API emulator (with the project's CRDs), the Azure emulator with
 * one node (a VM or a VMSS instance) and its IMDS listener, and NMI started in-process on 127.0.0.1:0 against both
 * (`--imds-endpoint` at that IMDS, no iptables, short waits). Pods are created through the API and given a loopback
 * pod IP (127.0.1.x) and phase Running through /status, as a kubelet would; AzureAssignedIdentities are written the
 * way MIC writes them (spec on create, `status.status` through /status). MIC itself is not needed.
 *
 * Callers reach NMI from their pod IP with `call()`/`agentFor()`: an undici Agent whose sockets bind `localAddress`.
 */
import { randomUUID } from 'node:crypto';
import * as k8s from '@kubernetes/client-node';
import pino, { type Logger } from 'pino';
import { Agent } from 'undici';
import { assignedIdentityName, GROUP, Plurals, VERSION } from '../../src/crds/names.js';
import type { AssignedIdentityState } from '../../src/crds/types.js';
import { parseNmiConfig, type NmiConfig } from '../../src/nmi/config.js';
import { startNmi, type NmiHandle } from '../../src/nmi/nmi.js';
import type { ImdsListener, UserAssignedIdentity } from '../../src/sandbox/cloud/index.js';
import { startTestApiServer, CRD_DIR, type TestApiServer } from './apiserver.js';
import { startTestAzure, type TestAzure } from './azure.js';

export const NODE = 'node-0';
export const VAULT = 'https://vault.azure.net';
export const TOKEN_PATH = '/metadata/identity/oauth2/token';

export interface NmiWorldOptions {
  /** The node is a plain VM (default) or instance 0 of a scale set. */
  readonly compute?: 'vm' | 'vmss';
  /** The node VM/VMSS has a system-assigned identity (what excepted pods get without a client id). */
  readonly systemAssigned?: boolean;
  /** Start NMI in this process (default true); false leaves `nmi` undefined (bench starts it in a child). */
  readonly startNmi?: boolean;
  /** Overrides of NMI's flags (mode, waits, blocking, cache), and where its audit records go. */
  readonly nmi?: Partial<NmiConfig> & { readonly auditLogger?: Logger };
  readonly logger?: Logger;
}

export interface WorldIdentity {
  /** The AzureIdentity as the API server returned it. */
  readonly cr: Record<string, unknown>;
  readonly name: string;
  readonly namespace: string;
  readonly clientId: string;
  /** The identity's object id: the `oid` of its tokens. */
  readonly principalId: string;
  readonly resourceId: string;
  readonly uami?: UserAssignedIdentity;
}

export interface WorldPod {
  readonly name: string;
  readonly namespace: string;
  readonly uid: string;
  readonly ip: string;
}

export interface Reply {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: string;
}

export interface NmiWorld {
  readonly api: TestApiServer;
  readonly azure: TestAzure;
  readonly imds: ImdsListener;
  /** Undefined when started with `startNmi: false`. */
  readonly nmi: NmiHandle | undefined;
  readonly nmiUrl: string;
  readonly node: string;
  readonly kc: k8s.KubeConfig;
  readonly core: k8s.CoreV1Api;
  readonly custom: k8s.CustomObjectsApi;
  /**
   * Creates a user-assigned identity in Azure, attaches it to the node, and creates its AzureIdentity (waiting until
   * NMI sees it); `declare: false` leaves it an identity of the node only, which no AzureIdentity names.
   */
  managedIdentity(name: string, opts?: { namespace?: string; attach?: boolean; declare?: boolean }): Promise<WorldIdentity>;
  /** A service principal (type 1) registered in the emulator's AAD, its secret in a Secret, and its AzureIdentity. */
  servicePrincipalIdentity(name: string, opts?: { namespace?: string }): Promise<WorldIdentity>;
  binding(name: string, identity: WorldIdentity, selector: string): Promise<Record<string, unknown>>;
  exception(name: string, namespace: string, podLabels: Record<string, string>): Promise<void>;
  /** Creates a pod on this node, then gives it `ip` and phase Running through /status; waits until NMI sees it. */
  pod(
    name: string,
    ip: string,
    opts?: { namespace?: string; labels?: Record<string, string>; serviceAccountName?: string; ownerReferences?: readonly k8s.V1OwnerReference[] },
  ): Promise<WorldPod>;
  deletePod(pod: WorldPod): Promise<void>;
  /** Writes an AzureAssignedIdentity as MIC does; with a state, also its status (and waits until NMI sees it). */
  assign(pod: WorldPod, identity: WorldIdentity, state?: AssignedIdentityState, binding?: Record<string, unknown>): Promise<string>;
  setAssignedState(name: string, state: AssignedIdentityState): Promise<void>;
  /** Resolves once NMI's caches agree with `check`. */
  until(check: (nmi: NmiHandle) => boolean, what: string, timeoutMs?: number): Promise<void>;
  /** An undici Agent whose connections come from `ip`. Closed by stop(). */
  agentFor(ip: string, connections?: number): Agent;
  /** One HTTP request to NMI from `fromIp` (Metadata: true unless headers are given). */
  call(fromIp: string, path: string, opts?: { headers?: Record<string, string>; method?: string }): Promise<Reply>;
  stop(): Promise<void>;
}

/** Short waits so that "nothing assigned" answers in well under a second. */
export const FAST_WAITS = { retryAttemptsForCreated: 4, retryAttemptsForAssigned: 2, findIdentityRetryIntervalMs: 50 } as const;

export async function startNmiWorld(opts: NmiWorldOptions = {}): Promise<NmiWorld> {
  const logger = opts.logger ?? pino({ level: process.env['NMI_TEST_LOG'] ?? 'silent' });
  const cleanups: Array<() => Promise<void>> = [];
  const stopAll = async () => {
    for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
  };
  try {
    const api = await startTestApiServer({ crdDir: CRD_DIR });
    cleanups.push(() => api.stop());
    const azure = await startTestAzure();
    cleanups.push(() => azure.stop());
    const rg = azure.resourceGroup;
    const computeKind = opts.compute ?? 'vm';
    const computeName = computeKind === 'vm' ? NODE : 'pool';
    const systemAssigned = opts.systemAssigned ?? false;
    if (computeKind === 'vm') azure.emulator.createVm(rg, computeName, { systemAssigned });
    else azure.emulator.createVmss(rg, computeName, { instances: 1, systemAssigned });
    const imds = await azure.emulator.startImds(computeKind === 'vm' ? { vm: computeName } : { vmss: computeName, instanceId: '0' });
    const attached: string[] = [];
    const target = computeKind === 'vm' ? { vm: computeName } : { vmss: computeName };

    const kc = api.kc;
    const core = kc.makeApiClient(k8s.CoreV1Api);
    const custom = kc.makeApiClient(k8s.CustomObjectsApi);
    await core.createNode({ body: { metadata: { name: NODE }, spec: { providerID: providerIdFor(azure, computeKind, computeName) } } });

    let nmi: NmiHandle | undefined;
    if (opts.startNmi ?? true) {
      // The emulator's AAD stands in for a cloud authority: allowed as an admin would with --allowed-ad-endpoints.
      const allowedAdEndpoints = [azure.emulator.url, ...(opts.nmi?.allowedAdEndpoints ?? [])];
      const { auditLogger, ...flags } = opts.nmi ?? {};
      const config = { ...nmiConfig(imds.url), ...flags, allowedAdEndpoints };
      nmi = await startNmi(config, { kubeConfig: kc, logger, ...nmiTestDeps(azure.emulator.caPem), ...(auditLogger ? { auditLogger } : {}) });
      cleanups.push(() => (nmi as NmiHandle).stop());
      await waitUntil(() => (nmi as NmiHandle).active(), 'NMI caches synced', 10_000);
    }

    const agents = new Map<string, Agent>();
    cleanups.push(async () => {
      await Promise.all([...agents.values()].map((a) => a.destroy()));
    });

    const world: NmiWorld = {
      api,
      azure,
      imds,
      nmi,
      nmiUrl: nmi?.url ?? '',
      node: NODE,
      kc,
      core,
      custom,

      async managedIdentity(name, o = {}) {
        const namespace = o.namespace ?? 'default';
        const uami = azure.emulator.createUserAssignedIdentity(rg, `${name}-${randomUUID().slice(0, 8)}`);
        if (o.attach ?? true) {
          attached.push(uami.id);
          azure.emulator.setVmIdentities(target, attached, { systemAssigned });
        }
        const spec = { type: 0, resourceID: uami.id, clientID: uami.clientId };
        if (o.declare === false) return { cr: { spec }, name, namespace, clientId: uami.clientId, principalId: uami.principalId, resourceId: uami.id, uami };
        await ensureNamespace(core, namespace);
        const cr = await createCustom(custom, namespace, Plurals.AzureIdentity, {
          apiVersion: `${GROUP}/${VERSION}`,
          kind: 'AzureIdentity',
          metadata: { name, namespace },
          spec,
        });
        // Both modes watch AzureIdentities (the node path refuses the identities they declare).
        await world.until((n) => n.identities.identities.get(namespace, name) !== undefined, `identity ${name}`);
        return { cr, name, namespace, clientId: uami.clientId, principalId: uami.principalId, resourceId: uami.id, uami };
      },

      async servicePrincipalIdentity(name, o = {}) {
        const namespace = o.namespace ?? 'default';
        const clientId = randomUUID();
        const secret = `secret-${randomUUID()}`;
        const sp = azure.emulator.registerServicePrincipal({ clientId, secret });
        await ensureNamespace(core, namespace);
        await core.createNamespacedSecret({
          namespace,
          body: { metadata: { name: `${name}-secret` }, data: { clientSecret: Buffer.from(secret).toString('base64') } },
        });
        const cr = await createCustom(custom, namespace, Plurals.AzureIdentity, {
          apiVersion: `${GROUP}/${VERSION}`,
          kind: 'AzureIdentity',
          metadata: { name, namespace },
          spec: {
            type: 1,
            clientID: clientId,
            tenantID: azure.emulator.tenantId,
            adEndpoint: azure.emulator.url,
            clientPassword: { name: `${name}-secret`, namespace },
          },
        });
        await world.until((n) => n.identities.identities.get(namespace, name) !== undefined, `identity ${name}`);
        return { cr, name, namespace, clientId, principalId: sp.objectId, resourceId: '' };
      },

      async binding(name, identity, selector) {
        const cr = await createCustom(custom, identity.namespace, Plurals.AzureIdentityBinding, {
          apiVersion: `${GROUP}/${VERSION}`,
          kind: 'AzureIdentityBinding',
          metadata: { name, namespace: identity.namespace },
          spec: { azureIdentity: identity.name, selector },
        });
        // Both modes watch bindings (standard mode tells from them whether an assignment may still come).
        await world.until((n) => n.identities.bindings.get(identity.namespace, name) !== undefined, `binding ${name}`);
        return cr;
      },

      async exception(name, namespace, podLabels) {
        await ensureNamespace(core, namespace);
        await createCustom(custom, namespace, Plurals.AzurePodIdentityException, {
          apiVersion: `${GROUP}/${VERSION}`,
          kind: 'AzurePodIdentityException',
          metadata: { name, namespace },
          spec: { podLabels },
        });
        await world.until((n) => n.identities.exceptions.get(namespace, name) !== undefined, `exception ${name}`);
      },

      async pod(name, ip, o = {}) {
        const namespace = o.namespace ?? 'default';
        await ensureNamespace(core, namespace);
        const created = await core.createNamespacedPod({
          namespace,
          body: {
            metadata: { name, labels: o.labels ?? { aadpodidbinding: name }, ...(o.ownerReferences ? { ownerReferences: [...o.ownerReferences] } : {}) },
            spec: {
              nodeName: NODE,
              containers: [{ name: 'app', image: 'busybox' }],
              ...(o.serviceAccountName !== undefined ? { serviceAccountName: o.serviceAccountName } : {}),
            },
          },
        });
        // What the kubelet does once the sandbox is up: the pod gets its IP and runs.
        await core.patchNamespacedPodStatus(
          { name, namespace, body: { status: { phase: 'Running', podIP: ip, podIPs: [{ ip }] } } },
          k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
        );
        const uid = created.metadata?.uid ?? '';
        if (nmi) await world.until((n) => { const c = n.pods.lookup(ip); return c.kind === 'pod' && c.pod.uid === uid; }, `pod ${name} at ${ip}`);
        return { name, namespace, uid, ip };
      },

      async deletePod(pod) {
        await core.deleteNamespacedPod({ name: pod.name, namespace: pod.namespace });
        if (nmi) await world.until((n) => n.pods.findByName(pod.namespace, pod.name) === undefined, `pod ${pod.name} gone`);
      },

      async assign(pod, identity, state = 'Assigned', binding) {
        const name = assignedIdentityName(pod.name, pod.namespace, identity.name);
        const bindingRef = binding ?? (await world.binding(`${identity.name}-${pod.name}-binding`, identity, pod.name));
        await createCustom(custom, 'default', Plurals.AzureAssignedIdentity, {
          apiVersion: `${GROUP}/${VERSION}`,
          kind: 'AzureAssignedIdentity',
          metadata: {
            name,
            namespace: 'default',
            labels: { nodename: NODE },
            finalizers: ['azureassignedidentity.finalizers.aadpodidentity.k8s.io'],
          },
          spec: { azureIdentityRef: identity.cr, azureBindingRef: bindingRef, pod: pod.name, podNamespace: pod.namespace, nodename: NODE },
        });
        if (state !== 'Created') await world.setAssignedState(name, state);
        else if (nmi) await world.until((n) => n.identities.allAssigned().some((a) => a.name === name), `AAI ${name}`);
        return name;
      },

      async setAssignedState(name, state) {
        await custom.patchNamespacedCustomObjectStatus(
          { group: GROUP, version: VERSION, namespace: 'default', plural: Plurals.AzureAssignedIdentity, name, body: { status: { status: state, availableReplicas: 1 } } },
          k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
        );
        if (nmi) await world.until((n) => n.identities.allAssigned().some((a) => a.name === name && a.state === state), `AAI ${name} ${state}`);
      },

      until(check, what, timeoutMs = 5_000) {
        if (!nmi) return Promise.resolve();
        const handle = nmi;
        return waitUntil(() => check(handle), what, timeoutMs);
      },

      agentFor(ip, connections = 8) {
        const key = `${ip}/${connections}`;
        let agent = agents.get(key);
        if (!agent) {
          agent = new Agent({ localAddress: ip, connections, pipelining: 1, keepAliveTimeout: 10_000 });
          agents.set(key, agent);
        }
        return agent;
      },

      async call(fromIp, path, o = {}) {
        // dispatcher.request sends `path` as is; a URL string would be normalised first (backslashes, dot segments).
        const res = await world.agentFor(fromIp).request({
          origin: world.nmiUrl,
          path,
          method: (o.method ?? 'GET') as 'GET',
          headers: o.headers ?? { Metadata: 'true' },
        });
        const body = await res.body.text();
        return { status: res.statusCode, headers: res.headers, body };
      },

      stop: stopAll,
    };
    return world;
  } catch (error) {
    await stopAll();
    throw new Error('could not start the NMI test world', { cause: error });
  }
}

/** NMI's flags for tests: loopback, random ports, no iptables, short waits (the defaults otherwise, as parsed). */
export function nmiConfig(imdsUrl: string): NmiConfig {
  const parsed = parseNmiConfig([`--node=${NODE}`, `--imds-endpoint=${imdsUrl}`, '--kubelet-config=', '--cni-conf-dir='], {});
  if (!parsed.ok) throw new Error(`test NMI flags: ${parsed.errors.join('; ')}`);
  return {
    ...parsed.value,
    nmiListenAddress: '127.0.0.1',
    nmiPort: 0,
    probeBindAddress: '127.0.0.1',
    httpProbePort: 0,
    metricsBindAddress: '127.0.0.1',
    prometheusPort: 0,
    enableScaleFeatures: true,
    manageIptables: false,
    iptUpdateIntervalMs: 60_000,
    prefetch: false,
    prefetchResources: [],
    tokenCacheSize: 10_000,
    tokenRefreshBeforeMs: 300_000,
    micNamespace: 'kube-system',
    micServiceAccount: 'aad-pod-identity-mic',
    startupTaint: '',
    ...FAST_WAITS,
  };
}

/** What tests give NMI besides its flags: the emulator's AAD CA trusted, shorter IMDS and watch timeouts. */
export function nmiTestDeps(authorityCaPem: string) {
  return { authorityCaPem, tuning: { imdsTimeoutMs: 5_000, watchTimeoutSeconds: 60 } };
}

/** A token from an IMDS-shaped NMI answer. */
export function accessTokenOf(reply: Reply): string {
  const body: unknown = JSON.parse(reply.body);
  const token = (body as { access_token?: unknown }).access_token;
  if (typeof token !== 'string') throw new Error(`no access_token in ${reply.body.slice(0, 200)}`);
  return token;
}

export async function waitUntil(check: () => boolean, what: string, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

function providerIdFor(azure: TestAzure, kind: 'vm' | 'vmss', name: string): string {
  const base = `azure:///subscriptions/${azure.emulator.subscriptionId}/resourceGroups/${azure.resourceGroup}/providers/Microsoft.Compute`;
  return kind === 'vm' ? `${base}/virtualMachines/${name}` : `${base}/virtualMachineScaleSets/${name}/virtualMachines/0`;
}

async function ensureNamespace(core: k8s.CoreV1Api, name: string): Promise<void> {
  try {
    await core.createNamespace({ body: { metadata: { name } } });
  } catch (error) {
    if ((error as { code?: number }).code !== 409) throw error;
  }
}

async function createCustom(api: k8s.CustomObjectsApi, namespace: string, plural: string, body: object): Promise<Record<string, unknown>> {
  const created: unknown = await api.createNamespacedCustomObject({ group: GROUP, version: VERSION, namespace, plural, body });
  return created as Record<string, unknown>;
}
