// One coalesced batch of identity changes on one VM/VMSS: GET, the PATCHes that change something (none when nothing
// does), identities ARM refuses dropped so the rest still go through, a short Retry-After waited out in line, and
// a read-back after a failed PATCH. Every change gets its own outcome, and the batch says what ARM holds after it.
// The gates (per target, and the subscription's read and write budgets) are shared by every target's worker.
import type { Logger } from 'pino';
import { canonicalResourceId } from '../../azure/resource-id.js';
import type { Clock } from '../../common/clock.js';
import type { ComputeIdentityPort, ArmTarget } from './compute.js';
import { planIdentityPatches, type IdentityPatch, type IdentityState, type ImmutableIdentities, type RequestedChange } from './delta.js';
import { type ArmErrorClass, classifyArmError } from './errors.js';

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

export type FailedOutcome = Extract<IdentityOutcome, { status: 'failed' }>;

export interface BatchOptions {
  readonly calls: ArmCalls;
  readonly clock: Clock;
  readonly log: Logger;
  readonly immutable: ImmutableIdentities;
  readonly maxPerPatch: number;
  /** Retries after a retryable error or an identity error (`--update-user-msi-max-retry`). */
  readonly maxRetries: number;
  /** Pause between such retries (`--update-user-msi-retry-interval`). */
  readonly retryIntervalMs: number;
  /** Longest Retry-After waited out in line; longer ones fail the batch as `throttled`. */
  readonly maxThrottleWaitMs: number;
  /** Delay assumed when a 429 carries no Retry-After. */
  readonly defaultThrottleMs: number;
}

export interface BatchResult {
  /** One outcome per canonical key of the batch. */
  readonly outcomes: ReadonlyMap<string, IdentityOutcome>;
  /** PATCH requests sent. */
  readonly patchCount: number;
  /** What ARM holds after the batch; undefined when that is uncertain (a read failed after a failure). */
  readonly state: IdentityState | undefined;
}

/** Thrown by a gate whose Retry-After is longer than a batch may wait: no request went out. */
export class ThrottledError extends Error {
  constructor(readonly retryAfterMs: number) {
    super(`ARM throttled this client; retry after ${retryAfterMs} ms`);
  }
}

/** GET and PATCH through the Retry-After gates, timed for the metrics. */
export class ArmCalls {
  readonly #targetGate = new Map<string, number>();
  // The subscription's read and write budgets, as the original's per-client reader/writer timestamps.
  readonly #budgetGate = { read: 0, write: 0 };

  constructor(
    private readonly port: ComputeIdentityPort,
    private readonly clock: Clock,
    private readonly log: Logger,
    private readonly defaultThrottleMs: number,
    private readonly maxThrottleWaitMs: number,
    private readonly onCall?: (operation: ArmOperation, durationMs: number, error?: unknown) => void,
  ) {}

  /** Milliseconds until a call of `budget` on the target may go out (0: now). */
  gateMs(key: string, budget: 'read' | 'write'): number {
    return Math.max(0, Math.max(this.#targetGate.get(key) ?? 0, this.#budgetGate[budget]) - this.clock.now());
  }

  forget(key: string): void {
    this.#targetGate.delete(key);
  }

  get(key: string, target: ArmTarget, signal: AbortSignal): Promise<IdentityState> {
    return this.#call(key, target, 'read', signal, () => this.port.get(target));
  }

  patch(key: string, target: ArmTarget, body: IdentityPatch, signal: AbortSignal): Promise<IdentityState | void> {
    return this.#call(key, target, 'write', signal, () => this.port.patch(target, body));
  }

  async #call<T>(key: string, target: ArmTarget, budget: 'read' | 'write', signal: AbortSignal, fn: () => Promise<T>): Promise<T> {
    const wait = this.gateMs(key, budget);
    if (wait > this.maxThrottleWaitMs) throw new ThrottledError(wait);
    if (wait > 0) {
      this.log.info({ target: key, budget, waitMs: wait }, 'waiting out ARM Retry-After');
      await this.clock.sleep(wait, signal);
    }
    signal.throwIfAborted();
    const operation: ArmOperation = `${target.kind}_${budget === 'read' ? 'get' : 'update'}`;
    const started = this.clock.now();
    try {
      const value = await fn();
      this.onCall?.(operation, this.clock.now() - started);
      return value;
    } catch (err) {
      this.onCall?.(operation, this.clock.now() - started, err);
      this.#noteThrottle(key, budget, classifyArmError(err, this.clock.now()));
      throw err;
    }
  }

  #noteThrottle(key: string, budget: 'read' | 'write', cls: ArmErrorClass): void {
    const delay = (cls.kind === 'throttled' || cls.kind === 'retryable' ? cls.retryAfterMs : undefined) ??
      (cls.kind === 'throttled' ? this.defaultThrottleMs : 0);
    if (delay <= 0) return;
    const until = this.clock.now() + delay;
    this.#targetGate.set(key, Math.max(this.#targetGate.get(key) ?? 0, until));
    this.#budgetGate[budget] = Math.max(this.#budgetGate[budget], until);
  }
}

/** Applies one coalesced batch of changes to one target. Rejects only when `signal` aborts. */
export async function runBatch(
  o: BatchOptions,
  key: string,
  target: ArmTarget,
  batch: ReadonlyMap<string, RequestedChange>,
  signal: AbortSignal,
): Promise<BatchResult> {
  const outcomes = new Map<string, IdentityOutcome>();
  const pending = new Map(batch);
  let patchCount = 0;
  let retries = 0;
  let state: IdentityState | undefined;
  const { log, clock } = o;

  const failAll = (changes: Iterable<RequestedChange>, cls: ArmErrorClass | ThrottledError): void => {
    const f = failure(cls, o.defaultThrottleMs);
    for (const c of changes) {
      outcomes.set(c.key, { id: c.id, key: c.key, op: c.op, status: 'failed', ...f });
      pending.delete(c.key);
    }
  };

  while (pending.size > 0) {
    try {
      state = await o.calls.get(key, target, signal);
    } catch (err) {
      signal.throwIfAborted();
      state = undefined;
      const cls = err instanceof ThrottledError ? err : classifyArmError(err, clock.now());
      if (await shouldRetry(cls)) continue;
      log.warn({ target: key, err, kind: kindOf(cls) }, 'ARM GET failed');
      failAll(pending.values(), cls);
      break;
    }
    if (state.provisioningState?.toLowerCase() === 'deleting') {
      const msg = `${target.kind} ${target.name} is being deleted (provisioningState Deleting)`;
      for (const c of pending.values()) outcomes.set(c.key, { id: c.id, key: c.key, op: c.op, status: 'failed', reason: 'deleting', message: msg });
      pending.clear();
      break;
    }

    const plan = planIdentityPatches(state, pending.values(), o.immutable, o.maxPerPatch);
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
        const after = await o.calls.patch(key, target, p, signal);
        state = after ?? applied(state, p);
        for (const k of [...p.adds, ...p.removes]) {
          const c = pending.get(k);
          if (c) settle(c, state);
        }
      } catch (err) {
        signal.throwIfAborted();
        const cls = err instanceof ThrottledError ? err : classifyArmError(err, clock.now());
        if (err instanceof ThrottledError) patchCount--; // gated before sending: no request went out
        if (cls instanceof ThrottledError || cls.kind !== 'identity') {
          if (await shouldRetry(cls)) {
            replan = true;
            break;
          }
          log.warn({ target: key, err, kind: kindOf(cls) }, 'ARM PATCH failed');
          await failAndVerify(cls);
          return { outcomes, patchCount, state };
        }
        // An identity the caller may not assign (or that ARM cannot resolve): drop it and try the rest again.
        const offending = [...p.adds].filter((k) => cls.identityKeys.includes(k));
        if (offending.length > 0 && retries < o.maxRetries) {
          retries++;
          log.warn({ target: key, code: cls.code, offending }, 'ARM refused identities; retrying without them');
          failAll(offending.map((k) => pending.get(k)).filter((c): c is RequestedChange => c !== undefined), cls);
          replan = true;
          break;
        }
        log.warn({ target: key, err, code: cls.code }, 'ARM PATCH failed with an identity error');
        await failAndVerify(cls);
        return { outcomes, patchCount, state };
      }
    }
    if (!replan) break;
  }
  return { outcomes, patchCount, state };

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
    if (cls instanceof ThrottledError) return false; // the gate already said: longer than we wait in line
    if (retries >= o.maxRetries) return false;
    if (cls.kind === 'throttled') {
      const wait = cls.retryAfterMs ?? o.defaultThrottleMs;
      if (wait > o.maxThrottleWaitMs) return false;
      retries++;
      return true; // the gate sleeps until the Retry-After has passed
    }
    if (cls.kind === 'retryable') {
      retries++;
      await clock.sleep(o.retryIntervalMs, signal);
      return true;
    }
    return false;
  }

  // After a failed PATCH the real state is uncertain (an LRO may have half-applied): read it once, as the
  // original's failure path did, and report what is actually there.
  async function failAndVerify(cls: ArmErrorClass | ThrottledError): Promise<void> {
    const left = [...pending.values()];
    failAll(left, cls);
    if (cls instanceof ThrottledError || cls.kind === 'throttled') return; // refused before it ran: state unchanged
    state = undefined;
    try {
      const seen = await o.calls.get(key, target, signal);
      state = seen;
      for (const c of left) {
        const present = seen.userAssigned.has(c.key);
        if ((c.op === 'add' && present) || (c.op === 'remove' && !present)) settle(c, seen);
      }
    } catch (err) {
      signal.throwIfAborted();
      log.debug({ target: key, err }, 'could not re-read identities after a failed PATCH');
    }
  }
}

/** The state after a PATCH that answered no body: the GET's, with the PATCH's changes made. */
function applied(state: IdentityState, p: IdentityPatch): IdentityState {
  const userAssigned = new Map(state.userAssigned);
  if (p.userAssignedIdentities === undefined) userAssigned.clear();
  for (const k of p.removes) userAssigned.delete(k);
  for (const [id, v] of Object.entries(p.userAssignedIdentities ?? {})) {
    const k = canonicalResourceId(id);
    if (v !== null) userAssigned.set(k, userAssigned.get(k) ?? { id });
  }
  return { ...state, type: p.type, userAssigned };
}

function kindOf(cls: ArmErrorClass | Error): string {
  return cls instanceof Error ? 'throttled' : cls.kind;
}

function failure(
  cls: ArmErrorClass | ThrottledError,
  defaultThrottleMs: number,
): { reason: FailureReason; message: string; retryAfterMs?: number } {
  if (cls instanceof ThrottledError) return { reason: 'throttled', message: cls.message, retryAfterMs: cls.retryAfterMs };
  switch (cls.kind) {
    case 'throttled':
      return { reason: 'throttled', message: cls.message, retryAfterMs: cls.retryAfterMs ?? defaultThrottleMs };
    case 'identity':
      return { reason: cls.code, message: cls.message };
    case 'retryable':
      return { reason: 'retryable', message: cls.message, ...(cls.retryAfterMs !== undefined ? { retryAfterMs: cls.retryAfterMs } : {}) };
    case 'notFound':
      return { reason: 'notFound', message: cls.message };
    case 'fatal':
      return { reason: 'fatal', message: cls.message };
  }
}
