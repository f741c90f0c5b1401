// The API emulator over HTTPS with its own CA and a required bearer token, through client-node.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as k8s from '@kubernetes/client-node';
import { Agent, fetch as undiciFetch } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CRD_DIR, startTestApiServer, type TestApiServer } from '../helpers/apiserver.js';

describe('API emulator over TLS', () => {
  let world: TestApiServer;
  let dir: string;

  beforeAll(async () => {
    world = await startTestApiServer({ tls: true, token: 'secret-token', crdDir: CRD_DIR });
    dir = await mkdtemp(join(tmpdir(), 'apiserver-tls-'));
  });
  afterAll(async () => {
    await world.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('serves client-node through a kubeconfig file carrying the CA and the token', async () => {
    expect(world.server.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    expect(world.server.caPem).toContain('BEGIN CERTIFICATE');
    const path = join(dir, 'kubeconfig');
    await world.server.writeKubeconfig(path);
    const kc = new k8s.KubeConfig();
    kc.loadFromFile(path);
    expect(kc.getCurrentCluster()?.skipTLSVerify).toBeFalsy();
    const core = kc.makeApiClient(k8s.CoreV1Api);
    const ns = await core.listNamespace();
    expect(ns.items.map((n) => n.metadata?.name)).toEqual(expect.arrayContaining(['default', 'kube-system', 'kube-public']));

    const custom = kc.makeApiClient(k8s.CustomObjectsApi);
    await custom.createNamespacedCustomObject({
      group: 'aadpodidentity.k8s.io', version: 'v1', namespace: 'default', plural: 'azureidentitybindings',
      body: { apiVersion: 'aadpodidentity.k8s.io/v1', kind: 'AzureIdentityBinding', metadata: { name: 'b' }, spec: { azureIdentity: 'id', selector: 's' } },
    });
    const seen: string[] = [];
    const ctl = await new k8s.Watch(kc).watch('/apis/aadpodidentity.k8s.io/v1/azureidentitybindings', {}, (type, obj: { metadata: { name: string } }) => {
      seen.push(`${type} ${obj.metadata.name}`);
    }, () => {});
    const deadline = Date.now() + 5000;
    while (seen.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    ctl.abort();
    expect(seen).toEqual(['ADDED b']);
  });

  it('refuses a request without the right bearer token with 401 and a Status body', async () => {
    const kc = new k8s.KubeConfig();
    kc.loadFromOptions({
      clusters: [{ name: 'c', server: world.server.url, caData: Buffer.from(world.server.caPem ?? '').toString('base64') }],
      users: [{ name: 'u', token: 'wrong' }],
      contexts: [{ name: 'x', cluster: 'c', user: 'u' }],
      currentContext: 'x',
    });
    const err = await kc.makeApiClient(k8s.CoreV1Api).listNamespace().then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(k8s.ApiException);
    // client-node drops the body of a 401 (its generated code declares none), so the wire is checked below.
    expect((err as k8s.ApiException<unknown>).code).toBe(401);
    const agent = new Agent({ connect: { ca: world.server.caPem } });
    const res = await undiciFetch(`${world.server.url}/api/v1/namespaces`, { dispatcher: agent, headers: { authorization: 'Bearer nope' } });
    expect(res.status).toBe(401);
    expect(res.headers.get('content-type')).toBe('application/json');
    expect(await res.json()).toMatchObject({ kind: 'Status', apiVersion: 'v1', status: 'Failure', reason: 'Unauthorized', code: 401 });
    await agent.close();
  });
});
