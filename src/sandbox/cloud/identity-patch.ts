/**
 * The ARM semantics of `PATCH {"identity": {...}}` on a VM or VMSS, as a pure function.
 *
 * Decisions (documented in README.md next to this file):
 * - identity IDs compare case-insensitively; the casing first written is kept and returned by GET;
 * - a `{}` (any non-null) value adds, `null` removes, absent keys are untouched (merge);
 * - `type` drives the system-assigned identity and may drop all user-assigned ones (`None`, `SystemAssigned`);
 *   after the merge the stored type is derived from what is left, so removing the last user-assigned identity
 *   while still sending `UserAssigned` is accepted and yields `None` (or `SystemAssigned`).
 */

export type IdentityTypeName = 'None' | 'SystemAssigned' | 'UserAssigned' | 'SystemAssigned, UserAssigned';

export interface IdentityPatchPlan {
  readonly system: 'keep' | 'add' | 'remove';
  /** IDs to attach, exactly as sent. */
  readonly add: readonly string[];
  /** IDs to detach, exactly as sent. */
  readonly remove: readonly string[];
  /** Drop every user-assigned identity before adding (`None` or `SystemAssigned`). */
  readonly clearUserAssigned: boolean;
}

export interface ArmErrorInfo {
  readonly status: number;
  readonly code: string;
  readonly message: string;
  readonly target?: string;
}

export type PlanResult = { readonly ok: true; readonly plan: IdentityPatchPlan } | { readonly ok: false; readonly error: ArmErrorInfo };

const USER_ASSIGNED_ID =
  /^\/subscriptions\/[^/]+\/resourcegroups\/[^/]+\/providers\/microsoft\.managedidentity\/userassignedidentities\/[^/]+$/i;

export function isUserAssignedIdentityId(id: string): boolean {
  return USER_ASSIGNED_ID.test(id);
}

/** Canonical key for comparing identity IDs (ARM resource IDs are case-insensitive). */
export function identityKey(id: string): string {
  return id.toLowerCase();
}

export function parseIdentityType(raw: unknown): IdentityTypeName | undefined {
  if (typeof raw !== 'string') return undefined;
  const parts = raw
    .split(',')
    .map((p) => p.trim().toLowerCase())
    .filter((p) => p !== '');
  const sys = parts.includes('systemassigned');
  const user = parts.includes('userassigned');
  if (parts.length === 1 && parts[0] === 'none') return 'None';
  if (parts.some((p) => p !== 'systemassigned' && p !== 'userassigned')) return undefined;
  if (sys && user) return 'SystemAssigned, UserAssigned';
  if (sys) return 'SystemAssigned';
  if (user) return 'UserAssigned';
  return undefined;
}

export function deriveIdentityType(hasSystem: boolean, userCount: number): IdentityTypeName {
  if (hasSystem && userCount > 0) return 'SystemAssigned, UserAssigned';
  if (hasSystem) return 'SystemAssigned';
  if (userCount > 0) return 'UserAssigned';
  return 'None';
}

/** Validates the `identity` object of a PATCH body and turns it into a plan; no state is read. */
export function planIdentityPatch(identity: unknown): PlanResult {
  if (identity === undefined || identity === null) {
    return { ok: true, plan: { system: 'keep', add: [], remove: [], clearUserAssigned: false } };
  }
  if (typeof identity !== 'object' || Array.isArray(identity)) {
    return invalid('The value of parameter identity is invalid.', 'identity');
  }
  const rec = identity as Record<string, unknown>;
  let type: IdentityTypeName | undefined;
  if (rec.type !== undefined && rec.type !== null) {
    type = parseIdentityType(rec.type);
    if (!type) return invalid(`The value '${String(rec.type)}' of parameter 'identity.type' is invalid.`, 'identity.type');
  }
  const map = rec.userAssignedIdentities;
  if (map !== undefined && map !== null && (typeof map !== 'object' || Array.isArray(map))) {
    return invalid('The value of parameter identity.userAssignedIdentities is invalid.', 'identity.userAssignedIdentities');
  }
  const add: string[] = [];
  const remove: string[] = [];
  const seen = new Set<string>();
  for (const [id, value] of Object.entries((map ?? {}) as Record<string, unknown>)) {
    const key = identityKey(id);
    if (seen.has(key)) {
      return invalid(`ResourceIdentity identityId '${id}' cannot be duplicated in the provided identityIds list.`, 'resourceIdentity.identityIds');
    }
    seen.add(key);
    if (!isUserAssignedIdentityId(id)) {
      return invalid(`ResourceIdentity identityId '${id}' is not a valid reference to a Microsoft.ManagedIdentity identity.`, 'resourceIdentity.identityIds');
    }
    (value === null ? remove : add).push(id);
  }
  if ((type === 'None' || type === 'SystemAssigned') && add.length > 0) {
    return invalid(`ResourceIdentity identityIds should not be provided if the type is "${type}".`, 'resourceIdentity.identityIds');
  }
  switch (type) {
    case undefined:
      return { ok: true, plan: { system: 'keep', add, remove, clearUserAssigned: false } };
    case 'None':
      return { ok: true, plan: { system: 'remove', add: [], remove, clearUserAssigned: true } };
    case 'SystemAssigned':
      return { ok: true, plan: { system: 'add', add: [], remove, clearUserAssigned: true } };
    case 'UserAssigned':
      return { ok: true, plan: { system: 'remove', add, remove, clearUserAssigned: false } };
    case 'SystemAssigned, UserAssigned':
      return { ok: true, plan: { system: 'add', add, remove, clearUserAssigned: false } };
  }
}

/** 400 as the compute resource provider words it when an identity to attach does not exist (lower-cased IDs). */
export function failedIdentityOperation(resourceId: string, missingIds: readonly string[]): ArmErrorInfo {
  const inner = JSON.stringify({
    error: { code: 'BadRequest', message: `Resource '${missingIds.map(identityKey).join(',')}' was not found.` },
  });
  return {
    status: 400,
    code: 'FailedIdentityOperation',
    message:
      `Identity operation for resource '${resourceId}' failed with error 'Failed to perform resource identity operation. ` +
      `Status: 'BadRequest'. Response: '${inner}'.'.`,
  };
}

function invalid(message: string, target: string): PlanResult {
  return { ok: false, error: { status: 400, code: 'InvalidParameter', message, target } };
}
