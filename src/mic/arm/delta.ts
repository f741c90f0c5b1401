// Pure identity-set arithmetic for one VM/VMSS: current identities + requested changes → the PATCH bodies to send
// (none when nothing changes), chunked, with the system-assigned identity and immutable identities left alone.
import { canonicalResourceId } from '../../azure/resource-id.js';

/** What a GET of the VM/VMSS told us about its identities. */
/** What ARM reports for one attached user-assigned identity. */
export interface AttachedIdentity {
  readonly id: string;
  readonly clientId?: string;
  readonly principalId?: string;
}

export interface IdentityState {
  /** `identity.type` as ARM returned it ('' when the resource has no identity block). */
  readonly type: string;
  /** Attached user-assigned identities by canonical ID: the ID as ARM spelled it, its client and principal IDs. */
  readonly userAssigned: ReadonlyMap<string, AttachedIdentity>;
  readonly provisioningState?: string;
}

export interface RequestedChange {
  /** Canonical resource ID. */
  readonly key: string;
  /** The ID as the caller spelled it. */
  readonly id: string;
  readonly op: 'add' | 'remove';
}

/** One PATCH: `identity.type` plus the entries it changes (absent map = drop all user-assigned identities). */
export interface IdentityPatch {
  readonly type: 'None' | 'SystemAssigned' | 'UserAssigned' | 'SystemAssigned, UserAssigned';
  /** ID → {} to attach, null to detach. Omitted when `type` carries no user-assigned identities. */
  readonly userAssignedIdentities?: Readonly<Record<string, Record<string, never> | null>>;
  /** Canonical keys this PATCH attaches / detaches. */
  readonly adds: readonly string[];
  readonly removes: readonly string[];
}

export interface IdentityPlan {
  readonly patches: readonly IdentityPatch[];
  /** Changes that need no PATCH: already attached / already detached. */
  readonly alreadyDone: readonly RequestedChange[];
  /** Removals refused because the identity is immutable. */
  readonly immutable: readonly RequestedChange[];
}

/** Immutable identities, given as client IDs or resource IDs, compared case-insensitively. */
export interface ImmutableIdentities {
  has(resourceKey: string, clientId: string | undefined): boolean;
}

export function immutableIdentities(entries: Iterable<string>): ImmutableIdentities {
  const set = new Set<string>();
  for (const e of entries) {
    const t = e.trim();
    if (t !== '') set.add(t.includes('/') ? canonicalResourceId(t) : t.toLowerCase());
  }
  return {
    // The original lower-cased the set but looked up the client ID as given; both sides are lower-cased here.
    has: (resourceKey, clientId) => set.has(resourceKey) || (clientId !== undefined && set.has(clientId.trim().toLowerCase())),
  };
}

export function hasSystemAssigned(type: string): boolean {
  return type.split(',').some((t) => t.trim().toLowerCase() === 'systemassigned');
}

/**
 * Plans the PATCHes that bring `state` to `state + adds - removes`. Adds go first so that no intermediate chunk
 * leaves the resource with an empty user-assigned set under type UserAssigned.
 */
export function planIdentityPatches(
  state: IdentityState,
  changes: Iterable<RequestedChange>,
  immutable: ImmutableIdentities,
  maxPerPatch = 150,
): IdentityPlan {
  if (!Number.isInteger(maxPerPatch) || maxPerPatch < 1) throw new RangeError(`maxPerPatch must be a positive integer, got ${maxPerPatch}`);
  const adds: RequestedChange[] = [];
  const removes: { change: RequestedChange; armId: string }[] = [];
  const alreadyDone: RequestedChange[] = [];
  const refused: RequestedChange[] = [];

  for (const c of changes) {
    const present = state.userAssigned.get(c.key);
    if (c.op === 'add') {
      if (present) alreadyDone.push(c);
      else adds.push(c);
    } else if (!present) {
      alreadyDone.push(c);
    } else if (immutable.has(c.key, present.clientId)) {
      refused.push(c);
    } else {
      // Detach under the spelling ARM reported, so a case-sensitive server still finds the entry.
      removes.push({ change: c, armId: present.id });
    }
  }

  const system = hasSystemAssigned(state.type);
  const finalCount = state.userAssigned.size + adds.length - removes.length;
  let patches: IdentityPatch[] = [];
  if (adds.length + removes.length === 0) {
    patches = [];
  } else if (finalCount === 0) {
    // Dropping the last user-assigned identity: one PATCH of the type alone, keeping system-assigned if present.
    patches = [{ type: system ? 'SystemAssigned' : 'None', adds: [], removes: removes.map((r) => r.change.key) }];
  } else {
    const type = system ? 'SystemAssigned, UserAssigned' : 'UserAssigned';
    const entries: { key: string; armId: string; add: boolean }[] = [
      ...adds.map((a) => ({ key: a.key, armId: a.id, add: true })),
      ...removes.map((r) => ({ key: r.change.key, armId: r.armId, add: false })),
    ];
    for (const chunk of chunked(entries, maxPerPatch)) {
      const map: Record<string, Record<string, never> | null> = {};
      for (const e of chunk) map[e.armId] = e.add ? {} : null;
      patches.push({
        type,
        userAssignedIdentities: map,
        adds: chunk.filter((e) => e.add).map((e) => e.key),
        removes: chunk.filter((e) => !e.add).map((e) => e.key),
      });
    }
  }
  return { patches, alreadyDone, immutable: refused };
}

export function chunked<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}
