// A sandbox for end-to-end tests: the whole local world (emulators, kubelet, MIC and NMI as child processes) in a
// temporary state directory, plus the small verbs the tests speak: apply manifests, start a labelled pod, run the
// unmodified @azure/identity pod program in it, wait for AzureAssignedIdentities, read the VMSS identities.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as k8s from '@kubernetes/client-node';
import { pino } from 'pino';
import { startSandbox, type Sandbox, type SandboxOptions } from '../../src/sandbox/index.js';

export const REPO_ROOT = resolve(fileURLToPath(new URL('../..', import.meta.url)));
export const POD_TOKEN_SCRIPT = join(REPO_ROOT, 'examples', 'pod-token.mjs');
/** The same pod program with Debian's Python Azure SDK (python3-azure), run by /usr/bin/python3. */
export const POD_TOKEN_PYTHON_SCRIPT = join(REPO_ROOT, 'examples', 'pod-token.py');
const GROUP = 'aadpodidentity.k8s.io';
const VERSION = 'v1';

/** NMI flags that keep waits short in tests (the original waits 16 × 5 s before a 404). */
export const FAST_NMI_ARGS = ['--find-identity-retry-interval=200ms', '--retry-attempts-for-created=10', '--retry-attempts-for-assigned=10', '--ipt-update-interval-sec=2'];
/** MIC flags that keep resyncs, leader failover and the Azure check short in tests. */
export const FAST_MIC_ARGS = [
  '--leader-election-duration=3s',
  '--syncRetryDuration=10s',
  '--identity-assignment-reconcile-interval=2s',
  '--update-user-msi-retry-interval=200ms',
];

export interface TokenResult {
  readonly ok: boolean;
  readonly claims?: { appid?: string; oid?: string; aud?: string; tid?: string; xms_mirid?: string };
  readonly error?: string;
  readonly message?: string;
  readonly status?: number;
}

export interface PodTokenOptions {
  readonly clientId?: string;
  readonly resourceId?: string;
  readonly maxRetries?: number;
  readonly timeoutMs?: number;
  readonly scope?: string;
  /** The pod program's SDK: @azure/identity (default) or Debian's Python azure.identity. */
  readonly client?: 'node' | 'python';
}

export interface TestSandbox {
  readonly sandbox: Sandbox;
  readonly kc: k8s.KubeConfig;
  readonly core: k8s.CoreV1Api;
  readonly custom: k8s.CustomObjectsApi;
  createNamespace(name: string): Promise<void>;
  createIdentity(ns: string, name: string, spec: Record<string, unknown>): Promise<void>;
  createBinding(ns: string, name: string, identity: string, selector: string): Promise<void>;
  createCustom(ns: string, plural: string, body: Record<string, unknown>): Promise<void>;
  deleteCustom(ns: string, plural: string, name: string): Promise<void>;
  getCustom(ns: string, plural: string, name: string): Promise<Record<string, unknown> | undefined>;
  listCustom(ns: string, plural: string): Promise<Array<Record<string, unknown>>>;
  /** Creates a pod (with the binding label when given) and waits until the kubelet reports it Running. */
  startPod(ns: string, name: string, label?: string, opts?: { nodeName?: string; labels?: Record<string, string>; serviceAccountName?: string }): Promise<void>;
  createServiceAccount(ns: string, name: string): Promise<void>;
  deletePod(ns: string, name: string): Promise<void>;
  /** Runs the @azure/identity pod program in the pod and parses its line. */
  podToken(ns: string, name: string, opts?: PodTokenOptions): Promise<TokenResult>;
  /** Every AzureAssignedIdentity in the cluster. */
  listAllAssigned(): Promise<Array<Record<string, unknown>>>;
  /** AAIs for a pod (all namespaces), by spec.pod and spec.podNamespace. */
  assignedFor(ns: string, pod: string): Promise<Array<Record<string, unknown>>>;
  /** The user-assigned identity IDs on the compute a node belongs to, lower-cased. */
  computeIdentities(nodeIndex?: number): string[];
  stop(): Promise<void>;
}

export async function startTestSandbox(
  opts: Partial<Omit<SandboxOptions, 'stateDir' | 'repoRoot' | 'env' | 'logger'>> & { network: 'netns' | 'loopback' },
): Promise<TestSandbox> {
  const stateDir = await mkdtemp(join(tmpdir(), 'aad-sandbox-test-'));
  let sandbox: Sandbox;
  try {
    sandbox = await startSandbox({
      stateDir,
      repoRoot: REPO_ROOT,
      env: process.env,
      logger: pino({ level: process.env.SANDBOX_TEST_LOG ?? 'silent' }),
      ...opts,
      nmi: { args: [...FAST_NMI_ARGS, ...(opts.nmi?.args ?? [])] },
      mic: {
        replicas: opts.mic?.replicas ?? 2,
        args: (ids) => [...FAST_MIC_ARGS, ...(typeof opts.mic?.args === 'function' ? opts.mic.args(ids) : (opts.mic?.args ?? []))],
      },
    });
  } catch (error) {
    await rm(stateDir, { recursive: true, force: true });
    throw error;
  }
  const kc = new k8s.KubeConfig();
  kc.loadFromFile(sandbox.endpoints.kubeconfig);
  const core = kc.makeApiClient(k8s.CoreV1Api);
  const custom = kc.makeApiClient(k8s.CustomObjectsApi);

  const t: TestSandbox = {
    sandbox,
    kc,
    core,
    custom,
    async createNamespace(name) {
      await core.createNamespace({ body: { metadata: { name } } });
    },
    async createIdentity(ns, name, spec) {
      await t.createCustom(ns, 'azureidentities', { kind: 'AzureIdentity', metadata: { name, namespace: ns }, spec });
    },
    async createBinding(ns, name, identity, selector) {
      await t.createCustom(ns, 'azureidentitybindings', {
        kind: 'AzureIdentityBinding',
        metadata: { name, namespace: ns },
        spec: { azureIdentity: identity, selector },
      });
    },
    async createCustom(ns, plural, body) {
      await custom.createNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural, body: { apiVersion: `${GROUP}/${VERSION}`, ...body } });
    },
    async deleteCustom(ns, plural, name) {
      await custom.deleteNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural, name });
    },
    async getCustom(ns, plural, name) {
      try {
        return (await custom.getNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural, name })) as Record<string, unknown>;
      } catch (error) {
        if ((error as { code?: number }).code === 404) return undefined;
        throw error;
      }
    },
    async listCustom(ns, plural) {
      const list = (await custom.listNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural })) as { items?: Array<Record<string, unknown>> };
      return list.items ?? [];
    },
    async startPod(ns, name, label, o = {}) {
      const labels = { ...(label ? { aadpodidbinding: label } : {}), ...(o.labels ?? {}) };
      await core.createNamespacedPod({
        namespace: ns,
        body: {
          metadata: { name, namespace: ns, labels },
          spec: {
            ...(o.nodeName ? { nodeName: o.nodeName } : {}),
            ...(o.serviceAccountName ? { serviceAccountName: o.serviceAccountName } : {}),
            containers: [{ name: 'app', image: 'sandbox/pod-token' }],
          },
        },
      });
      await sandbox.kubelet.waitForPod(`${ns}/${name}`, 30_000);
    },
    async createServiceAccount(ns, name) {
      await core.createNamespacedServiceAccount({ namespace: ns, body: { metadata: { name, namespace: ns } } });
    },
    async deletePod(ns, name) {
      await core.deleteNamespacedPod({ namespace: ns, name });
    },
    async podToken(ns, name, o = {}) {
      const argv = [...(o.client === 'python' ? ['/usr/bin/python3', POD_TOKEN_PYTHON_SCRIPT] : ['node', POD_TOKEN_SCRIPT]), '--timeout-ms', String(o.timeoutMs ?? 30_000)];
      if (o.scope) argv.push('--scope', o.scope);
      if (o.clientId) argv.push('--client-id', o.clientId);
      if (o.resourceId) argv.push('--resource-id', o.resourceId);
      if (o.maxRetries !== undefined) argv.push('--max-retries', String(o.maxRetries));
      const result = await sandbox.execInPod(`${ns}/${name}`, argv, { timeoutMs: (o.timeoutMs ?? 30_000) + 15_000 });
      const line = result.stdout.trim().split('\n').pop() ?? '';
      try {
        return JSON.parse(line) as TokenResult;
      } catch {
        return { ok: false, error: 'NoOutput', message: `exit ${result.code}: ${result.stderr.slice(0, 500)}` };
      }
    },
    async listAllAssigned() {
      const all = (await custom.listClusterCustomObject({ group: GROUP, version: VERSION, plural: 'azureassignedidentities' })) as { items?: Array<Record<string, unknown>> };
      return all.items ?? [];
    },
    async assignedFor(ns, pod) {
      return (await t.listAllAssigned()).filter((a) => {
        const spec = (a.spec ?? {}) as { pod?: string; podNamespace?: string };
        return spec.pod === pod && spec.podNamespace === ns;
      });
    },
    computeIdentities(nodeIndex = 0) {
      const { compute, computeNames } = sandbox.endpoints.azure;
      const info = compute === 'vmss' ? sandbox.azure.getVmss(sandbox.resourceGroup, computeNames[0] ?? '') : sandbox.azure.getVm(sandbox.resourceGroup, computeNames[nodeIndex] ?? '');
      return (info?.identity.userAssignedIdentities ?? []).map((id) => id.toLowerCase());
    },
    async stop() {
      try {
        await sandbox.stop();
      } finally {
        await rm(stateDir, { recursive: true, force: true });
      }
    },
  };
  return t;
}

/** Polls `check` until it returns a value other than undefined/false, or fails with the last value after timeoutMs. */
export async function eventually<T>(check: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 20_000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined && value !== false) return value;
      last = value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`${what} not reached within ${timeoutMs} ms; last: ${last instanceof Error ? last.message : JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, 150));
  }
}

/** Network namespaces and nat rules on the host, to compare before and after a test. */
export async function hostNetworkState(prefix = 'aads'): Promise<{ namespaces: string[]; natRules: string[]; links: string[] }> {
  const ours = new RegExp(`^${prefix}(?![0-9])`);
  const { execFile } = await import('node:child_process');
  const out = (argv: string[]) =>
    new Promise<string>((res) => execFile(argv[0] ?? 'true', argv.slice(1), (e, stdout) => res(e ? '' : stdout)));
  const namespaces = (await out(['ip', 'netns', 'list'])).split('\n').map((l) => l.split(' ')[0] ?? '').filter((n) => ours.test(n));
  const natRules = (await out(['iptables', '-w', '5', '-t', 'nat', '-S'])).split('\n').filter((l) => l.includes('aad'));
  const links = (await out(['ip', '-o', 'link'])).split('\n').map((l) => l.split(': ')[1]?.split('@')[0] ?? '').filter((n) => ours.test(n));
  return { namespaces, natRules, links };
}
