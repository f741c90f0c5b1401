import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ManagedIdentityCredential } from '@azure/identity';
import type { UserAssignedIdentitiesValue } from '@azure/arm-compute';
import { decodeToken, mintedArmCredential, startTestAzure, type TestAzure } from '../helpers/azure.js';
import type { ImdsListener } from '../../src/sandbox/cloud/index.js';

// msal-node fixes the managed-identity endpoint process-wide on first use (sdk-notes §2): this file uses one VM's
// IMDS for every ManagedIdentityCredential, with a distinct identity per test so the token cache never answers.
describe('Azure emulator: IMDS per VM', () => {
  let az: TestAzure;
  let vmImds: ImdsListener;
  let previousHost: string | undefined;
  const rg = 'rg-imds';

  beforeAll(async () => {
    az = await startTestAzure({ resourceGroup: rg });
    az.emulator.createVm(rg, 'vm1');
    vmImds = await az.emulator.startImds({ vm: 'vm1' });
    previousHost = process.env.AZURE_POD_IDENTITY_AUTHORITY_HOST;
    process.env.AZURE_POD_IDENTITY_AUTHORITY_HOST = vmImds.url;
  });
  afterAll(async () => {
    if (previousHost === undefined) delete process.env.AZURE_POD_IDENTITY_AUTHORITY_HOST;
    else process.env.AZURE_POD_IDENTITY_AUTHORITY_HOST = previousHost;
    await az.stop();
  });

  it('gives ManagedIdentityCredential a token for an attached identity, by client id and by resource id', async () => {
    const { emulator } = az;
    const a = emulator.createUserAssignedIdentity(rg, 'a');
    const b = emulator.createUserAssignedIdentity(rg, 'b');
    emulator.setVmIdentities({ vm: 'vm1' }, [a.id, b.id]);

    const byClient = await new ManagedIdentityCredential({ clientId: a.clientId }).getToken('https://storage.azure.com/.default');
    expect(decodeToken(byClient.token)).toMatchObject({
      appid: a.clientId,
      oid: a.principalId,
      aud: 'https://storage.azure.com',
      tid: emulator.tenantId,
      xms_mirid: a.id,
    });
    const byResource = await new ManagedIdentityCredential({ resourceId: b.id }).getToken('https://vault.azure.net/.default');
    expect(decodeToken(byResource.token)).toMatchObject({ appid: b.clientId, oid: b.principalId, aud: 'https://vault.azure.net' });
    expect(byResource.expiresOnTimestamp).toBeGreaterThan(Date.now() + 3600_000);
  });

  it('answers "Identity not found" for an identity that is not on the VM, once, with no retry', async () => {
    const { emulator } = az;
    const elsewhere = emulator.createUserAssignedIdentity(rg, 'elsewhere');
    emulator.clearRequestLog();
    const err = await new ManagedIdentityCredential({ clientId: elsewhere.clientId })
      .getToken('https://storage.azure.com/.default')
      .then(
        () => undefined,
        (e: unknown) => e as Error,
      );
    expect(err?.name).toBe('CredentialUnavailableError');
    expect(String(err?.message) + String((err?.cause as Error | undefined)?.message)).toMatch(/Identity not found|invalid_request/);
    expect(emulator.requestLog().filter((e) => e.operation === 'imds_token').map((e) => e.status)).toEqual([400]);
  });

  it('speaks the IMDS wire format: Metadata header, api-version, resource, echoed resource, string numbers', async () => {
    const { emulator } = az;
    emulator.createVm(rg, 'raw');
    const raw = await emulator.startImds({ vm: 'raw' });
    const id = emulator.createUserAssignedIdentity(rg, 'raw-id');
    const token = (q: string, headers: Record<string, string> = { Metadata: 'true' }) =>
      getJson(`${raw.url}/metadata/identity/oauth2/token${q}`, headers);

    expect(await token('?api-version=2018-02-01&resource=https://x', {})).toEqual({
      status: 400,
      body: { error: 'invalid_request', error_description: 'Required metadata header not specified' },
    });
    expect((await token('?resource=https://x')).status).toBe(400);
    expect((await token('?api-version=2018-02-01')).status).toBe(400);
    // No identity at all on the VM.
    expect(await token('?api-version=2018-02-01&resource=https://x')).toEqual({
      status: 400,
      body: { error: 'invalid_request', error_description: 'Identity not found' },
    });

    emulator.setVmIdentities({ vm: 'raw' }, [id.id]);
    const ok = await getJson(`${raw.url}/metadata/identity/oauth2/token/?api-version=2018-02-01&resource=https%3A%2F%2Fstorage.azure.com%2F`, {
      Metadata: 'true',
    });
    expect(ok.status).toBe(200);
    const body = ok.body as Record<string, unknown>;
    expect(Object.keys(body).sort()).toEqual(
      ['access_token', 'client_id', 'expires_in', 'expires_on', 'ext_expires_in', 'not_before', 'resource', 'token_type'].sort(),
    );
    expect(body.resource).toBe('https://storage.azure.com/');
    expect(body.client_id).toBe(id.clientId);
    for (const k of ['expires_in', 'expires_on', 'ext_expires_in', 'not_before']) expect(body[k]).toMatch(/^\d+$/);

    // Several user-assigned and no system-assigned: the caller must choose.
    const second = emulator.createUserAssignedIdentity(rg, 'raw-id2');
    emulator.setVmIdentities({ vm: 'raw' }, [id.id, second.id]);
    expect((await token('?api-version=2018-02-01&resource=https://x')).body).toEqual({
      error: 'invalid_request',
      error_description:
        'Multiple user assigned identities exist, please specify the clientId / resourceId of the identity in the token request',
    });
    // With a system-assigned identity, no id means the system identity.
    emulator.setVmIdentities({ vm: 'raw' }, [id.id, second.id], { systemAssigned: true });
    const sys = await token('?api-version=2018-02-01&resource=https://x');
    const sysClaims = decodeToken(String((sys.body as Record<string, unknown>).access_token));
    expect(sysClaims.oid).toBe(emulator.getVm(rg, 'raw')?.identity.principalId);
    expect(sysClaims.xms_mirid).toBe(emulator.getVm(rg, 'raw')?.id);

    const instance = await getJson(`${raw.url}/metadata/instance?api-version=2021-02-01`, { Metadata: 'true' });
    expect(instance).toMatchObject({ status: 200, body: { compute: { name: 'raw', resourceGroupName: rg, subscriptionId: emulator.subscriptionId } } });
    expect((await getJson(`${raw.url}/metadata/nothing`, { Metadata: 'true' })).status).toBe(404);
    await raw.stop();
  });

  it('serves a scale-set instance the identities of its scale set, and a new identity only once the ARM update completes', async () => {
    const { emulator } = az;
    emulator.createVmss(rg, 'ss', { instances: ['0', '3'] });
    const inst = await emulator.startImds({ vmss: 'ss', instanceId: '3' });
    const id = emulator.createUserAssignedIdentity(rg, 'ss-id');
    const ask = () => getJson(`${inst.url}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://x&client_id=${id.clientId}`, { Metadata: 'true' });
    expect((await ask()).status).toBe(400);

    emulator.setLatency('vmss_patch', 1000); // long enough for one IMDS round trip on a loaded machine
    const caller = randomUUID();
    emulator.grantRole(caller, 'Virtual Machine Contributor', `/subscriptions/${emulator.subscriptionId}/resourceGroups/${rg}`);
    emulator.grantRole(caller, 'Managed Identity Operator', id.id);
    const compute = az.compute(mintedArmCredential(emulator, { objectId: caller }));
    const poller = compute.virtualMachineScaleSets.update(
      rg,
      'ss',
      { identity: { type: 'UserAssigned', userAssignedIdentities: { [id.id]: {} as UserAssignedIdentitiesValue } } },
      { updateIntervalInMs: 50 },
    );
    await poller.submitted();
    expect((await ask()).status).toBe(400); // still running
    await poller.pollUntilDone();
    const after = await ask();
    expect(after.status).toBe(200);
    expect(decodeToken(String((after.body as Record<string, unknown>).access_token)).appid).toBe(id.clientId);
    await inst.stop();
  });
});

async function getJson(url: string, headers: Record<string, string>): Promise<{ status: number; body: unknown }> {
  const res = await fetch(url, { headers });
  const text = await res.text();
  return { status: res.status, body: text ? (JSON.parse(text) as unknown) : undefined };
}
