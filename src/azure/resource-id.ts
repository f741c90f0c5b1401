// ARM resource IDs: parsing, validation and comparison. ARM treats every segment case-insensitively, so all
// comparisons here go through `canonicalResourceId`.

/** A parsed ARM resource ID: the scope plus the chain of `type/name` pairs below the provider. */
export interface ResourceId {
  readonly subscriptionId: string;
  readonly resourceGroup: string;
  /** Provider namespace as written, e.g. `Microsoft.Compute`. */
  readonly provider: string;
  /** Top-level resource type, e.g. `virtualMachineScaleSets`. */
  readonly resourceType: string;
  /** Top-level resource name, e.g. the scale set's name. */
  readonly resourceName: string;
  /** Nested `type/name` pairs below the top-level resource (e.g. `virtualMachines/3` in a scale set). */
  readonly children: readonly { readonly type: string; readonly name: string }[];
}

/** A user-assigned managed identity's resource ID, parsed. */
export interface UserAssignedIdentityId {
  readonly subscriptionId: string;
  readonly resourceGroup: string;
  readonly name: string;
  /** The ID in canonical (lower-case) form, for set membership and comparison. */
  readonly key: string;
}

/** Where a node lives in ARM: a standalone VM or an instance of a scale set. */
export interface ComputeTarget {
  readonly subscriptionId: string;
  readonly resourceGroup: string;
  readonly kind: 'vm' | 'vmss';
  /** VM name, or scale set name for `vmss`. */
  readonly name: string;
  /** The scale-set instance ID when the ID names one instance (`.../virtualMachines/<n>`). */
  readonly instanceId?: string;
}

export class ResourceIdError extends Error {
  override readonly name = 'ResourceIdError';
  constructor(
    message: string,
    readonly input: string,
  ) {
    super(message);
  }
}

/**
 * Parses `/subscriptions/<sub>/resourceGroups/<rg>/providers/<ns>/<type>/<name>[/<type>/<name>...]`,
 * case-insensitively in the fixed segments. Throws ResourceIdError naming what is wrong.
 */
export function parseResourceId(input: string): ResourceId {
  const id = input.trim();
  if (id === '') throw new ResourceIdError('invalid resource ID: empty', input);
  const segments = id.replace(/^\/+/, '').replace(/\/+$/, '').split('/');
  if (segments.some((s) => s === '')) {
    throw new ResourceIdError(`invalid resource ID "${input}": empty path segment`, input);
  }
  expectKeyword(segments, 0, 'subscriptions', input);
  expectKeyword(segments, 2, 'resourceGroups', input);
  expectKeyword(segments, 4, 'providers', input);
  const [, subscriptionId, , resourceGroup, , provider, resourceType, resourceName, ...rest] = segments;
  if (!subscriptionId || !resourceGroup || !provider || !resourceType || !resourceName) {
    throw new ResourceIdError(
      `invalid resource ID "${input}": expected /subscriptions/<sub>/resourceGroups/<rg>/providers/<namespace>/<type>/<name>`,
      input,
    );
  }
  if (rest.length % 2 !== 0) {
    throw new ResourceIdError(`invalid resource ID "${input}": nested type "${rest.at(-1)}" has no name`, input);
  }
  const children: { type: string; name: string }[] = [];
  for (let i = 0; i < rest.length; i += 2) children.push({ type: rest[i]!, name: rest[i + 1]! });
  return { subscriptionId, resourceGroup, provider, resourceType, resourceName, children };
}

/** Validates and parses a `Microsoft.ManagedIdentity/userAssignedIdentities/<name>` ID. */
export function parseUserAssignedIdentityId(input: string): UserAssignedIdentityId {
  const r = parseResourceId(input);
  if (
    !eq(r.provider, 'Microsoft.ManagedIdentity') ||
    !eq(r.resourceType, 'userAssignedIdentities') ||
    r.children.length !== 0
  ) {
    throw new ResourceIdError(
      `invalid user-assigned identity ID "${input}": expected .../providers/Microsoft.ManagedIdentity/userAssignedIdentities/<name>`,
      input,
    );
  }
  return {
    subscriptionId: r.subscriptionId,
    resourceGroup: r.resourceGroup,
    name: r.resourceName,
    key: canonicalResourceId(input),
  };
}

export function isUserAssignedIdentityId(input: string): boolean {
  try {
    parseUserAssignedIdentityId(input);
    return true;
  } catch {
    return false;
  }
}

/**
 * Parses a VM ID, a scale-set ID, a scale-set instance ID, or a node's `spec.providerID`
 * (`azure:///subscriptions/...`) into the compute resource that carries the node's identities.
 */
export function parseComputeTarget(input: string): ComputeTarget {
  const id = input.trim().replace(/^azure:\/\//i, '');
  const r = parseResourceId(id);
  if (!eq(r.provider, 'Microsoft.Compute')) {
    throw new ResourceIdError(`not a compute resource ID "${input}": provider is ${r.provider}`, input);
  }
  const base = { subscriptionId: r.subscriptionId, resourceGroup: r.resourceGroup, name: r.resourceName };
  if (eq(r.resourceType, 'virtualMachines') && r.children.length === 0) return { ...base, kind: 'vm' };
  if (eq(r.resourceType, 'virtualMachineScaleSets')) {
    if (r.children.length === 0) return { ...base, kind: 'vmss' };
    const [child] = r.children;
    if (r.children.length === 1 && child && eq(child.type, 'virtualMachines')) {
      return { ...base, kind: 'vmss', instanceId: child.name };
    }
  }
  throw new ResourceIdError(
    `not a VM or scale-set ID "${input}": expected .../virtualMachines/<vm> or .../virtualMachineScaleSets/<ss>[/virtualMachines/<n>]`,
    input,
  );
}

/** Node `spec.providerID` → compute target. Same as parseComputeTarget, but insists on the `azure://` scheme. */
export function parseProviderId(providerId: string): ComputeTarget {
  if (!/^azure:\/\//i.test(providerId.trim())) {
    throw new ResourceIdError(`provider ID "${providerId}" is not an Azure provider ID (azure:///subscriptions/...)`, providerId);
  }
  return parseComputeTarget(providerId);
}

/** The comparison key for an ARM ID: trimmed, one leading slash, no trailing slash, lower-cased. */
export function canonicalResourceId(id: string): string {
  return `/${id.trim().replace(/^\/+/, '').replace(/\/+$/, '')}`.toLowerCase();
}

export function sameResourceId(a: string, b: string): boolean {
  return canonicalResourceId(a) === canonicalResourceId(b);
}

/** Builds the canonical ID of a user-assigned identity (handy in tests and emulator fixtures). */
export function userAssignedIdentityId(subscriptionId: string, resourceGroup: string, name: string): string {
  return `/subscriptions/${subscriptionId}/resourceGroups/${resourceGroup}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/${name}`;
}

function expectKeyword(segments: readonly string[], index: number, keyword: string, input: string): void {
  const got = segments[index];
  if (got === undefined || !eq(got, keyword)) {
    throw new ResourceIdError(
      `invalid resource ID "${input}": expected "${keyword}" at segment ${index + 1}, got ${got === undefined ? 'nothing' : `"${got}"`}`,
      input,
    );
  }
}

function eq(a: string, b: string): boolean {
  return a.toLowerCase() === b.toLowerCase();
}
