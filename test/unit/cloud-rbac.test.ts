import { describe, expect, it } from 'vitest';
import { actionMatches, BUILT_IN_ROLES, findRole, normalizeScope, permissionsAllow, scopeCovers } from '../../src/sandbox/cloud/rbac.js';

const role = (name: string) => findRole(name)!.permissions;

describe('Azure emulator RBAC: wildcard actions', () => {
  it.each([
    ['*', 'Microsoft.Compute/virtualMachines/write', true],
    ['*/read', 'Microsoft.Compute/virtualMachines/read', true],
    ['*/read', 'Microsoft.Compute/virtualMachines/write', false],
    ['Microsoft.Compute/*', 'Microsoft.Compute/virtualMachineScaleSets/virtualMachines/read', true],
    ['Microsoft.Compute/*', 'Microsoft.ComputeX/a/read', false],
    ['Microsoft.Compute/virtualMachines/*', 'Microsoft.Compute/virtualMachineScaleSets/write', false],
    // A middle `*` segment matches zero segments too: this is how Managed Identity Operator grants assign/action.
    ['Microsoft.ManagedIdentity/userAssignedIdentities/*/assign/action', 'Microsoft.ManagedIdentity/userAssignedIdentities/assign/action', true],
    ['Microsoft.ManagedIdentity/userAssignedIdentities/*/assign/action', 'Microsoft.ManagedIdentity/userAssignedIdentities/x/y/assign/action', true],
    ['Microsoft.ManagedIdentity/userAssignedIdentities/*/read', 'Microsoft.ManagedIdentity/userAssignedIdentities/read', true],
    ['Microsoft.Authorization/*/Write', 'microsoft.authorization/roleassignments/write', true], // case-insensitive
    ['Microsoft.Authorization/*/read', 'Microsoft.Authorization/roleAssignments/write', false],
    ['Microsoft.Compute/disks/read', 'Microsoft.Compute/disks/readX', false], // anchored
    ['Microsoft.Compute/disks.read', 'Microsoft.Compute/disksXread', false], // dots are literal
  ])('%s matches %s: %s', (pattern, action, expected) => {
    expect(actionMatches(pattern, action)).toBe(expected);
  });

  it('grants what each role the docs name should, and nothing the docs say it lacks', () => {
    const assign = 'Microsoft.ManagedIdentity/userAssignedIdentities/assign/action';
    const vmssWrite = 'Microsoft.Compute/virtualMachineScaleSets/write';
    expect(permissionsAllow(role('Managed Identity Operator'), assign)).toBe(true);
    expect(permissionsAllow(role('Managed Identity Operator'), vmssWrite)).toBe(false);
    expect(permissionsAllow(role('Managed Identity Contributor'), assign)).toBe(false);
    expect(permissionsAllow(role('Virtual Machine Contributor'), vmssWrite)).toBe(true);
    expect(permissionsAllow(role('Virtual Machine Contributor'), assign)).toBe(false);
    expect(permissionsAllow(role('Reader'), vmssWrite)).toBe(false);
    expect(permissionsAllow(role('Contributor'), assign)).toBe(true);
    expect(permissionsAllow(role('Contributor'), 'Microsoft.Authorization/roleAssignments/write')).toBe(false);
    expect(permissionsAllow(role('Owner'), 'Microsoft.Authorization/roleAssignments/write')).toBe(true);
    // notActions subtract within their own block only.
    expect(permissionsAllow([...role('Contributor'), ...role('User Access Administrator')], 'Microsoft.Authorization/roleAssignments/write')).toBe(true);
  });

  it('finds roles by GUID, name or full ID, with the GUIDs Azure uses', () => {
    expect(findRole('f1a07417-d97a-45cb-824c-7a7467783830')?.roleName).toBe('Managed Identity Operator');
    expect(findRole('virtual machine contributor')?.name).toBe('9980e02c-c2be-4d73-94e8-173b1dc7cf3c');
    expect(findRole('/subscriptions/s/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7')?.roleName).toBe('Reader');
    expect(findRole('e40ec5ca-96e0-45a2-b4ff-59039f2c2b59')?.roleName).toBe('Managed Identity Contributor');
    expect(findRole('nope')).toBeUndefined();
    expect(new Set(BUILT_IN_ROLES.map((r) => r.name)).size).toBe(BUILT_IN_ROLES.length);
  });
});

describe('Azure emulator RBAC: scopes', () => {
  it('covers the scope and below, by segments, case-insensitively, tolerating empty segments', () => {
    expect(normalizeScope('//subscriptions/s//resourceGroups/rg/')).toBe('/subscriptions/s/resourceGroups/rg');
    expect(scopeCovers('/', '/subscriptions/s')).toBe(true);
    expect(scopeCovers('/subscriptions/S', '/subscriptions/s/resourcegroups/rg')).toBe(true);
    expect(scopeCovers('/subscriptions/s/resourceGroups/rg', '/subscriptions/s/resourcegroups/RG/providers/x/y/z')).toBe(true);
    expect(scopeCovers('/subscriptions/s/resourceGroups/rg', '/subscriptions/s/resourceGroups/rg2')).toBe(false);
    expect(scopeCovers('/subscriptions/s/resourceGroups/rg', '/subscriptions/s')).toBe(false);
  });
});
