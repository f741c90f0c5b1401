import { randomUUID } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { UserAssignedIdentitiesValue } from '@azure/arm-compute';
import { RestError } from '@azure/core-rest-pipeline';
import { decodeToken, mintedArmCredential, startTestAzure, type TestAzure } from '../helpers/azure.js';

// Removal is a JSON null in the identity map; the SDK types do not allow it (sdk-notes §4).
const REMOVE = null as unknown as UserAssignedIdentitiesValue;

describe('Azure emulator: ARM compute and MSI through the real SDKs', () => {
  let az: TestAzure;
  beforeEach(async () => {
    az = await startTestAzure({ lro: 'sync' });
  });
  afterEach(async () => {
    await az.stop();
  });

  it('serves VM, VMSS and VMSS instance GETs as ARM JSON the SDK understands', async () => {
    const { emulator, resourceGroup: rg } = az;
    const id1 = emulator.createUserAssignedIdentity(rg, 'id1');
    emulator.createVm(rg, 'vm1', { systemAssigned: true, userAssigned: [id1.id] });
    emulator.createVmss(rg, 'ss1', { instances: 2 });
    const compute = az.compute();

    const vm = await compute.virtualMachines.get(rg, 'vm1');
    expect(vm.name).toBe('vm1');
    expect(vm.provisioningState).toBe('Succeeded');
    expect(vm.identity?.type).toBe('SystemAssigned, UserAssigned');
    expect(vm.identity?.principalId).toMatch(/^[0-9a-f-]{36}$/);
    expect(vm.identity?.userAssignedIdentities?.[id1.id]).toEqual({ principalId: id1.principalId, clientId: id1.clientId });

    const ss = await compute.virtualMachineScaleSets.get(rg, 'ss1');
    expect(ss.name).toBe('ss1');
    expect(ss.identity).toBeUndefined(); // no identities: ARM omits the block
    expect(ss.sku?.capacity).toBe(2);

    const inst = await compute.virtualMachineScaleSetVMs.get(rg, 'ss1', '1');
    expect(inst.instanceId).toBe('1');
    expect(inst.osProfile?.computerName).toBe('ss1000001');
    await expect(compute.virtualMachineScaleSetVMs.get(rg, 'ss1', '7')).rejects.toMatchObject({ statusCode: 404 });
    await expect(compute.virtualMachines.get(rg, 'nope')).rejects.toMatchObject({ statusCode: 404, code: 'ResourceNotFound' });
  });

  it('merges identity PATCHes: {} adds, null removes, IDs compare case-insensitively, type follows what is left', async () => {
    const { emulator, resourceGroup: rg } = az;
    const a = emulator.createUserAssignedIdentity(rg, 'a');
    const b = emulator.createUserAssignedIdentity(rg, 'b');
    emulator.createVm(rg, 'vm1');
    const compute = az.compute();

    const added = await compute.virtualMachines.update(rg, 'vm1', {
      identity: { type: 'UserAssigned', userAssignedIdentities: { [a.id.toLowerCase()]: {}, [b.id]: {} } },
    });
    expect(added.identity?.type).toBe('UserAssigned');
    expect(Object.keys(added.identity?.userAssignedIdentities ?? {}).sort()).toEqual([a.id.toLowerCase(), b.id].sort());

    // Removing with different casing finds the stored key.
    const removedA = await compute.virtualMachines.update(rg, 'vm1', {
      identity: { type: 'UserAssigned', userAssignedIdentities: { [a.id.toUpperCase().replace('/SUBSCRIPTIONS/', '/subscriptions/')]: REMOVE } },
    });
    expect(Object.keys(removedA.identity?.userAssignedIdentities ?? {})).toEqual([b.id]);

    // Removing the last one while still saying UserAssigned is accepted and leaves no identity.
    const none = await compute.virtualMachines.update(rg, 'vm1', {
      identity: { type: 'UserAssigned', userAssignedIdentities: { [b.id]: REMOVE } },
    });
    expect(none.identity).toBeUndefined();
    expect(emulator.getVm(rg, 'vm1')?.identity.type).toBe('None');
  });

  it('keeps the system-assigned identity across user-assigned changes and drops all user-assigned on SystemAssigned/None', async () => {
    const { emulator, resourceGroup: rg } = az;
    const a = emulator.createUserAssignedIdentity(rg, 'a');
    emulator.createVmss(rg, 'ss1', { instances: 1, systemAssigned: true });
    const compute = az.compute();
    const principalBefore = emulator.getVmss(rg, 'ss1')?.identity.principalId;

    const both = await compute.virtualMachineScaleSets.update(rg, 'ss1', {
      identity: { type: 'SystemAssigned, UserAssigned', userAssignedIdentities: { [a.id]: {} } },
    });
    expect(both.identity?.type).toBe('SystemAssigned, UserAssigned');
    expect(both.identity?.principalId).toBe(principalBefore);

    const sys = await compute.virtualMachineScaleSets.update(rg, 'ss1', { identity: { type: 'SystemAssigned' } });
    expect(sys.identity?.type).toBe('SystemAssigned');
    expect(sys.identity?.userAssignedIdentities).toBeUndefined();

    const none = await compute.virtualMachineScaleSets.update(rg, 'ss1', { identity: { type: 'None' } });
    expect(none.identity).toBeUndefined();

    // User-assigned IDs with type SystemAssigned are refused as compute words it.
    await expect(
      compute.virtualMachineScaleSets.update(rg, 'ss1', { identity: { type: 'SystemAssigned', userAssignedIdentities: { [a.id]: {} } } }),
    ).rejects.toMatchObject({ statusCode: 400, code: 'InvalidParameter', message: expect.stringContaining('should not be provided if the type is') });
  });

  it('answers FailedIdentityOperation naming the missing identities, and changes nothing', async () => {
    const { emulator, resourceGroup: rg } = az;
    const good = emulator.createUserAssignedIdentity(rg, 'good');
    const gone1 = emulator.createUserAssignedIdentity(rg, 'gone1');
    const gone2 = emulator.createUserAssignedIdentity(rg, 'gone2');
    emulator.deleteUserAssignedIdentity(gone1.id);
    emulator.deleteUserAssignedIdentity(gone2.id);
    emulator.createVmss(rg, 'ss1', { instances: 1 });

    const err = await az
      .compute()
      .virtualMachineScaleSets.update(rg, 'ss1', {
        identity: { type: 'UserAssigned', userAssignedIdentities: { [good.id]: {}, [gone1.id]: {}, [gone2.id]: {} } },
      })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(err).toBeInstanceOf(RestError);
    const rest = err as RestError;
    expect(rest.statusCode).toBe(400);
    expect(rest.code).toBe('FailedIdentityOperation');
    expect(rest.message).toContain(`Identity operation for resource '${emulator.getVmss(rg, 'ss1')?.id}' failed with error`);
    expect(rest.message).toContain(`Resource '${gone1.id.toLowerCase()},${gone2.id.toLowerCase()}' was not found.`);
    expect(rest.message).not.toContain(good.id.toLowerCase());
    expect(emulator.getVmss(rg, 'ss1')?.identity.userAssignedIdentities).toEqual([]);
  });

  it('answers LinkedAuthorizationFailed for identities the caller holds no assign role on, quoted as sent', async () => {
    const { emulator, resourceGroup: rg } = az;
    // The service principal holds Managed Identity Operator on rg only; rg-other has no assignment for it.
    emulator.createResourceGroup('rg-other');
    const ok = emulator.createUserAssignedIdentity(rg, 'ok');
    const d1 = emulator.createUserAssignedIdentity('rg-other', 'denied1');
    const d2 = emulator.createUserAssignedIdentity('rg-other', 'denied2');
    emulator.createVm(rg, 'vm1');
    const sent1 = d1.id.toLowerCase(); // MIC lower-cases what it writes
    const sent2 = d2.id;

    const err = (await az
      .compute()
      .virtualMachines.update(rg, 'vm1', {
        identity: { type: 'UserAssigned', userAssignedIdentities: { [ok.id]: {}, [sent1]: {}, [sent2]: {} } },
      })
      .then(
        () => undefined,
        (e: unknown) => e,
      )) as RestError;
    expect(err.statusCode).toBe(403);
    expect(err.code).toBe('LinkedAuthorizationFailed');
    const sp = az.servicePrincipal;
    const vmPath = `/subscriptions/${emulator.subscriptionId}/resourceGroups/${rg}/providers/Microsoft.Compute/virtualMachines/vm1`;
    expect(err.message).toBe(
      `The client '${sp.objectId}' with object id '${sp.objectId}' has permission to perform action ` +
        `'Microsoft.Compute/virtualMachines/write' on scope '${vmPath}'; however, it does not have ` +
        `permission to perform action 'Microsoft.ManagedIdentity/userAssignedIdentities/assign/action' on the linked ` +
        `scope(s) '${sent1},${sent2}' or the linked scope(s) are invalid.`,
    );
    expect(emulator.getVm(rg, 'vm1')?.identity.userAssignedIdentities).toEqual([]);

    // Managed Identity Operator on the one identity (the narrowest scope) lets it through; its sibling stays refused.
    emulator.grantRole(sp.objectId, 'Managed Identity Operator', d1.id.toUpperCase().replace('/SUBSCRIPTIONS/', '/subscriptions/'));
    const res = await az.compute().virtualMachines.update(rg, 'vm1', { identity: { type: 'UserAssigned', userAssignedIdentities: { [d1.id]: {} } } });
    expect(Object.keys(res.identity?.userAssignedIdentities ?? {})).toEqual([d1.id]);
    await expect(
      az.compute().virtualMachines.update(rg, 'vm1', { identity: { type: 'UserAssigned', userAssignedIdentities: { [d2.id]: {} } } }),
    ).rejects.toMatchObject({ statusCode: 403, code: 'LinkedAuthorizationFailed' });
    // Managed Identity Contributor manages identities but cannot assign them.
    emulator.grantRole(sp.objectId, 'Managed Identity Contributor', '/subscriptions/' + emulator.subscriptionId + '/resourceGroups/rg-other');
    await expect(
      az.compute().virtualMachines.update(rg, 'vm1', { identity: { type: 'UserAssigned', userAssignedIdentities: { [d2.id]: {} } } }),
    ).rejects.toMatchObject({ statusCode: 403, code: 'LinkedAuthorizationFailed' });
  });

  it('answers AuthorizationFailed for the VM/VMSS write itself when the caller lacks it, before looking at identities', async () => {
    const { emulator, resourceGroup: rg } = az;
    const id = emulator.createUserAssignedIdentity(rg, 'x');
    emulator.createVmss(rg, 'ss1', { instances: 1 });
    const sp = az.servicePrincipal;
    const group = `/subscriptions/${emulator.subscriptionId}/resourceGroups/${rg}`;
    // Reader can read the scale set but not write it.
    expect(emulator.revokeRole(sp.objectId, 'Virtual Machine Contributor', group)).toBe(1);
    emulator.grantRole(sp.objectId, 'Reader', group);
    const compute = az.compute();
    expect((await compute.virtualMachineScaleSets.get(rg, 'ss1')).name).toBe('ss1');
    const err = (await compute.virtualMachineScaleSets
      .update(rg, 'ss1', { identity: { type: 'UserAssigned', userAssignedIdentities: { [id.id]: {} } } })
      .then(
        () => undefined,
        (e: unknown) => e,
      )) as RestError;
    expect(err).toMatchObject({ statusCode: 403, code: 'AuthorizationFailed' });
    expect(err.message).toBe(
      `The client '${sp.objectId}' with object id '${sp.objectId}' does not have authorization to perform action ` +
        `'Microsoft.Compute/virtualMachineScaleSets/write' over scope '${group}/providers/Microsoft.Compute/virtualMachineScaleSets/ss1' ` +
        `or the scope is invalid. If access was recently granted, please refresh your credentials.`,
    );
    // Authorization comes before the resource provider: a missing scale set is a 403 too, not a 404.
    await expect(compute.virtualMachineScaleSets.update(rg, 'nope', { identity: { type: 'None' } })).rejects.toMatchObject({
      statusCode: 403,
      code: 'AuthorizationFailed',
    });
    // A caller with no role at all cannot even read.
    const stranger = az.compute(mintedArmCredential(emulator));
    await expect(stranger.virtualMachineScaleSets.get(rg, 'ss1')).rejects.toMatchObject({ statusCode: 403, code: 'AuthorizationFailed' });
    expect(emulator.getVmss(rg, 'ss1')?.identity.userAssignedIdentities).toEqual([]);
  });

  it('runs a PATCH as a long-running operation: 202 + Azure-AsyncOperation, change visible only at completion', async () => {
    const { emulator, resourceGroup: rg } = az;
    emulator.setLroMode('async');
    emulator.setLatency('vmss_patch', 1000); // long enough for the checks below on a loaded machine
    const a = emulator.createUserAssignedIdentity(rg, 'a');
    emulator.createVmss(rg, 'ss1', { instances: 1 });
    const compute = az.compute();

    const poller = compute.virtualMachineScaleSets.update(
      rg,
      'ss1',
      { identity: { type: 'UserAssigned', userAssignedIdentities: { [a.id]: {} } } },
      { updateIntervalInMs: 50 },
    );
    await poller.submitted();
    const patch = emulator.requestLog().find((e) => e.operation === 'vmss_patch');
    expect(patch?.status).toBe(202);
    const during = emulator.getVmss(rg, 'ss1');
    expect(during?.provisioningState).toBe('Updating');
    expect(during?.identity.userAssignedIdentities).toEqual([]);
    // A second write while the first runs conflicts.
    await expect(compute.virtualMachineScaleSets.update(rg, 'ss1', { identity: { type: 'None' } }, { updateIntervalInMs: 50 })).rejects.toMatchObject({
      statusCode: 409,
      code: 'Conflict',
    });

    const result = await poller.pollUntilDone();
    expect(Object.keys(result.identity?.userAssignedIdentities ?? {})).toEqual([a.id]);
    expect(result.provisioningState).toBe('Succeeded');
    const polls = emulator.requestLog().filter((e) => e.operation === 'operation_get');
    expect(polls.length).toBeGreaterThanOrEqual(2);
    expect(polls.slice(0, -1).every((e) => e.status === 200)).toBe(true);
  });

  it('fails the long-running operation when a fault says so, leaving identities untouched', async () => {
    const { emulator, resourceGroup: rg } = az;
    emulator.setLroMode('async');
    const a = emulator.createUserAssignedIdentity(rg, 'a');
    emulator.createVm(rg, 'vm1');
    emulator.injectFault({ operation: 'vm_lro', target: 'vm1', status: 500, count: 1 });
    await expect(
      az.compute().virtualMachines.update(rg, 'vm1', { identity: { type: 'UserAssigned', userAssignedIdentities: { [a.id]: {} } } }, { updateIntervalInMs: 50 }),
    ).rejects.toThrow(/long-running operation has failed/);
    expect(emulator.getVm(rg, 'vm1')?.identity.userAssignedIdentities).toEqual([]);
    expect(emulator.getVm(rg, 'vm1')?.provisioningState).toBe('Failed');
  });

  it('throttles with 429 + Retry-After, which the SDK waits out, and the request log counts every call', async () => {
    const { emulator, resourceGroup: rg } = az;
    emulator.createVm(rg, 'vm1');
    emulator.createVm(rg, 'vm2');
    emulator.injectFault({ operation: 'vm_get', target: 'vm1', status: 429, retryAfter: 1, count: 1 });
    const compute = az.compute();
    const vm = await compute.virtualMachines.get(rg, 'vm1');
    expect(vm.name).toBe('vm1');
    await compute.virtualMachines.get(rg, 'vm2');
    const gets = emulator.requestLog().filter((e) => e.operation === 'vm_get');
    expect(gets.map((e) => [e.target, e.status])).toEqual([
      ['vm1', 429],
      ['vm1', 200],
      ['vm2', 200],
    ]);
  });

  it('requires a bearer token for ARM issued for the ARM audience, and an api-version', async () => {
    const { emulator, resourceGroup: rg } = az;
    emulator.createVm(rg, 'vm1');
    const path = `${emulator.url}/subscriptions/${emulator.subscriptionId}/resourceGroups/${rg}/providers/Microsoft.Compute/virtualMachines/vm1`;
    const wrongAud = await emulator.issueToken({ audience: 'https://vault.azure.net' });
    const reader = randomUUID();
    emulator.grantRole(reader, 'Reader', `/subscriptions/${emulator.subscriptionId}`);
    const good = await emulator.issueToken({ objectId: reader });
    const get = (url: string, token?: string) => fetchJson(url, emulator.caPem, token);

    expect(await get(`${path}?api-version=2026-03-01`)).toMatchObject({ status: 401, body: { error: { code: 'AuthenticationFailed' } } });
    expect(await get(`${path}?api-version=2026-03-01`, 'not-a-jwt')).toMatchObject({ status: 401, body: { error: { code: 'InvalidAuthenticationToken' } } });
    expect(await get(`${path}?api-version=2026-03-01`, wrongAud.accessToken)).toMatchObject({
      status: 401,
      body: { error: { code: 'InvalidAuthenticationTokenAudience' } },
    });
    expect(await get(path, good.accessToken)).toMatchObject({ status: 400, body: { error: { code: 'MissingApiVersionParameter' } } });
    expect(await get(`${path}?api-version=2026-03-01`, good.accessToken)).toMatchObject({ status: 200, body: { name: 'vm1' } });
    // The SDK's own credential path works too, and the token carries the service principal.
    const token = await az.credential.getToken('https://management.azure.com/.default');
    if (!token) throw new Error('no token');
    expect(decodeToken(token.token)).toMatchObject({ appid: az.servicePrincipal.clientId, aud: 'https://management.azure.com' });
  });

  it('creates, reads, lists and deletes user-assigned identities through arm-msi', async () => {
    const { emulator, resourceGroup: rg } = az;
    const objectId = randomUUID();
    emulator.grantRole(objectId, 'Managed Identity Contributor', `/subscriptions/${emulator.subscriptionId}/resourceGroups/${rg}`);
    const msi = az.msi(mintedArmCredential(emulator, { objectId }));
    const created = await msi.userAssignedIdentities.createOrUpdate(rg, 'pod-id', { location: 'westeurope', tags: { team: 'a' } });
    expect(created.id).toBe(emulator.getUserAssignedIdentity(created.id ?? '')?.id);
    expect(created.clientId).toMatch(/^[0-9a-f-]{36}$/);
    expect(created.principalId).toMatch(/^[0-9a-f-]{36}$/);
    expect(created.tenantId).toBe(emulator.tenantId);
    expect(created.location).toBe('westeurope');

    const got = await msi.userAssignedIdentities.get(rg, 'pod-id');
    expect(got.clientId).toBe(created.clientId);
    // Updating keeps the identity's client and principal ids.
    const again = await msi.userAssignedIdentities.createOrUpdate(rg, 'pod-id', { location: 'westeurope' });
    expect(again.principalId).toBe(created.principalId);

    const names: string[] = [];
    for await (const i of msi.userAssignedIdentities.listByResourceGroup(rg)) names.push(i.name ?? '');
    expect(names).toEqual(['pod-id']);

    await msi.userAssignedIdentities.delete(rg, 'pod-id');
    await expect(msi.userAssignedIdentities.get(rg, 'pod-id')).rejects.toMatchObject({ statusCode: 404, code: 'ResourceNotFound' });
  });
});

async function fetchJson(url: string, ca: string, token?: string): Promise<{ status: number; body: unknown }> {
  const { request } = await import('node:https');
  return new Promise((resolve, reject) => {
    const req = request(url, { ca, headers: token ? { authorization: `Bearer ${token}` } : {} }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text ? (JSON.parse(text) as unknown) : undefined }));
    });
    req.on('error', reject);
    req.end();
  });
}
