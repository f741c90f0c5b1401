// Watch streams of the API emulator through client-node's low-level Watch: ordering, resume from a
// resourceVersion, 410 after compaction, bookmarks, selectors (with objects moving in and out), timeouts.

import * as k8s from '@kubernetes/client-node';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startTestApiServer, type TestApiServer } from '../helpers/apiserver.js';

interface Seen {
  type: string;
  name: string;
  rv: string;
  obj: Record<string, unknown>;
}

async function waitFor(cond: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('API emulator watches', () => {
  let world: TestApiServer;
  let core: k8s.CoreV1Api;
  let watch: k8s.Watch;
  const aborts: AbortController[] = [];

  beforeEach(async () => {
    world = await startTestApiServer({ bookmarkIntervalMs: 100 });
    core = world.kc.makeApiClient(k8s.CoreV1Api);
    watch = new k8s.Watch(world.kc);
  });
  afterEach(async () => {
    for (const a of aborts.splice(0)) a.abort();
    await world.stop();
  });

  async function open(path: string, query: Record<string, string | number | boolean>) {
    const seen: Seen[] = [];
    const ended: { err?: unknown; done: boolean } = { done: false };
    const ctl = await watch.watch(
      path,
      query,
      (type, obj: Record<string, unknown>) => {
        const m = (obj.metadata ?? {}) as { name?: string; resourceVersion?: string };
        seen.push({ type, name: m.name ?? '', rv: m.resourceVersion ?? '', obj });
      },
      (err) => {
        ended.err = err;
        ended.done = true;
      },
    );
    aborts.push(ctl);
    return { seen, ended };
  }

  const pod = (name: string, extra: Partial<k8s.V1Pod> = {}): k8s.V1Pod => ({
    metadata: { name, ...extra.metadata },
    spec: { containers: [{ name: 'c', image: 'x' }], ...extra.spec },
  });

  it('delivers ADDED, MODIFIED and DELETED after the listed resourceVersion, in order', async () => {
    await core.createNamespacedPod({ namespace: 'default', body: pod('before') });
    const list = await core.listNamespacedPod({ namespace: 'default' });
    const w = await open('/api/v1/namespaces/default/pods', { resourceVersion: list.metadata!.resourceVersion! });
    const p = await core.createNamespacedPod({ namespace: 'default', body: pod('w1') });
    await core.replaceNamespacedPod({ name: 'w1', namespace: 'default', body: { ...p, metadata: { ...p.metadata, labels: { x: '1' } } } });
    await core.deleteNamespacedPod({ name: 'w1', namespace: 'default' });
    await waitFor(() => w.seen.length >= 3, 'three events');
    expect(w.seen.map((e) => `${e.type} ${e.name}`)).toEqual(['ADDED w1', 'MODIFIED w1', 'DELETED w1']);
    const rvs = w.seen.map((e) => Number(e.rv));
    expect(rvs).toEqual([...rvs].sort((a, b) => a - b));
    expect(new Set(rvs).size).toBe(3);
    expect(rvs[0]).toBeGreaterThan(Number(list.metadata!.resourceVersion));
  });

  it('replays history from an older resourceVersion and starts with the current state when none is given', async () => {
    const a = await core.createNamespacedPod({ namespace: 'default', body: pod('h1') });
    await core.createNamespacedPod({ namespace: 'default', body: pod('h2') });
    const fromA = await open('/api/v1/namespaces/default/pods', { resourceVersion: a.metadata!.resourceVersion! });
    const fresh = await open('/api/v1/namespaces/default/pods', {});
    await waitFor(() => fromA.seen.length >= 1 && fresh.seen.length >= 2, 'replay');
    expect(fromA.seen.map((e) => `${e.type} ${e.name}`)).toEqual(['ADDED h2']);
    expect(fresh.seen.map((e) => `${e.type} ${e.name}`).sort()).toEqual(['ADDED h1', 'ADDED h2']);
  });

  it('answers a watch from a compacted resourceVersion with an ERROR 410 Expired event and ends it', async () => {
    const p = await core.createNamespacedPod({ namespace: 'default', body: pod('c1') });
    await core.createNamespacedPod({ namespace: 'default', body: pod('c2') });
    world.server.compact();
    const w = await open('/api/v1/namespaces/default/pods', { resourceVersion: p.metadata!.resourceVersion! });
    await waitFor(() => w.ended.done, 'the stream to end');
    expect(w.seen).toHaveLength(1);
    expect(w.seen[0]!.type).toBe('ERROR');
    expect(w.seen[0]!.obj).toMatchObject({ kind: 'Status', status: 'Failure', reason: 'Expired', code: 410 });
  });

  it('sends bookmarks carrying the current resourceVersion only when asked', async () => {
    const withBm = await open('/api/v1/pods', { allowWatchBookmarks: true });
    const without = await open('/api/v1/pods', {});
    const p = await core.createNamespacedPod({ namespace: 'default', body: pod('b1') });
    await waitFor(() => withBm.seen.some((e) => e.type === 'BOOKMARK' && Number(e.rv) >= Number(p.metadata!.resourceVersion)), 'a bookmark');
    const bm = withBm.seen.find((e) => e.type === 'BOOKMARK')!;
    expect(bm.obj).toMatchObject({ kind: 'Pod', apiVersion: 'v1' });
    expect(Object.keys(bm.obj.metadata as object)).toEqual(['resourceVersion']);
    expect(without.seen.every((e) => e.type !== 'BOOKMARK')).toBe(true);
  });

  it('filters watches by spec.nodeName', async () => {
    const w = await open('/api/v1/pods', { fieldSelector: 'spec.nodeName=node-a' });
    await core.createNamespacedPod({ namespace: 'default', body: pod('on-b', { spec: { nodeName: 'node-b', containers: [{ name: 'c', image: 'x' }] } }) });
    await core.createNamespacedPod({ namespace: 'default', body: pod('on-a', { spec: { nodeName: 'node-a', containers: [{ name: 'c', image: 'x' }] } }) });
    await core.deleteNamespacedPod({ name: 'on-a', namespace: 'default' });
    await waitFor(() => w.seen.length >= 2, 'node-a events');
    expect(w.seen.map((e) => `${e.type} ${e.name}`)).toEqual(['ADDED on-a', 'DELETED on-a']);
  });

  it('turns objects entering or leaving a set-based label selector into ADDED and DELETED', async () => {
    const w = await open('/api/v1/namespaces/default/pods', { labelSelector: 'tier in (web,api)' });
    const p = await core.createNamespacedPod({ namespace: 'default', body: pod('mover', { metadata: { name: 'mover', labels: { tier: 'db' } } }) });
    const inSel = await core.patchNamespacedPod({ name: 'mover', namespace: 'default', body: [{ op: 'replace', path: '/metadata/labels/tier', value: 'web' }] });
    await core.patchNamespacedPod({ name: 'mover', namespace: 'default', body: [{ op: 'replace', path: '/metadata/labels/tier', value: 'api' }] });
    const out = await core.patchNamespacedPod({ name: 'mover', namespace: 'default', body: [{ op: 'replace', path: '/metadata/labels/tier', value: 'cache' }] });
    await waitFor(() => w.seen.length >= 3, 'selector transitions');
    expect(w.seen.map((e) => e.type)).toEqual(['ADDED', 'MODIFIED', 'DELETED']);
    expect(w.seen[0]!.rv).toBe(inSel.metadata!.resourceVersion);
    // DELETED carries the last state that matched, at the resourceVersion of the change.
    expect((w.seen[2]!.obj.metadata as { labels: Record<string, string> }).labels.tier).toBe('api');
    expect(w.seen[2]!.rv).toBe(out.metadata!.resourceVersion);
    expect(p.metadata?.labels?.tier).toBe('db');
  });

  it('reads watch and allowWatchBookmarks as the real server does: only absent, 0 and false (any case) are false', async () => {
    const auth = { authorization: `Bearer ${world.kc.getCurrentUser()!.token!}` };
    // A stream or a list: the first line of a watch is an event; a list is one JSON object with items.
    async function kindOf(query: string): Promise<'watch' | 'list'> {
      const ctl = new AbortController();
      aborts.push(ctl);
      const res = await fetch(`${world.server.url}/api/v1/pods?${query}`, { headers: auth, signal: ctl.signal });
      expect(res.status).toBe(200);
      if (res.headers.get('transfer-encoding') === 'chunked' && res.headers.get('content-length') === null) {
        ctl.abort();
        return 'watch';
      }
      const body = (await res.json()) as { kind?: string };
      expect(body.kind).toBe('PodList');
      return 'list';
    }
    for (const v of ['true', 'True', 'TRUE', '1', 'yes', '']) expect([v, await kindOf(`watch=${v}`)]).toEqual([v, 'watch']);
    expect(await kindOf('watch')).toBe('watch');
    for (const v of ['false', 'False', 'FALSE', '0']) expect([v, await kindOf(`watch=${v}`)]).toEqual([v, 'list']);
    expect(await kindOf('limit=5')).toBe('list');

    // Python's client sends allowWatchBookmarks=True.
    const withBm = await open('/api/v1/pods', { allowWatchBookmarks: 'True' });
    const offBm = await open('/api/v1/pods', { allowWatchBookmarks: 'False' });
    const p = await core.createNamespacedPod({ namespace: 'default', body: pod('bool-bm') });
    await waitFor(() => withBm.seen.some((e) => e.type === 'BOOKMARK' && Number(e.rv) >= Number(p.metadata!.resourceVersion)), 'a bookmark');
    await waitFor(() => offBm.seen.some((e) => e.type === 'ADDED'), 'the ADDED event');
    expect(offBm.seen.every((e) => e.type !== 'BOOKMARK')).toBe(true);
  });

  it('ends the stream cleanly after timeoutSeconds, and on dropWatches abruptly', async () => {
    const timed = await open('/api/v1/pods', { timeoutSeconds: 1 });
    await waitFor(() => timed.ended.done, 'the timeout');
    expect(timed.ended.err).toBeNull();

    const dropped = await open('/api/v1/pods', {});
    expect(world.server.openWatches()).toBe(1);
    world.server.dropWatches();
    await waitFor(() => dropped.ended.done, 'the drop');
    expect(dropped.ended.err).toBeInstanceOf(Error);
  });

  it('injects faults on watch requests only when told so', async () => {
    world.server.injectFault({ pathPrefix: '/api/v1/pods', status: 500, count: 1, watch: true });
    const list = await core.listPodForAllNamespaces();
    expect(list.items).toEqual([]);
    const failed = await open('/api/v1/pods', {});
    await waitFor(() => failed.ended.done, 'the failed watch to end');
    expect((failed.ended.err as { statusCode?: number }).statusCode).toBe(500);
    const again = await open('/api/v1/pods', {});
    expect(again.ended.done).toBe(false);
    const log = world.server.requestLog().filter((e) => e.path === '/api/v1/pods');
    expect(log.map((e) => [e.query.includes('watch=true'), e.status])).toEqual([[false, 200], [true, 500], [true, 200]]);
  });
});
