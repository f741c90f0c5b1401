import { describe, expect, it } from 'vitest';
import { classifyArmError, extractIdentityIds } from '../../src/mic/arm/errors.js';
import { parseRetryAfter } from '../../src/common/retry-after.js';
import {
  chunked,
  type IdentityState,
  immutableIdentities,
  planIdentityPatches,
  type RequestedChange,
} from '../../src/mic/arm/delta.js';

const id = (n: string | number, rg = 'rg-1'): string =>
  `/subscriptions/sub-1/resourceGroups/${rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-${n}`;
const key = (n: string | number, rg = 'rg-1'): string => id(n, rg).toLowerCase();
const change = (n: string | number, op: 'add' | 'remove'): RequestedChange => ({ key: key(n), id: id(n), op });
const state = (type: string, ids: (string | number)[], clientIds: Record<string, string> = {}): IdentityState => ({
  type,
  userAssigned: new Map(ids.map((n) => [key(n), clientIds[String(n)] ? { id: id(n), clientId: clientIds[String(n)]! } : { id: id(n) }])),
});
const none = immutableIdentities([]);

describe('extractIdentityIds', () => {
  it('reads one ID from a LinkedAuthorizationFailed message (original test case)', () => {
    const msg = `on the linked scope(s) '/subscriptions/xxxxxxxx-1234-5678-xxxx-xxxxxxxxxxxx/resourcegroups/rg-1234/providers/Microsoft.ManagedIdentity/userAssignedIdentities/user-id-1' or the linked scope(s) are invalid`;
    expect(extractIdentityIds(msg)).toEqual([
      '/subscriptions/xxxxxxxx-1234-5678-xxxx-xxxxxxxxxxxx/resourcegroups/rg-1234/providers/microsoft.managedidentity/userassignedidentities/user-id-1',
    ]);
  });

  it('reads a comma-separated list and ignores the VM scope in the full ARM message', () => {
    const msg =
      `The client 'app' with object id 'oid' has permission to perform action 'Microsoft.Compute/virtualMachineScaleSets/write' ` +
      `on scope '/subscriptions/sub-1/resourceGroups/rg-1/providers/Microsoft.Compute/virtualMachineScaleSets/ss1'; however, it does not have ` +
      `permission to perform action 'Microsoft.ManagedIdentity/userAssignedIdentities/assign/action' on the linked scope(s) ` +
      `'${id(1)},${id(2, 'rg-4567')}' or the linked scope(s) are invalid.`;
    expect(extractIdentityIds(msg)).toEqual([key(1), key(2, 'rg-4567')]);
  });

  it('reads the lower-cased IDs nested in a FailedIdentityOperation message', () => {
    const inner = JSON.stringify({ error: { code: 'BadRequest', message: `Resource '${key(7)},${key(8)}' was not found.` } });
    const msg =
      `Identity operation for resource '/subscriptions/sub-1/resourceGroups/rg-1/providers/Microsoft.Compute/virtualMachines/vm1' failed with error ` +
      `'Failed to perform resource identity operation. Status: 'BadRequest'. Response: '${inner}'.'.`;
    expect(extractIdentityIds(msg)).toEqual([key(7), key(8)]);
  });

  it('returns nothing for a message without identity IDs', () => {
    expect(extractIdentityIds('error message')).toEqual([]);
  });
});

describe('parseRetryAfter', () => {
  const now = Date.parse('2024-01-01T00:00:00Z');
  it('reads seconds and HTTP dates', () => {
    expect(parseRetryAfter('7', now)).toBe(7000);
    expect(parseRetryAfter('Mon, 01 Jan 2024 00:00:30 GMT', now)).toBe(30_000);
    expect(parseRetryAfter('Sun, 31 Dec 2023 23:59:00 GMT', now)).toBe(0);
  });
  it('ignores absent or malformed values', () => {
    expect(parseRetryAfter(undefined, now)).toBeUndefined();
    expect(parseRetryAfter('', now)).toBeUndefined();
    expect(parseRetryAfter('soon', now)).toBeUndefined();
    expect(parseRetryAfter('-3', now)).toBeUndefined();
  });
});

describe('classifyArmError', () => {
  const restError = (statusCode: number, code: string, message: string, headers: Record<string, string> = {}): Error =>
    Object.assign(new Error(message), { statusCode, code, response: { headers: { get: (h: string) => headers[h] } } });

  it('429 is throttled with the Retry-After delay', () => {
    expect(classifyArmError(restError(429, 'TooManyRequests', 'slow down', { 'retry-after': '3' }), 0)).toMatchObject({
      kind: 'throttled',
      retryAfterMs: 3000,
    });
  });
  it('identity codes win over the status and carry the IDs', () => {
    const cls = classifyArmError(restError(403, 'LinkedAuthorizationFailed', `linked scope(s) '${id(1)}' or`), 0);
    expect(cls).toMatchObject({ kind: 'identity', code: 'LinkedAuthorizationFailed', identityKeys: [key(1)] });
  });
  it('5xx and socket errors are retryable; other 4xx are fatal; 404 is notFound', () => {
    expect(classifyArmError(restError(503, 'ServiceUnavailable', 'x'), 0).kind).toBe('retryable');
    expect(classifyArmError(restError(409, 'Conflict', 'concurrent request'), 0).kind).toBe('retryable');
    expect(classifyArmError(Object.assign(new Error('refused'), { code: 'ECONNREFUSED' }), 0).kind).toBe('retryable');
    expect(classifyArmError(restError(400, 'InvalidParameter', 'bad'), 0).kind).toBe('fatal');
    expect(classifyArmError(restError(404, 'ResourceNotFound', 'gone'), 0).kind).toBe('notFound');
  });
  it('a failed LRO (plain Error from core-lro) is retryable unless it names an identity code', () => {
    expect(classifyArmError(new Error('The long-running operation has failed. InternalError. boom'), 0).kind).toBe('retryable');
    expect(classifyArmError(new Error('The long-running operation has failed. FailedIdentityOperation. x'), 0).kind).toBe('identity');
  });
});

describe('planIdentityPatches', () => {
  it('sends nothing when every change is already in place (no no-op PATCH)', () => {
    const plan = planIdentityPatches(state('UserAssigned', [1]), [change(1, 'add'), change(2, 'remove')], none);
    expect(plan.patches).toEqual([]);
    expect(plan.alreadyDone.map((c) => c.key)).toEqual([key(1), key(2)]);
  });

  it('adds with {} and removes with null under the ID as ARM spelled it', () => {
    const s: IdentityState = { type: 'UserAssigned', userAssigned: new Map([[key(1), { id: id(1).toUpperCase() }], [key(2), { id: id(2) }]]) };
    const plan = planIdentityPatches(s, [change(1, 'remove'), change(3, 'add')], none);
    expect(plan.patches).toEqual([
      { type: 'UserAssigned', userAssignedIdentities: { [id(3)]: {}, [id(1).toUpperCase()]: null }, adds: [key(3)], removes: [key(1)] },
    ]);
  });

  it.each([
    ['', 'UserAssigned'],
    ['None', 'UserAssigned'],
    ['SystemAssigned', 'SystemAssigned, UserAssigned'],
    ['SystemAssigned, UserAssigned', 'SystemAssigned, UserAssigned'],
  ])('type %j becomes %j when attaching', (from, to) => {
    const plan = planIdentityPatches(state(from, from.includes('User') ? [9] : []), [change(1, 'add')], none);
    expect(plan.patches[0]!.type).toBe(to);
  });

  it('removing the last identity drops the map and keeps the system-assigned identity', () => {
    expect(planIdentityPatches(state('SystemAssigned, UserAssigned', [1]), [change(1, 'remove')], none).patches).toEqual([
      { type: 'SystemAssigned', adds: [], removes: [key(1)] },
    ]);
    expect(planIdentityPatches(state('UserAssigned', [1, 2]), [change(1, 'remove'), change(2, 'remove')], none).patches).toEqual([
      { type: 'None', adds: [], removes: [key(1), key(2)] },
    ]);
  });

  it('never removes an immutable identity, matched by resource ID or by client ID in any case', () => {
    const immutable = immutableIdentities([id(1).toUpperCase(), 'ABCDEF-client']);
    const s = state('UserAssigned', [1, 2, 3], { '2': 'abcdef-CLIENT' });
    const plan = planIdentityPatches(s, [change(1, 'remove'), change(2, 'remove'), change(3, 'remove')], immutable);
    expect(plan.immutable.map((c) => c.key)).toEqual([key(1), key(2)]);
    expect(plan.patches).toEqual([{ type: 'UserAssigned', userAssignedIdentities: { [id(3)]: null }, adds: [], removes: [key(3)] }]);
  });

  it('splits more than maxPerPatch entries into several PATCHes, adds before removes', () => {
    const current = Array.from({ length: 10 }, (_, i) => `old-${i}`);
    const changes = [
      ...current.map((n) => change(n, 'remove')),
      ...Array.from({ length: 320 }, (_, i) => change(`new-${i}`, 'add')),
    ];
    const plan = planIdentityPatches(state('UserAssigned', current), changes, none, 150);
    expect(plan.patches.map((p) => Object.keys(p.userAssignedIdentities ?? {}).length)).toEqual([150, 150, 30]);
    expect(plan.patches.map((p) => p.removes.length)).toEqual([0, 0, 10]);
    expect(plan.patches.every((p) => p.type === 'UserAssigned')).toBe(true);
  });

  it('chunked splits evenly and keeps the remainder', () => {
    expect(chunked([1, 2, 3, 4, 5], 2)).toEqual([[1, 2], [3, 4], [5]]);
    expect(chunked([], 3)).toEqual([]);
  });
});
