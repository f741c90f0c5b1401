// NMI end to end against both emulators: the Kubernetes API emulator feeds its informers, the Azure emulator's IMDS
// and AAD issue the tokens, and callers reach NMI from distinct loopback addresses bound as their pod IPs.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeToken } from '../helpers/azure.js';
import { accessTokenOf, startNmiWorld, TOKEN_PATH, VAULT, type NmiWorld, type Reply } from '../helpers/nmi-world.js';

const STORAGE = 'https://storage.azure.com';
const tokenPath = (resource: string, extra = '') => `${TOKEN_PATH}?api-version=2018-02-01&resource=${encodeURIComponent(resource)}${extra}`;

function claimsOf(reply: Reply) {
  expect(reply.status, reply.body).toBe(200);
  return decodeToken(accessTokenOf(reply));
}

describe('NMI with both emulators, standard mode', () => {
  let world: NmiWorld;

  beforeAll(async () => {
    world = await startNmiWorld({ systemAssigned: true, nmi: { blockInstanceMetadata: true } });
  });
  afterAll(async () => {
    await world?.stop();
  });

  it('serves each pod a token of its own identity (appid, oid, aud and resource checked)', async () => {
    const pods = await Promise.all(['web', 'api', 'jobs'].map((n, i) => world.pod(n, `127.0.1.${11 + i}`)));
    const ids = [];
    for (const [i, pod] of pods.entries()) {
      const id = await world.managedIdentity(`id-${pod.name}`);
      await world.assign(pod, id);
      ids[i] = id;
    }
    for (const resource of [VAULT, STORAGE]) {
      for (const [i, pod] of pods.entries()) {
        const reply = await world.call(pod.ip, tokenPath(resource));
        const claims = claimsOf(reply);
        expect(claims.appid).toBe(ids[i].clientId);
        expect(claims.oid).toBe(ids[i].principalId);
        expect(claims.aud).toBe(resource);
        expect(claims.xms_mirid).toBe(ids[i].resourceId);
        const body = JSON.parse(reply.body) as Record<string, unknown>;
        expect(body).toMatchObject({ resource, token_type: 'Bearer' });
        expect(body.expires_on).toMatch(/^\d+$/);
      }
    }
    // Asking for its own identity by client id or resource id works; asking for a neighbour's never does.
    expect(claimsOf(await world.call(pods[0].ip, tokenPath(VAULT, `&client_id=${ids[0].clientId}`))).appid).toBe(ids[0].clientId);
    expect(claimsOf(await world.call(pods[0].ip, tokenPath(VAULT, `&msi_res_id=${encodeURIComponent(ids[0].resourceId)}`))).oid).toBe(
      ids[0].principalId,
    );
    // The pod's assignments are settled (its one binding is Assigned): refused at once, as IMDS refuses.
    const stolen = await world.call(pods[0].ip, tokenPath(VAULT, `&client_id=${ids[1].clientId}`));
    expect(stolen.status).toBe(400);
    expect(JSON.parse(stolen.body)).toEqual({ error: 'invalid_request', error_description: 'Identity not found' });
  });

  it('denies a caller whose address is no pod on this node', async () => {
    const reply = await world.call('127.0.1.99', tokenPath(VAULT));
    expect(reply.status).toBe(500);
    expect(reply.body).toContain('failed to match pod IP 127.0.1.99');
  });

  it('never gives a new pod at a reused IP the old pod’s identity', async () => {
    const ip = '127.0.1.21';
    const old = await world.pod('old', ip);
    const oldId = await world.managedIdentity('id-old');
    await world.assign(old, oldId);
    expect(claimsOf(await world.call(ip, tokenPath(VAULT))).appid).toBe(oldId.clientId);

    // The pod goes away; its AAI stays until MIC gets round to it. A new pod gets the same IP.
    await world.deletePod(old);
    const next = await world.pod('next', ip);
    const before = await world.call(ip, tokenPath(VAULT));
    expect(before.status).toBe(404);
    expect(before.body).not.toContain('access_token');

    const nextId = await world.managedIdentity('id-next');
    await world.assign(next, nextId);
    const claims = claimsOf(await world.call(ip, tokenPath(VAULT)));
    expect(claims.appid).toBe(nextId.clientId);
    expect(claims.appid).not.toBe(oldId.clientId);
  });

  it('answers 404 after the wait when no identity is assigned or the identity stays Created; 400 Identity not found to a pod without the label once past the window', async () => {
    const lonely = await world.pod('lonely', '127.0.1.31');
    const none = await world.call(lonely.ip, tokenPath(VAULT));
    expect(none.status).toBe(404);
    expect(none.body).toContain('CREATED state');
    // No aadpodidbinding label: nothing can come without relabelling the pod.
    const unlabelled = await world.pod('unlabelled', '127.0.1.34', { labels: { app: 'x' } });
    const refused = await world.call(unlabelled.ip, tokenPath(VAULT));
    expect(refused.status).toBe(400);
    expect(JSON.parse(refused.body)).toEqual({ error: 'invalid_request', error_description: 'Identity not found' });
    // A binding whose AAI MIC never writes: an assignment may still come, so the original's wait and 404.
    const waiting = await world.pod('waiting', '127.0.1.33');
    await world.binding('waiting-binding', await world.managedIdentity('id-waiting'), 'waiting');
    const missing = await world.call(waiting.ip, tokenPath(VAULT));
    expect(missing.status).toBe(404);
    expect(missing.body).toContain('CREATED state');

    const stuck = await world.pod('stuck', '127.0.1.32');
    await world.assign(stuck, await world.managedIdentity('id-stuck'), 'Created');
    const created = await world.call(stuck.ip, tokenPath(VAULT));
    expect(created.status).toBe(404);
    expect(created.body).toContain('ASSIGNED state');
  });

  it('gives a service principal identity (type 1, secret in a Secret) its token from the emulator’s AAD', async () => {
    const pod = await world.pod('sp-user', '127.0.1.41');
    const sp = await world.servicePrincipalIdentity('sp-identity');
    await world.assign(pod, sp);
    const claims = claimsOf(await world.call(pod.ip, tokenPath(VAULT)));
    expect(claims.appid).toBe(sp.clientId);
    expect(claims.oid).toBe(sp.principalId);
    expect(claims.aud).toBe(VAULT);
    expect(claims.tid).toBe(world.azure.emulator.tenantId);
    expect(world.azure.emulator.requestLog().some((e) => e.operation === 'aad_token' && e.status === 200)).toBe(true);
  });

  it('gives a pod matching an AzurePodIdentityException the node’s own identity', async () => {
    await world.exception('excepted-apps', 'default', { app: 'excepted' });
    const pod = await world.pod('excepted', '127.0.1.51', { labels: { app: 'Excepted' } });
    const vm = world.azure.emulator.getVm(world.azure.resourceGroup, world.node);
    const claims = claimsOf(await world.call(pod.ip, tokenPath(VAULT)));
    expect(claims.oid).toBe(vm?.identity.principalId);
    expect(claims.xms_mirid).toBe(vm?.id);
    // With a client id, the node's user-assigned identity of that client id.
    const attached = await world.managedIdentity('node-extra', { declare: false });
    expect(claimsOf(await world.call(pod.ip, tokenPath(VAULT, `&client_id=${attached.clientId}`))).appid).toBe(attached.clientId);
  });

  it('blocks instance metadata, proxies other paths to IMDS, and refuses token-path lookalikes without proxying', async () => {
    const pod = await world.pod('curious', '127.0.1.61');
    const instance = await world.call(pod.ip, '/metadata/instance?api-version=2021-02-01');
    expect(instance.status).toBe(403);
    expect(instance.body).toBe('Request blocked by AAD Pod Identity NMI\n');

    world.azure.emulator.clearRequestLog();
    const missing = await world.call(pod.ip, '/doesnotexist');
    expect(missing.status).toBe(404);
    expect(JSON.parse(missing.body)).toEqual({ error: 'Not found' }); // IMDS's own answer, passed through
    expect(world.azure.emulator.requestLog().map((e) => e.path)).toContain('/doesnotexist');

    const noHeader = await world.call(pod.ip, '/doesnotexist', { headers: {} });
    expect(noHeader.status).toBe(400);
    expect(JSON.parse(noHeader.body)).toEqual({ error: 'invalid_request', error_description: 'Required metadata header not specified' });

    world.azure.emulator.clearRequestLog();
    for (const path of ['/metadata/identity\\oauth2\\token', '/metadata/identity/oauth2%2Ftoken', '/metadata/identity/./oauth2/token']) {
      const reply = await world.call(pod.ip, `${path}?resource=${encodeURIComponent(VAULT)}`);
      expect(reply.status, path).toBe(400);
    }
    expect(world.azure.emulator.requestLog()).toEqual([]);
  });

  it('serves /host/token to host callers naming the pod, and to nobody else', async () => {
    const pod = await world.pod('csi-user', '127.0.1.71');
    const id = await world.managedIdentity('id-csi');
    await world.assign(pod, id);
    const headers = { podns: pod.namespace, podname: pod.name };
    const reply = await world.call('127.0.0.1', `/host/token/?resource=${encodeURIComponent(VAULT)}`, { headers });
    expect(reply.status, reply.body).toBe(200);
    const body = JSON.parse(reply.body) as { token: { access_token: string }; clientid: string };
    expect(body.clientid).toBe(id.clientId);
    expect(decodeToken(body.token.access_token).appid).toBe(id.clientId);

    expect((await world.call(pod.ip, `/host/token/?resource=${encodeURIComponent(VAULT)}`, { headers })).status).toBe(500);
    expect((await world.call('127.0.0.1', `/host/token/?resource=${encodeURIComponent(VAULT)}`, { headers: {} })).status).toBe(400);
  });
});

describe('NMI waiting for an assignment', () => {
  let world: NmiWorld;

  beforeAll(async () => {
    // A poll interval far beyond the test timeout: only a wake-up on the AAI change can answer in time.
    world = await startNmiWorld({ nmi: { retryAttemptsForCreated: 4, retryAttemptsForAssigned: 4, findIdentityRetryIntervalMs: 60_000 } });
  });
  afterAll(async () => {
    await world?.stop();
  });

  it('serves the identity as soon as its AAI turns Assigned while the request waits', async () => {
    const pod = await world.pod('eager', '127.0.1.81');
    const id = await world.managedIdentity('id-eager');
    const aai = await world.assign(pod, id, 'Created');
    let settled = false;
    const pending = world.call(pod.ip, tokenPath(VAULT)).finally(() => (settled = true));
    await new Promise((r) => setTimeout(r, 200));
    expect(settled).toBe(false); // still waiting: nothing is Assigned yet
    await world.setAssignedState(aai, 'Assigned');
    expect(claimsOf(await pending).appid).toBe(id.clientId);
  }, 20_000);
});

describe('NMI in managed mode', () => {
  let world: NmiWorld;

  beforeAll(async () => {
    world = await startNmiWorld({ nmi: { operationMode: 'managed', forceNamespaced: true } });
  });
  afterAll(async () => {
    await world?.stop();
  });

  it('serves the identity bound to the pod’s label in its namespace, without any AzureAssignedIdentity', async () => {
    const id = await world.managedIdentity('team-id', { namespace: 'team-a' });
    await world.binding('team-binding', id, 'team-app');
    const pod = await world.pod('team-pod', '127.0.1.91', { namespace: 'team-a', labels: { aadpodidbinding: 'team-app' } });
    const claims = claimsOf(await world.call(pod.ip, tokenPath(VAULT)));
    expect(claims.appid).toBe(id.clientId);
    expect(claims.oid).toBe(id.principalId);
    expect(world.nmi?.identities.allAssigned()).toEqual([]);

    // The same label in another namespace matches nothing: bindings are namespaced here.
    const outsider = await world.pod('outsider', '127.0.1.92', { namespace: 'team-b', labels: { aadpodidbinding: 'team-app' } });
    const denied = await world.call(outsider.ip, tokenPath(VAULT));
    expect(denied.status).toBe(404);
    expect(denied.body).not.toContain('access_token');
  });
});
