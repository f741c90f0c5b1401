/**
 * Azure RBAC as ARM evaluates it, as pure functions: built-in role definitions, scope normalisation and inheritance,
 * wildcard action matching, and effective permissions of a principal at a scope.
 *
 * Decisions (documented in README.md next to this file):
 * - a scope applies to itself and to every scope below it, compared case-insensitively segment by segment
 *   (`/subscriptions/s/resourceGroups/rg` covers `/subscriptions/S/resourcegroups/RG/providers/...`, not `.../rg2`);
 *   empty segments (`//`, what SDKs build from scopes given with a leading slash or an empty parent path) are dropped;
 * - `*` in an action pattern: standalone matches everything, a leading `*​/` or a middle `/*​/` also matches zero
 *   segments (so `userAssignedIdentities/*​/assign/action` grants `userAssignedIdentities/assign/action`), a trailing
 *   `/*` matches any depth; matching is case-insensitive;
 * - an action is allowed when one permission block grants it and that same block does not subtract it (`notActions`
 *   only subtract within their own block).
 */

export interface RolePermission {
  readonly actions: readonly string[];
  readonly notActions: readonly string[];
  readonly dataActions: readonly string[];
  readonly notDataActions: readonly string[];
}

export interface RoleDefinition {
  /** The GUID, the same in every cloud for built-in roles. */
  readonly name: string;
  readonly roleName: string;
  readonly description: string;
  readonly permissions: readonly RolePermission[];
}

export interface RoleAssignmentRecord {
  /** The assignment's GUID (its name). */
  readonly name: string;
  /** Normalised scope, casing as first written, leading `/`, no empty segments. */
  readonly scope: string;
  /** The role definition GUID (lower-case). */
  readonly roleDefinitionName: string;
  /** As sent (tenant-style or subscription-style). */
  readonly roleDefinitionId: string;
  readonly principalId: string;
  readonly principalType: string;
  readonly description?: string;
  readonly createdOn: string;
  readonly createdBy?: string;
}

const block = (actions: readonly string[], notActions: readonly string[] = []): RolePermission => ({
  actions,
  notActions,
  dataActions: [],
  notDataActions: [],
});

/** The built-in roles this system meets, with their actions as Azure publishes them (operations.md §1.6). */
export const BUILT_IN_ROLES: readonly RoleDefinition[] = [
  {
    name: 'f1a07417-d97a-45cb-824c-7a7467783830',
    roleName: 'Managed Identity Operator',
    description: 'Read and Assign User Assigned Identity',
    permissions: [
      block([
        'Microsoft.ManagedIdentity/userAssignedIdentities/*/read',
        'Microsoft.ManagedIdentity/userAssignedIdentities/*/assign/action',
        'Microsoft.Authorization/*/read',
        'Microsoft.Insights/alertRules/*',
        'Microsoft.Resources/subscriptions/resourceGroups/read',
        'Microsoft.Resources/deployments/*',
        'Microsoft.Support/*',
      ]),
    ],
  },
  {
    name: 'e40ec5ca-96e0-45a2-b4ff-59039f2c2b59',
    roleName: 'Managed Identity Contributor',
    description: 'Create, Read, Update, and Delete User Assigned Identity',
    permissions: [
      block([
        'Microsoft.ManagedIdentity/userAssignedIdentities/read',
        'Microsoft.ManagedIdentity/userAssignedIdentities/write',
        'Microsoft.ManagedIdentity/userAssignedIdentities/delete',
        'Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/read',
        'Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/write',
        'Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/delete',
        'Microsoft.ManagedIdentity/userAssignedIdentities/revokeTokens/action',
        'Microsoft.Authorization/*/read',
        'Microsoft.Insights/alertRules/*',
        'Microsoft.Resources/subscriptions/resourceGroups/read',
        'Microsoft.Resources/deployments/*',
        'Microsoft.Support/*',
      ]),
    ],
  },
  {
    name: '9980e02c-c2be-4d73-94e8-173b1dc7cf3c',
    roleName: 'Virtual Machine Contributor',
    description: 'Lets you manage virtual machines, but not access to them, and not the virtual network or storage account they\'re connected to.',
    permissions: [
      block([
        'Microsoft.Authorization/*/read',
        'Microsoft.Compute/availabilitySets/*',
        'Microsoft.Compute/locations/*',
        'Microsoft.Compute/virtualMachines/*',
        'Microsoft.Compute/virtualMachineScaleSets/*',
        'Microsoft.Compute/cloudServices/*',
        'Microsoft.Compute/disks/write',
        'Microsoft.Compute/disks/read',
        'Microsoft.Compute/disks/delete',
        'Microsoft.Compute/hostgroups/write',
        'Microsoft.Compute/hostgroups/hosts/write',
        'Microsoft.DevTestLab/schedules/*',
        'Microsoft.Insights/alertRules/*',
        'Microsoft.Network/applicationGateways/backendAddressPools/join/action',
        'Microsoft.Network/loadBalancers/backendAddressPools/join/action',
        'Microsoft.Network/loadBalancers/inboundNatPools/join/action',
        'Microsoft.Network/loadBalancers/inboundNatRules/join/action',
        'Microsoft.Network/loadBalancers/probes/join/action',
        'Microsoft.Network/loadBalancers/read',
        'Microsoft.Network/locations/*',
        'Microsoft.Network/networkInterfaces/*',
        'Microsoft.Network/networkSecurityGroups/join/action',
        'Microsoft.Network/networkSecurityGroups/read',
        'Microsoft.Network/publicIPAddresses/join/action',
        'Microsoft.Network/publicIPAddresses/read',
        'Microsoft.Network/virtualNetworks/read',
        'Microsoft.Network/virtualNetworks/subnets/join/action',
        'Microsoft.RecoveryServices/locations/*',
        'Microsoft.RecoveryServices/Vaults/backupFabrics/backupProtectionIntent/write',
        'Microsoft.RecoveryServices/Vaults/backupFabrics/protectionContainers/protectedItems/*/read',
        'Microsoft.RecoveryServices/Vaults/backupFabrics/protectionContainers/protectedItems/read',
        'Microsoft.RecoveryServices/Vaults/backupFabrics/protectionContainers/protectedItems/write',
        'Microsoft.RecoveryServices/Vaults/backupPolicies/read',
        'Microsoft.RecoveryServices/Vaults/backupPolicies/write',
        'Microsoft.RecoveryServices/Vaults/read',
        'Microsoft.RecoveryServices/Vaults/usages/read',
        'Microsoft.RecoveryServices/Vaults/write',
        'Microsoft.ResourceHealth/availabilityStatuses/read',
        'Microsoft.Resources/deployments/*',
        'Microsoft.Resources/subscriptions/resourceGroups/read',
        'Microsoft.SerialConsole/serialPorts/connect/action',
        'Microsoft.SqlVirtualMachine/*',
        'Microsoft.Storage/storageAccounts/listKeys/action',
        'Microsoft.Storage/storageAccounts/read',
        'Microsoft.Support/*',
      ]),
    ],
  },
  {
    name: 'acdd72a7-3385-48ef-bd42-f606fba81ae7',
    roleName: 'Reader',
    description: 'View all resources, but does not allow you to make any changes.',
    permissions: [block(['*/read'])],
  },
  {
    name: 'b24988ac-6180-42a0-ab88-20f7382dd24c',
    roleName: 'Contributor',
    description: 'Grants full access to manage all resources, but does not allow you to assign roles in Azure RBAC, manage assignments in Azure Blueprints, or share image galleries.',
    permissions: [
      block(
        ['*'],
        [
          'Microsoft.Authorization/*/Delete',
          'Microsoft.Authorization/*/Write',
          'Microsoft.Authorization/elevateAccess/Action',
          'Microsoft.Blueprint/blueprintAssignments/write',
          'Microsoft.Blueprint/blueprintAssignments/delete',
          'Microsoft.Compute/galleries/share/action',
          'Microsoft.Purview/consents/write',
          'Microsoft.Purview/consents/delete',
          'Microsoft.Resources/deploymentStacks/manageDenySetting/action',
          'Microsoft.Subscription/cancel/action',
          'Microsoft.Subscription/enable/action',
        ],
      ),
    ],
  },
  {
    name: '8e3af657-a8ff-443c-a75c-2fe8c4bcb635',
    roleName: 'Owner',
    description: 'Grants full access to manage all resources, including the ability to assign roles in Azure RBAC.',
    permissions: [block(['*'])],
  },
  {
    name: '18d7d88d-d35e-4fb5-a5c3-7773c20a72d9',
    roleName: 'User Access Administrator',
    description: 'Lets you manage user access to Azure resources.',
    permissions: [block(['*/read', 'Microsoft.Authorization/*', 'Microsoft.Support/*'])],
  },
];

const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function isGuid(s: string): boolean {
  return GUID.test(s);
}

/** A built-in role by GUID, role name (case-insensitive) or full role definition ID (either form). */
export function findRole(ref: string): RoleDefinition | undefined {
  const tail = ref.split('/').filter((s) => s !== '').pop() ?? '';
  return BUILT_IN_ROLES.find((r) => r.name === tail.toLowerCase() || r.roleName.toLowerCase() === ref.toLowerCase());
}

/** `/a//b/` → `/a/b`; `''` → `/`. Casing is kept. */
export function normalizeScope(scope: string): string {
  const segs = scope.split('/').filter((s) => s !== '');
  return `/${segs.join('/')}`;
}

/** True when an assignment at `assignedScope` applies at `target` (the same scope or one below it). */
export function scopeCovers(assignedScope: string, target: string): boolean {
  const a = normalizeScope(assignedScope).toLowerCase();
  const t = normalizeScope(target).toLowerCase();
  return a === '/' || a === t || t.startsWith(`${a}/`);
}

const patternCache = new Map<string, RegExp>();

/** ARM's wildcard action matching (see the module comment). */
export function actionMatches(pattern: string, action: string): boolean {
  let re = patternCache.get(pattern);
  if (!re) {
    const p = pattern.trim();
    if (p === '*') re = /^.*$/;
    else {
      const esc = (s: string) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&');
      let src = '';
      let rest = p;
      if (rest.startsWith('*/')) {
        src += '(?:.*/)?';
        rest = rest.slice(2);
      }
      let tail = '';
      if (rest.endsWith('/*')) {
        tail = '/.*';
        rest = rest.slice(0, -2);
      }
      src += rest
        .split('/*/')
        .map((part) => part.split('*').map(esc).join('.*'))
        .join('/(?:.*/)?');
      re = new RegExp(`^${src}${tail}$`, 'i');
    }
    patternCache.set(pattern, re);
  }
  return re.test(action);
}

/** One block grants `action` and does not subtract it. */
export function permissionsAllow(blocks: readonly RolePermission[], action: string): boolean {
  return blocks.some((b) => b.actions.some((p) => actionMatches(p, action)) && !b.notActions.some((p) => actionMatches(p, action)));
}

/** The permission blocks that apply to `principalId` at `scope`, one per role assigned at it or above (deduplicated). */
export function effectivePermissions(assignments: Iterable<RoleAssignmentRecord>, principalId: string, scope: string): RolePermission[] {
  const pid = principalId.toLowerCase();
  const roles = new Set<string>();
  for (const a of assignments) {
    if (a.principalId.toLowerCase() === pid && scopeCovers(a.scope, scope)) roles.add(a.roleDefinitionName);
  }
  return [...roles].flatMap((r) => findRole(r)?.permissions ?? []);
}
