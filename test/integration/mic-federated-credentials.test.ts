// MIC's federated credential writer over @azure/arm-msi against the Azure emulator's federatedIdentityCredentials
// (real HTTPS, real SDK, the emulator's 409 on concurrent writes, its 20-credential limit and RBAC).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { realClock } from '../../src/common/clock.js';
import { serviceAccountSubject } from '../../src/crds/federation.js';
import { normalizeAzureIdentity } from '../../src/crds/normalize.js';
import type { AzureIdentity } from '../../src/crds/types.js';
import { desiredFederatedCredentials } from '../../src/mic/core/federation.js';
import { FederatedCredentialWriter, msiFederatedCredentialPort, type FederatedSyncOutcome } from '../../src/mic/federation/credentials.js';
import type { UserAssignedIdentity } from '../../src/sandbox/cloud/index.js';
import { emulatorSecretCredential, grantClusterRoles, startTestAzure, type TestAzure } from '../helpers/azure.js';

// The writer never fetches the issuer; the AKS shape, trailing slash included, is copied byte for byte.
const ISSUER = 'https://westeurope.oic.prod-aks.azure.com/tenant/cluster/';

describe('MIC federated credential writer against the Azure emulator', () => {
  let az: TestAzure;
  let n = 0;

  beforeAll(async () => {
    az = await startTestAzure();
    // Federated credential writes need Managed Identity Contributor (Operator only reads them).
    az.emulator.grantRole(az.servicePrincipal.objectId, 'Managed Identity Contributor', `/subscriptions/${az.emulator.subscriptionId}/resourceGroups/${az.resourceGroup}`);
  });
  afterAll(async () => {
    await az?.stop();
  });

  const newIdentity = (): { uami: UserAssignedIdentity; view: AzureIdentity } => {
    const uami = az.emulator.createUserAssignedIdentity(az.resourceGroup, `fed-${++n}`);
    const view = normalizeAzureIdentity({
      metadata: { name: `fed-${n}`, namespace: 'team-a', uid: `uid-${n}`, resourceVersion: '1' },
      spec: { type: 0, resourceID: uami.id, clientID: uami.clientId, mode: 'Federated' },
    }).value as AzureIdentity;
    return { uami, view };
  };
  const writer = (credential = az.credential) =>
    new FederatedCredentialWriter({
      port: msiFederatedCredentialPort({ credential, endpoint: az.emulator.url, caPem: az.emulator.caPem }),
      clock: realClock,
      issuer: ISSUER,
      backoff: { initialMs: 50, maxMs: 400 },
    });
  const sync = (w: FederatedCredentialWriter, view: AzureIdentity, serviceAccounts: string[]): Promise<FederatedSyncOutcome> => {
    const [desired] = desiredFederatedCredentials(ISSUER, [view], serviceAccounts.map((sa) => ({ identity: view, namespace: 'team-a', serviceAccount: sa })));
    if (desired === undefined) throw new Error('no desired set');
    return w.sync(desired);
  };
  const vmPatches = () => az.emulator.requestLog().filter((e) => e.operation === 'vm_patch' || e.operation === 'vmss_patch');

  it('gives two service accounts two credentials, removes the one no pod uses, and never PATCHes a VM', async () => {
    const { uami, view } = newIdentity();
    const w = writer();
    expect(await sync(w, view, ['web', 'worker'])).toMatchObject({ kind: 'synced', skipped: [], failed: [] });
    const stored = az.emulator.listFederatedCredentials(uami.id);
    expect(stored.map((f) => f.subject).sort()).toEqual([serviceAccountSubject('team-a', 'web'), serviceAccountSubject('team-a', 'worker')]);
    expect(stored.every((f) => f.issuer === ISSUER && f.name.startsWith('aadpodid-team-a-'))).toBe(true);

    const one = await sync(w, view, ['web']);
    expect(one).toMatchObject({ kind: 'synced', deleted: [expect.stringMatching(/^aadpodid-team-a-worker-[0-9a-f]{10}$/)] });
    expect(az.emulator.listFederatedCredentials(uami.id).map((f) => f.subject)).toEqual([serviceAccountSubject('team-a', 'web')]);
    expect(vmPatches()).toEqual([]);
  });

  it('refuses the 21st credential with a reason and no failing PUT, leaving the 19 it did not make alone', async () => {
    const { uami, view } = newIdentity();
    for (let i = 0; i < 19; i++) az.emulator.putFederatedCredential(uami.id, `user-${i}`, { issuer: 'https://github.example/', subject: `repo:${i}` });
    const out = await sync(writer(), view, ['a', 'b']);
    expect(out).toMatchObject({
      kind: 'synced',
      created: [expect.stringMatching(/^aadpodid-team-a-a-/)],
      skipped: [{ subject: serviceAccountSubject('team-a', 'b'), code: 'FederatedCredentialLimit' }],
    });
    expect(az.emulator.listFederatedCredentials(uami.id)).toHaveLength(20);
    expect(az.emulator.requestLog().filter((e) => e.operation === 'fic_put' && e.target.startsWith(`${uami.name}/`) && e.status >= 400)).toEqual([]);
    expect(az.emulator.requestLog().filter((e) => e.operation === 'fic_delete' && e.target.startsWith(`${uami.name}/`))).toEqual([]);
  });

  it('writes one at a time under an identity even when ARM is slow, so Azure never answers 409', async () => {
    const { uami, view } = newIdentity();
    az.emulator.setLatency('fic_put', 150);
    try {
      const w = writer();
      const outs = await Promise.all([sync(w, view, ['a', 'b']), sync(w, view, ['a', 'b', 'c'])]);
      for (const o of outs) expect(o).toMatchObject({ kind: 'synced' });
      expect(az.emulator.listFederatedCredentials(uami.id)).toHaveLength(3);
      const puts = az.emulator.requestLog().filter((e) => e.operation === 'fic_put' && e.target.startsWith(`${uami.name}/`));
      expect(puts.map((e) => e.status)).toEqual([201, 201, 201]);
    } finally {
      az.emulator.setLatency('fic_put', 0);
    }
  });

  it('retries the 409 another writer causes, and honours a 429 Retry-After', async () => {
    const { uami, view } = newIdentity();
    az.emulator.injectFault({
      operation: 'fic_put',
      target: uami.name,
      status: 409,
      count: 1,
      body: { error: { code: 'ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity', message: 'Too many Federated Identity Credentials are written concurrently' } },
    });
    az.emulator.injectFault({ operation: 'fic_put', target: uami.name, status: 429, retryAfter: 1, count: 1 });
    const started = Date.now();
    const out = await sync(writer(), view, ['web']);
    expect(out).toMatchObject({ kind: 'synced', created: [expect.any(String)] });
    expect(Date.now() - started).toBeGreaterThanOrEqual(950); // the Retry-After second, not the 50 ms backoff
    expect(az.emulator.requestLog().filter((e) => e.operation === 'fic_put' && e.target.startsWith(`${uami.name}/`)).map((e) => e.status)).toEqual([409, 429, 201]);
  });

  it('reports, per credential, the refusal of a principal holding only Managed Identity Operator (it may read, not write)', async () => {
    const { uami, view } = newIdentity();
    const secret = 'operator-only-secret';
    const sp = az.emulator.registerServicePrincipal({ clientId: '0a0a0a0a-0000-4000-8000-00000000000a', secret });
    grantClusterRoles(az.emulator, sp.objectId, `/subscriptions/${az.emulator.subscriptionId}/resourceGroups/${az.resourceGroup}`);
    const out = await sync(writer(emulatorSecretCredential(az.emulator, sp.clientId, secret)), view, ['web']);
    expect(out).toMatchObject({ kind: 'synced', created: [], ready: [], failed: [{ operation: 'create', status: 403 }] });
    expect(az.emulator.listFederatedCredentials(uami.id)).toEqual([]);
  });

  it('reports a deleted identity as gone', async () => {
    const { uami, view } = newIdentity();
    az.emulator.deleteUserAssignedIdentity(uami.id);
    expect(await sync(writer(), view, ['web'])).toMatchObject({ kind: 'gone' });
  });
});
