// The ARM identity client MIC uses: attach/detach user-assigned identities on VMs and VMSS. Calls for one target
// are serialised and coalesced (changes that arrive during a PATCH ride the next one); different targets run
// concurrently up to a bound. Every requested identity gets its own outcome; no error escapes without one.
import type { TokenCredential } from '@azure/core-auth';
import type { Logger } from 'pino';
import { canonicalResourceId, isUserAssignedIdentityId } from '../azure/resource-id.js';
import { type ArmTarget, type ComputeIdentityPort, computeIdentityPort } from './arm/compute.js';
import {
  hasSystemAssigned,
  type IdentityState,
  immutableIdentities,
  type ImmutableIdentities,
  planIdentityPatches,
  type RequestedChange,
} from './arm/delta.js';
import { type ArmErrorClass, classifyArmError } from './arm/errors.js';

export type { ArmTarget, ComputeIdentityPort } from './arm/compute.js';
export { computeIdentityPort } from './arm/compute.js';

export type ArmOperation = 'vm_get' | 'vm_update' | 'vmss_get' | 'vmss_update';

export type FailureReason =
  | 'LinkedAuthorizationFailed'
  | 'FailedIdentityOperation'
  | 'throttled'
  | 'retryable'
  | 'notFound'
  | 'invalidId'
  | 'deleting'
  | 'fatal';

export type IdentityOutcome =
  | {
      readonly id: string;
      /** Canonical resource ID. */
      readonly key: string;
      readonly op: 'add' | 'remove';
      /** attached/detached: the identity is now (or already was) in the requested state. */
      readonly status: 'attached' | 'detached';
      /** Attached: the client and principal IDs ARM reports for it, when ARM said. */
      readonly clientId?: string;
      readonly principalId?: string;
    }
  | {
      readonly id: string;
      readonly key: string;
      readonly op: 'remove';
      /** Removal refused: the identity is immutable. It stays attached. */
      readonly status: 'kept';
      readonly reason: 'immutable';
    }
  | {
      readonly id: string;
      readonly key: string;
      readonly op: 'add' | 'remove';
      /** A later request for the same identity on the same target won; this one was not applied as asked. */
      readonly status: 'superseded';
    }
  | {
      readonly id: string;
      readonly key: string;
      readonly op: 'add' | 'remove';
      readonly status: 'failed';
      readonly reason: FailureReason;
      readonly message: string;
      /** For throttling: how long ARM asked us to wait. */
      readonly retryAfterMs?: number;
    };

export interface ApplyResult {
  readonly target: ArmTarget;
  /** One outcome per identity the caller asked about, in request order (removes, then adds). */
  readonly outcomes: readonly IdentityOutcome[];
  /** PATCH requests sent for the batch that carried this call's changes. */
  readonly patchCount: number;
  /** True when no outcome is `failed`. */
  readonly ok: boolean;
}

export interface TargetIdentities {
  /** Canonical IDs of the attached user-assigned identities, sorted. */
  readonly ids: readonly string[];
  readonly systemAssigned: boolean;
}

export interface ArmIdentityClient {
  getIdentities(target: ArmTarget): Promise<TargetIdentities>;
  apply(target: ArmTarget, changes: { readonly add?: readonly string[]; readonly remove?: readonly string[] }): Promise<ApplyResult>;
}

export interface ArmClock {
  now(): number;
  sleep(ms: number): Promise<void>;
}

export interface ArmIdentityClientOptions {
  /** ARM access; or pass `port` to supply the compute calls directly. */
  readonly credential?: TokenCredential;
  readonly subscriptionId?: string;
  readonly resourceGroup?: string;
  readonly endpoint?: string;
  /** Token scope, `${armAudience}/.default`; default the public cloud's. */
  readonly scope?: string;
  /** Extra CA to trust for ARM (the emulator's). */
  readonly caPem?: string;
  readonly port?: ComputeIdentityPort;
  readonly logger: Logger;
  /** Client IDs or resource IDs never to detach (`--immutable-user-msis` plus the cluster identity). */
  readonly immutableIdentities?: Iterable<string>;
  /** Also never detached: asked at every plan, so it may grow while the client runs (a reloaded cluster identity). */
  readonly alsoImmutable?: ImmutableIdentities;
  /** Targets worked on at once. Default 10. */
  readonly maxConcurrency?: number;
  /** LRO poll interval. Default 5000 (the original's PollingDelay). */
  readonly pollIntervalMs?: number;
  readonly maxIdentitiesPerPatch?: number;
  /** Retries after a retryable error or an identity error (`--update-user-msi-max-retry`). Default 2. */
  readonly maxRetries?: number;
  /** Pause between such retries (`--update-user-msi-retry-interval`). Default 1000. */
  readonly retryIntervalMs?: number;
  /** Longest Retry-After waited out inside a call; longer ones fail fast as `throttled`. Default 30000. */
  readonly maxThrottleWaitMs?: number;
  /** Delay assumed when a 429 carries no Retry-After. Default 5000. */
  readonly defaultThrottleMs?: number;
  readonly clock?: ArmClock;
  readonly onCall?: (operation: ArmOperation, durationMs: number, error?: unknown) => void;
}

const systemClock: ArmClock = {
  now: () => Date.now(),
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms))),
};

export function createArmIdentityClient(opts: ArmIdentityClientOptions): ArmIdentityClient {
  const port = opts.port ?? defaultPort(opts);
  const clock = opts.clock ?? systemClock;
  const log = opts.logger;
  const fixed = immutableIdentities(opts.immutableIdentities ?? []);
  const also = opts.alsoImmutable;
  const immutable: ImmutableIdentities = also
    ? { has: (key, clientId) => fixed.has(key, clientId) || also.has(key, clientId) }
    : fixed;
  const maxConcurrency = Math.max(1, opts.maxConcurrency ?? 10);
  const maxPerPatch = opts.maxIdentitiesPerPatch ?? 150;
  const maxRetries = Math.max(0, opts.maxRetries ?? 2);
  const retryIntervalMs = opts.retryIntervalMs ?? 1000;
  const maxThrottleWaitMs = opts.maxThrottleWaitMs ?? 30_000;
  const defaultThrottleMs = opts.defaultThrottleMs ?? 5000;

  // Retry-After gates: per target, and the subscription's read and write budgets (as the original's per-client
  // reader/writer timestamps).
  const targetGate = new Map<string, number>();
  const budgetGate = { read: 0, write: 0 };

  const slots = new Map<string, TargetSlot>();
  const ready: TargetSlot[] = [];
  let active = 0;

  class ThrottledError extends Error {
    constructor(readonly retryAfterMs: number) {
      super(`ARM throttled this client; retry after ${retryAfterMs} ms`);
    }
  }

  async function passGate(target: ArmTarget, budget: 'read' | 'write'): Promise<void> {
    const until = Math.max(targetGate.get(targetKey(target)) ?? 0, budgetGate[budget]);
    const wait = until - clock.now();
    if (wait <= 0) return;
    if (wait > maxThrottleWaitMs) throw new ThrottledError(wait);
    log.info({ target: targetKey(target), budget, waitMs: wait }, 'waiting out ARM Retry-After');
    await clock.sleep(wait);
  }

  function noteThrottle(target: ArmTarget, budget: 'read' | 'write', cls: ArmErrorClass): void {
    const delay = (cls.kind === 'throttled' || cls.kind === 'retryable' ? cls.retryAfterMs : undefined) ??
      (cls.kind === 'throttled' ? defaultThrottleMs : 0);
    if (delay <= 0) return;
    const until = clock.now() + delay;
    const key = targetKey(target);
    targetGate.set(key, Math.max(targetGate.get(key) ?? 0, until));
    budgetGate[budget] = Math.max(budgetGate[budget], until);
  }

  async function timed<T>(operation: ArmOperation, fn: () => Promise<T>): Promise<T> {
    const started = clock.now();
    try {
      const value = await fn();
      opts.onCall?.(operation, clock.now() - started);
      return value;
    } catch (err) {
      opts.onCall?.(operation, clock.now() - started, err);
      throw err;
    }
  }

  async function getState(target: ArmTarget): Promise<IdentityState> {
    await passGate(target, 'read');
    try {
      return await timed(target.kind === 'vm' ? 'vm_get' : 'vmss_get', () => port.get(target));
    } catch (err) {
      noteThrottle(target, 'read', classifyArmError(err, clock.now()));
      throw err;
    }
  }

  async function patch(target: ArmTarget, body: Parameters<ComputeIdentityPort['patch']>[1]): Promise<IdentityState | void> {
    await passGate(target, 'write');
    try {
      return await timed(target.kind === 'vm' ? 'vm_update' : 'vmss_update', () => port.patch(target, body));
    } catch (err) {
      noteThrottle(target, 'write', classifyArmError(err, clock.now()));
      throw err;
    }
  }

  /** Applies one coalesced batch of changes to one target; returns an outcome per canonical key. */
  async function runBatch(target: ArmTarget, batch: ReadonlyMap<string, RequestedChange>): Promise<{ outcomes: Map<string, IdentityOutcome>; patchCount: number }> {
    const outcomes = new Map<string, IdentityOutcome>();
    const pending = new Map(batch);
    let patchCount = 0;
    let retries = 0;
    const tKey = targetKey(target);

    const failAll = (changes: Iterable<RequestedChange>, cls: ArmErrorClass | ThrottledError): void => {
      const f = failure(cls, defaultThrottleMs);
      for (const c of changes) {
        outcomes.set(c.key, { id: c.id, key: c.key, op: c.op, status: 'failed', ...f });
        pending.delete(c.key);
      }
    };

    while (pending.size > 0) {
      let state: IdentityState;
      try {
        state = await getState(target);
      } catch (err) {
        const cls = err instanceof ThrottledError ? err : classifyArmError(err, clock.now());
        if (await shouldRetry(cls)) continue;
        log.warn({ target: tKey, err, kind: kindOf(cls) }, 'ARM GET failed');
        failAll(pending.values(), cls);
        break;
      }
      if (state.provisioningState?.toLowerCase() === 'deleting') {
        const msg = `${target.kind} ${target.name} is being deleted (provisioningState Deleting)`;
        for (const c of pending.values()) outcomes.set(c.key, { id: c.id, key: c.key, op: c.op, status: 'failed', reason: 'deleting', message: msg });
        pending.clear();
        break;
      }

      const plan = planIdentityPatches(state, pending.values(), immutable, maxPerPatch);
      for (const c of plan.alreadyDone) settle(c, state);
      for (const c of plan.immutable) {
        outcomes.set(c.key, { id: c.id, key: c.key, op: 'remove', status: 'kept', reason: 'immutable' });
        pending.delete(c.key);
      }
      if (plan.patches.length === 0) break;

      let replan = false;
      for (const p of plan.patches) {
        try {
          patchCount++;
          const after = await patch(target, p);
          for (const key of [...p.adds, ...p.removes]) {
            const c = pending.get(key);
            if (c) settle(c, after ?? undefined);
          }
        } catch (err) {
          const cls = err instanceof ThrottledError ? err : classifyArmError(err, clock.now());
          if (err instanceof ThrottledError) patchCount--; // gated before sending: no request went out
          if (cls instanceof ThrottledError || cls.kind !== 'identity') {
            if (await shouldRetry(cls)) {
              replan = true;
              break;
            }
            log.warn({ target: tKey, err, kind: kindOf(cls) }, 'ARM PATCH failed');
            await failAndVerify(cls);
            return { outcomes, patchCount };
          }
          // An identity the caller may not assign (or that ARM cannot resolve): drop it and try the rest again.
          const offending = [...p.adds].filter((k) => cls.identityKeys.includes(k));
          if (offending.length > 0 && retries < maxRetries) {
            retries++;
            log.warn({ target: tKey, code: cls.code, offending }, 'ARM refused identities; retrying without them');
            failAll(offending.map((k) => pending.get(k)).filter((c): c is RequestedChange => c !== undefined), cls);
            replan = true;
            break;
          }
          log.warn({ target: tKey, err, code: cls.code }, 'ARM PATCH failed with an identity error');
          await failAndVerify(cls);
          return { outcomes, patchCount };
        }
      }
      if (!replan) break;
    }
    return { outcomes, patchCount };

    function settle(c: RequestedChange, seen?: IdentityState): void {
      const reported = c.op === 'add' ? seen?.userAssigned.get(c.key) : undefined;
      outcomes.set(c.key, {
        id: c.id,
        key: c.key,
        op: c.op,
        status: c.op === 'add' ? 'attached' : 'detached',
        ...(reported?.clientId !== undefined ? { clientId: reported.clientId } : {}),
        ...(reported?.principalId !== undefined ? { principalId: reported.principalId } : {}),
      });
      pending.delete(c.key);
    }

    async function shouldRetry(cls: ArmErrorClass | ThrottledError): Promise<boolean> {
      if (cls instanceof ThrottledError) return false; // the gate already said: longer than we wait inside a call
      if (retries >= maxRetries) return false;
      if (cls.kind === 'throttled') {
        const wait = cls.retryAfterMs ?? defaultThrottleMs;
        if (wait > maxThrottleWaitMs) return false;
        retries++;
        return true; // passGate sleeps until the Retry-After has passed
      }
      if (cls.kind === 'retryable') {
        retries++;
        await clock.sleep(retryIntervalMs);
        return true;
      }
      return false;
    }

    // After a failed PATCH the real state is uncertain (an LRO may have half-applied): read it once, as the
    // original's failure path did, and report what is actually there.
    async function failAndVerify(cls: ArmErrorClass | ThrottledError): Promise<void> {
      const left = [...pending.values()];
      failAll(left, cls);
      if (cls instanceof ThrottledError || cls.kind === 'throttled') return;
      try {
        const state = await getState(target);
        for (const c of left) {
          const present = state.userAssigned.has(c.key);
          if ((c.op === 'add' && present) || (c.op === 'remove' && !present)) settle(c, state);
        }
      } catch (err) {
        log.debug({ target: tKey, err }, 'could not re-read identities after a failed PATCH');
      }
    }
  }

  // ---- per-target serialisation and coalescing ----

  interface Waiter {
    readonly changes: readonly RequestedChange[];
    readonly invalid: readonly IdentityOutcome[];
    readonly resolve: (r: ApplyResult) => void;
  }
  interface TargetSlot {
    readonly key: string;
    readonly target: ArmTarget;
    pending: Map<string, RequestedChange>;
    waiters: Waiter[];
    running: boolean;
    queued: boolean;
  }

  function schedule(slot: TargetSlot): void {
    if (slot.running || slot.queued || slot.pending.size === 0) return;
    slot.queued = true;
    ready.push(slot);
    drain();
  }

  function drain(): void {
    while (active < maxConcurrency && ready.length > 0) {
      const slot = ready.shift()!;
      slot.queued = false;
      void run(slot);
    }
  }

  async function run(slot: TargetSlot): Promise<void> {
    active++;
    slot.running = true;
    const batch = slot.pending;
    const waiters = slot.waiters;
    slot.pending = new Map();
    slot.waiters = [];
    let result: { outcomes: Map<string, IdentityOutcome>; patchCount: number };
    try {
      result = await runBatch(slot.target, batch);
    } catch (err) {
      // A bug, not an ARM answer: still give every caller an outcome.
      log.error({ target: slot.key, err }, 'ARM identity batch failed unexpectedly');
      const message = err instanceof Error ? err.message : String(err);
      result = { outcomes: new Map(), patchCount: 0 };
      for (const c of batch.values()) result.outcomes.set(c.key, { id: c.id, key: c.key, op: c.op, status: 'failed', reason: 'fatal', message });
    } finally {
      active--;
      slot.running = false;
    }
    for (const w of waiters) w.resolve(resultFor(slot.target, w, batch, result));
    if (slot.pending.size > 0) schedule(slot);
    else if (slots.get(slot.key) === slot) slots.delete(slot.key);
    drain();
  }

  return {
    async getIdentities(target) {
      const state = await getState(target);
      return { ids: [...state.userAssigned.keys()].sort(), systemAssigned: hasSystemAssigned(state.type) };
    },

    apply(target, req) {
      const { changes, invalid } = normaliseRequest(req.add ?? [], req.remove ?? []);
      if (changes.length === 0) {
        return Promise.resolve({ target, outcomes: invalid, patchCount: 0, ok: invalid.length === 0 });
      }
      const key = targetKey(target);
      let slot = slots.get(key);
      if (!slot) {
        slot = { key, target, pending: new Map(), waiters: [], running: false, queued: false };
        slots.set(key, slot);
      }
      // Latest request wins for an identity that is still waiting.
      for (const c of changes) {
        slot.pending.delete(c.key);
        slot.pending.set(c.key, c);
      }
      const s = slot;
      return new Promise<ApplyResult>((resolve) => {
        s.waiters.push({ changes, invalid, resolve });
        schedule(s);
      });
    },
  };
}

function resultFor(
  target: ArmTarget,
  w: { changes: readonly RequestedChange[]; invalid: readonly IdentityOutcome[] },
  batch: ReadonlyMap<string, RequestedChange>,
  result: { outcomes: ReadonlyMap<string, IdentityOutcome>; patchCount: number },
): ApplyResult {
  const outcomes: IdentityOutcome[] = [...w.invalid];
  for (const c of w.changes) {
    const applied = batch.get(c.key);
    const o = result.outcomes.get(c.key);
    if (!applied || applied.op !== c.op) {
      outcomes.push({ id: c.id, key: c.key, op: c.op, status: 'superseded' });
    } else if (!o) {
      outcomes.push({ id: c.id, key: c.key, op: c.op, status: 'failed', reason: 'fatal', message: 'no outcome recorded' });
    } else {
      outcomes.push({ ...o, id: c.id });
    }
  }
  return { target, outcomes, patchCount: result.patchCount, ok: outcomes.every((o) => o.status !== 'failed') };
}

/** Removes first, then adds: within one request an add wins over a remove of the same identity (as the original). */
function normaliseRequest(add: readonly string[], remove: readonly string[]): { changes: RequestedChange[]; invalid: IdentityOutcome[] } {
  const byKey = new Map<string, RequestedChange>();
  const invalid: IdentityOutcome[] = [];
  const put = (id: string, op: 'add' | 'remove'): void => {
    if (!isUserAssignedIdentityId(id)) {
      invalid.push({ id, key: id.trim().toLowerCase(), op, status: 'failed', reason: 'invalidId', message: `not a user-assigned identity resource ID: "${id}"` });
      return;
    }
    const key = canonicalResourceId(id);
    byKey.set(key, { key, id, op });
  };
  for (const id of remove) put(id, 'remove');
  for (const id of add) put(id, 'add');
  return { changes: [...byKey.values()], invalid };
}

function targetKey(t: ArmTarget): string {
  return `${t.kind}/${(t.resourceGroup ?? '').toLowerCase()}/${t.name.toLowerCase()}`;
}

function kindOf(cls: ArmErrorClass | Error): string {
  return cls instanceof Error ? 'throttled' : cls.kind;
}

function failure(
  cls: ArmErrorClass | (Error & { retryAfterMs: number }),
  defaultThrottleMs: number,
): { reason: FailureReason; message: string; retryAfterMs?: number } {
  if (cls instanceof Error) return { reason: 'throttled', message: cls.message, retryAfterMs: cls.retryAfterMs };
  switch (cls.kind) {
    case 'throttled':
      return { reason: 'throttled', message: cls.message, retryAfterMs: cls.retryAfterMs ?? defaultThrottleMs };
    case 'identity':
      return { reason: cls.code, message: cls.message };
    case 'retryable':
      return { reason: 'retryable', message: cls.message };
    case 'notFound':
      return { reason: 'notFound', message: cls.message };
    case 'fatal':
      return { reason: 'fatal', message: cls.message };
  }
}

function defaultPort(opts: ArmIdentityClientOptions): ComputeIdentityPort {
  const { credential, subscriptionId, resourceGroup, endpoint } = opts;
  if (!credential || !subscriptionId || !resourceGroup || !endpoint) {
    throw new Error('createArmIdentityClient: pass either `port` or all of credential, subscriptionId, resourceGroup, endpoint');
  }
  return computeIdentityPort({
    credential,
    subscriptionId,
    resourceGroup,
    endpoint,
    pollIntervalMs: opts.pollIntervalMs ?? 5000,
    ...(opts.scope ? { scope: opts.scope } : {}),
    ...(opts.caPem ? { caPem: opts.caPem } : {}),
  });
}
