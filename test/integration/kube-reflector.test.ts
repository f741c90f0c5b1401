import { CoreV1Api, type KubeConfig, type V1Pod } from '@kubernetes/client-node';
import { afterEach, describe, expect, it } from 'vitest';
import { startApiServer, type ApiServerHandle } from '../../src/sandbox/apiserver/index.js';
import { loadKubeConfig } from '../../src/kube/kubeconfig.js';
import { listAll, listPage } from '../../src/kube/list.js';
import { ManualClock } from '../../src/common/clock.js';
import { Reflector, type ReflectorEvent } from '../../src/kube/reflector.js';
import { Store, type KubeObject } from '../../src/kube/store.js';

interface Pod extends KubeObject {
  spec?: { nodeName?: string };
  status?: { podIP?: string };
}

interface World {
  server: ApiServerHandle;
  kc: KubeConfig;
  core: CoreV1Api;
}

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

async function world(): Promise<World> {
  const server = await startApiServer({ bookmarkIntervalMs: 200 });
  cleanups.push(() => server.stop());
  const kc = loadKubeConfig({ kubeconfigYaml: server.kubeconfigYaml, userAgent: 'kube-reflector-test' });
  return { server, kc, core: kc.makeApiClient(CoreV1Api) };
}

function reflect(w: World, opts: Partial<ConstructorParameters<typeof Reflector<Pod>>[0]> = {}): {
  r: Reflector<Pod>;
  seen: string[];
  lifecycle: ReflectorEvent[];
} {
  const seen: string[] = [];
  const lifecycle: ReflectorEvent[] = [];
  const r = new Reflector<Pod>({
    kubeConfig: w.kc,
    path: '/api/v1/pods',
    watchTimeoutSeconds: 30,
    inactivityTimeoutMs: 5_000,
    backoff: { initialMs: 200, maxMs: 1_000 },
    handlers: {
      onAdd: (p) => seen.push(`add ${p.metadata?.name} ${p.metadata?.uid}`),
      onUpdate: (_o, p) => seen.push(`update ${p.metadata?.name}`),
      onDelete: (p) => seen.push(`delete ${p.metadata?.name} ${p.metadata?.uid}`),
    },
    onEvent: (e) => lifecycle.push(e),
    ...opts,
  });
  cleanups.push(() => r.stop());
  return { r, seen, lifecycle };
}

async function createPod(core: CoreV1Api, name: string, nodeName = 'node-a', ns = 'default'): Promise<V1Pod> {
  return core.createNamespacedPod({
    namespace: ns,
    body: { metadata: { name, namespace: ns, labels: { app: 'x' } }, spec: { nodeName, containers: [{ name: 'c', image: 'busybox' }] } },
  });
}

async function waitFor(cond: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** name -> uid of what the server has now, read independently of the reflector. */
async function serverPods(w: World, fieldSelector?: string): Promise<Record<string, string>> {
  const list = await listAll<Pod>(w.kc, '/api/v1/pods', { fieldSelector });
  return Object.fromEntries(list.items.map((p) => [`${p.metadata?.namespace}/${p.metadata?.name}`, p.metadata?.uid ?? '']));
}

function storePods(store: Store<Pod>): Record<string, string> {
  return Object.fromEntries(store.list().map((p) => [`${p.metadata?.namespace}/${p.metadata?.name}`, p.metadata?.uid ?? '']));
}

const watchRequests = (w: World): Array<{ query: string; status: number }> =>
  w.server.requestLog().filter((e) => e.method === 'GET' && e.path === '/api/v1/pods' && /(^|&)watch=(true|1)/.test(e.query));

describe('Reflector against the API emulator', () => {
  it('lists, then receives ADDED, MODIFIED and DELETED from a bookmark-enabled watch with a server timeout', async () => {
    const w = await world();
    const p1 = await createPod(w.core, 'p1');
    const { r, seen } = reflect(w);
    r.start();
    expect(await r.synced()).toBe(true);
    expect(r.hasSynced).toBe(true);
    expect(seen).toEqual([`add p1 ${p1.metadata?.uid}`]);
    // listed objects are plain JSON like watched ones (no Date instances)
    expect(typeof r.store.get('default/p1')?.metadata?.creationTimestamp).toBe('string');
    expect(r.store.get('default/p1')?.kind).toBe('Pod');

    await waitFor(() => w.server.openWatches() === 1, 'the watch to open');
    const p2 = await createPod(w.core, 'p2');
    await waitFor(() => r.store.has('default/p2'), 'p2 in the store');
    await w.core.patchNamespacedPod(
      { name: 'p1', namespace: 'default', body: [{ op: 'add', path: '/metadata/labels/extra', value: 'yes' }] },
    );
    await waitFor(() => r.store.get('default/p1')?.metadata?.labels?.extra === 'yes', 'p1 update in the store');
    await w.core.deleteNamespacedPod({ name: 'p1', namespace: 'default' });
    await waitFor(() => !r.store.has('default/p1'), 'p1 removed from the store');

    expect(seen).toEqual([`add p1 ${p1.metadata?.uid}`, `add p2 ${p2.metadata?.uid}`, 'update p1', `delete p1 ${p1.metadata?.uid}`]);
    expect(storePods(r.store)).toEqual(await serverPods(w));

    const watches = watchRequests(w);
    expect(watches.length).toBeGreaterThanOrEqual(1);
    const q = new URLSearchParams(watches[0].query);
    expect(q.get('allowWatchBookmarks')).toBe('true');
    expect(q.get('timeoutSeconds')).toBe('30');
    expect(q.get('resourceVersion')).not.toBe('');
  });

  it('records when it last heard from the API server: advanced by bookmarks, frozen while the watch is silent, caught up after', async () => {
    const w = await world();
    const { r } = reflect(w);
    expect(r.lastHeardMs).toBe(0);
    r.start();
    expect(await r.synced()).toBe(true);
    const afterList = r.lastHeardMs;
    expect(afterList).toBeGreaterThan(0);
    // No object changes: only bookmarks (every 200 ms here) can move it.
    await waitFor(() => r.lastHeardMs > afterList, 'a bookmark to be heard');

    w.server.holdWatches();
    await createPod(w.core, 'unheard');
    const frozen = r.lastHeardMs;
    await waitFor(() => Date.now() - frozen > 1_000, 'five bookmark intervals of silence');
    expect(r.lastHeardMs).toBe(frozen);
    expect(r.store.has('default/unheard')).toBe(false);

    w.server.resumeWatches();
    await waitFor(() => r.store.has('default/unheard'), 'the held event delivered');
    expect(r.lastHeardMs).toBeGreaterThan(frozen);
  });

  it('keeps only the view its transform makes, indexed, hands views to handlers, and drops what the transform rejects', async () => {
    const w = await world();
    await createPod(w.core, 'p1', 'node-a');
    await createPod(w.core, 'p2', 'node-b');
    interface View {
      readonly name: string;
      readonly node: string;
    }
    const calls: string[] = [];
    const transformed: string[] = [];
    let lists = 0;
    const r = new Reflector<Pod, View>({
      onEvent: (e) => {
        if (e.type === 'listed') lists++;
      },
      kubeConfig: w.kc,
      path: '/api/v1/pods',
      watchTimeoutSeconds: 30,
      // Pods on node-x are not of interest.
      transform: (p) => {
        transformed.push(p.metadata?.name ?? '');
        const node = p.spec?.nodeName ?? '';
        return node === 'node-x' ? undefined : { name: p.metadata?.name ?? '', node };
      },
      indexers: { byNode: (v) => [v.node] },
      handlers: {
        onAdd: (v, key) => calls.push(`add ${key} ${v.node}`),
        onUpdate: (o, v, key) => calls.push(`update ${key} ${o.node}->${v.node}`),
        onDelete: (v, key) => calls.push(`delete ${key} ${v.node}`),
      },
    });
    cleanups.push(() => r.stop());
    r.start();
    expect(await r.synced()).toBe(true);
    expect(r.store.get('default/p1')).toEqual({ name: 'p1', node: 'node-a' });
    expect(r.store.byIndex('byNode', 'node-b').map((v) => v.name)).toEqual(['p2']);
    expect(r.store.meta('default/p1')?.uid).toMatch(/./);

    await waitFor(() => w.server.openWatches() === 1, 'the watch to open');
    await createPod(w.core, 'px', 'node-x');
    await createPod(w.core, 'p3', 'node-b');
    await waitFor(() => r.store.has('default/p3'), 'p3 in the store');
    expect(r.store.has('default/px')).toBe(false);
    expect(r.store.byIndex('byNode', 'node-b').map((v) => v.name).sort()).toEqual(['p2', 'p3']);
    await w.core.patchNamespacedPod({ name: 'p1', namespace: 'default', body: [{ op: 'add', path: '/metadata/labels/extra', value: 'yes' }] });
    await w.core.deleteNamespacedPod({ name: 'p2', namespace: 'default' });
    await waitFor(() => !r.store.has('default/p2'), 'p2 removed');
    expect(r.store.byIndex('byNode', 'node-b').map((v) => v.name)).toEqual(['p3']);
    expect(calls).toEqual([
      'add default/p1 node-a',
      'add default/p2 node-b',
      'add default/p3 node-b',
      'update default/p1 node-a->node-a',
      'delete default/p2 node-b',
    ]);

    // A relist transforms only what changed since it was last seen.
    transformed.length = 0;
    w.server.injectFault({ method: 'GET', pathPrefix: '/api/v1/pods', watch: true, status: 410, count: 1 });
    w.server.dropWatches();
    await waitFor(() => lists === 2, 'the relist');
    expect(transformed).toEqual(['px']); // p1 and p3 kept their views; px is not in the store, so it is read again
    await createPod(w.core, 'p4', 'node-a');
    await waitFor(() => r.store.has('default/p4'), 'p4 after the relist');
  });

  it('reads time only from its injected clock: list retries sleep on it and lastHeardMs is its time', async () => {
    const w = await world();
    const clock = new ManualClock(1_000_000);
    let attempts = 0;
    const { r } = reflect(w, {
      clock,
      backoff: { initialMs: 5_000, maxMs: 5_000, jitter: 0 },
      list: async (o) => {
        attempts++;
        if (attempts <= 2) throw new Error('list refused');
        return listPage<Pod>(w.kc, '/api/v1/pods', o);
      },
    });
    r.start();
    await waitFor(() => attempts === 1 && clock.pendingSleeps() === 1, 'the first failure to sleep on the clock');
    await clock.advance(4_999);
    expect(attempts).toBe(1);
    await clock.advance(1);
    await waitFor(() => attempts === 2 && clock.pendingSleeps() === 1, 'the second failure to sleep');
    await clock.advance(5_000);
    expect(await r.synced()).toBe(true);
    expect(r.lastHeardMs).toBe(1_010_000);
  });

  it('re-watches from the last resourceVersion when the server ends the watch, without relisting', async () => {
    const w = await world();
    const { r, seen } = reflect(w, { watchTimeoutSeconds: 1, minWatchDurationMs: 100 });
    r.start();
    await r.synced();
    await waitFor(() => watchRequests(w).length >= 2, 'a second watch after the server timeout');
    const p = await createPod(w.core, 'late');
    await waitFor(() => r.store.has('default/late'), 'late pod in the store');
    expect(seen).toEqual([`add late ${p.metadata?.uid}`]);
    const lists = w.server.requestLog().filter((e) => e.path === '/api/v1/pods' && !/watch=/.test(e.query));
    expect(lists).toHaveLength(1);
    const rvs = watchRequests(w).map((e) => new URLSearchParams(e.query).get('resourceVersion'));
    expect(rvs.every((v) => v !== null && v !== '')).toBe(true);
  });

  it('relists after 410 Gone and delivers what it missed as a consistent diff (gone -> delete, new uid -> delete + add)', async () => {
    const w = await world();
    const keep = await createPod(w.core, 'keep');
    const old = await createPod(w.core, 'same-name');
    const gone = await createPod(w.core, 'gone');
    const { r, seen, lifecycle } = reflect(w);
    r.start();
    await r.synced();
    await waitFor(() => w.server.openWatches() === 1, 'the watch to open');
    seen.length = 0;

    // Keep the reflector away for a while: kill its watch and fail its next two attempts,
    // change the world meanwhile, and forget the history so its resourceVersion is too old.
    w.server.injectFault({ method: 'GET', pathPrefix: '/api/v1/pods', watch: true, status: 500, count: 2 });
    w.server.dropWatches();
    await w.core.deleteNamespacedPod({ name: 'same-name', namespace: 'default' });
    const renewed = await createPod(w.core, 'same-name');
    await w.core.deleteNamespacedPod({ name: 'gone', namespace: 'default' });
    const added = await createPod(w.core, 'added');
    w.server.compact();

    await waitFor(() => lifecycle.some((e) => e.type === 'relist' && e.reason === 'gone'), 'a relist after 410');
    await waitFor(() => r.store.has('default/added'), 'the relisted state');
    expect(storePods(r.store)).toEqual(await serverPods(w));
    expect(r.store.get('default/keep')?.metadata?.uid).toBe(keep.metadata?.uid);
    expect([...seen].sort()).toEqual(
      [
        `delete gone ${gone.metadata?.uid}`,
        `delete same-name ${old.metadata?.uid}`,
        `add same-name ${renewed.metadata?.uid}`,
        `add added ${added.metadata?.uid}`,
      ].sort(),
    );
    // the replaced object's delete comes before its add
    expect(seen.indexOf(`delete same-name ${old.metadata?.uid}`)).toBeLessThan(seen.indexOf(`add same-name ${renewed.metadata?.uid}`));
    expect(watchRequests(w).some((e) => e.status === 500)).toBe(true);

    // and it keeps watching afterwards
    await createPod(w.core, 'after');
    await waitFor(() => r.store.has('default/after'), 'a pod created after the relist');
  });

  it('relists when the watch request itself is answered with HTTP 410', async () => {
    const w = await world();
    const { r, lifecycle } = reflect(w);
    r.start();
    await r.synced();
    await waitFor(() => w.server.openWatches() === 1, 'the watch to open');
    w.server.injectFault({ method: 'GET', pathPrefix: '/api/v1/pods', watch: true, status: 410, count: 1 });
    w.server.dropWatches();
    await waitFor(() => lifecycle.filter((e) => e.type === 'listed').length === 2, 'a second list');
    expect(lifecycle.some((e) => e.type === 'relist' && e.reason === 'gone')).toBe(true);
    // the 410 itself is not a failure (the dropped socket may be)
    expect(lifecycle.some((e) => e.type === 'error' && (e.error as { statusCode?: number }).statusCode === 410)).toBe(false);
    const p = await createPod(w.core, 'after-410');
    await waitFor(() => r.store.get('default/after-410')?.metadata?.uid === p.metadata?.uid, 'the watch to resume');
  });

  it('backs off and recovers after 500s on the watch and on the list', async () => {
    const w = await world();
    w.server.injectFault({ method: 'GET', pathPrefix: '/api/v1/pods', watch: false, status: 503, count: 2 });
    const { r, lifecycle } = reflect(w, { backoff: { initialMs: 100, maxMs: 1_000 } });
    r.start();
    expect(await r.synced()).toBe(true);
    expect(lifecycle.filter((e) => e.type === 'error' && e.phase === 'list')).toHaveLength(2);

    await waitFor(() => w.server.openWatches() === 1, 'the watch to open');
    w.server.injectFault({ method: 'GET', pathPrefix: '/api/v1/pods', watch: true, status: 500, count: 3 });
    w.server.dropWatches();
    await waitFor(() => watchRequests(w).filter((e) => e.status === 500).length === 3, 'three failed watches');
    const p = await createPod(w.core, 'after-faults');
    await waitFor(() => r.store.has('default/after-faults'), 'recovery');
    expect(r.store.get('default/after-faults')?.metadata?.uid).toBe(p.metadata?.uid);
    const errors = lifecycle.filter((e): e is Extract<ReflectorEvent, { type: 'error' }> => e.type === 'error' && e.phase === 'watch');
    // three 500s, each followed by a growing delay (a dropped socket may look like a clean end of stream)
    const fromFaults = errors.filter((e) => (e.error as { statusCode?: number }).statusCode === 500);
    expect(fromFaults).toHaveLength(3);
    const delays = fromFaults.map((e) => e.retryInMs);
    expect(delays[1]).toBeGreaterThan(delays[0]);
    expect(delays[2]).toBeGreaterThan(delays[1]);
  });

  it('sends no request after stop(), even when stopped during a retry delay', async () => {
    const w = await world();
    const { r } = reflect(w, { backoff: { initialMs: 300, maxMs: 300 } });
    r.start();
    await r.synced();
    await waitFor(() => w.server.openWatches() === 1, 'the watch to open');
    w.server.injectFault({ method: 'GET', pathPrefix: '/api/v1/pods', watch: true, status: 500, count: 100 });
    w.server.dropWatches();
    await waitFor(() => watchRequests(w).some((e) => e.status === 500), 'a failed watch (now in backoff)');
    await r.stop();
    const count = w.server.requestLog().length;
    await new Promise((res) => setTimeout(res, 800));
    expect(w.server.requestLog().length).toBe(count);
    expect(w.server.openWatches()).toBe(0);
  });

  it('closes its open watch on stop()', async () => {
    const w = await world();
    const { r } = reflect(w);
    r.start();
    await r.synced();
    await waitFor(() => w.server.openWatches() === 1, 'the watch to open');
    await r.stop();
    await waitFor(() => w.server.openWatches() === 0, 'the watch to close');
    const count = w.server.requestLog().length;
    await createPod(w.core, 'after-stop');
    await new Promise((res) => setTimeout(res, 300));
    expect(w.server.requestLog().length).toBe(count + 1); // only our own create
  });

  it('watches only the pods of one node with a field selector, end to end', async () => {
    const w = await world();
    await createPod(w.core, 'a1', 'node-a');
    await createPod(w.core, 'b1', 'node-b');
    const store = new Store<Pod>({ node: (p) => (p.spec?.nodeName ? [p.spec.nodeName] : []) });
    const { r, seen } = reflect(w, { fieldSelector: 'spec.nodeName=node-a', store });
    r.start();
    await r.synced();
    await waitFor(() => w.server.openWatches() === 1, 'the watch to open');
    await createPod(w.core, 'b2', 'node-b');
    await createPod(w.core, 'a2', 'node-a');
    await waitFor(() => r.store.has('default/a2'), 'a2 in the store');
    expect(Object.keys(storePods(r.store)).sort()).toEqual(['default/a1', 'default/a2']);
    expect(store.byIndex('node', 'node-b')).toEqual([]);
    expect(seen.map((s) => s.split(' ').slice(0, 2).join(' '))).toEqual(['add a1', 'add a2']);
    const log = w.server.requestLog().filter((e) => e.path === '/api/v1/pods' && e.method === 'GET');
    expect(log.every((e) => new URLSearchParams(e.query).get('fieldSelector') === 'spec.nodeName=node-a')).toBe(true);
  });

  it('reads a large list in pages with limit and continue', async () => {
    const w = await world();
    for (let i = 0; i < 5; i++) await createPod(w.core, `p${i}`);
    const { r } = reflect(w, { pageSize: 2 });
    r.start();
    await r.synced();
    expect(r.store.size).toBe(5);
    const lists = w.server.requestLog().filter((e) => e.path === '/api/v1/pods' && !/watch=/.test(e.query));
    expect(lists).toHaveLength(3);
    expect(new URLSearchParams(lists[1].query).get('continue')).toBeTruthy();
  });

  it('survives throwing handlers without an unhandled rejection and keeps the store up to date', async () => {
    const w = await world();
    const unhandled: unknown[] = [];
    const onUnhandled = (e: unknown): void => void unhandled.push(e);
    process.on('unhandledRejection', onUnhandled);
    cleanups.push(async () => void process.off('unhandledRejection', onUnhandled));
    await createPod(w.core, 'x1');
    const { r } = reflect(w, {
      handlers: {
        onAdd: () => {
          throw new Error('handler bug');
        },
        onDelete: async () => {
          throw new Error('async handler bug');
        },
      },
    });
    r.start();
    await r.synced();
    await createPod(w.core, 'x2');
    await waitFor(() => r.store.has('default/x2'), 'x2 in the store');
    await w.core.deleteNamespacedPod({ name: 'x1', namespace: 'default' });
    await waitFor(() => !r.store.has('default/x1'), 'x1 removed');
    await new Promise((res) => setTimeout(res, 50));
    expect(unhandled).toEqual([]);
  });
});
