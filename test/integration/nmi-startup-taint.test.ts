// Issue 10 item 13, the bootstrap window: NMI removes its node's startup taint only once its iptables rules are in
// place and its caches synced, and touches nothing else. Against the API emulator (whose node taint handling is
// checked here too), NMI in-process; the iptables case runs real iptables in a network namespace of the test's own.

import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ApiException, type CoreV1Api, type V1Taint } from '@kubernetes/client-node';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { patchOptions } from '../../src/kube/index.js';
import { startNmi, type NmiHandle } from '../../src/nmi/nmi.js';
import { createNodeNetwork, shouldSkipNetns, type NodeNetwork } from '../helpers/netns.js';
import { nmiConfig, nmiTestDeps, NODE, startNmiWorld, type NmiWorld } from '../helpers/nmi-world.js';

const KEY = 'aadpodidentity.k8s.io/nmi-not-ready';
const logger = pino({ level: process.env['NMI_TEST_LOG'] ?? 'silent' });

const taintsOf = async (core: CoreV1Api, name: string) =>
  ((await core.readNode({ name })).spec?.taints ?? []).map((t: V1Taint) => `${t.key}=${t.value ?? ''}:${t.effect}`);
const statusOf = async (p: Promise<unknown>) => {
  try {
    await p;
    return 200;
  } catch (error) {
    if (error instanceof ApiException) return { code: error.code, body: JSON.parse(String(error.body)) as Record<string, unknown> };
    throw error;
  }
};
const eventually = async (check: () => boolean | Promise<boolean>, what: string, timeoutMs = 20_000) => {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what} not reached within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
};
const withTimeout = <T>(p: Promise<T>, ms: number, what: string) =>
  Promise.race([p, new Promise<never>((_r, reject) => setTimeout(() => reject(new Error(`${what} not settled within ${ms} ms`)), ms).unref())]);

describe('NMI and the node startup taint', () => {
  let world: NmiWorld | undefined;
  let nmi: NmiHandle | undefined;
  let net: NodeNetwork | undefined;
  let dir: string | undefined;

  afterEach(async () => {
    await nmi?.stop();
    await world?.stop();
    await net?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
    nmi = world = net = dir = undefined;
  });

  const taintNodes = async (w: NmiWorld) => {
    // A strategic merge patch of spec.taints replaces the whole list (Taint has no merge key), as on a real API server.
    await w.core.patchNode(
      { name: NODE, body: { spec: { taints: [{ key: KEY, value: 'true', effect: 'NoSchedule' }, { key: 'dedicated', value: 'gpu', effect: 'NoExecute' }] } } },
      patchOptions('strategic'),
    );
    await w.core.createNode({ body: { metadata: { name: 'node-b' }, spec: { taints: [{ key: KEY, effect: 'NoExecute' }] } } });
  };
  const nodePatches = (w: NmiWorld) => w.api.server.requestLog().filter((e) => e.method === 'PATCH' && e.path.startsWith('/api/v1/nodes'));

  it('keeps the taint while the caches have not synced, then removes only its key from its own node', async () => {
    world = await startNmiWorld({ startNmi: false });
    await taintNodes(world);
    const before = nodePatches(world).length;
    world.api.server.injectFault({ pathPrefix: '/api/v1/pods', method: 'GET', watch: false, status: 500, count: 2 });
    nmi = await startNmi({ ...nmiConfig(world.imds.url), startupTaint: KEY }, { kubeConfig: world.kc, logger, ...nmiTestDeps(world.azure.emulator.caPem) });

    const failedLists = () => world!.api.server.requestLog().filter((e) => e.path === '/api/v1/pods' && e.status === 500).length;
    await eventually(() => failedLists() >= 1, 'a failed pod list');
    // Read the node, then confirm NMI was still not active: the taint was there while the caches were not synced.
    expect(await taintsOf(world.core, NODE)).toContain(`${KEY}=true:NoSchedule`);
    expect(nmi.active()).toBe(false);

    expect(await withTimeout(nmi.startupTaint(), 20_000, 'taint removal')).toBe('removed');
    expect(nmi.active()).toBe(true);
    expect(await taintsOf(world.core, NODE)).toEqual(['dedicated=gpu:NoExecute']);
    expect(await taintsOf(world.core, 'node-b')).toEqual([`${KEY}=:NoExecute`]);
    expect(nodePatches(world).slice(before).map((e) => e.path)).toEqual([`/api/v1/nodes/${NODE}`]);
  });

  it('leaves a node without the taint untouched, and does nothing when the flag is empty', async () => {
    world = await startNmiWorld({ startNmi: false });
    const rv = (await world.core.readNode({ name: NODE })).metadata?.resourceVersion;
    nmi = await startNmi({ ...nmiConfig(world.imds.url), startupTaint: KEY }, { kubeConfig: world.kc, logger, ...nmiTestDeps(world.azure.emulator.caPem) });
    expect(await withTimeout(nmi.startupTaint(), 20_000, 'taint check')).toBe('absent');
    await nmi.stop();

    await taintNodes(world);
    nmi = await startNmi({ ...nmiConfig(world.imds.url), startupTaint: '' }, { kubeConfig: world.kc, logger, ...nmiTestDeps(world.azure.emulator.caPem) });
    await eventually(() => nmi!.active(), 'NMI active');
    expect(await nmi.startupTaint()).toBe('absent');
    expect(await taintsOf(world.core, NODE)).toContain(`${KEY}=true:NoSchedule`);
    expect(nodePatches(world).map((e) => e.path)).toEqual([`/api/v1/nodes/${NODE}`]); // the test's own patch only
    expect(rv).toBeDefined();
  });

  it('retries when the node cannot be read, and removes the taint once it can', async () => {
    world = await startNmiWorld({ startNmi: false });
    await taintNodes(world);
    world.api.server.injectFault({ pathPrefix: `/api/v1/nodes/${NODE}`, method: 'GET', status: 503, count: 2 });
    nmi = await startNmi({ ...nmiConfig(world.imds.url), startupTaint: KEY }, { kubeConfig: world.kc, logger, ...nmiTestDeps(world.azure.emulator.caPem) });
    expect(await withTimeout(nmi.startupTaint(), 20_000, 'taint removal')).toBe('removed');
    const gets = world.api.server.requestLog().filter((e) => e.method === 'GET' && e.path === `/api/v1/nodes/${NODE}`);
    expect(gets.map((e) => e.status)).toEqual([503, 503, 200]);
    expect(await taintsOf(world.core, NODE)).toEqual(['dedicated=gpu:NoExecute']);
  });

  const skipNetns = shouldSkipNetns('startup taint behind real iptables');
  it.skipIf(skipNetns)('keeps the taint while the iptables rules cannot be installed, and removes it once they are in place', async () => {
    world = await startNmiWorld({ startNmi: false });
    await taintNodes(world);
    net = await createNodeNetwork();
    dir = mkdtempSync(join(tmpdir(), 'nmi-taint-'));
    const gate = join(dir, 'gate-open');
    const attempts = join(dir, 'attempts');
    // iptables behind a gate the test opens: closed, it fails as iptables does when the xtables lock stays taken.
    for (const [name, real] of [['ipt', 'iptables'], ['ipt-restore', 'iptables-restore']] as const) {
      const script = join(dir, name);
      writeFileSync(script, `#!/bin/sh\necho "$0" >> ${attempts}\n[ -e ${gate} ] || { echo "Another app is currently holding the xtables lock (test gate closed)" >&2; exit 4; }\nexec ip netns exec ${net.nodeNs} ${real} "$@"\n`);
      chmodSync(script, 0o755);
    }
    nmi = await startNmi(
      { ...nmiConfig(world.imds.url), manageIptables: true, iptablesBinary: join(dir, 'ipt'), startupTaint: KEY },
      { kubeConfig: world.kc, logger, ...nmiTestDeps(world.azure.emulator.caPem) },
    );
    const failures = () => (existsSync(attempts) ? readFileSync(attempts, 'utf8').trim().split('\n').length : 0);
    await eventually(() => failures() >= 2, 'two failed iptables syncs');
    expect(await taintsOf(world.core, NODE)).toContain(`${KEY}=true:NoSchedule`);
    expect(nmi.active()).toBe(false);

    writeFileSync(gate, '');
    expect(await withTimeout(nmi.startupTaint(), 30_000, 'taint removal')).toBe('removed');
    const chain = (await net.exec(net.nodeNs, ['iptables', '-w', '5', '-t', 'nat', '-S', 'aad-metadata'])).stdout;
    expect(chain).toContain('-j DNAT --to-destination 127.0.0.1:');
    expect(await taintsOf(world.core, NODE)).toEqual(['dedicated=gpu:NoExecute']);
  }, 60_000);
});

describe('API emulator: node spec.taints', () => {
  let world: NmiWorld | undefined;
  afterEach(async () => {
    await world?.stop();
    world = undefined;
  });

  it('replaces the list on merge and strategic merge patches, and answers 422 to a failed JSON patch test', async () => {
    world = await startNmiWorld({ startNmi: false });
    const core = world.core;
    await core.patchNode({ name: NODE, body: { spec: { taints: [{ key: 'a', effect: 'NoSchedule' }, { key: 'b', effect: 'NoSchedule' }] } } }, patchOptions('merge'));
    await core.patchNode({ name: NODE, body: { spec: { taints: [{ key: 'c', effect: 'NoExecute' }] } } }, patchOptions('strategic'));
    expect(await taintsOf(core, NODE)).toEqual(['c=:NoExecute']);
    const failed = await statusOf(
      core.patchNode({ name: NODE, body: [{ op: 'test', path: '/spec/taints/0/key', value: 'a' }, { op: 'remove', path: '/spec/taints/0' }] }, patchOptions('json')),
    );
    expect(failed).toMatchObject({ code: 422, body: { kind: 'Status', reason: 'Invalid' } });
    expect(await taintsOf(core, NODE)).toEqual(['c=:NoExecute']);
    await core.patchNode({ name: NODE, body: [{ op: 'test', path: '/spec/taints/0/key', value: 'c' }, { op: 'remove', path: '/spec/taints/0' }] }, patchOptions('json'));
    expect(await taintsOf(core, NODE)).toEqual([]);
  });

  it('validates taints as the API server does: key, effect, and unique key+effect', async () => {
    world = await startNmiWorld({ startNmi: false });
    const patch = (taints: object[]) => statusOf(world!.core.patchNode({ name: NODE, body: { spec: { taints } } }, patchOptions('merge')));
    const causes = (r: Awaited<ReturnType<typeof statusOf>>) =>
      typeof r === 'number' ? [] : ((r.body.details as { causes?: Array<{ reason: string; field: string }> }).causes ?? []).map((c) => `${c.reason} ${c.field}`);
    expect(causes(await patch([{ key: 'a', effect: 'NoSchedule' }, { key: 'a', value: 'x', effect: 'NoSchedule' }]))).toEqual(['FieldValueDuplicate spec.taints[1]']);
    expect(causes(await patch([{ key: 'a' }]))).toEqual(['FieldValueRequired spec.taints[0].effect']);
    expect(causes(await patch([{ key: 'a', effect: 'Sometimes' }]))).toEqual(['FieldValueNotSupported spec.taints[0].effect']);
    expect(causes(await patch([{ key: 'bad key', effect: 'NoSchedule' }]))).toEqual(['FieldValueInvalid spec.taints[0].key']);
    expect(await patch([{ key: 'a', effect: 'NoSchedule' }, { key: 'a', effect: 'NoExecute' }])).toBe(200);
  });
});
