// One worker per VM/VMSS: the one owner of MIC's ARM state for that target. It holds the changes the latest plan
// wants there (level-triggered: each cycle restates them), sends them as one coalesced batch at a time (what
// arrives during a PATCH rides the next one), holds the target after a 409/throttle/failure (Retry-After or
// backoff) and retries when the hold passes, backs off an identity ARM refuses without blocking the others, and
// records what ARM is known to hold. When a change settles it calls `onSettled`, so the next cycle plans from that
// state (an AAI's `Assigned` follows from it); it never calls after `cancel()` (lost leadership).
import pLimit, { type LimitFunction } from 'p-limit';
import type { Logger } from 'pino';
import { canonicalResourceId, isUserAssignedIdentityId } from '../../azure/resource-id.js';
import { backoffDelay } from '../../common/backoff.js';
import { realClock, type Clock } from '../../common/clock.js';
import { targetKey, type ComputeTargetRef, type TargetAttachment } from '../core/snapshot.js';
import type { TargetOp } from '../core/plan.js';
import { ArmCalls, runBatch, type ArmOperation, type BatchOptions, type FailedOutcome, type IdentityOutcome } from './batch.js';
import type { ArmTarget, ComputeIdentityPort } from './compute.js';
import { hasSystemAssigned, immutableIdentities, type AttachedIdentity, type IdentityState, type ImmutableIdentities, type RequestedChange } from './delta.js';

export interface ArmWorkersOptions {
  readonly port: ComputeIdentityPort;
  readonly logger: Logger;
  readonly clock?: Clock;
  /** Client IDs or resource IDs never to detach (`--immutable-user-msis` plus the cluster identity). */
  readonly immutableIdentities?: Iterable<string>;
  /** Also never detached: asked at every plan, so it may grow while the client runs (a reloaded cluster identity). */
  readonly alsoImmutable?: ImmutableIdentities;
  /** Targets worked on at once (--arm-max-concurrency). Default 10. */
  readonly maxConcurrency?: number;
  readonly maxIdentitiesPerPatch?: number;
  /** In-line retries after a retryable error or an identity error (`--update-user-msi-max-retry`). Default 2. */
  readonly maxRetries?: number;
  /** Pause between such retries (`--update-user-msi-retry-interval`). Default 1000. */
  readonly retryIntervalMs?: number;
  /** Longest Retry-After waited out in line; longer ones hold the target instead. Default 30000. */
  readonly maxThrottleWaitMs?: number;
  /** Delay assumed when a 429 carries no Retry-After. Default 5000. */
  readonly defaultThrottleMs?: number;
  /** First hold after a failed batch, doubling per consecutive failure up to maxRetryDelayMs. */
  readonly retryBaseMs?: number;
  readonly maxRetryDelayMs?: number;
  readonly onCall?: (operation: ArmOperation, durationMs: number, error?: unknown) => void;
}

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

/** The last failure for an identity on a target; `seq` tells one failure from the next. */
export interface IdentityFailure {
  readonly seq: number;
  readonly outcome: FailedOutcome;
}

/** The ARM calls one-shot callers make (tests, tools); MIC's executor uses the worker API instead. */
export interface ArmIdentityClient {
  getIdentities(target: ArmTarget): Promise<TargetIdentities>;
  apply(target: ArmTarget, changes: { readonly add?: readonly string[]; readonly remove?: readonly string[] }): Promise<ApplyResult>;
}

interface Config extends BatchOptions {
  readonly retryBaseMs: number;
  readonly maxRetryDelayMs: number;
  readonly slots: LimitFunction;
}

/** Reasons that are about one identity, not the target: that identity backs off, the others go on. */
const IDENTITY_REASONS = new Set(['LinkedAuthorizationFailed', 'FailedIdentityOperation', 'invalidId']);

/** Every target's worker, created on first use; also the one-shot ArmIdentityClient. */
export class ArmWorkers implements ArmIdentityClient {
  readonly #cfg: Config;
  readonly #clock: Clock;
  readonly #log: Logger;
  #workers = new Map<string, ArmWorker>();
  #term = new AbortController();
  #listener: (targetKey: string) => void = () => {};

  constructor(opts: ArmWorkersOptions) {
    this.#clock = opts.clock ?? realClock;
    this.#log = opts.logger;
    const fixed = immutableIdentities(opts.immutableIdentities ?? []);
    const also = opts.alsoImmutable;
    const defaultThrottleMs = opts.defaultThrottleMs ?? 5000;
    const maxThrottleWaitMs = opts.maxThrottleWaitMs ?? 30_000;
    this.#cfg = {
      calls: new ArmCalls(opts.port, this.#clock, this.#log, defaultThrottleMs, maxThrottleWaitMs, opts.onCall),
      clock: this.#clock,
      log: this.#log,
      immutable: also ? { has: (key, clientId) => fixed.has(key, clientId) || also.has(key, clientId) } : fixed,
      maxPerPatch: opts.maxIdentitiesPerPatch ?? 150,
      maxRetries: Math.max(0, opts.maxRetries ?? 2),
      retryIntervalMs: opts.retryIntervalMs ?? 1000,
      maxThrottleWaitMs,
      defaultThrottleMs,
      retryBaseMs: opts.retryBaseMs ?? 500,
      maxRetryDelayMs: opts.maxRetryDelayMs ?? 60_000,
      slots: pLimit(Math.max(1, opts.maxConcurrency ?? 10)),
    };
  }

  /** Called with the target's key whenever a change settles or a hold passes: the controller enqueues a cycle. */
  onSettled(listener: (targetKey: string) => void): void {
    this.#listener = listener;
  }

  /** The worker of a target (created on first use). */
  worker(target: ArmTarget & { readonly key?: string }): ArmWorker {
    const key = target.key ?? targetKey(target.kind, target.resourceGroup ?? '', target.name);
    let w = this.#workers.get(key);
    if (w === undefined) {
      w = new ArmWorker(key, target, this.#cfg, this.#term.signal, () => this.#listener(key));
      this.#workers.set(key, w);
    }
    return w;
  }

  /** Hands every target the changes a plan wants there (none for targets it does not name); returns batches started. */
  reconcile(ops: readonly TargetOp[]): number {
    let started = 0;
    const named = new Set<string>();
    for (const op of ops) {
      named.add(op.target.key);
      if (this.worker(op.target).want(op.add, op.remove)) started++;
    }
    for (const [key, w] of this.#workers) if (!named.has(key)) w.want([], []);
    return started;
  }

  /** What the next plan may trust per target: known attachments, with the identities in flight marked unsettled. */
  attachments(keys: Iterable<string>): Map<string, TargetAttachment | undefined> {
    const out = new Map<string, TargetAttachment | undefined>();
    for (const key of keys) {
      const view = this.#workers.get(key)?.view();
      if (view !== undefined) out.set(key, view);
    }
    return out;
  }

  /** GETs the targets whose identities are not known (all of them with `force`: the periodic Azure check). */
  async refresh(targets: Iterable<ComputeTargetRef>, force: boolean): Promise<void> {
    await Promise.all([...targets].map((t) => this.worker(t).refresh(force)));
  }

  holdRemainingMs(key: string): number | undefined {
    return this.#workers.get(key)?.holdRemainingMs();
  }

  heldCount(): number {
    let n = 0;
    for (const w of this.#workers.values()) if (w.holdRemainingMs() !== undefined) n++;
    return n;
  }

  failure(key: string, canonicalId: string): IdentityFailure | undefined {
    return this.#workers.get(key)?.failure(canonicalId);
  }

  attached(key: string, canonicalId: string): AttachedIdentity | undefined {
    return this.#workers.get(key)?.attached(canonicalId);
  }

  /** Forgets a target (its node went away). */
  forget(key: string): void {
    this.#workers.get(key)?.cancel();
    this.#workers.delete(key);
    this.#cfg.calls.forget(key);
  }

  /** Lost leadership: every worker stops (no further ARM call, pending cleared, no more onSettled); state is dropped. */
  cancel(): void {
    this.#term.abort(new Error('stopped leading'));
    this.#term = new AbortController();
    this.#workers = new Map();
  }

  /** Resolves when no batch or read runs (tests, shutdown). Holds are not waited out. */
  async idle(): Promise<void> {
    for (;;) {
      const running = [...this.#workers.values()].map((w) => w.running).filter((p): p is Promise<void> => p !== undefined);
      if (running.length === 0) return;
      await Promise.allSettled(running);
    }
  }

  async getIdentities(target: ArmTarget): Promise<TargetIdentities> {
    const w = this.worker(target);
    const state = await this.#cfg.calls.get(w.key, target, this.#term.signal);
    return { ids: [...state.userAssigned.keys()].sort(), systemAssigned: hasSystemAssigned(state.type) };
  }

  apply(target: ArmTarget, req: { readonly add?: readonly string[]; readonly remove?: readonly string[] }): Promise<ApplyResult> {
    return this.worker(target).request(req.add ?? [], req.remove ?? []);
  }
}

interface Known {
  readonly ids: ReadonlyMap<string, AttachedIdentity>;
  readonly systemAssigned: boolean;
}

interface Waiter {
  readonly changes: readonly RequestedChange[];
  readonly invalid: readonly IdentityOutcome[];
  readonly resolve: (r: ApplyResult) => void;
}

interface FailureRecord extends IdentityFailure {
  /** An identity ARM refused is not asked for again before this (ms since the epoch). */
  readonly until: number;
  readonly failures: number;
}

let failureSeq = 0;

export class ArmWorker {
  #known: Known | undefined;
  /** Bumped when a batch starts or ends, so a read that overlapped one is discarded. */
  #epoch = 0;
  /** Changes not sent yet, by canonical ID: the latest plan's, plus one-shot requests' (in `#asked`). */
  #pending = new Map<string, RequestedChange>();
  #asked = new Set<string>();
  #waiters: Waiter[] = [];
  #inflight: ReadonlyMap<string, RequestedChange> | undefined;
  #hold: { readonly until: number; readonly failures: number } | undefined;
  readonly #failures = new Map<string, FailureRecord>();
  #running: Promise<void> | undefined;
  /** A plan drives this target (want() was called): holds and refusals end in a wake-up, not only in a caller's retry. */
  #planned = false;
  #wake: { readonly at: number; readonly stop: AbortController } | undefined;
  readonly #signal: AbortSignal;
  readonly #stop = new AbortController();

  constructor(
    readonly key: string,
    readonly target: ArmTarget,
    private readonly cfg: Config,
    term: AbortSignal,
    private readonly settled: () => void,
  ) {
    this.#signal = AbortSignal.any([term, this.#stop.signal]);
    this.#signal.addEventListener('abort', () => this.#cancelled(), { once: true });
  }

  get running(): Promise<void> | undefined {
    return this.#running;
  }

  /**
   * The plan's whole wish for this target (level-triggered): replaces what was wanted and not sent yet. Changes
   * already in flight are not asked again; an identity ARM refused waits out its backoff. True if a batch started.
   */
  want(add: readonly string[], remove: readonly string[]): boolean {
    if (this.#signal.aborted) return false;
    this.#planned = true;
    const next = new Map<string, RequestedChange>();
    for (const k of this.#asked) {
      const c = this.#pending.get(k);
      if (c !== undefined) next.set(k, c);
    }
    const now = this.cfg.clock.now();
    const put = (id: string, op: 'add' | 'remove'): void => {
      const key = canonicalResourceId(id);
      if (this.#asked.has(key)) return;
      if (this.#inflight?.get(key)?.op === op) return;
      const refused = this.#failures.get(key);
      if (op === 'add' && refused !== undefined && refused.until > now && IDENTITY_REASONS.has(refused.outcome.reason)) return;
      next.set(key, { key, id, op });
    };
    for (const id of remove) put(id, 'remove');
    for (const id of add) put(id, 'add');
    this.#pending = next;
    // Failures of identities no longer wanted here are of no more use (they only told the executor's events).
    for (const [k, f] of this.#failures) if (f.until <= now && !next.has(k) && this.#inflight?.has(k) !== true) this.#failures.delete(k);
    return this.#kick();
  }

  /** A one-shot request (ArmIdentityClient.apply): resolves with an outcome per identity once a batch carried it. */
  request(add: readonly string[], remove: readonly string[]): Promise<ApplyResult> {
    const { changes, invalid } = normaliseRequest(add, remove);
    if (changes.length === 0) return Promise.resolve({ target: this.target, outcomes: invalid, patchCount: 0, ok: invalid.length === 0 });
    const held = this.holdRemainingMs();
    if (held !== undefined || this.#signal.aborted) {
      // A held target answers at once: the caller decides when to ask again.
      const message = this.#signal.aborted ? 'stopped' : `${this.key} is held after a failure; retry in ${held} ms`;
      const outcomes: IdentityOutcome[] = [...invalid, ...changes.map((c): IdentityOutcome => ({
        id: c.id, key: c.key, op: c.op, status: 'failed', reason: 'throttled', message, ...(held !== undefined ? { retryAfterMs: held } : {}),
      }))];
      return Promise.resolve({ target: this.target, outcomes, patchCount: 0, ok: false });
    }
    for (const c of changes) {
      // Latest request wins for an identity that is still waiting.
      this.#pending.delete(c.key);
      this.#pending.set(c.key, c);
      this.#asked.add(c.key);
    }
    return new Promise<ApplyResult>((resolve) => {
      this.#waiters.push({ changes, invalid, resolve });
      this.#kick();
    });
  }

  view(): TargetAttachment | undefined {
    const known = this.#known;
    if (known === undefined) return undefined;
    const unsettled = [...this.#pending.keys(), ...(this.#inflight?.keys() ?? [])];
    return { ids: [...known.ids.keys()], systemAssigned: known.systemAssigned, ...(unsettled.length > 0 ? { unsettled } : {}) };
  }

  attached(canonicalId: string): AttachedIdentity | undefined {
    return this.#known?.ids.get(canonicalId);
  }

  failure(canonicalId: string): IdentityFailure | undefined {
    return this.#failures.get(canonicalId);
  }

  holdRemainingMs(): number | undefined {
    if (this.#hold === undefined) return undefined;
    const left = this.#hold.until - this.cfg.clock.now();
    return left > 0 ? left : undefined;
  }

  /** Reads what ARM holds when it is not known (or always, with `force`), unless a batch will tell anyway. */
  async refresh(force: boolean): Promise<void> {
    if (this.#signal.aborted || this.#running !== undefined || this.#pending.size > 0 || this.holdRemainingMs() !== undefined) return;
    if (!force && this.#known !== undefined) return;
    const run = this.cfg.slots(() => this.#read());
    this.#running = run;
    try {
      await run;
    } finally {
      if (this.#running === run) this.#running = undefined;
      this.#kick();
    }
  }

  cancel(): void {
    this.#stop.abort(new Error('target forgotten'));
  }

  async #read(): Promise<void> {
    if (this.#signal.aborted) return;
    const epoch = this.#epoch;
    try {
      const state = await this.cfg.calls.get(this.key, this.target, this.#signal);
      if (this.#epoch !== epoch) return; // a change overlapped the read
      this.#known = knownOf(state);
      this.#hold = undefined;
    } catch (err) {
      if (this.#signal.aborted) return;
      const delay = this.#holdFor(undefined);
      this.cfg.log.warn({ target: this.key, err, retryInMs: delay }, 'reading ARM identities failed; holding the target');
    }
  }

  /** Starts a batch unless one runs, the target is held or nothing is wanted; true if one started. */
  #kick(): boolean {
    if (this.#running !== undefined || this.#signal.aborted || this.#pending.size === 0) return false;
    if (this.holdRemainingMs() !== undefined) {
      this.#scheduleWake();
      return false;
    }
    const run = this.cfg.slots(() => this.#batch());
    this.#running = run;
    void run.finally(() => {
      if (this.#running === run) this.#running = undefined;
      this.#kick();
    });
    return true;
  }

  async #batch(): Promise<void> {
    if (this.#signal.aborted) return;
    const batch = this.#pending;
    const waiters = this.#waiters;
    const asked = this.#asked;
    this.#pending = new Map();
    this.#waiters = [];
    this.#asked = new Set();
    if (batch.size === 0) return;
    this.#inflight = batch;
    this.#epoch++;
    const started = this.cfg.clock.now();
    let result: Awaited<ReturnType<typeof runBatch>>;
    try {
      result = await runBatch(this.cfg, this.key, this.target, batch, this.#signal);
    } catch (err) {
      if (this.#signal.aborted) {
        this.#inflight = undefined;
        const outcomes = new Map([...batch.values()].map((c): [string, IdentityOutcome] => [c.key, { id: c.id, key: c.key, op: c.op, status: 'failed', reason: 'fatal', message: 'stopped' }]));
        for (const w of waiters) w.resolve(resultFor(this.target, w, batch, outcomes, 0));
        return;
      }
      // A bug, not an ARM answer: every change still gets an outcome.
      this.cfg.log.error({ target: this.key, err }, 'ARM identity batch failed unexpectedly');
      const message = err instanceof Error ? err.message : String(err);
      const outcomes = new Map<string, IdentityOutcome>();
      for (const c of batch.values()) outcomes.set(c.key, { id: c.id, key: c.key, op: c.op, status: 'failed', reason: 'fatal', message });
      result = { outcomes, patchCount: 0, state: undefined };
    }
    this.#inflight = undefined;
    this.#epoch++;
    this.#known = result.state === undefined ? undefined : knownOf(result.state);

    const now = this.cfg.clock.now();
    let throttleMs: number | undefined;
    let targetFailed = false;
    for (const o of result.outcomes.values()) {
      if (o.status !== 'failed') {
        this.#failures.delete(o.key);
        continue;
      }
      const failures = (this.#failures.get(o.key)?.failures ?? 0) + 1;
      const until = now + this.#backoff(failures);
      this.#failures.set(o.key, { seq: ++failureSeq, outcome: o, until, failures });
      if (IDENTITY_REASONS.has(o.reason)) continue;
      targetFailed = true;
      if (o.retryAfterMs !== undefined) throttleMs = Math.max(throttleMs ?? 0, o.retryAfterMs);
      // Still wanted (no one-shot caller, nothing newer asked): retried when the hold passes.
      const c = batch.get(o.key);
      if (c !== undefined && !asked.has(o.key) && !this.#pending.has(o.key)) this.#pending.set(o.key, c);
    }
    if (targetFailed) {
      const delay = this.#holdFor(throttleMs);
      const reasons = [...new Set([...result.outcomes.values()].map((o) => (o.status === 'failed' ? o.reason : '')).filter((r) => r !== ''))];
      this.cfg.log.warn({ target: this.key, reasons, retryInMs: delay }, 'ARM identity change failed; holding the target');
    } else {
      this.#hold = undefined;
      this.cfg.log.debug({ target: this.key, changes: batch.size, patches: result.patchCount, ms: now - started }, 'ARM identities applied');
    }
    for (const w of waiters) w.resolve(resultFor(this.target, w, batch, result.outcomes, result.patchCount));
    this.#scheduleWake();
    if (!this.#signal.aborted) this.settled();
  }

  /** Holds the target for Retry-After (or the next backoff step); returns the delay. */
  #holdFor(retryAfterMs: number | undefined): number {
    const failures = (this.#hold?.failures ?? 0) + 1;
    const delay = retryAfterMs ?? this.#backoff(failures);
    this.#hold = { until: this.cfg.clock.now() + delay, failures };
    this.#scheduleWake();
    return delay;
  }

  #backoff(failures: number): number {
    return backoffDelay(failures - 1, { initialMs: this.cfg.retryBaseMs, maxMs: this.cfg.maxRetryDelayMs, jitter: 0 });
  }

  /** One timer for the earliest moment something may change: the hold passes, or a refused identity may be asked again. */
  #scheduleWake(): void {
    if (this.#signal.aborted || (!this.#planned && this.#pending.size === 0)) return;
    const now = this.cfg.clock.now();
    let at = this.#hold !== undefined && this.#hold.until > now ? this.#hold.until : Infinity;
    for (const f of this.#failures.values()) if (f.until > now && f.until < at && IDENTITY_REASONS.has(f.outcome.reason)) at = f.until;
    if (at === Infinity || (this.#wake !== undefined && this.#wake.at <= at)) return;
    this.#wake?.stop.abort();
    const stop = new AbortController();
    this.#wake = { at, stop };
    this.cfg.clock.sleep(at - now, AbortSignal.any([this.#signal, stop.signal])).then(
      () => {
        if (this.#wake?.stop === stop) this.#wake = undefined;
        if (this.#signal.aborted) return;
        if (!this.#kick()) this.#scheduleWake();
        this.settled();
      },
      () => {
        if (this.#wake?.stop === stop) this.#wake = undefined;
      },
    );
  }

  #cancelled(): void {
    this.#pending.clear();
    this.#asked.clear();
    this.#wake?.stop.abort();
    this.#wake = undefined;
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) {
      w.resolve({ target: this.target, outcomes: w.changes.map((c) => ({ id: c.id, key: c.key, op: c.op, status: 'failed', reason: 'fatal', message: 'stopped' })), patchCount: 0, ok: false });
    }
  }
}

function knownOf(state: IdentityState): Known {
  return { ids: state.userAssigned, systemAssigned: hasSystemAssigned(state.type) };
}

function resultFor(
  target: ArmTarget,
  w: Waiter,
  batch: ReadonlyMap<string, RequestedChange>,
  outcomesByKey: ReadonlyMap<string, IdentityOutcome>,
  patchCount: number,
): ApplyResult {
  const outcomes: IdentityOutcome[] = [...w.invalid];
  for (const c of w.changes) {
    const applied = batch.get(c.key);
    const o = outcomesByKey.get(c.key);
    if (!applied || applied.op !== c.op) outcomes.push({ id: c.id, key: c.key, op: c.op, status: 'superseded' });
    else if (!o) outcomes.push({ id: c.id, key: c.key, op: c.op, status: 'failed', reason: 'fatal', message: 'no outcome recorded' });
    else outcomes.push({ ...o, id: c.id });
  }
  return { target, outcomes, patchCount, ok: outcomes.every((o) => o.status !== 'failed') };
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
