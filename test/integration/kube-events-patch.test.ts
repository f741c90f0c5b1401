import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { CoreV1Api, CustomObjectsApi, Watch, type KubeConfig } from '@kubernetes/client-node';
import { afterEach, describe, expect, it } from 'vitest';
import { startApiServer, type ApiServerHandle } from '../../src/sandbox/apiserver/index.js';
import { isNotFound, statusReason } from '../../src/kube/errors.js';
import { EventRecorder } from '../../src/kube/events.js';
import { loadKubeConfig } from '../../src/kube/kubeconfig.js';
import { getJson, listAll } from '../../src/kube/list.js';
import { patchOptions } from '../../src/kube/http.js';

const crdDir = fileURLToPath(new URL('../../config/crd', import.meta.url));
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

async function world(): Promise<{ server: ApiServerHandle; kc: KubeConfig; core: CoreV1Api; custom: CustomObjectsApi }> {
  const server = await startApiServer({ crdDir });
  cleanups.push(() => server.stop());
  const kc = loadKubeConfig({ kubeconfigYaml: server.kubeconfigYaml });
  return { server, kc, core: kc.makeApiClient(CoreV1Api), custom: kc.makeApiClient(CustomObjectsApi) };
}

interface EventView {
  metadata: { name: string };
  reason: string;
  message: string;
  type: string;
  count: number;
  involvedObject: { kind: string; name: string; uid?: string };
  source: { component: string };
  firstTimestamp: string;
  lastTimestamp: string;
}

describe('EventRecorder against the API emulator', () => {
  it('creates one Event per (object, reason, message) and counts repeats on it', async () => {
    const { kc, core } = await world();
    const pod = await core.createNamespacedPod({
      namespace: 'default',
      body: { metadata: { name: 'web' }, spec: { containers: [{ name: 'c', image: 'i' }] } },
    });
    let now = Date.parse('2026-01-01T00:00:00Z');
    const rec = new EventRecorder({ client: core, component: 'aad-pod-identity-mic', now: () => now });
    const involved = { kind: 'Pod', apiVersion: 'v1', ...pod, metadata: pod.metadata };
    await rec.warning(involved, 'BindingNotFound', 'no binding for pod');
    now += 5_000;
    // concurrent repeats are serialised onto the same Event
    await Promise.all([
      rec.warning(involved, 'BindingNotFound', 'no binding for pod'),
      rec.warning(involved, 'BindingNotFound', 'no binding for pod'),
    ]);
    await rec.normal({ kind: 'Node', name: 'node-a' }, 'Ready', 'node is ready');
    await rec.warning(involved, 'BindingNotFound', 'a different message');

    const events = (await listAll<EventView & { metadata: { name: string } }>(kc, '/api/v1/namespaces/default/events')).items;
    const repeated = events.filter((e) => e.message === 'no binding for pod');
    expect(repeated).toHaveLength(1);
    expect(repeated[0].count).toBe(3);
    expect(repeated[0].type).toBe('Warning');
    expect(repeated[0].involvedObject).toMatchObject({ kind: 'Pod', name: 'web', uid: pod.metadata?.uid });
    expect(repeated[0].source.component).toBe('aad-pod-identity-mic');
    expect(Date.parse(repeated[0].lastTimestamp) - Date.parse(repeated[0].firstTimestamp)).toBe(5_000);
    expect(events.filter((e) => e.message === 'a different message')).toHaveLength(1);
    // events of cluster-scoped objects go to "default"
    expect(events.filter((e) => e.involvedObject.kind === 'Node')).toHaveLength(1);
  });

  it('starts a new Event after the aggregation window and never throws when the server fails', async () => {
    const { kc, core, server } = await world();
    let now = 0;
    const rec = new EventRecorder({ client: core, component: 'mic', aggregateWindowMs: 1000, now: () => now });
    const obj = { kind: 'Pod', name: 'p', namespace: 'default' };
    await rec.normal(obj, 'Assigned', 'ok');
    now = 2000;
    await rec.normal(obj, 'Assigned', 'ok');
    let events = (await listAll<EventView>(kc, '/api/v1/namespaces/default/events')).items;
    expect(events.map((e) => e.count)).toEqual([1, 1]);

    server.injectFault({ method: 'POST', pathPrefix: '/api/v1/namespaces/default/events', status: 500, count: 1 });
    await expect(rec.normal(obj, 'Other', 'fails')).resolves.toBeUndefined();
    events = (await listAll<EventView>(kc, '/api/v1/namespaces/default/events')).items;
    expect(events).toHaveLength(2);
  });
});

describe('patch types against the API emulator', () => {
  const ref = {
    group: 'aadpodidentity.k8s.io',
    version: 'v1',
    plural: 'azureassignedidentities',
    namespace: 'default',
    name: 'web-default-id1',
  };

  it('merge-patches and JSON-patches a custom object, and patches its status subresource', async () => {
    const { custom, server } = await world();
    await custom.createNamespacedCustomObject({
      group: ref.group,
      version: ref.version,
      plural: ref.plural,
      namespace: 'default',
      body: {
        apiVersion: 'aadpodidentity.k8s.io/v1',
        kind: 'AzureAssignedIdentity',
        metadata: { name: ref.name, namespace: 'default', labels: { nodename: 'node-a' } },
        spec: { pod: 'web', podNamespace: 'default', nodename: 'node-a' },
      },
    });

    const merged = (await custom.patchNamespacedCustomObject(
      { ...ref, body: { metadata: { labels: { extra: 'x', nodename: null } } } },
      patchOptions('merge'),
    )) as { metadata: { labels: Record<string, string> } };
    expect(merged.metadata.labels).toEqual({ extra: 'x' });

    await custom.patchNamespacedCustomObject({ ...ref, body: [{ op: 'replace', path: '/spec/nodename', value: 'node-b' }] }, patchOptions('json'));

    // the status subresource takes status and ignores spec changes
    await custom.patchNamespacedCustomObjectStatus({ ...ref, body: { status: { status: 'Assigned' }, spec: { pod: 'ignored' } } }, patchOptions('merge'));
    const got = (await custom.getNamespacedCustomObject({ ...ref, namespace: 'default' })) as {
      spec: { pod: string; nodename: string };
      status: { status: string };
    };
    expect(got.status.status).toBe('Assigned');
    expect(got.spec).toMatchObject({ pod: 'web', nodename: 'node-b' });

    const patches = server.requestLog().filter((e) => e.method === 'PATCH');
    expect(patches.map((e) => e.path)).toEqual([
      `/apis/aadpodidentity.k8s.io/v1/namespaces/default/azureassignedidentities/${ref.name}`,
      `/apis/aadpodidentity.k8s.io/v1/namespaces/default/azureassignedidentities/${ref.name}`,
      `/apis/aadpodidentity.k8s.io/v1/namespaces/default/azureassignedidentities/${ref.name}/status`,
    ]);
    expect(patches.every((e) => e.status === 200)).toBe(true);
  });

  it('a failed patch is classifiable', async () => {
    const { custom } = await world();
    const err = await custom
      .patchNamespacedCustomObject({ ...ref, name: 'missing', body: { spec: {} } }, patchOptions('merge'))
      .catch((e: unknown) => e);
    expect(isNotFound(err)).toBe(true);
    expect(statusReason(err)).toBe('NotFound');
  });
});

describe('loadKubeConfig', () => {
  it('sends the configured User-Agent on typed calls, watches and raw lists', async () => {
    const seen: IncomingHttpHeaders[] = [];
    const srv = createServer((req, res) => {
      seen.push(req.headers);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ kind: 'NamespaceList', apiVersion: 'v1', metadata: { resourceVersion: '1' }, items: [] }));
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
    cleanups.push(() => new Promise<void>((r) => srv.close(() => r())));
    const url = `http://127.0.0.1:${(srv.address() as AddressInfo).port}`;
    const kc = loadKubeConfig({
      userAgent: 'aad-pod-identity/test',
      kubeconfigYaml: [
        'apiVersion: v1',
        'kind: Config',
        'clusters: [{name: c, cluster: {server: "' + url + '", insecure-skip-tls-verify: true}}]',
        'users: [{name: u, user: {token: t}}]',
        'contexts: [{name: x, context: {cluster: c, user: u}}]',
        'current-context: x',
      ].join('\n'),
    });
    await kc.makeApiClient(CoreV1Api).listNamespace();
    await getJson(kc, '/api/v1/namespaces');
    await new Promise<void>((resolve) => {
      void new Watch(kc).watch('/api/v1/namespaces', {}, () => undefined, () => resolve());
    });
    expect(seen.map((h) => h['user-agent'])).toEqual(['aad-pod-identity/test', 'aad-pod-identity/test', 'aad-pod-identity/test']);
    expect(seen.every((h) => h.authorization === 'Bearer t')).toBe(true);
  });

  it('fails with a cause when the kubeconfig file does not exist', () => {
    expect(() => loadKubeConfig({ kubeconfigPath: '/nonexistent/kubeconfig' })).toThrow(/cannot load kubeconfig/);
  });
});
