// Issue 10 rows 3 and 5, performed for real against both emulators: a namespace's AzurePodIdentityException (or a pod
// dressed up as MIC) must not reach an identity that another namespace's AzureIdentity declares, although every such
// identity is attached to the node's VM/VMSS and so visible to its IMDS. The node's own identities still work.

import crypto from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GROUP, Plurals, VERSION } from '../../src/crds/names.js';
import { decodeToken } from '../helpers/azure.js';
import { accessTokenOf, startNmiWorld, TOKEN_PATH, VAULT, type NmiWorld, type Reply, type WorldIdentity, type WorldPod } from '../helpers/nmi-world.js';

const tokenPath = (extra = '') => `${TOKEN_PATH}?api-version=2018-02-01&resource=${encodeURIComponent(VAULT)}${extra}`;
const MIC_NAMESPACE = 'kube-system'; // nmi-world's --MICNamespace
const MIC_SERVICE_ACCOUNT = 'aad-pod-identity-mic'; // nmi-world's --mic-service-account

function claimsOf(reply: Reply) {
  expect(reply.status, reply.body).toBe(200);
  return decodeToken(accessTokenOf(reply));
}

/** What IMDS answers for an identity the VM does not have, and what the node path answers for a declared one. */
const IDENTITY_NOT_FOUND_BODY = '{"error":"invalid_request","error_description":"Identity not found"}';

/** The parts of an answer a pod can compare: a refusal must not differ in any of them from "no such identity". */
function visible(reply: Reply) {
  return { status: reply.status, contentType: reply.headers['content-type'], body: reply.body };
}

function expectRefused(reply: Reply, what: string): void {
  expect(reply.body, what).not.toContain('access_token');
  // The pod is not told which namespace or object declares the identity, nor that one does: IMDS's own answer.
  expect(visible(reply), what).toEqual({ status: 400, contentType: 'application/json; charset=utf-8', body: IDENTITY_NOT_FOUND_BODY });
}

const randomClientId = () => crypto.randomUUID();

async function declare(world: NmiWorld, namespace: string, name: string, id: WorldIdentity, spec: Record<string, unknown> = { type: 0, resourceID: id.resourceId, clientID: id.clientId }): Promise<void> {
  await world.core.createNamespace({ body: { metadata: { name: namespace } } }).catch((e: { code?: number }) => {
    if (e.code !== 409) throw e;
  });
  await world.custom.createNamespacedCustomObject({
    group: GROUP,
    version: VERSION,
    namespace,
    plural: Plurals.AzureIdentity,
    body: { apiVersion: `${GROUP}/${VERSION}`, kind: 'AzureIdentity', metadata: { name, namespace }, spec },
  });
  await world.until((n) => n.identities.identities.get(namespace, name) !== undefined, `AzureIdentity ${namespace}/${name}`);
}

describe('the node path cannot reach identities AzureIdentities declare (scale set)', () => {
  let world: NmiWorld;
  let teamA: WorldIdentity;
  let attacker: WorldPod;
  const imdsTokenCalls = () => world.azure.emulator.requestLog().filter((e) => e.operation === 'imds_token');

  beforeAll(async () => {
    world = await startNmiWorld({ compute: 'vmss' });
    // team-a's identity: declared by its AzureIdentity, attached to the scale set (as MIC does for team-a's pods).
    teamA = await world.managedIdentity('payments', { namespace: 'team-a' });
    // team-b's editor writes an exception for its own pod.
    await world.exception('node-agents', 'team-b', { app: 'node-agent' });
    attacker = await world.pod('agent', '127.0.2.11', { namespace: 'team-b', labels: { app: 'node-agent' } });
  });
  afterAll(async () => {
    await world?.stop();
  });

  it("refuses an excepted pod's client_id, msi_res_id and mi_res_id naming team-a's identity, without asking IMDS", async () => {
    world.azure.emulator.clearRequestLog();
    const asks = {
      client_id: `&client_id=${teamA.clientId}`,
      'client_id upper case': `&client_id=${teamA.clientId.toUpperCase()}`,
      msi_res_id: `&msi_res_id=${encodeURIComponent(teamA.resourceId)}`,
      mi_res_id: `&mi_res_id=${encodeURIComponent(teamA.resourceId.toUpperCase())}`,
    };
    for (const [what, extra] of Object.entries(asks)) expectRefused(await world.call(attacker.ip, tokenPath(extra)), what);
    expect(imdsTokenCalls()).toEqual([]);
  });

  it("answers a declared client_id or msi_res_id exactly as an ID attached nowhere and declared nowhere", async () => {
    const unknownClient = visible(await world.call(attacker.ip, tokenPath(`&client_id=${randomClientId()}`)));
    const unknownResource = visible(
      await world.call(attacker.ip, tokenPath(`&msi_res_id=${encodeURIComponent(teamA.resourceId.replace(/[^/]+$/, `nowhere-${randomClientId()}`))}`)),
    );
    // That one really went to IMDS, which said it has no such identity; NMI passed that on as IMDS gave it.
    expect(unknownClient.body).toBe(IDENTITY_NOT_FOUND_BODY);
    expect(unknownResource).toEqual(unknownClient);
    expect(visible(await world.call(attacker.ip, tokenPath(`&client_id=${teamA.clientId}`)))).toEqual(unknownClient);
    expect(visible(await world.call(attacker.ip, tokenPath(`&msi_res_id=${encodeURIComponent(teamA.resourceId)}`)))).toEqual(unknownResource);
    // Nor a header tells them apart (only Date may differ).
    const [a, b] = [await world.call(attacker.ip, tokenPath(`&client_id=${randomClientId()}`)), await world.call(attacker.ip, tokenPath(`&client_id=${teamA.clientId}`))];
    const names = (r: Reply) => Object.keys(r.headers).filter((h) => h !== 'date').sort().map((h) => `${h}: ${String(r.headers[h])}`);
    expect(names(b)).toEqual(names(a));
  });

  it("refuses a request with no id when the scale set's only user-assigned identity is declared, and caches nothing", async () => {
    world.azure.emulator.clearRequestLog();
    const entries = world.nmi!.tokens.stats().entries;
    expectRefused(await world.call(attacker.ip, tokenPath()), 'no id, first');
    // IMDS picked team-a's identity (the only one); NMI saw whose token it was and refused it.
    expect(imdsTokenCalls().map((e) => e.status)).toEqual([200]);
    expectRefused(await world.call(attacker.ip, tokenPath()), 'no id, second');
    // Asked again: the refused token was not kept.
    expect(imdsTokenCalls()).toHaveLength(2);
    expect(world.nmi!.tokens.stats().entries).toBe(entries);
  });

  it("serves the excepted pod the node's own identity, by client_id, msi_res_id and mi_res_id", async () => {
    const nodeAgent = await world.managedIdentity('node-agent', { namespace: 'team-b', declare: false });
    world.azure.emulator.clearRequestLog();
    expect(claimsOf(await world.call(attacker.ip, tokenPath(`&client_id=${nodeAgent.clientId}`))).appid).toBe(nodeAgent.clientId);
    const byMsi = claimsOf(await world.call(attacker.ip, tokenPath(`&msi_res_id=${encodeURIComponent(nodeAgent.resourceId)}`)));
    expect(byMsi.xms_mirid).toBe(nodeAgent.resourceId);
    expect(byMsi.appid).toBe(nodeAgent.clientId);
    // mi_res_id is the same selector to IMDS (and the same cache entry).
    expect(claimsOf(await world.call(attacker.ip, tokenPath(`&mi_res_id=${encodeURIComponent(nodeAgent.resourceId)}`))).appid).toBe(nodeAgent.clientId);
    // The resource ID reached IMDS: before, the node path dropped it and IMDS picked an identity itself.
    expect(imdsTokenCalls().map((e) => e.target.toLowerCase())).toContainEqual(expect.stringContaining(nodeAgent.resourceId.toLowerCase()));
    // And team-a's is still refused with the node's own identity on the scale set too.
    expectRefused(await world.call(attacker.ip, tokenPath(`&client_id=${teamA.clientId}`)), 'client_id after');
  });

  it('refuses, by the token IMDS returns, an identity an AzureIdentity declares by resource ID only', async () => {
    const resOnly = await world.managedIdentity('ledger', { namespace: 'team-a', declare: false });
    await declare(world, 'team-a', 'ledger', resOnly, { type: 0, resourceID: resOnly.resourceId });
    world.azure.emulator.clearRequestLog();
    // The client ID is declared nowhere, so IMDS is asked; its token's xms_mirid is team-a's resource ID.
    expectRefused(await world.call(attacker.ip, tokenPath(`&client_id=${resOnly.clientId}`)), 'client_id of a resource-ID-only identity');
    expect(imdsTokenCalls().map((e) => e.status)).toEqual([200]);
    expectRefused(await world.call(attacker.ip, tokenPath(`&msi_res_id=${encodeURIComponent(resOnly.resourceId)}`)), 'its msi_res_id');
  });

  it('does not take a pod with a hand-written ReplicaSet owner named mic-* in the MIC namespace for MIC', async () => {
    const nodeAgent = await world.managedIdentity('node-agent-2', { namespace: 'team-b', declare: false });
    const fake = await world.pod('mic-7c9d8f-x2x4z', '127.0.2.21', {
      namespace: MIC_NAMESPACE,
      labels: { app: 'mic' },
      serviceAccountName: 'default',
      ownerReferences: [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: 'mic-7c9d8f', uid: '3b1d7a52-0000-4000-8000-000000000001', controller: true }],
    });
    world.azure.emulator.clearRequestLog();
    for (const extra of [`&client_id=${teamA.clientId}`, `&client_id=${nodeAgent.clientId}`, '']) {
      const reply = await world.call(fake.ip, tokenPath(extra));
      // Not MIC, so an ordinary pod with no binding label: once past the wait window, IMDS's "Identity not found".
      expect(reply.status, reply.body).toBe(400);
      expect(reply.body).not.toContain('access_token');
    }
    expect(imdsTokenCalls()).toEqual([]);
  });

  it("serves the pod running as MIC's ServiceAccount in MIC's namespace the node's own identity, never team-a's", async () => {
    const micIdentity = await world.managedIdentity('mic-arm', { namespace: MIC_NAMESPACE, declare: false });
    const mic = await world.pod('mic-5f6d7c-abcde', '127.0.2.31', { namespace: MIC_NAMESPACE, labels: { app: 'mic' }, serviceAccountName: MIC_SERVICE_ACCOUNT });
    expect(claimsOf(await world.call(mic.ip, tokenPath(`&client_id=${micIdentity.clientId}`))).appid).toBe(micIdentity.clientId);
    expectRefused(await world.call(mic.ip, tokenPath(`&client_id=${teamA.clientId}`)), 'MIC asking for team-a');
    // The same ServiceAccount name in a namespace an editor controls is someone else.
    const elsewhere = await world.pod('mic-lookalike', '127.0.2.32', { namespace: 'team-b', serviceAccountName: MIC_SERVICE_ACCOUNT });
    expect((await world.call(elsewhere.ip, tokenPath(`&client_id=${micIdentity.clientId}`))).status).toBe(404);
  });
});

describe('the node path and the token cache (one user-assigned identity on a VM)', () => {
  let world: NmiWorld;

  beforeAll(async () => {
    world = await startNmiWorld({ compute: 'vm' });
  });
  afterAll(async () => {
    await world?.stop();
  });

  it('stops serving a cached node token once an AzureIdentity declares its identity', async () => {
    const only = await world.managedIdentity('node-only', { namespace: 'team-b', declare: false });
    await world.exception('node-agents', 'team-b', { app: 'node-agent' });
    const pod = await world.pod('agent', '127.0.2.41', { namespace: 'team-b', labels: { app: 'node-agent' } });
    // No id: IMDS picks the VM's only user-assigned identity, which nobody declares yet.
    expect(claimsOf(await world.call(pod.ip, tokenPath())).appid).toBe(only.clientId);
    world.azure.emulator.clearRequestLog();
    expect(claimsOf(await world.call(pod.ip, tokenPath())).appid).toBe(only.clientId);
    expect(world.azure.emulator.requestLog().filter((e) => e.operation === 'imds_token')).toEqual([]); // from the cache

    await declare(world, 'team-a', 'payments', only);
    expectRefused(await world.call(pod.ip, tokenPath()), 'cached token of a now declared identity');
    // Forgotten, not merely hidden: the next request asks IMDS again, and is refused again.
    expectRefused(await world.call(pod.ip, tokenPath()), 'after the cache was dropped');
    expect(world.azure.emulator.requestLog().filter((e) => e.operation === 'imds_token')).toHaveLength(1);

    // Deleting the AzureIdentity gives the node its identity back.
    await world.custom.deleteNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: 'team-a', plural: Plurals.AzureIdentity, name: 'payments' });
    await world.until((n) => n.identities.identities.get('team-a', 'payments') === undefined, 'AzureIdentity deleted');
    expect(claimsOf(await world.call(pod.ip, tokenPath())).appid).toBe(only.clientId);
  });
});

describe('the node path, a request with no id, and a VM with no identity of its own', () => {
  let world: NmiWorld;

  beforeAll(async () => {
    world = await startNmiWorld({ compute: 'vm' });
  });
  afterAll(async () => {
    await world?.stop();
  });

  it("answers the refused token of the VM's only (declared) identity as IMDS answers a VM with no identity", async () => {
    await world.exception('node-agents', 'team-b', { app: 'node-agent' });
    const pod = await world.pod('agent', '127.0.2.51', { namespace: 'team-b', labels: { app: 'node-agent' } });
    // No identity on the VM: IMDS has none to pick, and NMI passes its answer on.
    const none = visible(await world.call(pod.ip, tokenPath()));
    expect(none.body).toBe(IDENTITY_NOT_FOUND_BODY);
    // team-a's identity is attached and declared: IMDS now returns its token to a request with no id; NMI refuses it.
    await world.managedIdentity('payments', { namespace: 'team-a' });
    world.nmi!.tokens.invalidateNodeTokens(); // the remembered IMDS failure, not what is under test
    world.azure.emulator.clearRequestLog();
    const refused = await world.call(pod.ip, tokenPath());
    expect(world.azure.emulator.requestLog().filter((e) => e.operation === 'imds_token').map((e) => e.status)).toEqual([200]);
    expect(visible(refused)).toEqual(none);
  });
});
