// MIC against an ARM that authorises by role assignments: the cluster principal lacks Managed Identity Operator on an
// identity's resource group → ARM answers LinkedAuthorizationFailed → MIC's event says so and the AAI stays Created;
// an admin grants the role with a real PUT roleAssignments → MIC's next cycle attaches it.
import { randomUUID } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { armRest, mintedArmCredential } from '../helpers/azure.js';
import { eventually, NODES, startMicWorld, type MicWorld } from './mic-world.js';

let w: MicWorld;
beforeEach(async () => {
  w = await startMicWorld();
});
afterEach(async () => {
  await w?.stop();
});

const stateOf = async (name: string): Promise<string | undefined> => (await w.assigned()).find((a) => a.name === name)?.state;

describe('MIC with role assignments', () => {
  it('reports LinkedAuthorizationFailed while the role is withheld, and attaches once an admin grants it', async () => {
    const e = w.az.emulator;
    const sub = `/subscriptions/${e.subscriptionId}`;
    const group = e.createResourceGroup('team-identities');
    const withheld = e.createUserAssignedIdentity('team-identities', 'team-id');
    const granted = w.msi('ok-id'); // in the resource group where the cluster principal holds Managed Identity Operator
    await w.createIdentity('team-id', { type: 0, resourceID: withheld.id, clientID: withheld.clientId });
    await w.createIdentity('ok-id', { type: 0, resourceID: granted.id, clientID: granted.clientId });
    await w.createBinding('b-team', { azureIdentity: 'team-id', selector: 'app' });
    await w.createBinding('b-ok', { azureIdentity: 'ok-id', selector: 'app' });
    await w.createPod('p1', NODES.vmss0, 'app');
    await w.startMic();

    await eventually(async () => expect(await stateOf('p1-default-ok-id')).toBe('Assigned'));
    await eventually(async () => {
      const errors = (await w.events('binding apply error')).filter((ev) => ev.name === 'b-team');
      expect(errors.length).toBeGreaterThan(0);
      expect(errors[0]!.type).toBe('Warning');
      expect(errors[0]!.message).toContain('LinkedAuthorizationFailed');
    });
    expect(await stateOf('p1-default-team-id')).toBe('Created');
    expect(w.vmssIds()).toEqual([granted.id.toLowerCase()]);

    // `az role assignment create --role "Managed Identity Operator" --assignee-object-id <mic> --scope <group>`, on the wire.
    const adminOid = randomUUID();
    e.grantRole(adminOid, 'User Access Administrator', sub);
    const admin = armRest(e, mintedArmCredential(e, { objectId: adminOid }));
    const put = await admin('PUT', `${group.id}/providers/Microsoft.Authorization/roleAssignments/${randomUUID()}?api-version=2022-04-01`, {
      properties: {
        roleDefinitionId: `${sub}/providers/Microsoft.Authorization/roleDefinitions/f1a07417-d97a-45cb-824c-7a7467783830`,
        principalId: w.az.servicePrincipal.objectId,
        principalType: 'ServicePrincipal',
      },
    });
    expect(put.status).toBe(201);
    await eventually(async () => expect(await stateOf('p1-default-team-id')).toBe('Assigned'), 20_000);
    expect(w.vmssIds()).toEqual([granted.id, withheld.id].map((i) => i.toLowerCase()).sort());
  });
});

describe('MIC without Virtual Machine Contributor', () => {
  it('is refused the VMSS read (403 AuthorizationFailed), attaches nothing, and converges once the role is granted back', async () => {
    const e = w.az.emulator;
    const group = `/subscriptions/${e.subscriptionId}/resourceGroups/${w.rg}`;
    expect(e.revokeRole(w.az.servicePrincipal.objectId, 'Virtual Machine Contributor', group)).toBe(1);
    const id = w.msi('id1');
    await w.createIdentity('id1', { type: 0, resourceID: id.id, clientID: id.clientId });
    await w.createBinding('b1', { azureIdentity: 'id1', selector: 'app' });
    await w.createPod('p1', NODES.vmss0, 'app');
    await w.startMic();
    // ARM refuses MIC's read of the scale set (MIC reads before it writes), so nothing is written.
    await eventually(() => expect(e.requestLog().filter((r) => r.operation === 'vmss_get' && r.status === 403).length).toBeGreaterThan(1));
    expect(e.requestLog().filter((r) => r.operation === 'vmss_patch')).toEqual([]);
    expect(await stateOf('p1-default-id1')).not.toBe('Assigned');
    expect(w.vmssIds()).toEqual([]);
    e.grantRole(w.az.servicePrincipal.objectId, 'Virtual Machine Contributor', group);
    await eventually(async () => expect(await stateOf('p1-default-id1')).toBe('Assigned'), 20_000);
    expect(w.vmssIds()).toEqual([id.id.toLowerCase()]);
  });
});
