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
import { createServer as createHttpServer, type IncomingHttpHeaders } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { AddressInfo } from 'node:net';
import * as k8s from '@kubernetes/client-node';
import pino, { type Logger } from 'pino';
import { Agent } from 'undici';
import { assignedIdentityName, GROUP, Plurals, VERSION } from '../../src/crds/names.js';
import { FEDERATED_AUDIENCE, federatedCredentialName, serviceAccountSubject } from '../../src/crds/federation.js';
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
  /**
   * Federated mode: the API server on TLS with its issuer trusted by the Azure emulator's Azure AD, NMI given the
   * emulator's tenant and authority and (unless `enabled: false`) --enable-federated-identities, and NMI's API
   * traffic through a recorder of the TokenRequests it makes (`tokenRequests`).
   */
  readonly federation?: { readonly enabled?: boolean; readonly maxPropagationWaitMs?: number; readonly propagationRetryMs?: number; readonly propagationWindowMs?: number };
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

/** A TokenRequest NMI made, as the API server answered it. */
export interface RecordedTokenRequest {
  readonly namespace: string;
  readonly serviceAccount: string;
  readonly status: number;
  /** The body NMI sent. */
  readonly request: Record<string, unknown>;
  /** status.token of the answer ('' when refused). */
  readonly token: string;
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
  /**
   * A user-assigned identity attached to no VM, a federated credential on it for each of `serviceAccounts` (in its
   * namespace; the cluster's issuer byte for byte), and its AzureIdentity with spec.mode Federated.
   */
  federatedIdentity(name: string, opts: { namespace?: string; serviceAccounts: readonly string[] }): Promise<WorldIdentity>;
  /** Every TokenRequest NMI made (federation worlds only). */
  readonly tokenRequests: RecordedTokenRequest[];
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
    const federation = opts.federation;
    const api = await startTestApiServer({ crdDir: CRD_DIR, ...(federation ? { tls: true } : {}) });
    cleanups.push(() => api.stop());
    const azure = await startTestAzure();
    cleanups.push(() => azure.stop());
    const tokenRequests: RecordedTokenRequest[] = [];
    let nmiKubeConfig = api.kc;
    if (federation) {
      // Azure AD must trust the cluster's issuer certificate, as it trusts a public one in Azure.
      azure.emulator.trustIssuerCa(api.server.caPem ?? '');
      const recorder = await recordingKubeProxy(api, tokenRequests);
      cleanups.push(recorder.stop);
      nmiKubeConfig = recorder.kc;
    }
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
      const config = {
        ...nmiConfig(imds.url),
        ...(federation ? { enableFederatedIdentities: federation.enabled ?? true } : {}),
        ...flags,
        allowedAdEndpoints,
      };
      nmi = await startNmi(config, {
        kubeConfig: nmiKubeConfig,
        logger,
        ...nmiTestDeps(azure.emulator.caPem),
        ...(auditLogger ? { auditLogger } : {}),
        ...(federation
          ? {
              federation: {
                tenantId: azure.emulator.tenantId,
                authorityHost: azure.emulator.url,
                ...(federation.maxPropagationWaitMs !== undefined ? { maxPropagationWaitMs: federation.maxPropagationWaitMs } : {}),
                ...(federation.propagationRetryMs !== undefined ? { propagationRetryMs: federation.propagationRetryMs } : {}),
                ...(federation.propagationWindowMs !== undefined ? { propagationWindowMs: federation.propagationWindowMs } : {}),
              },
            }
          : {}),
      });
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
      tokenRequests,

      async federatedIdentity(name, o) {
        const namespace = o.namespace ?? 'default';
        const uami = azure.emulator.createUserAssignedIdentity(rg, `${name}-${randomUUID().slice(0, 8)}`);
        const issuer = api.server.serviceAccountIssuer.issuer;
        for (const sa of o.serviceAccounts) {
          const subject = serviceAccountSubject(namespace, sa);
          azure.emulator.putFederatedCredential(uami.id, federatedCredentialName(issuer, subject), { issuer, subject, audiences: [FEDERATED_AUDIENCE] });
        }
        await ensureNamespace(core, namespace);
        const spec = { type: 0, resourceID: uami.id, clientID: uami.clientId, mode: 'Federated' };
        const cr = await createCustom(custom, namespace, Plurals.AzureIdentity, {
          apiVersion: `${GROUP}/${VERSION}`,
          kind: 'AzureIdentity',
          metadata: { name, namespace },
          spec,
        });
        await world.until((n) => n.identities.identities.get(namespace, name) !== undefined, `identity ${name}`);
        return { cr, name, namespace, clientId: uami.clientId, principalId: uami.principalId, resourceId: uami.id, uami };
      },

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
        if (o.serviceAccountName !== undefined && o.serviceAccountName !== 'default') await ensureServiceAccount(core, namespace, o.serviceAccountName);
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

async function ensureServiceAccount(core: k8s.CoreV1Api, namespace: string, name: string): Promise<void> {
  try {
    await core.createNamespacedServiceAccount({ namespace, body: { metadata: { name } } });
  } catch (error) {
    if ((error as { code?: number }).code !== 409) throw error;
  }
}

/**
 * NMI's API traffic through a plain-HTTP recorder in front of the (TLS) API server: every request is forwarded as
 * is; a TokenRequest's request body and answer are recorded on the way.
 */
async function recordingKubeProxy(api: TestApiServer, log: RecordedTokenRequest[]): Promise<{ kc: k8s.KubeConfig; stop: () => Promise<void> }> {
  const target = new URL(api.server.url);
  const tokenPath = /^\/api\/v1\/namespaces\/([^/]+)\/serviceaccounts\/([^/]+)\/token$/;
  const server = createHttpServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const headers: IncomingHttpHeaders = { ...req.headers, host: target.host };
      const up = httpsRequest(
        { hostname: target.hostname, port: target.port, path: req.url, method: req.method, headers, ca: api.server.caPem },
        (upRes) => {
          const m = tokenPath.exec((req.url ?? '').split('?')[0] ?? '');
          if (req.method === 'POST' && m) {
            const out: Buffer[] = [];
            upRes.on('data', (c: Buffer) => out.push(c));
            upRes.on('end', () => {
              const text = Buffer.concat(out).toString('utf8');
              let token = '';
              try {
                token = (JSON.parse(text) as { status?: { token?: string } }).status?.token ?? '';
              } catch {
                // not JSON: recorded without a token
              }
              log.push({ namespace: decodeURIComponent(m[1] ?? ''), serviceAccount: decodeURIComponent(m[2] ?? ''), status: upRes.statusCode ?? 0, request: JSON.parse(body.toString('utf8') || '{}') as Record<string, unknown>, token });
              res.writeHead(upRes.statusCode ?? 502, upRes.headers);
              res.end(text);
            });
            return;
          }
          res.writeHead(upRes.statusCode ?? 502, upRes.headers);
          upRes.pipe(res);
        },
      );
      up.on('error', () => res.destroy());
      res.on('close', () => up.destroy());
      up.end(body);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  const kc = new k8s.KubeConfig();
  const user = api.kc.getCurrentUser();
  kc.loadFromOptions({
    clusters: [{ name: 'recorded', server: `http://127.0.0.1:${port}`, skipTLSVerify: true }],
    users: user ? [user] : [],
    contexts: [{ name: 'recorded', cluster: 'recorded', user: user?.name ?? '' }],
    currentContext: 'recorded',
  });
  return {
    kc,
    stop: () =>
      new Promise<void>((r) => {
        server.close(() => r());
        server.closeAllConnections();
      }),
  };
}

async function createCustom(api: k8s.CustomObjectsApi, namespace: string, plural: string, body: object): Promise<Record<string, unknown>> {
  const created: unknown = await api.createNamespacedCustomObject({ group: GROUP, version: VERSION, namespace, plural, body });
  return created as Record<string, unknown>;
}
