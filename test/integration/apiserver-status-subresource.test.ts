// The API emulator serves a CRD's status the way the real API server does, with and without `subresources.status`:
// discovery lists `<plural>/status` only when the CRD declares it; without it `/status` is 404 (the server has no
// such resource) and status is part of the main resource (kept and changed by PUT and PATCH); with it the main
// resource ignores status and `/status` changes only status.
import { afterEach, describe, expect, it } from 'vitest';
import { CRD_DIR, startTestApiServer, upgradedClusterCrdDir, type TestApiServer } from '../helpers/apiserver.js';

const GV = '/apis/aadpodidentity.k8s.io/v1';
const AAI = `${GV}/namespaces/default/azureassignedidentities`;

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

async function server(crds: 'original' | 'ours'): Promise<TestApiServer> {
  let crdDir = CRD_DIR;
  if (crds === 'original') {
    const d = await upgradedClusterCrdDir();
    cleanups.push(d.cleanup);
    crdDir = d.dir;
  }
  const s = await startTestApiServer({ crdDir });
  cleanups.push(() => s.stop());
  return s;
}

async function call(s: TestApiServer, method: string, path: string, body?: unknown, contentType = 'application/json'): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(s.server.url + path, {
    method,
    headers: { authorization: 'Bearer sandbox-token', ...(body !== undefined ? { 'content-type': contentType } : {}) },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

const aai = (status: string) => ({
  apiVersion: 'aadpodidentity.k8s.io/v1',
  kind: 'AzureAssignedIdentity',
  metadata: { name: 'a1', namespace: 'default' },
  spec: { pod: 'p', podNamespace: 'default', nodename: 'n1' },
  status: { status, availableReplicas: 1 },
});
const statusOf = (o: Record<string, unknown>): unknown => (o.status as { status?: unknown } | undefined)?.status;

describe('CRD status in the API emulator', () => {
  it('lists azureassignedidentities/status in discovery only when the CRD declares the subresource', async () => {
    const names = async (s: TestApiServer) =>
      ((await call(s, 'GET', GV)).body.resources as { name: string; verbs: string[] }[]).map((r) => r.name);
    expect(await names(await server('ours'))).toContain('azureassignedidentities/status');
    const original = await names(await server('original'));
    expect(original).toContain('azureassignedidentities');
    expect(original).not.toContain('azureassignedidentities/status');
    // `subresources: {}` (AzureIdentity, in both) declares none either.
    expect(original).not.toContain('azureidentities/status');
  });

  it('without the subresource: /status is 404, the main resource keeps status on create and changes it on PUT and PATCH', async () => {
    const s = await server('original');
    const created = await call(s, 'POST', AAI, aai('Created'));
    expect(created.status).toBe(201);
    expect(statusOf(created.body)).toBe('Created');

    const viaStatus = await call(s, 'PATCH', `${AAI}/a1/status`, { status: { status: 'Assigned' } }, 'application/merge-patch+json');
    expect(viaStatus.status).toBe(404);
    expect(viaStatus.body).toMatchObject({ kind: 'Status', reason: 'NotFound', message: 'the server could not find the requested resource' });
    expect((await call(s, 'GET', `${AAI}/a1/status`)).status).toBe(404);

    const patched = await call(s, 'PATCH', `${AAI}/a1`, [{ op: 'replace', path: '/status/status', value: 'Assigned' }], 'application/json-patch+json');
    expect(patched.status).toBe(200);
    expect(statusOf(patched.body)).toBe('Assigned');

    const current = (await call(s, 'GET', `${AAI}/a1`)).body;
    const put = await call(s, 'PUT', `${AAI}/a1`, { ...current, spec: { ...(current.spec as object), nodename: 'n2' } });
    expect(put.status).toBe(200);
    expect(statusOf(put.body)).toBe('Assigned');
    const put2 = await call(s, 'PUT', `${AAI}/a1`, { ...put.body, status: { status: 'Unassigned' } });
    expect(statusOf(put2.body)).toBe('Unassigned');
  });

  it('with the subresource: status is dropped on create, ignored by main-resource writes, changed through /status', async () => {
    const s = await server('ours');
    const created = await call(s, 'POST', AAI, aai('Assigned'));
    expect(created.status).toBe(201);
    expect(created.body.status).toBeUndefined();

    const main = await call(s, 'PATCH', `${AAI}/a1`, { status: { status: 'Assigned' } }, 'application/merge-patch+json');
    expect(main.status).toBe(200);
    expect(main.body.status).toBeUndefined();

    const viaStatus = await call(s, 'PATCH', `${AAI}/a1/status`, { status: { status: 'Assigned' } }, 'application/merge-patch+json');
    expect(viaStatus.status).toBe(200);
    expect(statusOf(viaStatus.body)).toBe('Assigned');
  });
});
