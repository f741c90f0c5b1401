// `npm run bench -- federation [--samples=N] [--duration-ms=N] [--rounds=N] [--clients=N]`: attachment and federated
// mode side by side, from one run of the loopback sandbox (API and Azure emulators in this process; one MIC and one
// NMI per node as child processes running cmd/mic.ts and cmd/nmi.ts under tsx, both with
// --enable-federated-identities; the emulator's VMSS PATCH takes 2 s and a federated-credential PUT 1 s):
//
//  * pod creation -> first token for a NEW identity: per sample a fresh user-assigned identity, its AzureIdentity
//    (Attached or Federated, alternately) and binding; the clock starts at the pod's POST and stops when the pod,
//    asking NMI from its own IP as soon as the kubelet reports it Running, gets a 200 with that identity's token (NMI
//    holds the request until MIC has Assigned the AAI). Attached: MIC PATCHes the VMSS, NMI asks IMDS. Federated: MIC
//    PUTs one federated credential, NMI mints a service-account token bound to the pod and exchanges it at Azure AD.
//  * warm path: requests/s and p50/p99 of a cached token through the same NMI, a pod of each mode, alternately
//    (median of the rounds), undici keep-alive clients bound to the pod's IP.
//
// Nothing here asserts a timing; the targets are printed beside the figures, with the load average.

import { mkdtemp, rm } from 'node:fs/promises';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as k8s from '@kubernetes/client-node';
import { pino } from 'pino';
import { decodeToken } from '../src/sandbox/cloud/index.js';
import { load, medianRun, once, percentile, type LoadResult } from './lib/http-load.js';
import { startSandbox, type Sandbox } from '../src/sandbox/index.js';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const GROUP = 'aadpodidentity.k8s.io';
const VERSION = 'v1';
const TOKEN_PATH = '/metadata/identity/oauth2/token';
const RESOURCE = 'https://management.azure.com/';
const VMSS_PATCH_MS = 2000;
const FIC_PUT_MS = 1000;
type Mode = 'Attached' | 'Federated';

interface Options {
  readonly samples: number;
  readonly durationMs: number;
  readonly rounds: number;
  readonly clients: number;
}

export async function main(args: readonly string[]): Promise<void> {
  const opts = parseArgs(args);
  const stateDir = await mkdtemp(join(tmpdir(), 'bench-federation-'));
  const loadBefore = loadavg();
  let sandbox: Sandbox | undefined;
  try {
    sandbox = await startSandbox({
      stateDir,
      repoRoot: ROOT,
      env: process.env,
      logger: pino({ level: 'silent' }),
      network: 'loopback',
      nodes: 1,
      federation: true,
      azureLatencyMs: { vmss_patch: VMSS_PATCH_MS, fic_put: FIC_PUT_MS },
      // NMI holds a pod's first request while MIC assigns (polling its cache every 50 ms, up to 15 s).
      nmi: { args: ['--find-identity-retry-interval=50ms', '--retry-attempts-for-created=300', '--retry-attempts-for-assigned=300'] },
      mic: { replicas: 1, args: ['--leader-election-duration=3s'] },
    });
    const s = sandbox;
    const kc = new k8s.KubeConfig();
    kc.loadFromFile(s.endpoints.kubeconfig);
    const core = kc.makeApiClient(k8s.CoreV1Api);
    const custom = kc.makeApiClient(k8s.CustomObjectsApi);
    const nmiUrl = s.endpoints.nodes[0]!.nmiUrl;
    const ns = 'bench';
    await core.createNamespace({ body: { metadata: { name: ns } } });
    // Leadership first, so the first sample does not time MIC's election.
    await untilLeader(kc);

    const newIdentity = async (mode: Mode, i: number) => {
      const name = `${mode.toLowerCase()}-${i}`;
      const id = s.createIdentity(`bench-${name}`);
      await custom.createNamespacedCustomObject({
        group: GROUP, version: VERSION, namespace: ns, plural: 'azureidentities',
        body: { apiVersion: `${GROUP}/${VERSION}`, kind: 'AzureIdentity', metadata: { name }, spec: { type: 0, resourceID: id.id, clientID: id.clientId, mode } },
      });
      await custom.createNamespacedCustomObject({
        group: GROUP, version: VERSION, namespace: ns, plural: 'azureidentitybindings',
        body: { apiVersion: `${GROUP}/${VERSION}`, kind: 'AzureIdentityBinding', metadata: { name: `${name}-binding` }, spec: { azureIdentity: name, selector: name } },
      });
      return { name, clientId: id.clientId };
    };

    /** Pod POST -> the pod's first 200 with its identity's token, in ms. */
    const firstToken = async (mode: Mode, i: number): Promise<number> => {
      const id = await newIdentity(mode, i);
      const pod = `${id.name}-pod`;
      const started = performance.now();
      await core.createNamespacedPod({
        namespace: ns,
        body: { metadata: { name: pod, labels: { aadpodidbinding: id.name } }, spec: { containers: [{ name: 'app', image: 'bench' }] } },
      });
      const attached = await s.kubelet.waitForPod(`${ns}/${pod}`, 30_000);
      for (;;) {
        const reply = await once(nmiUrl, attached.ip, `${TOKEN_PATH}?api-version=2018-02-01&resource=${encodeURIComponent(RESOURCE)}`, 60_000);
        if (reply.status === 200 && decodeToken((JSON.parse(reply.body) as { access_token: string }).access_token).appid === id.clientId) break;
        if (performance.now() - started > 60_000) throw new Error(`${mode} sample ${i}: no token after 60 s (${reply.status} ${reply.body.slice(0, 200)})`);
        // Only a propagating credential (503) or an AAI not yet Assigned after NMI's own wait gets here.
        await new Promise((r) => setTimeout(r, 20));
      }
      return performance.now() - started;
    };

    const times: Record<Mode, number[]> = { Attached: [], Federated: [] };
    for (let i = 0; i < opts.samples; i++) {
      for (const mode of i % 2 === 0 ? (['Attached', 'Federated'] as const) : (['Federated', 'Attached'] as const)) times[mode].push(await firstToken(mode, i));
    }
    const log = s.azure.requestLog();
    const patches = log.filter((e) => e.operation === 'vmss_patch' || e.operation === 'vm_patch').length;
    const ficPuts = log.filter((e) => e.operation === 'fic_put').length;

    // Warm path: one pod of each mode whose token NMI has cached (the first-token pods of sample 0).
    const podIp = (mode: Mode) => s.kubelet.pods().get(`${ns}/${mode.toLowerCase()}-0-pod`)!.ip;
    const warmPath = `${TOKEN_PATH}?api-version=2018-02-01&resource=${encodeURIComponent(RESOURCE)}`;
    const warm: Record<Mode, LoadResult[]> = { Attached: [], Federated: [] };
    const warm1: Record<Mode, LoadResult[]> = { Attached: [], Federated: [] };
    for (let round = 0; round < opts.rounds; round++) {
      for (const mode of ['Attached', 'Federated'] as const) {
        warm1[mode].push(await load(nmiUrl, podIp(mode), warmPath, 1, opts.durationMs));
        warm[mode].push(await load(nmiUrl, podIp(mode), warmPath, opts.clients, opts.durationMs));
      }
    }
    const loadAfter = loadavg();

    const fmt = (ms: number) => (ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(0)} ms`);
    const att = stats(times.Attached);
    const fed = stats(times.Federated);
    console.log(`federation bench: ${availableParallelism()} cores, load average ${loadBefore.map((l) => l.toFixed(2)).join(' ')} before, ${loadAfter.map((l) => l.toFixed(2)).join(' ')} after`);
    console.log(`emulator latency: VMSS PATCH ${VMSS_PATCH_MS} ms, federated credential PUT ${FIC_PUT_MS} ms; MIC and NMI under tsx, loopback sandbox, 1 node (VMSS)\n`);
    console.log('pod creation -> first token, new identity      attached            federated           target');
    console.log(`  p50 / p99 (n=${opts.samples} each)                    ${`${fmt(att.p50)} / ${fmt(att.p99)}`.padEnd(20)}${`${fmt(fed.p50)} / ${fmt(fed.p99)}`.padEnd(20)}federated p50 <= 1.5 s and < attached`);
    console.log(`  min / max                                    ${`${fmt(att.min)} / ${fmt(att.max)}`.padEnd(20)}${`${fmt(fed.min)} / ${fmt(fed.max)}`.padEnd(20)}`);
    console.log(`  ARM writes in the run: ${patches} VMSS/VM PATCHes (attached samples), ${ficPuts} federated credential PUTs (federated samples)\n`);
    console.log(`warm path (cached token, through NMI)     attached req/s  p50 ms  p99 ms | federated req/s  p50 ms  p99 ms | fed/att`);
    for (const [clients, rows] of [[1, warm1], [opts.clients, warm]] as const) {
      const a = medianRun(rows.Attached);
      const f = medianRun(rows.Federated);
      console.log(
        `  ${String(clients).padStart(3)} clients (median of ${opts.rounds} rounds)     ${a.rps.toFixed(0).padStart(9)} ${a.p50.toFixed(2).padStart(7)} ${a.p99.toFixed(2).padStart(7)} | ${f.rps.toFixed(0).padStart(15)} ${f.p50.toFixed(2).padStart(7)} ${f.p99.toFixed(2).padStart(7)} | ${(f.rps / a.rps).toFixed(2)}` +
          (a.errors + f.errors > 0 ? `  (${a.errors + f.errors} non-200)` : ''),
      );
    }
    console.log('  target: federated within noise of attached');
  } finally {
    await sandbox?.stop();
    await rm(stateDir, { recursive: true, force: true });
  }
}

export default main;

function parseArgs(args: readonly string[]): Options {
  const get = (name: string, fallback: number) => {
    const arg = args.find((a) => a.startsWith(`--${name}=`));
    const value = arg === undefined ? fallback : Number(arg.slice(name.length + 3));
    if (!Number.isInteger(value) || value <= 0) throw new Error(`--${name} must be a positive integer`);
    return value;
  };
  return { samples: get('samples', 12), durationMs: get('duration-ms', 3000), rounds: get('rounds', 3), clients: get('clients', 64) };
}

async function untilLeader(kc: k8s.KubeConfig): Promise<void> {
  const leases = kc.makeApiClient(k8s.CoordinationV1Api);
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      const lease = await leases.readNamespacedLease({ namespace: 'default', name: 'aad-pod-identity-mic' });
      if (lease.spec?.holderIdentity) return;
    } catch {
      // not there yet
    }
    if (Date.now() > deadline) throw new Error('MIC took no leadership within 30 s');
    await new Promise((r) => setTimeout(r, 100));
  }
}

function stats(values: readonly number[]): { p50: number; p99: number; min: number; max: number } {
  const sorted = [...values].sort((a, b) => a - b);
  return { p50: percentile(sorted, 0.5), p99: percentile(sorted, 0.99), min: sorted[0] ?? NaN, max: sorted[sorted.length - 1] ?? NaN };
}
