// The API emulator through the real @kubernetes/client-node: CRUD, conflicts, patches, finalizers,
// the status subresource, selectors, and CRD schema validation/pruning.

import * as k8s from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CRD_DIR, startTestApiServer, type TestApiServer } from '../helpers/apiserver.js';

const GROUP = 'aadpodidentity.k8s.io';
const V = 'v1';

/** A CRD written here so schema semantics are pinned independently of config/crd. */
const WIDGET_CRD = {
  apiVersion: 'apiextensions.k8s.io/v1',
  kind: 'CustomResourceDefinition',
  metadata: { name: 'widgets.example.test' },
  spec: {
    group: 'example.test',
    scope: 'Namespaced',
    names: { plural: 'widgets', singular: 'widget', kind: 'Widget', listKind: 'WidgetList', shortNames: ['wg'] },
    versions: [
      {
        name: 'v1',
        served: true,
        storage: true,
        subresources: { status: {} },
        schema: {
          openAPIV3Schema: {
            type: 'object',
            properties: {
              apiVersion: { type: 'string' },
              kind: { type: 'string' },
              metadata: { type: 'object' },
              spec: {
                type: 'object',
                required: ['size'],
                properties: {
                  size: { type: 'integer', minimum: 1 },
                  color: { type: 'string', enum: ['red', 'blue'] },
                  mode: { type: 'string', default: 'auto' },
                  port: { 'x-kubernetes-int-or-string': true },
                  note: { type: 'string', nullable: true },
                  extra: { type: 'object', 'x-kubernetes-preserve-unknown-fields': true },
                  template: {
                    type: 'object',
                    'x-kubernetes-embedded-resource': true,
                    properties: { spec: { type: 'object', properties: { image: { type: 'string' } } } },
                  },
                  items: { type: 'array', items: { type: 'object', properties: { name: { type: 'string' } } } },
                },
              },
              status: { type: 'object', properties: { phase: { type: 'string' } } },
            },
          },
        },
      },
    ],
  },
};

function apiError(err: unknown): { code: number; body: Record<string, unknown> } {
  if (!(err instanceof k8s.ApiException)) throw err;
  return { code: err.code, body: JSON.parse(String(err.body)) as Record<string, unknown> };
}

async function expectApiError(p: Promise<unknown>): Promise<{ code: number; body: Record<string, unknown> }> {
  try {
    await p;
  } catch (err) {
    return apiError(err);
  }
  throw new Error('expected the call to fail');
}

const mergePatch = k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch);
const strategicPatch = k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.StrategicMergePatch);

describe('API emulator via client-node', () => {
  let world: TestApiServer;
  let core: k8s.CoreV1Api;
  let custom: k8s.CustomObjectsApi;
  let ext: k8s.ApiextensionsV1Api;

  beforeAll(async () => {
    world = await startTestApiServer({ crdDir: CRD_DIR });
    core = world.kc.makeApiClient(k8s.CoreV1Api);
    custom = world.kc.makeApiClient(k8s.CustomObjectsApi);
    ext = world.kc.makeApiClient(k8s.ApiextensionsV1Api);
    // CustomObjectsApi sends the CRD as plain JSON; the typed model would rename x-kubernetes-* and enum keys.
    await custom.createClusterCustomObject({ group: 'apiextensions.k8s.io', version: 'v1', plural: 'customresourcedefinitions', body: WIDGET_CRD });
  });
  afterAll(async () => {
    await world.stop();
  });

  describe('pods', () => {
    it('creates, reads, lists, replaces and deletes a pod with server-set metadata', async () => {
      const created = await core.createNamespacedPod({
        namespace: 'default',
        body: { metadata: { name: 'p1', labels: { app: 'a' } }, spec: { containers: [{ name: 'c', image: 'busybox' }] }, status: { phase: 'Running' } },
      });
      expect(created.kind).toBe('Pod');
      expect(created.apiVersion).toBe('v1');
      expect(created.metadata?.uid).toMatch(/^[0-9a-f-]{36}$/);
      expect(created.metadata?.creationTimestamp).toBeInstanceOf(Date);
      // PrepareForCreate resets pod status: a client cannot create a Running pod.
      expect(created.status?.phase).toBe('Pending');

      const got = await core.readNamespacedPod({ name: 'p1', namespace: 'default' });
      expect(got.metadata?.resourceVersion).toBe(created.metadata?.resourceVersion);

      const list = await core.listNamespacedPod({ namespace: 'default' });
      expect(list.kind).toBe('PodList');
      expect(Number(list.metadata?.resourceVersion)).toBeGreaterThanOrEqual(Number(created.metadata?.resourceVersion));
      expect(list.items.map((p) => p.metadata?.name)).toContain('p1');

      got.metadata!.labels = { app: 'b' };
      const replaced = await core.replaceNamespacedPod({ name: 'p1', namespace: 'default', body: got });
      expect(replaced.metadata?.labels).toEqual({ app: 'b' });
      expect(Number(replaced.metadata?.resourceVersion)).toBeGreaterThan(Number(got.metadata?.resourceVersion));
      expect(replaced.metadata?.uid).toBe(created.metadata?.uid);

      const deleted = await core.deleteNamespacedPod({ name: 'p1', namespace: 'default' });
      expect(deleted.metadata?.name).toBe('p1');
      const e = await expectApiError(core.readNamespacedPod({ name: 'p1', namespace: 'default' }));
      expect(e.code).toBe(404);
      expect(e.body).toMatchObject({ kind: 'Status', status: 'Failure', reason: 'NotFound', message: 'pods "p1" not found', details: { name: 'p1', kind: 'pods' } });
    });

    it('answers a stale replace with 409 Conflict and a duplicate create with 409 AlreadyExists', async () => {
      const body = { metadata: { name: 'p2' }, spec: { containers: [{ name: 'c', image: 'x' }] } };
      const created = await core.createNamespacedPod({ namespace: 'default', body });
      const dup = await expectApiError(core.createNamespacedPod({ namespace: 'default', body }));
      expect(dup.code).toBe(409);
      expect(dup.body.reason).toBe('AlreadyExists');
      expect(dup.body.message).toBe('pods "p2" already exists');

      const fresh = await core.replaceNamespacedPod({ name: 'p2', namespace: 'default', body: { ...created, metadata: { ...created.metadata, labels: { v: '1' } } } });
      expect(fresh.metadata?.labels).toEqual({ v: '1' });
      const stale = await expectApiError(core.replaceNamespacedPod({ name: 'p2', namespace: 'default', body: { ...created, metadata: { ...created.metadata, labels: { v: '2' } } } }));
      expect(stale.code).toBe(409);
      expect(stale.body.reason).toBe('Conflict');
      expect(String(stale.body.message)).toContain('the object has been modified');
    });

    it('names objects from generateName', async () => {
      const a = await core.createNamespacedPod({ namespace: 'default', body: { metadata: { generateName: 'gen-' }, spec: { containers: [{ name: 'c', image: 'x' }] } } });
      const b = await core.createNamespacedPod({ namespace: 'default', body: { metadata: { generateName: 'gen-' }, spec: { containers: [{ name: 'c', image: 'x' }] } } });
      expect(a.metadata?.name).toMatch(/^gen-[a-z0-9]{5}$/);
      expect(b.metadata?.name).not.toBe(a.metadata?.name);
    });

    it('applies json, merge and strategic merge patches to a pod', async () => {
      await core.createNamespacedPod({
        namespace: 'default',
        body: {
          metadata: { name: 'pp', labels: { a: '1', b: '2' } },
          spec: {
            containers: [
              { name: 'app', image: 'app:1', env: [{ name: 'X', value: '1' }, { name: 'Y', value: '2' }], ports: [{ containerPort: 80 }] },
              { name: 'side', image: 'side:1' },
            ],
          },
        },
      });
      const j = await core.patchNamespacedPod({ name: 'pp', namespace: 'default', body: [{ op: 'replace', path: '/metadata/labels/a', value: 'j' }] });
      expect(j.metadata?.labels).toEqual({ a: 'j', b: '2' });

      const m = await core.patchNamespacedPod({ name: 'pp', namespace: 'default', body: { metadata: { labels: { b: null, c: '3' } } } }, mergePatch);
      expect(m.metadata?.labels).toEqual({ a: 'j', c: '3' });

      // A strategic merge patch merges containers by name: only the image of `side` changes (what a pod may change).
      const s = await core.patchNamespacedPod({ name: 'pp', namespace: 'default', body: { spec: { containers: [{ name: 'side', image: 'side:2' }] } } }, strategicPatch);
      expect(s.spec?.containers.map((c) => [c.name, c.image])).toEqual([['app', 'app:1'], ['side', 'side:2']]);
      expect(s.spec?.containers[0]?.env).toEqual([{ name: 'X', value: '1' }, { name: 'Y', value: '2' }]);

      // A merge patch replaces lists wholesale, which drops a container: a spec change the real server forbids.
      const mm = await expectApiError(core.patchNamespacedPod({ name: 'pp', namespace: 'default', body: { spec: { containers: [{ name: 'only', image: 'o' }] } } }, mergePatch));
      expect(mm.code).toBe(422);
      expect(mm.body.message).toContain('Pod "pp" is invalid: spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`');
      // Every other spec field is immutable too; the strategic merge semantics are pinned in test/unit/apiserver-patch.test.ts.
      const env = await expectApiError(core.patchNamespacedPod({ name: 'pp', namespace: 'default', body: { spec: { containers: [{ name: 'app', env: [{ name: 'Z', value: '3' }] }] } } }, strategicPatch));
      expect(env.code).toBe(422);
    });

    it('binds a pod to a node once, through the binding subresource; spec.nodeName cannot be patched', async () => {
      const pod = await core.createNamespacedPod({ namespace: 'default', body: { metadata: { name: 'bind-me' }, spec: { containers: [{ name: 'c', image: 'x' }] } } });
      const patched = await expectApiError(core.patchNamespacedPod({ name: 'bind-me', namespace: 'default', body: { spec: { nodeName: 'node-a' } } }, mergePatch));
      expect(patched.code).toBe(422);
      const binding = { metadata: { name: 'bind-me', uid: pod.metadata!.uid }, target: { kind: 'Node', name: 'node-a' } };
      const bound = await fetch(`${world.server.url}/api/v1/namespaces/default/pods/bind-me/binding`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(binding) });
      expect(bound.status).toBe(201);
      expect(await bound.json()).toEqual({ kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Success', code: 201 });
      const read = await core.readNamespacedPod({ name: 'bind-me', namespace: 'default' });
      expect(read.spec?.nodeName).toBe('node-a');
      expect(read.status?.conditions?.find((c) => c.type === 'PodScheduled')?.status).toBe('True');
      const again = await expectApiError(core.createNamespacedPodBinding({ name: 'bind-me', namespace: 'default', body: { ...binding, target: { kind: 'Node', name: 'node-b' } } }));
      expect(again.code).toBe(409);
      expect(again.body.message).toBe('Operation cannot be fulfilled on pods/binding "bind-me": pod bind-me is already assigned to node "node-a"');
      await core.deleteNamespacedPod({ name: 'bind-me', namespace: 'default' });
    });

    it('keeps a pod with finalizers until the last finalizer goes', async () => {
      await core.createNamespacedPod({ namespace: 'default', body: { metadata: { name: 'fin', finalizers: ['example.test/a', 'example.test/b'] }, spec: { containers: [{ name: 'c', image: 'x' }] } } });
      const marked = await core.deleteNamespacedPod({ name: 'fin', namespace: 'default' });
      expect(marked.metadata?.deletionTimestamp).toBeDefined();
      const still = await core.readNamespacedPod({ name: 'fin', namespace: 'default' });
      expect(still.metadata?.deletionTimestamp).toBeDefined();
      expect(still.metadata?.deletionGracePeriodSeconds).toBe(0);

      await core.patchNamespacedPod({ name: 'fin', namespace: 'default', body: [{ op: 'remove', path: '/metadata/finalizers/0' }] });
      expect((await core.readNamespacedPod({ name: 'fin', namespace: 'default' })).metadata?.finalizers).toEqual(['example.test/b']);
      await core.patchNamespacedPod({ name: 'fin', namespace: 'default', body: { metadata: { finalizers: null } } }, mergePatch);
      expect((await expectApiError(core.readNamespacedPod({ name: 'fin', namespace: 'default' }))).code).toBe(404);
    });

    it('changes pod status only through /status', async () => {
      const pod = await core.createNamespacedPod({ namespace: 'default', body: { metadata: { name: 'st' }, spec: { containers: [{ name: 'c', image: 'x' }] } } });
      const viaMain = await core.replaceNamespacedPod({ name: 'st', namespace: 'default', body: { ...pod, status: { phase: 'Running', podIP: '10.0.0.9' } } });
      expect(viaMain.status?.phase).toBe('Pending');
      const viaStatus = await core.replaceNamespacedPodStatus({ name: 'st', namespace: 'default', body: { ...viaMain, metadata: { ...viaMain.metadata, labels: { ignored: 'yes' } }, status: { phase: 'Running', podIP: '10.0.0.9' } } });
      expect(viaStatus.status?.phase).toBe('Running');
      expect(viaStatus.metadata?.labels).toBeUndefined();
    });

    it('filters lists by field selectors and set-based label selectors', async () => {
      await core.createNamespace({ body: { metadata: { name: 'sel' } } });
      const mk = (name: string, node: string, tier: string) =>
        core.createNamespacedPod({ namespace: 'sel', body: { metadata: { name, labels: { tier } }, spec: { nodeName: node, containers: [{ name: 'c', image: 'x' }] } } });
      await mk('a1', 'node-a', 'web');
      await mk('a2', 'node-a', 'db');
      await mk('b1', 'node-b', 'web');
      await mk('b2', 'node-b', 'cache');
      const names = (l: k8s.V1PodList) => l.items.map((p) => p.metadata?.name).sort();
      expect(names(await core.listNamespacedPod({ namespace: 'sel', fieldSelector: 'spec.nodeName=node-a' }))).toEqual(['a1', 'a2']);
      expect(names(await core.listPodForAllNamespaces({ fieldSelector: 'spec.nodeName=node-b,metadata.namespace=sel' }))).toEqual(['b1', 'b2']);
      expect(names(await core.listNamespacedPod({ namespace: 'sel', labelSelector: 'tier in (web,db)' }))).toEqual(['a1', 'a2', 'b1']);
      expect(names(await core.listNamespacedPod({ namespace: 'sel', labelSelector: 'tier notin (web),tier!=cache' }))).toEqual(['a2']);
      expect(names(await core.listNamespacedPod({ namespace: 'sel', labelSelector: '!tier' }))).toEqual([]);
      const bad = await expectApiError(core.listNamespacedPod({ namespace: 'sel', fieldSelector: 'spec.unknown=x' }));
      expect(bad.code).toBe(400);
    });

    it('pages lists with limit and continue', async () => {
      await core.createNamespace({ body: { metadata: { name: 'paging' } } });
      for (let i = 0; i < 5; i++) {
        await core.createNamespacedConfigMap({ namespace: 'paging', body: { metadata: { name: `cm-${i}` }, data: { i: String(i) } } });
      }
      const first = await core.listNamespacedConfigMap({ namespace: 'paging', limit: 2 });
      expect(first.items.map((c) => c.metadata?.name)).toEqual(['cm-0', 'cm-1']);
      expect(first.metadata?.remainingItemCount).toBe(3);
      const second = await core.listNamespacedConfigMap({ namespace: 'paging', limit: 2, _continue: first.metadata?._continue });
      expect(second.items.map((c) => c.metadata?.name)).toEqual(['cm-2', 'cm-3']);
      const last = await core.listNamespacedConfigMap({ namespace: 'paging', limit: 2, _continue: second.metadata?._continue });
      expect(last.items.map((c) => c.metadata?.name)).toEqual(['cm-4']);
      expect(last.metadata?._continue).toBeUndefined();
    });

    it('requires the namespace to exist, and deleting a namespace deletes its content', async () => {
      const missing = await expectApiError(core.createNamespacedSecret({ namespace: 'nope', body: { metadata: { name: 's' } } }));
      expect(missing.code).toBe(404);
      expect(missing.body.message).toBe('namespaces "nope" not found');

      await core.createNamespace({ body: { metadata: { name: 'doomed' } } });
      await core.createNamespacedSecret({ namespace: 'doomed', body: { metadata: { name: 's' }, stringData: { k: 'v' } } });
      await core.deleteNamespace({ name: 'doomed' });
      expect((await expectApiError(core.readNamespacedSecret({ name: 's', namespace: 'doomed' }))).code).toBe(404);
      expect((await expectApiError(core.readNamespace({ name: 'doomed' }))).code).toBe(404);
    });

    it('answers an unknown patch type for a custom resource with 415 and a bad method with 405', async () => {
      await custom.createNamespacedCustomObject({ group: 'example.test', version: 'v1', namespace: 'default', plural: 'widgets', body: { apiVersion: 'example.test/v1', kind: 'Widget', metadata: { name: 'w415' }, spec: { size: 1 } } });
      const smp = await expectApiError(
        custom.patchNamespacedCustomObject({ group: 'example.test', version: 'v1', namespace: 'default', plural: 'widgets', name: 'w415', body: { spec: { size: 2 } } }, strategicPatch),
      );
      expect(smp.code).toBe(415);
      expect(smp.body.reason).toBe('UnsupportedMediaType');
      const res = await fetch(`${world.server.url}/api/v1/namespaces/default/pods/x`, { method: 'POST', body: '{}', headers: { 'content-type': 'application/json' } });
      expect(res.status).toBe(405);
      expect(res.headers.get('content-type')).toBe('application/json');
      expect(((await res.json()) as { reason: string }).reason).toBe('MethodNotAllowed');
    });
  });

  describe('the project CRDs', () => {
    const kinds = [
      { plural: 'azureidentities', kind: 'AzureIdentity', spec: { type: 0, resourceID: '/subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1', clientID: '00000000-0000-0000-0000-000000000001' } },
      { plural: 'azureidentitybindings', kind: 'AzureIdentityBinding', spec: { azureIdentity: 'id1', selector: 'sel1' } },
      { plural: 'azurepodidentityexceptions', kind: 'AzurePodIdentityException', spec: { podLabels: { app: 'x' } } },
      { plural: 'azureassignedidentities', kind: 'AzureAssignedIdentity', spec: { nodename: 'node-a', pod: 'p', podNamespace: 'default' } },
    ];
    for (const k of kinds) {
      it(`runs create/get/list/replace/patch/delete for ${k.kind}`, async () => {
        const ref = { group: GROUP, version: V, namespace: 'default', plural: k.plural };
        const created = (await custom.createNamespacedCustomObject({ ...ref, body: { apiVersion: `${GROUP}/${V}`, kind: k.kind, metadata: { name: 'one' }, spec: k.spec } })) as k8s.KubernetesObject & { spec: unknown };
        expect(created.metadata?.generation).toBe(1);
        expect(created.spec).toEqual(k.spec);
        const got = (await custom.getNamespacedCustomObject({ ...ref, name: 'one' })) as k8s.KubernetesObject;
        expect(got.metadata?.uid).toBe(created.metadata?.uid);
        const list = (await custom.listNamespacedCustomObject(ref)) as { kind: string; items: k8s.KubernetesObject[]; metadata: { resourceVersion: string } };
        expect(list.kind).toBe(`${k.kind}List`);
        expect(list.items.map((i) => i.metadata?.name)).toEqual(['one']);
        const replaced = (await custom.replaceNamespacedCustomObject({ ...ref, name: 'one', body: { ...got, metadata: { ...got.metadata, labels: { l: '1' } } } })) as k8s.KubernetesObject;
        expect(replaced.metadata?.labels).toEqual({ l: '1' });
        expect(replaced.metadata?.generation).toBe(1);
        const stale = await expectApiError(custom.replaceNamespacedCustomObject({ ...ref, name: 'one', body: got }));
        expect(stale.code).toBe(409);
        const patched = (await custom.patchNamespacedCustomObject({ ...ref, name: 'one', body: [{ op: 'add', path: '/metadata/annotations', value: { a: 'b' } }] })) as k8s.KubernetesObject;
        expect(patched.metadata?.annotations).toEqual({ a: 'b' });
        await custom.deleteNamespacedCustomObject({ ...ref, name: 'one' });
        expect((await expectApiError(custom.getNamespacedCustomObject({ ...ref, name: 'one' }))).code).toBe(404);
      });
    }

    it('rejects an AzureIdentity of the wrong type with 422 naming the field', async () => {
      const e = await expectApiError(
        custom.createNamespacedCustomObject({ group: GROUP, version: V, namespace: 'default', plural: 'azureidentities', body: { apiVersion: `${GROUP}/${V}`, kind: 'AzureIdentity', metadata: { name: 'x' }, spec: { type: 'string' } } }),
      );
      expect(e.code).toBe(422);
      expect(e.body.reason).toBe('Invalid');
      expect(e.body.message).toBe('AzureIdentity.aadpodidentity.k8s.io "x" is invalid: spec.type: Invalid value: "string": spec.type in body must be of type integer: "string"');
      expect(e.body.details).toMatchObject({ name: 'x', group: GROUP, kind: 'AzureIdentity', causes: [{ field: 'spec.type', reason: 'FieldValueInvalid' }] });
    });

    it('writes AzureAssignedIdentity status only through /status', async () => {
      const ref = { group: GROUP, version: V, namespace: 'default', plural: 'azureassignedidentities' };
      const created = (await custom.createNamespacedCustomObject({ ...ref, body: { apiVersion: `${GROUP}/${V}`, kind: 'AzureAssignedIdentity', metadata: { name: 'aai' }, spec: { nodename: 'n' }, status: { status: 'Assigned' } } })) as Record<string, unknown>;
      expect(created.status).toBeUndefined();
      const main = (await custom.patchNamespacedCustomObject({ ...ref, name: 'aai', body: { status: { status: 'Assigned' } } }, mergePatch)) as Record<string, unknown>;
      expect(main.status).toBeUndefined();
      const st = (await custom.patchNamespacedCustomObjectStatus({ ...ref, name: 'aai', body: { status: { status: 'Assigned' }, spec: { nodename: 'changed' } } }, mergePatch)) as { status: unknown; spec: { nodename: string }; metadata: { generation: number } };
      expect(st.status).toEqual({ status: 'Assigned' });
      expect(st.spec.nodename).toBe('n');
      expect(st.metadata.generation).toBe(1);
    });
  });

  describe('schema semantics (inline Widget CRD)', () => {
    const ref = { group: 'example.test', version: 'v1', namespace: 'default', plural: 'widgets' };
    const widget = (name: string, spec: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({ apiVersion: 'example.test/v1', kind: 'Widget', metadata: { name }, spec, ...extra });

    it('prunes unknown fields, keeps declared ones, applies defaults and honours the extensions', async () => {
      const created = (await custom.createNamespacedCustomObject({
        ...ref,
        body: widget('w1', {
          size: 3,
          color: 'red',
          bogus: 'gone',
          port: 'http',
          note: null,
          extra: { anything: { goes: [1, 2] } },
          template: { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'inner', junk: 1 }, spec: { image: 'i', dropped: true } },
          items: [{ name: 'a', nope: 1 }],
        }, { topLevelJunk: 1 }),
      })) as Record<string, unknown>;
      expect(created.topLevelJunk).toBeUndefined();
      expect(created.spec).toEqual({
        size: 3,
        color: 'red',
        mode: 'auto',
        port: 'http',
        note: null,
        extra: { anything: { goes: [1, 2] } },
        template: { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'inner' }, spec: { image: 'i' } },
        items: [{ name: 'a' }],
      });
      const asInt = (await custom.createNamespacedCustomObject({ ...ref, body: widget('w2', { size: 1, port: 8080 }) })) as { spec: { port: unknown } };
      expect(asInt.spec.port).toBe(8080);
    });

    it('reports every violation with the real wording', async () => {
      const e = await expectApiError(custom.createNamespacedCustomObject({ ...ref, body: widget('w3', { color: 'green', port: true, items: [{ name: 5 }] }) }));
      expect(e.code).toBe(422);
      const causes = (e.body.details as { causes: { field: string; message: string }[] }).causes;
      expect(causes).toEqual(
        expect.arrayContaining([
          expect.objectContaining({ field: 'spec.size', message: 'Required value' }),
          expect.objectContaining({ field: 'spec.color', message: 'Unsupported value: "green": supported values: "red", "blue"' }),
          expect.objectContaining({ field: 'spec.items[0].name', message: 'Invalid value: "integer": spec.items[0].name in body must be of type string: "integer"' }),
          expect.objectContaining({ field: 'spec.port' }),
        ]),
      );
      const small = await expectApiError(custom.createNamespacedCustomObject({ ...ref, body: widget('w4', { size: 0 }) }));
      expect(small.body.message).toBe('Widget.example.test "w4" is invalid: spec.size: Invalid value: 0: spec.size in body should be greater than or equal to 1');
    });

    it('validates /status writes against the schema and bumps generation only on spec changes', async () => {
      await custom.createNamespacedCustomObject({ ...ref, body: widget('w5', { size: 1 }) });
      const bad = await expectApiError(custom.patchNamespacedCustomObjectStatus({ ...ref, name: 'w5', body: { status: { phase: 7 } } }, mergePatch));
      expect(bad.code).toBe(422);
      const labelled = (await custom.patchNamespacedCustomObject({ ...ref, name: 'w5', body: { metadata: { labels: { x: 'y' } } } }, mergePatch)) as { metadata: { generation: number } };
      expect(labelled.metadata.generation).toBe(1);
      const resized = (await custom.patchNamespacedCustomObject({ ...ref, name: 'w5', body: { spec: { size: 2 } } }, mergePatch)) as { metadata: { generation: number; resourceVersion: string } };
      expect(resized.metadata.generation).toBe(2);
      // A write that changes nothing is not a write: same resourceVersion.
      const noop = (await custom.patchNamespacedCustomObject({ ...ref, name: 'w5', body: { spec: { size: 2 } } }, mergePatch)) as { metadata: { resourceVersion: string } };
      expect(noop.metadata.resourceVersion).toBe(resized.metadata.resourceVersion);
    });

    it('runs the finalizer flow for a custom resource', async () => {
      await custom.createNamespacedCustomObject({ ...ref, body: widget('wf', { size: 1 }, {}) });
      await custom.patchNamespacedCustomObject({ ...ref, name: 'wf', body: { metadata: { finalizers: ['example.test/hold'] } } }, mergePatch);
      const marked = (await custom.deleteNamespacedCustomObject({ ...ref, name: 'wf' })) as { metadata: { deletionTimestamp?: string; generation: number } };
      expect(marked.metadata.deletionTimestamp).toBeDefined();
      expect(marked.metadata.generation).toBe(2);
      const forbidden = await expectApiError(custom.patchNamespacedCustomObject({ ...ref, name: 'wf', body: { metadata: { finalizers: ['example.test/hold', 'example.test/new'] } } }, mergePatch));
      expect(forbidden.code).toBe(422);
      await custom.patchNamespacedCustomObject({ ...ref, name: 'wf', body: { metadata: { finalizers: [] } } }, mergePatch);
      expect((await expectApiError(custom.getNamespacedCustomObject({ ...ref, name: 'wf' }))).code).toBe(404);
    });

    it('stops serving a resource when its CRD is deleted', async () => {
      const crd = JSON.parse(JSON.stringify(WIDGET_CRD).replaceAll('widgets', 'gadgets').replaceAll('Widget', 'Gadget').replaceAll('"widget"', '"gadget"').replace('"wg"', '"gd"')) as k8s.V1CustomResourceDefinition;
      await ext.createCustomResourceDefinition({ body: crd });
      const gref = { ...ref, plural: 'gadgets' };
      await custom.createNamespacedCustomObject({ ...gref, body: { apiVersion: 'example.test/v1', kind: 'Gadget', metadata: { name: 'g' }, spec: { size: 1 } } });
      await ext.deleteCustomResourceDefinition({ name: 'gadgets.example.test' });
      const gone = await expectApiError(custom.listNamespacedCustomObject(gref));
      expect(gone.code).toBe(404);
    });
  });
});

describe('Secrets', () => {
  it('fold stringData into base64 data, as the real server does', async () => {
    const world = await startTestApiServer();
    try {
      const core = world.kc.makeApiClient(k8s.CoreV1Api);
      await core.createNamespacedSecret({
        namespace: 'default',
        body: { metadata: { name: 'sp' }, data: { keep: Buffer.from('a').toString('base64') }, stringData: { clientSecret: 's3cret' } },
      });
      const secret = await core.readNamespacedSecret({ namespace: 'default', name: 'sp' });
      expect(secret.stringData).toBeUndefined();
      expect(Buffer.from(secret.data?.clientSecret ?? '', 'base64').toString()).toBe('s3cret');
      expect(Buffer.from(secret.data?.keep ?? '', 'base64').toString()).toBe('a');
    } finally {
      await world.stop();
    }
  });
});

describe('delete answers', () => {
  it('name the removed object in a Success Status, except for pods (ReturnDeletedObject) and objects finalizers still hold', async () => {
    const world = await startTestApiServer({ crdDir: CRD_DIR });
    try {
      const del = async (path: string, body?: object) => {
        const res = await fetch(`${world.server.url}${path}`, {
          method: 'DELETE',
          headers: { 'content-type': 'application/json' },
          ...(body ? { body: JSON.stringify(body) } : {}),
        });
        expect(res.status).toBe(200);
        return (await res.json()) as Record<string, unknown>;
      };
      const core = world.kc.makeApiClient(k8s.CoreV1Api);
      const custom = world.kc.makeApiClient(k8s.CustomObjectsApi);
      const node = await core.createNode({ body: { metadata: { name: 'gone' } } });
      expect(await del('/api/v1/nodes/gone')).toEqual({ kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Success', details: { name: 'gone', kind: 'nodes', uid: node.metadata!.uid } });

      const ref = { group: GROUP, version: V, namespace: 'default', plural: 'azureidentitybindings' };
      const made = (await custom.createNamespacedCustomObject({ ...ref, body: { apiVersion: `${GROUP}/${V}`, kind: 'AzureIdentityBinding', metadata: { name: 'b' }, spec: { azureIdentity: 'i', selector: 's' } } })) as { metadata: { uid: string } };
      // dryRun from the query alone (the Python client sends no body): nothing is removed.
      expect(await del(`/apis/${GROUP}/${V}/namespaces/default/azureidentitybindings/b?dryRun=All`)).toMatchObject({ kind: 'Status', status: 'Success' });
      expect(await del(`/apis/${GROUP}/${V}/namespaces/default/azureidentitybindings/b`, { dryRun: ['All'] })).toMatchObject({ kind: 'Status', status: 'Success' });
      await custom.getNamespacedCustomObject({ ...ref, name: 'b' });
      expect(await del(`/apis/${GROUP}/${V}/namespaces/default/azureidentitybindings/b`)).toEqual({
        kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Success', details: { name: 'b', group: GROUP, kind: 'azureidentitybindings', uid: made.metadata.uid },
      });

      await custom.createNamespacedCustomObject({ ...ref, body: { apiVersion: `${GROUP}/${V}`, kind: 'AzureIdentityBinding', metadata: { name: 'held', finalizers: ['example.test/hold'] }, spec: { azureIdentity: 'i', selector: 's' } } });
      const held = await del(`/apis/${GROUP}/${V}/namespaces/default/azureidentitybindings/held`);
      expect(held).toMatchObject({ kind: 'AzureIdentityBinding', metadata: { name: 'held', finalizers: ['example.test/hold'] } });
      expect((held.metadata as Record<string, unknown>).deletionTimestamp).toEqual(expect.any(String));

      await core.createNamespacedPod({ namespace: 'default', body: { metadata: { name: 'p' }, spec: { containers: [{ name: 'c', image: 'x' }] } } });
      expect(await del('/api/v1/namespaces/default/pods/p')).toMatchObject({ kind: 'Pod', apiVersion: 'v1', metadata: { name: 'p' } });

      // A collection delete answers with the list as it was before; a dry run removes nothing.
      for (const [name, tier] of [['c1', 'x'], ['c2', 'x'], ['c3', 'y']] as const) {
        await core.createNamespacedConfigMap({ namespace: 'default', body: { metadata: { name, labels: { tier } } } });
      }
      const dryList = await del('/api/v1/namespaces/default/configmaps?labelSelector=tier%3Dx&dryRun=All');
      expect((dryList.items as { metadata: { name: string } }[]).map((i) => i.metadata.name)).toEqual(['c1', 'c2']);
      expect((await core.listNamespacedConfigMap({ namespace: 'default' })).items).toHaveLength(3);
      const list = await del('/api/v1/namespaces/default/configmaps?labelSelector=tier%3Dx');
      expect(list).toMatchObject({ kind: 'ConfigMapList', apiVersion: 'v1' });
      expect((list.items as { kind?: string; metadata: { name: string } }[]).map((i) => i.metadata.name)).toEqual(['c1', 'c2']);
      expect((await core.listNamespacedConfigMap({ namespace: 'default' })).items.map((c) => c.metadata?.name)).toEqual(['c3']);
    } finally {
      await world.stop();
    }
  });
});

describe('object metadata validation', () => {
  it('rejects label keys, label values and annotation keys the real server rejects, with 422 and the field', async () => {
    const world = await startTestApiServer({ crdDir: CRD_DIR });
    try {
      const core = world.kc.makeApiClient(k8s.CoreV1Api);
      const custom = world.kc.makeApiClient(k8s.CustomObjectsApi);
      const pod = (name: string, metadata: Partial<k8s.V1ObjectMeta>): k8s.V1Pod => ({ metadata: { name, ...metadata }, spec: { containers: [{ name: 'c', image: 'x' }] } });
      const bad: [Partial<k8s.V1ObjectMeta>, string, string][] = [
        [{ labels: { 'bad key!': 'v' } }, 'metadata.labels', 'name part must consist of alphanumeric characters'],
        [{ labels: { 'Example.com/app': 'v' } }, 'metadata.labels', 'prefix part a lowercase RFC 1123 subdomain'],
        [{ labels: { app: 'a b' } }, 'metadata.labels', 'a valid label must be an empty string'],
        [{ labels: { app: 'x'.repeat(64) } }, 'metadata.labels', 'must be no more than 63 characters'],
        [{ annotations: { 'a/b/c': 'v' } }, 'metadata.annotations', 'prefix part'],
      ];
      for (const [metadata, field, message] of bad) {
        const err = await expectApiError(core.createNamespacedPod({ namespace: 'default', body: pod('bad', metadata) }));
        expect(err.code).toBe(422);
        const body = err.body as { reason: string; details: { causes: { field: string; message: string }[] } };
        expect(body.reason).toBe('Invalid');
        expect(body.details.causes[0]!.field).toBe(field);
        expect(body.details.causes[0]!.message).toContain(message);
      }
      // What is allowed: prefixed keys, empty values, any annotation value, upper case in the name part.
      await core.createNamespacedPod({ namespace: 'default', body: pod('good', { labels: { 'aadpodidbinding': 'My_App.1', 'example.com/Tier': '' }, annotations: { 'kubectl.kubernetes.io/last-applied-configuration': '{"a b": 1}' } }) });
      // Updates and patches are checked too, custom resources included.
      const patched = await expectApiError(core.patchNamespacedPod({ namespace: 'default', name: 'good', body: [{ op: 'add', path: '/metadata/labels/x', value: 'no spaces' }] }));
      expect(patched.code).toBe(422);
      const ref = { group: GROUP, version: V, namespace: 'default', plural: 'azureidentitybindings' };
      const cr = await expectApiError(custom.createNamespacedCustomObject({ ...ref, body: { apiVersion: `${GROUP}/${V}`, kind: 'AzureIdentityBinding', metadata: { name: 'b', labels: { 'a:b': 'c' } }, spec: { azureIdentity: 'i', selector: 's' } } }));
      expect(cr.code).toBe(422);
    } finally {
      await world.stop();
    }
  });

  it('answers a replace whose body names another object with 400 before looking the object up', async () => {
    const world = await startTestApiServer();
    try {
      const core = world.kc.makeApiClient(k8s.CoreV1Api);
      const err = await expectApiError(core.replaceNamespacedPod({ namespace: 'default', name: 'missing', body: { metadata: { name: 'other' }, spec: { containers: [{ name: 'c', image: 'x' }] } } }));
      expect(err.code).toBe(400);
      expect(err.body.message).toBe('the name of the object (other) does not match the name on the URL (missing)');
    } finally {
      await world.stop();
    }
  });
});
