// A small world for MIC integration tests: the API emulator with our CRDs, the Azure emulator with a VMSS of two
// instances and a VM, one Node per instance with its providerID, and MIC replicas running in-process against both
// with short intervals. Everything listens on 127.0.0.1:0 and stop() tears it all down.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CoreV1Api, CustomObjectsApi } from '@kubernetes/client-node';
import pino from 'pino';
import { armCredential } from '../../src/azure/credentials.js';
import { GROUP, Plurals, VERSION } from '../../src/crds/names.js';
import { normalizeAssignedIdentity } from '../../src/crds/normalize.js';
import type { AzureAssignedIdentity } from '../../src/crds/types.js';
import { readFileSync } from 'node:fs';
import { parseCloudConfig, type AzureCloudConfig } from '../../src/azure/cloud-config.js';
import { armClientFactory, federatedCredentialPort, reloadableArm } from '../../src/mic/arm/wiring.js';
import { parseMicConfig } from '../../src/mic/config.js';
import { startMic, type MicHandle } from '../../src/mic/mic.js';
import { CRD_DIR, startTestApiServer, type TestApiServer } from '../helpers/apiserver.js';
import type { ApiServerOptions } from '../../src/sandbox/apiserver/index.js';
import { servicePrincipalCloudConfig, startTestAzure, type TestAzure } from '../helpers/azure.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

export const VMSS = 'ss1';
export const VM = 'vm1';
export const NODES = { vmss0: 'ss1-0', vmss1: 'ss1-1', vm: 'vm1' } as const;

/** Run MIC from an azure.json file (ARM and AAD at the emulator), watched for changes as cmd/mic.ts does. */
export interface AzureJsonWatch {
  readonly path: string;
  readonly pollIntervalMs?: number;
}

/** The azure.json text naming a service principal of `az`'s emulator. */
export function azureJsonText(az: TestAzure, sp: { clientId: string; secret: string }): string {
  return JSON.stringify({
    cloud: 'AzurePublicCloud',
    tenantId: az.emulator.tenantId,
    aadClientId: sp.clientId,
    aadClientSecret: sp.secret,
    subscriptionId: az.emulator.subscriptionId,
    resourceGroup: az.resourceGroup,
  });
}

export interface MicWorld {
  readonly api: TestApiServer;
  readonly az: TestAzure;
  readonly core: CoreV1Api;
  readonly custom: CustomObjectsApi;
  readonly rg: string;
  /** Starts a MIC replica; extra flags override the test defaults. */
  startMic(opts?: { instance?: string; flags?: readonly string[]; azureJson?: AzureJsonWatch }): Promise<MicHandle>;
  /** A user-assigned identity in the Azure emulator's MSI. */
  msi(name: string): { id: string; clientId: string };
  createIdentity(name: string, spec: Record<string, unknown>, opts?: { namespace?: string; annotations?: Record<string, string> }): Promise<void>;
  createBinding(name: string, spec: Record<string, unknown>, namespace?: string): Promise<void>;
  createPod(name: string, node: string, selector: string, namespace?: string): Promise<void>;
  deletePod(name: string, namespace?: string): Promise<void>;
  setPodLabel(name: string, selector: string, namespace?: string): Promise<void>;
  assigned(): Promise<AzureAssignedIdentity[]>;
  /** User-assigned identity IDs on the VMSS or VM, lower-case, sorted. */
  vmssIds(): string[];
  vmIds(): string[];
  events(reason?: string): Promise<{ reason: string; type: string; kind: string; name: string; message: string }[]>;
  stop(): Promise<void>;
}

const silent = pino({ level: process.env['MIC_TEST_LOG'] ?? 'silent' });

/** `crdDir`: the CRDs the API emulator starts with (default: ours, config/crd). */
export async function startMicWorld(opts: { crdDir?: string; api?: ApiServerOptions } = {}): Promise<MicWorld> {
  const api = await startTestApiServer({ ...opts.api, crdDir: opts.crdDir ?? CRD_DIR });
  const az = await startTestAzure();
  const rg = az.resourceGroup;
  const e = az.emulator;
  e.setLroMode('async');
  e.createVmss(rg, VMSS, { instances: 2 });
  e.createVm(rg, VM);
  const core = api.kc.makeApiClient(CoreV1Api);
  const custom = api.kc.makeApiClient(CustomObjectsApi);
  const computeId = (type: string, name: string) =>
    `azure:///subscriptions/${e.subscriptionId}/resourceGroups/${rg}/providers/Microsoft.Compute/${type}/${name}`;
  await core.createNode({ body: { metadata: { name: NODES.vmss0 }, spec: { providerID: `${computeId('virtualMachineScaleSets', VMSS)}/virtualMachines/0` } } });
  await core.createNode({ body: { metadata: { name: NODES.vmss1 }, spec: { providerID: `${computeId('virtualMachineScaleSets', VMSS)}/virtualMachines/1` } } });
  await core.createNode({ body: { metadata: { name: NODES.vm }, spec: { providerID: computeId('virtualMachines', VM) } } });

  const cloud = servicePrincipalCloudConfig(az);
  const credential = armCredential(cloud, { caPem: e.caPem, tokenTimeoutMs: 10_000 });
  const mics: MicHandle[] = [];
  const ns = (n?: string) => n ?? 'default';

  const world: MicWorld = {
    api,
    az,
    core,
    custom,
    rg,
    async startMic(opts = {}) {
      const parsed = parseMicConfig(
        [
          '--http-probe-port=0',
          '--prometheus-port=0',
          '--probe-bind-address=127.0.0.1',
          '--metrics-bind-address=127.0.0.1',
          '--syncRetryDuration=3s',
          '--identity-assignment-reconcile-interval=1s',
          '--leader-election-duration=2s',
          '--update-user-msi-retry-interval=50ms',
          '--clientQps=500',
          '--clientBurst=500',
          '--arm-poll-interval=20ms',
          ...(opts.flags ?? []),
        ],
        { MIC_POD_NAMESPACE: 'default', HOSTNAME: opts.instance ?? `mic-${randomUUID().slice(0, 8)}` },
      );
      if (!parsed.ok) throw new Error(parsed.errors.join('; '));
      const config = parsed.value;
      let armClient = armClientFactory({ config, cloud, credential, logger: silent, caPem: e.caPem, maxThrottleWaitMs: 300 });
      let cloudConfigFile = {};
      if (opts.azureJson) {
        const watched = opts.azureJson;
        const parse = (text: string): AzureCloudConfig =>
          parseCloudConfig({ fileText: text, filePath: watched.path, customEndpoints: { resourceManagerEndpoint: e.url, activeDirectoryEndpoint: e.url } });
        const initialText = readFileSync(watched.path, 'utf8');
        const first = parse(initialText);
        const credentialFor = (c: AzureCloudConfig) => armCredential(c, { caPem: e.caPem, tokenTimeoutMs: 10_000 });
        const arm = reloadableArm({ config, cloud: first, credential: credentialFor(first), credentialFor, logger: silent, caPem: e.caPem, maxThrottleWaitMs: 300 });
        armClient = arm.factory;
        cloudConfigFile = {
          cloudConfigFile: {
            path: watched.path,
            initialText,
            parse,
            apply: (next: AzureCloudConfig) => arm.reload(next),
            ...(watched.pollIntervalMs !== undefined ? { pollIntervalMs: watched.pollIntervalMs } : {}),
          },
        };
      }
      const mic = await startMic(config, {
        kubeConfig: api.kc,
        logger: silent.child({ instance: config.leaderElection.instance }),
        cloudAuthority: cloud.environment.activeDirectoryEndpoint,
        armClient,
        federatedCredentials: federatedCredentialPort({ config, cloud, credential, logger: silent, caPem: e.caPem }),
        ...cloudConfigFile,
        tuning: {
          watchTimeoutSeconds: 20,
          reflectorBackoff: { initialMs: 50, maxMs: 500 },
          retryBaseMs: 100,
          maxRetryDelayMs: 1000,
          federationBackoff: { initialMs: 50, maxMs: 400 },
        },
      });
      mics.push(mic);
      return mic;
    },
    msi(name) {
      const found = e.createUserAssignedIdentity(rg, name);
      return { id: found.id, clientId: found.clientId };
    },
    async createIdentity(name, spec, opts = {}) {
      await custom.createNamespacedCustomObject({
        group: GROUP,
        version: VERSION,
        plural: Plurals.AzureIdentity,
        namespace: ns(opts.namespace),
        body: {
          apiVersion: `${GROUP}/${VERSION}`,
          kind: 'AzureIdentity',
          metadata: { name, ...(opts.annotations ? { annotations: opts.annotations } : {}) },
          spec,
        },
      });
    },
    async createBinding(name, spec, namespace) {
      await custom.createNamespacedCustomObject({
        group: GROUP,
        version: VERSION,
        plural: Plurals.AzureIdentityBinding,
        namespace: ns(namespace),
        body: { apiVersion: `${GROUP}/${VERSION}`, kind: 'AzureIdentityBinding', metadata: { name }, spec },
      });
    },
    async createPod(name, node, selector, namespace) {
      await core.createNamespacedPod({
        namespace: ns(namespace),
        body: {
          metadata: { name, labels: { aadpodidbinding: selector } },
          spec: { nodeName: node, containers: [{ name: 'app', image: 'busybox' }] },
        },
      });
    },
    async deletePod(name, namespace) {
      await core.deleteNamespacedPod({ name, namespace: ns(namespace), gracePeriodSeconds: 0 });
    },
    async setPodLabel(name, selector, namespace) {
      await core.patchNamespacedPod(
        { name, namespace: ns(namespace), body: [{ op: 'replace', path: '/metadata/labels/aadpodidbinding', value: selector }] },
      );
    },
    async assigned() {
      const list = (await custom.listClusterCustomObject({ group: GROUP, version: VERSION, plural: Plurals.AzureAssignedIdentity })) as {
        items: unknown[];
      };
      return list.items.map((i) => normalizeAssignedIdentity(i).value).filter((v): v is AzureAssignedIdentity => v !== null);
    },
    vmssIds: () => lower(e.getVmss(rg, VMSS)!.identity.userAssignedIdentities),
    vmIds: () => lower(e.getVm(rg, VM)!.identity.userAssignedIdentities),
    async events(reason) {
      const list = await core.listEventForAllNamespaces({});
      return list.items
        .map((ev) => ({
          reason: ev.reason ?? '',
          type: ev.type ?? '',
          kind: ev.involvedObject.kind ?? '',
          name: ev.involvedObject.name ?? '',
          message: ev.message ?? '',
        }))
        .filter((ev) => reason === undefined || ev.reason === reason);
    },
    async stop() {
      await Promise.allSettled(mics.map((m) => m.stop()));
      await Promise.allSettled([api.stop(), az.stop()]);
    },
  };
  return world;
}

export function lower(ids: readonly string[]): string[] {
  return ids.map((i) => i.toLowerCase()).sort();
}

/** Polls `check` until it returns true (or throws its last assertion error after `timeoutMs`). */
export async function eventually(check: () => Promise<boolean | void> | boolean | void, timeoutMs = 10_000, stepMs = 50): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const r = await check();
      if (r !== false) return;
      last = new Error('condition still false');
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw last;
    await new Promise((r) => setTimeout(r, stepMs));
  }
}

export interface ChildMic {
  readonly proc: ChildProcess;
  /** The probe URL from the child's `ready` line. */
  readonly probe: string;
  /** Everything the child wrote so far, stdout and stderr. */
  output(): string;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGKILLs the child if it still runs and removes its files. */
  dispose(): Promise<void>;
}

/**
 * Runs cmd/mic.ts in a child process against `w` (kubeconfig and azure.json in a temp dir) and resolves once it
 * printed its `ready` line. `apiHost` (host:port) sends its API traffic elsewhere, e.g. through a proxy.
 */
export async function spawnChildMic(
  w: MicWorld,
  opts: { instance: string; flags?: readonly string[]; apiHost?: string },
): Promise<ChildMic> {
  const dir = await mkdtemp(join(tmpdir(), 'mic-child-'));
  const kubeconfig = join(dir, 'kubeconfig');
  const azureJson = join(dir, 'azure.json');
  let kubeconfigText = w.api.server.kubeconfigYaml;
  if (opts.apiHost !== undefined) kubeconfigText = kubeconfigText.split(new URL(w.api.server.url).host).join(opts.apiHost);
  await writeFile(kubeconfig, kubeconfigText, { mode: 0o600 });
  const e = w.az.emulator;
  await writeFile(azureJson, azureJsonText(w.az, w.az.servicePrincipal));
  const args = [
    '--import', 'tsx', join(ROOT, 'cmd/mic.ts'),
    `--kubeconfig=${kubeconfig}`, `--cloudconfig=${azureJson}`, `--arm-endpoint=${e.url}`,
    '--http-probe-port=0', '--prometheus-port=0', '--probe-bind-address=127.0.0.1', '--metrics-bind-address=127.0.0.1',
    '--leader-election-duration=2s', '--log-format=json', ...(opts.flags ?? []),
  ];
  const proc = spawn(process.execPath, args, {
    cwd: ROOT,
    env: { ...process.env, MIC_POD_NAMESPACE: 'default', HOSTNAME: opts.instance, AZURE_AUTHORITY_HOST: e.url, NODE_EXTRA_CA_CERTS: e.caFile },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  proc.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    proc.once('exit', (code, signal) => resolve({ code, signal })),
  );
  const dispose = async (): Promise<void> => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGKILL');
      await exited;
    }
    await rm(dir, { recursive: true, force: true });
  };
  try {
    const probe = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`child MIC not ready in time: ${out}`)), 20_000);
      const onData = (): void => {
        const line = out.split('\n').find((l) => l.includes('"ready":true'));
        if (line === undefined) return;
        clearTimeout(timer);
        proc.stdout?.off('data', onData);
        resolve((JSON.parse(line) as { probe: string }).probe);
      };
      proc.stdout?.on('data', onData);
      void exited.then((x) => reject(new Error(`child MIC exited with ${JSON.stringify(x)}: ${out}`)));
    });
    return { proc, probe, output: () => out, exited, dispose };
  } catch (err) {
    await dispose();
    throw err;
  }
}
