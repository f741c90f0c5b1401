import { afterEach, describe, expect, it } from 'vitest';
import { request } from 'node:https';
import { readFile } from 'node:fs/promises';
import { startAzureEmulator, type AzureEmulator } from '../../src/sandbox/cloud/index.js';
import { applySeedState, parseSeedState } from '../../src/sandbox/cloud/seed.js';

describe('Azure emulator: admin API over HTTP and state-file seeding', () => {
  let emulator: AzureEmulator | undefined;
  afterEach(async () => {
    await emulator?.stop();
    emulator = undefined;
  });

  it('runs admin methods posted to /_admin/<method>, trusting the written CA file, and keeps them out of the request log', async () => {
    emulator = await startAzureEmulator();
    const ca = await readFile(emulator.caFile, 'utf8');
    expect(ca).toBe(emulator.caPem);
    const admin = (method: string, ...args: unknown[]) => post(`${emulator?.url}/_admin/${method}`, ca, { args });

    expect((await admin('createResourceGroup', 'rg')).status).toBe(200);
    const id = (await admin('createUserAssignedIdentity', 'rg', 'pod-id')).body as { result: { id: string; clientId: string } };
    expect(id.result.clientId).toMatch(/^[0-9a-f-]{36}$/);
    await admin('createVm', 'rg', 'node-a', { userAssigned: [id.result.id] });
    expect(emulator.getVm('rg', 'node-a')?.identity.userAssignedIdentities).toEqual([id.result.id]);
    await admin('injectFault', { operation: 'vm_get', status: 503, retryAfter: 7, count: 1 });
    const granted = (await admin('grantRole', 'caller-oid', 'Reader', '/subscriptions/' + emulator.subscriptionId + '/resourceGroups/rg')).body as {
      result: { roleName: string; roleDefinitionId: string };
    };
    expect(granted.result).toMatchObject({ roleName: 'Reader', roleDefinitionId: '/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7' });
    expect((await admin('checkAccess', 'caller-oid', 'Microsoft.Compute/virtualMachines/read', `/subscriptions/${emulator.subscriptionId}/resourcegroups/RG/providers/Microsoft.Compute/virtualMachines/node-a`)).body).toEqual({ result: true });
    const token = (await admin('issueToken', { objectId: 'caller-oid' })).body as { result: { accessToken: string } };
    const vmUrl = `${emulator.url}/subscriptions/${emulator.subscriptionId}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/node-a?api-version=2026-03-01`;
    const faulted = await get(vmUrl, ca, token.result.accessToken);
    expect(faulted).toMatchObject({ status: 503, retryAfter: '7', body: { error: { code: 'ServiceUnavailable' } } });
    expect((await get(vmUrl, ca, token.result.accessToken)).status).toBe(200); // count: 1
    const imds = (await admin('startImds', { vm: 'node-a' })).body as { result: { url: string } };
    const imdsToken = await fetch(`${imds.result.url}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://x`, {
      headers: { Metadata: 'true' },
    });
    expect(imdsToken.status).toBe(200);
    expect((await admin('stopImds', imds.result.url)).status).toBe(200);
    expect((await admin('noSuchMethod')).status).toBe(404);
    expect((await admin('createVm', 'missing-rg', 'x')).body).toEqual({ error: expect.stringContaining('missing-rg') });
    expect(emulator.requestLog().map((e) => e.operation)).toEqual(['vm_get', 'vm_get', 'imds_token']);
  });

  it('seeds a world from a YAML state file: groups, identities, VMs with identities, service principals, IMDS', async () => {
    emulator = await startAzureEmulator();
    const seed = parseSeedState(`
identities:
  - {resourceGroup: node-rg, name: pod-id}
vms:
  - {resourceGroup: node-rg, name: node-a, userAssigned: [pod-id], systemAssigned: true}
vmss:
  - {resourceGroup: node-rg, name: pool, instances: 2}
servicePrincipals:
  - {clientId: mic-sp, secret: s}
roleAssignments:
  - {principal: mic-sp, role: Virtual Machine Contributor, scope: node-rg}
  - {principal: mic-sp, role: f1a07417-d97a-45cb-824c-7a7467783830, scope: node-rg}
imds:
  - {vmss: pool, instanceId: "1"}
`);
    const result = await applySeedState(emulator, seed);
    expect(result.identities.map((i) => i.name)).toEqual(['pod-id']);
    expect(emulator.getVm('node-rg', 'node-a')?.identity).toMatchObject({
      type: 'SystemAssigned, UserAssigned',
      userAssignedIdentities: [result.identities[0]?.id],
    });
    expect(emulator.getVmss('node-rg', 'pool')?.instances).toEqual(['0', '1']);
    expect(emulator.listRoleAssignments().map((a) => a.roleName).sort()).toEqual(['Managed Identity Operator', 'Virtual Machine Contributor']);
    expect(emulator.checkAccess('mic-sp', 'Microsoft.ManagedIdentity/userAssignedIdentities/assign/action', result.identities[0]?.id ?? '')).toBe(true);
    expect(result.imds[0]?.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(() => parseSeedState('vms: {}')).toThrow(/'vms' must be a list/);
    expect(() => parseSeedState('nodes: []')).toThrow(/unknown key 'nodes'/);
  });
});

function post(url: string, ca: string, body: unknown): Promise<{ status: number; body: unknown }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'POST', ca, headers: { 'content-type': 'application/json' } }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text ? (JSON.parse(text) as unknown) : undefined }));
    });
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}

function get(url: string, ca: string, token: string): Promise<{ status: number; retryAfter: string | undefined; body: unknown }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { ca, headers: { authorization: `Bearer ${token}` } }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString()));
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          retryAfter: typeof res.headers['retry-after'] === 'string' ? res.headers['retry-after'] : undefined,
          body: text ? (JSON.parse(text) as unknown) : undefined,
        }),
      );
    });
    req.on('error', reject);
    req.end();
  });
}
