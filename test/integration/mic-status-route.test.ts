// Where MIC writes AzureAssignedIdentity status: through /status on our CRD, on the main resource on the original's
// CRD (no status subresource; Helm never upgrades crds/, so an upgraded cluster keeps it), learnt from discovery
// and learnt again when the CRD changes under a running MIC. A status write that fails is never taken for a
// deleted object: Warning event, retry, same object.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ApiextensionsV1Api, type V1CustomResourceDefinition } from '@kubernetes/client-node';
import { afterEach, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { CRD_DIR, ORIGINAL_CRD_DIR, upgradedClusterCrdDir } from '../helpers/apiserver.js';
import { eventually, NODES, startMicWorld, type MicWorld } from './mic-world.js';

const AAI_CRD = 'azureassignedidentities.aadpodidentity.k8s.io';
const AAI_PATH = '/apis/aadpodidentity.k8s.io/v1/namespaces/default/azureassignedidentities';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

async function world(crds: 'original' | 'ours'): Promise<MicWorld> {
  let crdDir: string | undefined;
  if (crds === 'original') {
    const d = await upgradedClusterCrdDir();
    cleanups.push(d.cleanup);
    crdDir = d.dir;
  }
  const w = await startMicWorld(crdDir !== undefined ? { crdDir } : {});
  cleanups.push(() => w.stop());
  return w;
}

async function identityForPod(w: MicWorld, n: string, node: string = NODES.vmss0): Promise<string> {
  const id = w.msi(`id${n}`);
  await w.createIdentity(`id${n}`, { type: 0, resourceID: id.id, clientID: id.clientId });
  await w.createBinding(`b${n}`, { azureIdentity: `id${n}`, selector: `app${n}` });
  await w.createPod(`p${n}`, node, `app${n}`);
  return `p${n}-default-id${n}`;
}

const stateOf = async (w: MicWorld, name: string): Promise<string | undefined> => (await w.assigned()).find((a) => a.name === name)?.state;

/** Status-carrying writes the API emulator answered for one AAI: `PATCH main 200`, `PATCH status 404`, ... */
function statusWrites(w: MicWorld, name: string): string[] {
  return w.api.server
    .requestLog()
    .filter((r) => r.method === 'PATCH' && (r.path === `${AAI_PATH}/${name}` || r.path === `${AAI_PATH}/${name}/status`))
    .map((r) => `PATCH ${r.path.endsWith('/status') ? 'status' : 'main'} ${r.status}`);
}

async function replaceAaiCrd(w: MicWorld, from: string): Promise<void> {
  const ext = w.api.kc.makeApiClient(ApiextensionsV1Api);
  const current = await ext.readCustomResourceDefinition({ name: AAI_CRD });
  const next = parse(await readFile(join(from, 'azureassignedidentity.yaml'), 'utf8')) as V1CustomResourceDefinition;
  next.metadata = { ...next.metadata, resourceVersion: current.metadata?.resourceVersion };
  await ext.replaceCustomResourceDefinition({ name: AAI_CRD, body: next });
}

describe("MIC on the original's AzureAssignedIdentity CRD (no status subresource)", () => {
  it('brings the AAI to Assigned by patching status on the main resource, and deletes it when the pod goes', async () => {
    const w = await world('original');
    const name = await identityForPod(w, '1');
    await w.startMic();

    await eventually(async () => expect(await stateOf(w, name)).toBe('Assigned'));
    const writes = statusWrites(w, name);
    expect(writes).toContain('PATCH main 200');
    expect(writes.filter((s) => s.startsWith('PATCH status'))).toEqual([]);
    expect(await w.events('status update error')).toEqual([]);
    const uid = (await w.assigned()).find((a) => a.name === name)?.uid;
    expect(uid).toBeTruthy();

    await w.deletePod('p1');
    await eventually(async () => expect(await w.assigned()).toEqual([]));
    expect(w.vmssIds()).toEqual([]);
  });

  it('learns the CRD lost its status subresource from the 404 of /status, and writes on the main resource', async () => {
    const w = await world('ours');
    const first = await identityForPod(w, '1');
    await w.startMic();
    await eventually(async () => expect(await stateOf(w, first)).toBe('Assigned'));
    expect(statusWrites(w, first)).toContain('PATCH status 200');

    // What `kubectl apply -f` of the original's crd.yaml would do under a running MIC.
    await replaceAaiCrd(w, ORIGINAL_CRD_DIR);
    const second = await identityForPod(w, '2', NODES.vm);
    await eventually(async () => expect(await stateOf(w, second)).toBe('Assigned'));
    const writes = statusWrites(w, second);
    expect(writes).toContain('PATCH status 404');
    expect(writes[writes.length - 1]).toBe('PATCH main 200');
    expect(await w.events('status update error')).toEqual([]);
  });

  it('learns the CRD gained a status subresource when a main-resource status patch does not stick, and uses /status', async () => {
    const w = await world('original');
    const first = await identityForPod(w, '1');
    await w.startMic();
    await eventually(async () => expect(await stateOf(w, first)).toBe('Assigned'));

    await replaceAaiCrd(w, CRD_DIR);
    const second = await identityForPod(w, '2', NODES.vm);
    await eventually(async () => expect(await stateOf(w, second)).toBe('Assigned'));
    const writes = statusWrites(w, second);
    expect(writes[writes.length - 1]).toBe('PATCH status 200');
    expect(await w.events('status update error')).toEqual([]);
  });
});

describe('MIC status writes that fail', () => {
  it('never takes a 404 from /status for a deleted object: Warning event, retry, the same AAI reaches Assigned', async () => {
    const w = await world('ours');
    const name = `p1-default-id1`;
    // Two 404s from /status while the object exists and discovery still lists the subresource.
    w.api.server.injectFault({ method: 'PATCH', pathPrefix: `${AAI_PATH}/${name}/status`, status: 404, count: 2 });
    await identityForPod(w, '1');
    await w.startMic();

    await eventually(async () => expect(await stateOf(w, name)).toBe('Assigned'));
    const warnings = await w.events('status update error');
    expect(warnings.length).toBeGreaterThan(0);
    expect(warnings[0]).toMatchObject({ type: 'Warning', kind: 'AzureAssignedIdentity', name });
    expect(warnings[0]?.message).toMatch(/status did not change through \/status/);
    // Created once, never deleted and recreated.
    const log = w.api.server.requestLog();
    expect(log.filter((r) => r.method === 'POST' && r.path === AAI_PATH && r.status === 201)).toHaveLength(1);
    expect(log.filter((r) => r.method === 'DELETE' && r.path.startsWith(AAI_PATH))).toEqual([]);
    expect(statusWrites(w, name).slice(0, 2)).toEqual(['PATCH status 404', 'PATCH status 404']);
  });
});
