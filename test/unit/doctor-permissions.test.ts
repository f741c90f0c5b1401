import { describe, expect, it } from 'vitest';
import { actionAllowed, actionMatches, parsePermissions } from '../../src/doctor/permissions.js';

const ASSIGN = 'Microsoft.ManagedIdentity/userAssignedIdentities/assign/action';

describe('permissions as ARM evaluates them (reference/operations.md §1.5)', () => {
  it('lets a middle /*/ match zero segments: Managed Identity Operator grants assign/action', () => {
    expect(actionMatches('Microsoft.ManagedIdentity/userAssignedIdentities/*/assign/action', ASSIGN)).toBe(true);
    expect(actionMatches('Microsoft.ManagedIdentity/userAssignedIdentities/*/read', 'Microsoft.ManagedIdentity/userAssignedIdentities/read')).toBe(true);
  });

  it('matches *, provider/*, */read and case-insensitively; nothing else', () => {
    expect(actionMatches('*', ASSIGN)).toBe(true);
    expect(actionMatches('Microsoft.Compute/*', 'Microsoft.Compute/virtualMachineScaleSets/write')).toBe(true);
    expect(actionMatches('*/read', 'Microsoft.Compute/virtualMachineScaleSets/read')).toBe(true);
    expect(actionMatches('*/read', 'Microsoft.Compute/virtualMachineScaleSets/write')).toBe(false);
    expect(actionMatches('microsoft.compute/VIRTUALMACHINESCALESETS/*', 'Microsoft.Compute/virtualMachineScaleSets/write')).toBe(true);
    expect(actionMatches('Microsoft.ManagedIdentity/userAssignedIdentities/read', ASSIGN)).toBe(false);
    expect(actionMatches('Microsoft.Compute.Extra/*', 'Microsoft.Compute/virtualMachines/write')).toBe(false);
  });

  it('subtracts notActions only within their own entry', () => {
    const contributor = { actions: ['*'], notActions: ['Microsoft.Authorization/*/Write'] };
    expect(actionAllowed([contributor], 'Microsoft.Authorization/roleAssignments/write')).toBe(false);
    expect(actionAllowed([contributor], ASSIGN)).toBe(true);
    const uaa = { actions: ['Microsoft.Authorization/*'], notActions: [] };
    expect(actionAllowed([contributor, uaa], 'Microsoft.Authorization/roleAssignments/write')).toBe(true);
    // Managed Identity Contributor manages identities but cannot attach them.
    const miContributor = { actions: ['Microsoft.ManagedIdentity/userAssignedIdentities/read', 'Microsoft.ManagedIdentity/userAssignedIdentities/write'], notActions: [] };
    expect(actionAllowed([miContributor], ASSIGN)).toBe(false);
    expect(actionAllowed([], ASSIGN)).toBe(false);
  });

  it('parses the wire format and drops what is malformed', () => {
    expect(parsePermissions({ value: [{ actions: ['*/read', 7], notActions: null, dataActions: [] }, null], nextLink: 'https://arm/next' })).toEqual({
      entries: [{ actions: ['*/read'], notActions: [] }, { actions: [], notActions: [] }],
      nextLink: 'https://arm/next',
    });
    expect(parsePermissions('nope')).toEqual({ entries: [] });
  });
});
