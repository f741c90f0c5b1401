// The sandbox without root: loopback pod IPs (127.0.1.x) that pod processes bind through a preload, NMI on its own
// port without iptables. Runs everywhere (no skip): it is what a newcomer's `npm run sandbox -- --demo` uses.

import { execFile } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually, REPO_ROOT, startTestSandbox, type TestSandbox } from '../helpers/sandbox.js';

describe('the loopback sandbox', () => {
  let t: TestSandbox;

  beforeAll(async () => {
    t = await startTestSandbox({ network: 'loopback', nodes: 2, mic: { replicas: 1 } });
  }, 120_000);

  afterAll(async () => {
    await t?.stop();
  }, 60_000);

  it('tells pods apart by their loopback address: each gets its own identity, an unbound pod none', async () => {
    const [a, b] = [t.sandbox.createIdentity('loop-a'), t.sandbox.createIdentity('loop-b')];
    await t.createIdentity('default', 'loop-a', { type: 0, resourceID: a.id, clientID: a.clientId });
    await t.createIdentity('default', 'loop-b', { type: 0, resourceID: b.id, clientID: b.clientId });
    await t.createBinding('default', 'loop-a', 'loop-a', 'loop-a');
    await t.createBinding('default', 'loop-b', 'loop-b', 'loop-b');
    const node = t.sandbox.endpoints.nodes[0]!.name;
    await t.startPod('default', 'pod-a', 'loop-a', { nodeName: node });
    await t.startPod('default', 'pod-b', 'loop-b', { nodeName: node });
    await t.startPod('default', 'pod-none', undefined, { nodeName: node });
    const ips = ['pod-a', 'pod-b', 'pod-none'].map((p) => t.sandbox.kubelet.pods().get(`default/${p}`)?.ip);
    expect(new Set(ips).size).toBe(3);
    for (const ip of ips) expect(ip).toMatch(/^127\.0\.\d+\.\d+$/);
    await eventually(async () => (await t.assignedFor('default', 'pod-b')).some((x) => (x.status as { status?: string } | undefined)?.status === 'Assigned'), 30_000, 'pod-b Assigned');

    expect((await t.podToken('default', 'pod-a')).claims?.appid).toBe(a.clientId);
    expect((await t.podToken('default', 'pod-b')).claims?.appid).toBe(b.clientId);
    expect((await t.podToken('default', 'pod-none', { maxRetries: 0 })).ok).toBe(false);
  }, 60_000);

  it('reports a started pod Running with ready containers, and removes a deleted pod and frees its address', async () => {
    await t.startPod('default', 'short-lived');
    expect(t.sandbox.kubelet.pods().has('default/short-lived')).toBe(true);
    const status = (await t.core.readNamespacedPod({ namespace: 'default', name: 'short-lived' })).status;
    expect(status?.phase).toBe('Running');
    expect(status?.containerStatuses?.length).toBeGreaterThan(0);
    expect(status?.containerStatuses?.every((c) => c.ready)).toBe(true);
    await t.deletePod('default', 'short-lived');
    await eventually(() => !t.sandbox.kubelet.pods().has('default/short-lived'), 10_000, 'pod torn down');
  });
});

describe('npm run sandbox -- --demo --network loopback', () => {
  it('walks through the demo and exits 0', async () => {
    const { code, stdout } = await new Promise<{ code: number; stdout: string }>((resolve) => {
      execFile(process.execPath, ['--import', 'tsx', 'cmd/sandbox.ts', '--demo', '--network', 'loopback', '--nodes', '1'], { cwd: REPO_ROOT, timeout: 150_000 }, (error, out) =>
        resolve({ code: error ? Number((error as { code?: number }).code ?? 1) : 0, stdout: out }),
      );
    });
    expect(stdout).toContain('Demo passed: every step did what it said.');
    expect(stdout).not.toContain('✗');
    expect(code).toBe(0);
  }, 160_000);
});
