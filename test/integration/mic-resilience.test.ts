// MIC under failure: the leader killed mid-work (cmd/mic.ts in a child process, SIGKILL) with a standby taking over,
// watch streams dropped and compacted (410) under churn, and ARM answering 429 with Retry-After and 500s.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { eventually, NODES, spawnChildMic, startMicWorld, type ChildMic, type MicWorld } from './mic-world.js';

let w: MicWorld;
let child: ChildMic | undefined;
beforeEach(async () => {
  w = await startMicWorld();
});
afterEach(async () => {
  await child?.dispose();
  child = undefined;
  await w?.stop();
});

/** Identities id0..id(n-1) with one binding each (selector app<i>). */
async function identities(n: number): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    const id = w.msi(`id${i}`);
    ids.push(id.id.toLowerCase());
    await w.createIdentity(`id${i}`, { type: 0, resourceID: id.id, clientID: id.clientId });
    await w.createBinding(`b${i}`, { azureIdentity: `id${i}`, selector: `app${i}` });
  }
  return ids;
}

const nodes = [NODES.vmss0, NODES.vmss1, NODES.vm];

/** Every pod's AAI exists exactly once and is Assigned, and each VM/VMSS has exactly the identities its pods use. */
async function converged(pods: ReadonlyArray<{ name: string; node: string; id: number }>, ids: readonly string[]): Promise<void> {
  const aais = await w.assigned();
  expect(aais.map((a) => a.name).sort()).toEqual(pods.map((p) => `${p.name}-default-id${p.id}`).sort());
  expect(aais.every((a) => a.state === 'Assigned')).toBe(true);
  const want = (onNodes: string[]) => [...new Set(pods.filter((p) => onNodes.includes(p.node)).map((p) => ids[p.id]!))].sort();
  expect(w.vmssIds()).toEqual(want([NODES.vmss0, NODES.vmss1]));
  expect(w.vmIds()).toEqual(want([NODES.vm]));
}

const health = async (url: string): Promise<string> => (await fetch(`${url}/healthz`)).text();

describe('MIC leader failover', () => {
  it('a standby takes over when the leader is killed mid-work and converges with no duplicate AAIs', async () => {
    const ids = await identities(3);
    const a = await spawnChildMic(w, {
      instance: 'mic-a',
      flags: ['--syncRetryDuration=3s', '--identity-assignment-reconcile-interval=1s', '--arm-poll-interval=20ms'],
    });
    child = a;
    await eventually(async () => expect(await health(a.probe)).toBe('Active'), 15_000);
    const b = await w.startMic({ instance: 'mic-b' });
    expect(await health(b.probeUrl)).toBe('Not Active');
    expect(b.isLeader()).toBe(false);

    // Slow VMSS updates keep work in flight when the leader dies.
    w.az.emulator.setLatency('vmss_patch', 1500);
    const pods = Array.from({ length: 9 }, (_, i) => ({ name: `p${i}`, node: nodes[i % 3]!, id: i % 3 }));
    for (const p of pods) await w.createPod(p.name, p.node, `app${p.id}`);
    await eventually(async () => expect((await w.assigned()).length).toBeGreaterThan(0), 10_000);
    a.proc.kill('SIGKILL');

    await eventually(() => expect(b.isLeader()).toBe(true), 10_000);
    w.az.emulator.setLatency('vmss_patch', 0);
    await eventually(() => converged(pods, ids), 15_000);
    expect(await health(b.probeUrl)).toBe('Active');
    const metrics = await (await fetch(b.metricsUrl)).text();
    expect(metrics).toMatch(/aadpodidentity_mic_new_leader_election_count 1/);
  });
});

describe('MIC when the API server misbehaves', () => {
  it('converges through dropped watches and compacted history (410) while pods come and go', async () => {
    const ids = await identities(3);
    await w.startMic();
    const pods: { name: string; node: string; id: number }[] = [];
    for (let i = 0; i < 12; i++) {
      const p = { name: `p${i}`, node: nodes[i % 3]!, id: i % 3 };
      await w.createPod(p.name, p.node, `app${p.id}`);
      pods.push(p);
      if (i % 3 === 2) w.api.server.dropWatches();
      if (i % 4 === 3) {
        w.api.server.compact();
        w.api.server.dropWatches();
      }
    }
    for (const gone of ['p0', 'p4', 'p5']) {
      await w.deletePod(gone);
      pods.splice(pods.findIndex((p) => p.name === gone), 1);
      w.api.server.compact();
      w.api.server.dropWatches();
    }
    await eventually(() => converged(pods, ids), 20_000);
  });
});

describe('MIC when ARM throttles and fails', () => {
  it('waits out 429 Retry-After and retries 500s, losing no assignment once the faults stop', async () => {
    const ids = await identities(3);
    const e = w.az.emulator;
    e.injectFault({ operation: 'vmss_patch', status: 429, retryAfter: 1, count: 3 });
    e.injectFault({ operation: 'vm_patch', status: 500, count: 4 });
    e.injectFault({ operation: 'vmss_get', status: 500, count: 2 });
    await w.startMic();
    const pods = Array.from({ length: 6 }, (_, i) => ({ name: `p${i}`, node: nodes[i % 3]!, id: i % 3 }));
    for (const p of pods) await w.createPod(p.name, p.node, `app${p.id}`);

    await eventually(() => converged(pods, ids), 20_000);
    const log = e.requestLog();
    const statuses = (op: string) => log.filter((r) => r.operation === op).map((r) => r.status);
    expect(statuses('vmss_patch')).toContain(429);
    expect(statuses('vm_patch')).toContain(500);
    // Throttled, MIC waited rather than hammering: 3 refusals, then one PATCH did it.
    expect(statuses('vmss_patch').filter((s) => s < 300)).toHaveLength(1);
  });
});
