// Azure emulator: Microsoft.Authorization (role assignments, role definitions, permissions) on the wire, through the
// Azure SDK's pipeline, and ARM's identity PATCH deciding by the caller's real assignments (real @azure/arm-compute).
import { randomUUID } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { RestError } from '@azure/core-rest-pipeline';
import { armRest, mintedArmCredential, startTestAzure, type TestAzure } from '../helpers/azure.js';

const API = 'api-version=2022-04-01';
const MIO = 'f1a07417-d97a-45cb-824c-7a7467783830';
const VMC = '9980e02c-c2be-4d73-94e8-173b1dc7cf3c';
const READER = 'acdd72a7-3385-48ef-bd42-f606fba81ae7';

let az: TestAzure;
let sub: string;
let rgId: string;
/** An administrator (User Access Administrator on the subscription) calling ARM as `az role assignment` would. */
let admin: ReturnType<typeof armRest>;
let adminOid: string;
beforeEach(async () => {
  az = await startTestAzure({ lro: 'sync' });
  sub = `/subscriptions/${az.emulator.subscriptionId}`;
  rgId = `${sub}/resourceGroups/${az.resourceGroup}`;
  adminOid = randomUUID();
  az.emulator.grantRole(adminOid, 'User Access Administrator', sub);
  admin = armRest(az.emulator, mintedArmCredential(az.emulator, { objectId: adminOid }));
});
afterEach(async () => {
  await az?.stop();
});

const assignmentPath = (scope: string, name: string) => `${scope}/providers/Microsoft.Authorization/roleAssignments/${name}?${API}`;
const grantBody = (role: string, principalId: string, principalType?: string) => ({
  properties: { roleDefinitionId: `${sub}/providers/Microsoft.Authorization/roleDefinitions/${role}`, principalId, ...(principalType ? { principalType } : {}) },
});

describe('Azure emulator: role definitions', () => {
  it('serves the built-in roles by GUID (subscription and tenant form) and by roleName filter, with their real actions', async () => {
    const mio = await admin('GET', `${sub}/providers/Microsoft.Authorization/roleDefinitions/${MIO}?${API}`);
    expect(mio.status).toBe(200);
    expect(mio.body).toMatchObject({
      id: `${sub}/providers/Microsoft.Authorization/roleDefinitions/${MIO}`,
      name: MIO,
      type: 'Microsoft.Authorization/roleDefinitions',
      properties: { roleName: 'Managed Identity Operator', type: 'BuiltInRole', assignableScopes: ['/'] },
    });
    expect(mio.body.properties.permissions).toEqual([
      {
        actions: [
          'Microsoft.ManagedIdentity/userAssignedIdentities/*/read',
          'Microsoft.ManagedIdentity/userAssignedIdentities/*/assign/action',
          'Microsoft.Authorization/*/read',
          'Microsoft.Insights/alertRules/*',
          'Microsoft.Resources/subscriptions/resourceGroups/read',
          'Microsoft.Resources/deployments/*',
          'Microsoft.Support/*',
        ],
        notActions: [],
        dataActions: [],
        notDataActions: [],
      },
    ]);
    const tenantForm = await admin('GET', `/providers/Microsoft.Authorization/roleDefinitions/${READER}?${API}`);
    expect(tenantForm.body).toMatchObject({ id: `/providers/Microsoft.Authorization/roleDefinitions/${READER}`, properties: { roleName: 'Reader' } });
    const byName = await admin('GET', `${rgId}/providers/Microsoft.Authorization/roleDefinitions?${API}&$filter=roleName%20eq%20%27Virtual%20Machine%20Contributor%27`);
    expect(byName.body.value.map((d: { name: string }) => d.name)).toEqual([VMC]);
    const all = await admin('GET', `${sub}/providers/Microsoft.Authorization/roleDefinitions?${API}`);
    expect(all.body.value.map((d: { properties: { roleName: string } }) => d.properties.roleName)).toEqual(
      expect.arrayContaining(['Managed Identity Operator', 'Managed Identity Contributor', 'Virtual Machine Contributor', 'Reader', 'Contributor', 'Owner']),
    );
    expect((await admin('GET', `${sub}/providers/Microsoft.Authorization/roleDefinitions/${randomUUID()}?${API}`)).body.error.code).toBe('RoleDefinitionDoesNotExist');
  });
});

describe('Azure emulator: role assignments', () => {
  it('creates (201), re-PUTs idempotently (200), refuses duplicates and updates, gets and deletes (200, then 204)', async () => {
    const principal = az.servicePrincipal.objectId;
    const scope = `${sub}/resourceGroups/other`;
    const name = randomUUID();
    const created = await admin('PUT', assignmentPath(scope, name), grantBody(READER, principal, 'ServicePrincipal'));
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({
      id: `${scope}/providers/Microsoft.Authorization/roleAssignments/${name}`,
      name,
      type: 'Microsoft.Authorization/roleAssignments',
      properties: { principalId: principal, principalType: 'ServicePrincipal', scope, createdBy: adminOid },
    });
    expect(created.body.properties.roleDefinitionId).toMatch(new RegExp(`/providers/Microsoft.Authorization/roleDefinitions/${READER}$`));
    expect((await admin('PUT', assignmentPath(scope, name), grantBody(READER, principal, 'ServicePrincipal'))).status).toBe(200);
    const dup = await admin('PUT', assignmentPath(scope, randomUUID()), grantBody(READER, principal, 'ServicePrincipal'));
    expect(dup).toMatchObject({ status: 409, body: { error: { code: 'RoleAssignmentExists' } } });
    expect(dup.body.error.message).toMatch(/^The role assignment already exists\./);
    const update = await admin('PUT', assignmentPath(scope, name), grantBody(MIO, principal, 'ServicePrincipal'));
    expect(update).toMatchObject({ status: 400, body: { error: { code: 'RoleAssignmentUpdateNotPermitted' } } });
    expect((await admin('PUT', assignmentPath(scope, 'not-a-guid'), grantBody(READER, principal))).body.error.code).toBe('InvalidRoleAssignmentId');
    expect((await admin('PUT', assignmentPath(scope, randomUUID()), grantBody(randomUUID(), principal))).body.error.code).toBe('RoleDefinitionDoesNotExist');
    // Unknown to the directory and no principalType: the replication check refuses it; with a type it is taken.
    const stranger = randomUUID();
    const notFound = await admin('PUT', assignmentPath(scope, randomUUID()), grantBody(READER, stranger));
    expect(notFound).toMatchObject({ status: 400, body: { error: { code: 'PrincipalNotFound' } } });
    expect((await admin('PUT', assignmentPath(scope, randomUUID()), grantBody(READER, stranger, 'User'))).status).toBe(201);

    expect((await admin('GET', assignmentPath(scope, name))).body.name).toBe(name);
    const deleted = await admin('DELETE', assignmentPath(scope, name));
    expect(deleted).toMatchObject({ status: 200, body: { name } });
    expect((await admin('DELETE', assignmentPath(scope, name))).status).toBe(204);
    expect((await admin('GET', assignmentPath(scope, name))).body.error.code).toBe('RoleAssignmentNotFound');
  });

  it('needs Microsoft.Authorization/roleAssignments/write: MIC\'s principal (no such role) gets AuthorizationFailed', async () => {
    const sp = az.servicePrincipal;
    const asMic = armRest(az.emulator, az.credential);
    const res = await asMic('PUT', assignmentPath(rgId, randomUUID()), grantBody(MIO, sp.objectId, 'ServicePrincipal'));
    expect(res.status).toBe(403);
    expect(res.body.error).toEqual({
      code: 'AuthorizationFailed',
      message:
        `The client '${sp.objectId}' with object id '${sp.objectId}' does not have authorization or an ABAC condition not fulfilled to perform ` +
        `action 'Microsoft.Authorization/roleAssignments/write' over scope '${rgId}' or the scope is invalid. If access was recently ` +
        'granted, please refresh your credentials.',
    });
    // But it may read them: Managed Identity Operator and VM Contributor carry Microsoft.Authorization/*/read.
    expect((await asMic('GET', `${rgId}/providers/Microsoft.Authorization/roleAssignments?${API}`)).status).toBe(200);
  });

  it('lists at a scope: no filter = above, at and below; atScope() = at and above; principalId eq across all; `//` paths tolerated', async () => {
    const e = az.emulator;
    const p = az.servicePrincipal.objectId;
    const atSub = e.grantRole(p, 'Reader', sub);
    const below = e.grantRole(p, 'Managed Identity Operator', `${rgId}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/x`);
    const other = e.grantRole(randomUUID(), 'Reader', rgId);
    const names = (r: { body: { value: { name: string }[] } }) => r.body.value.map((a) => a.name).sort();
    // startTestAzure's two grants to the SP on rgId, plus the three above, plus the admin's at the subscription.
    const all = await admin('GET', `${rgId}/providers/Microsoft.Authorization/roleAssignments?${API}`);
    expect(all.body.value).toHaveLength(6);
    const atScope = await admin('GET', `/${rgId}/providers/Microsoft.Authorization/roleAssignments?${API}&$filter=atScope()`);
    expect(names(atScope)).not.toContain(below.name);
    expect(names(atScope)).toContain(atSub.name);
    expect(atScope.body.value).toHaveLength(5);
    const mine = await admin('GET', `${sub}/providers/Microsoft.Authorization/roleAssignments?${API}&$filter=principalId%20eq%20%27${p}%27`);
    expect(mine.body.value).toHaveLength(4);
    expect(names(mine)).not.toContain(other.name);
    const assignedTo = await admin('GET', `${sub}/providers/Microsoft.Authorization/roleAssignments?${API}&$filter=atScope()+and+assignedTo('${p}')`);
    expect(names(assignedTo)).toEqual([atSub.name]);
    expect((await admin('GET', `${sub}/providers/Microsoft.Authorization/roleAssignments?${API}&$filter=bogus`)).status).toBe(400);
  });
});

describe('Azure emulator: inheritance and the caller\'s permissions', () => {
  it('inherits subscription → resource group → resource, by whole case-insensitive path segments', async () => {
    const e = az.emulator;
    const p = randomUUID();
    const read = 'Microsoft.Compute/virtualMachineScaleSets/read';
    const vmss = (rg: string) => `${sub}/resourcegroups/${rg}/providers/Microsoft.Compute/virtualMachineScaleSets/ss`;
    e.grantRole(p, 'Reader', `${sub}/resourceGroups/RG-A`);
    expect(e.checkAccess(p, read, vmss('rg-a'))).toBe(true);
    expect(e.checkAccess(p, read, `${sub}/resourceGroups/rg-a`)).toBe(true);
    expect(e.checkAccess(p, read, vmss('rg-a2'))).toBe(false); // a name prefix is not a path prefix
    expect(e.checkAccess(p, read, sub)).toBe(false); // never upwards
    e.grantRole(p, 'Reader', sub);
    expect(e.checkAccess(p, read, vmss('rg-a2'))).toBe(true);
    // A notAction subtracts only inside its own role: Contributor cannot write assignments, Owner alongside can.
    const q = randomUUID();
    e.grantRole(q, 'Contributor', sub);
    expect(e.checkAccess(q, 'Microsoft.Compute/virtualMachines/write', vmss('x'))).toBe(true);
    expect(e.checkAccess(q, 'Microsoft.Authorization/roleAssignments/write', rgId)).toBe(false);
    e.grantRole(q, 'Owner', rgId);
    expect(e.checkAccess(q, 'Microsoft.Authorization/roleAssignments/write', rgId)).toBe(true);
  });

  it('answers Microsoft.Authorization/permissions for the caller only, on the SDK\'s path shapes', async () => {
    const e = az.emulator;
    const id = e.createUserAssignedIdentity(az.resourceGroup, 'pod-id');
    const asMic = armRest(e, az.credential);
    // What @azure/arm-authorization builds: lowercase `resourcegroups`, and an empty parent path (`//`).
    const rgPerms = await asMic('GET', `${sub}/resourcegroups/${az.resourceGroup}/providers/Microsoft.Authorization/permissions?${API}`);
    expect(rgPerms.status).toBe(200);
    expect(Object.keys(rgPerms.body)).toEqual(['value']);
    const actions = rgPerms.body.value.map((b: { actions: string[] }) => b.actions);
    expect(actions).toHaveLength(2);
    expect(actions.flat()).toEqual(expect.arrayContaining(['Microsoft.Compute/virtualMachineScaleSets/*', 'Microsoft.ManagedIdentity/userAssignedIdentities/*/assign/action']));
    for (const b of rgPerms.body.value) expect(Object.keys(b).sort()).toEqual(['actions', 'dataActions', 'notActions', 'notDataActions']);
    const resourcePath = `${sub}/resourcegroups/${az.resourceGroup}/providers/Microsoft.ManagedIdentity//userAssignedIdentities/pod-id/providers/Microsoft.Authorization/permissions?${API}`;
    expect((await asMic('GET', resourcePath)).body.value).toHaveLength(2);
    // Someone else asking about the same scope sees their own (none), not MIC's.
    const nobody = armRest(e, mintedArmCredential(e));
    expect((await nobody('GET', resourcePath)).body).toEqual({ value: [] });
    // Subscription scope: MIC's roles are on the resource group only.
    expect((await asMic('GET', `${sub}/providers/Microsoft.Authorization/permissions?${API}`)).body).toEqual({ value: [] });
    expect(e.checkAccess(az.servicePrincipal.objectId, 'Microsoft.ManagedIdentity/userAssignedIdentities/assign/action', id.id)).toBe(true);
  });

  it('decides the identity PATCH by the caller\'s assignments: withheld → LinkedAuthorizationFailed, granted by a real PUT → attached', async () => {
    const e = az.emulator;
    e.createResourceGroup('identities');
    const id = e.createUserAssignedIdentity('identities', 'pod-id');
    e.createVmss(az.resourceGroup, 'ss1', { instances: 1 });
    const compute = az.compute();
    const patch = () => compute.virtualMachineScaleSets.update(az.resourceGroup, 'ss1', { identity: { type: 'UserAssigned', userAssignedIdentities: { [id.id]: {} } } });
    const err = (await patch().then(
      () => undefined,
      (x: unknown) => x,
    )) as RestError;
    expect(err).toMatchObject({ statusCode: 403, code: 'LinkedAuthorizationFailed' });
    expect(err.message).toContain(`'Microsoft.Compute/virtualMachineScaleSets/write' on scope '${rgId}/providers/Microsoft.Compute/virtualMachineScaleSets/ss1'`);
    expect(err.message).toContain(`on the linked scope(s) '${id.id}' or the linked scope(s) are invalid.`);

    const put = await admin('PUT', assignmentPath(`/${sub}/resourceGroups/identities`, randomUUID()), grantBody(MIO, az.servicePrincipal.objectId));
    expect(put.status).toBe(201);
    const done = await patch();
    expect(Object.keys(done.identity?.userAssignedIdentities ?? {})).toEqual([id.id]);
    // Detaching needs no linked permission: revoke, then remove.
    const deleted = await admin('DELETE', assignmentPath(`${sub}/resourceGroups/identities`, put.body.name));
    expect(deleted.status).toBe(200);
    const removed = await compute.virtualMachineScaleSets.update(az.resourceGroup, 'ss1', {
      identity: { type: 'UserAssigned', userAssignedIdentities: { [id.id]: null as unknown as Record<string, never> } },
    });
    expect(removed.identity?.userAssignedIdentities ?? {}).toEqual({});
  });
});
