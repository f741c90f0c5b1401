// Makes a Plan so, without ever blocking one write behind another's ARM operation:
// - Kubernetes writes run at once, one task per AzureAssignedIdentity key (a key busy with an earlier task is left
//   for a later cycle), at most --createDeleteBatch at a time per VM/VMSS, through the shared write rate limiter.
// - ARM changes start at once per VM/VMSS (arm.ts serialises and coalesces per target, in parallel across targets);
//   an identity already being attached or detached is not asked for again: later tasks wait on the same outcome.
// - Only the steps that depend on ARM wait for it (status Assigned after the attach, delete after the detach).
// - Failures hold the target (Retry-After or backoff) or back off the key, and ask for a later cycle; the next
//   cycle re-plans from fresh state instead of replaying anything.
// The executor also keeps what ARM is known to have attached per target (from outcomes and GETs), which the
// reconciler hands to plan() so that no ARM call is made for a change that is already true.
import type { Logger } from 'pino';
import { ASSIGNED_IDENTITY_FINALIZER, API_VERSION, Kinds } from '../crds/names.js';
import type { AzureAssignedIdentity, AzureIdentity, AzureIdentityBinding } from '../crds/types.js';
import type { ArmTarget, IdentityOutcome } from './arm.js';
import { canonicalResourceId, type TargetAttachment } from './core/snapshot.js';
import type { AssignedDelete, AssignedSpec, AssignedUpdate, Plan, StatusUpdate, TargetOp } from './core/plan.js';
import { Reasons, type ArmPort, type AssignedIdentityWriter, type EventSink, type EventSubject, type MicMetrics } from './ports.js';

export interface ExecutorOptions {
  readonly writer: AssignedIdentityWriter;
  readonly arm: ArmPort;
  readonly events: EventSink;
  readonly metrics: MicMetrics;
  readonly log: Logger;
  /** Concurrent Kubernetes writes per VM/VMSS (--createDeleteBatch). */
  readonly createDeleteBatch: number;
  /** Concurrent Kubernetes writes in all (default 64): bounds memory when hundreds of targets have work at once. */
  readonly maxConcurrentWrites?: number;
  /** Concurrent GETs when refreshing what ARM has attached. */
  readonly refreshConcurrency?: number;
  /** Every object our writes produced; null when the object is gone (uid of what was deleted). */
  readonly onWritten: (key: string, obj: AzureAssignedIdentity | null, deletedUid: string) => void;
  /** Asks for another reconcile cycle after `ms`. */
  readonly requeue: (ms: number) => void;
  /** First retry delay after a failure (key or target); doubles up to maxRetryDelayMs. */
  readonly retryBaseMs?: number;
  readonly maxRetryDelayMs?: number;
  readonly now?: () => number;
}

/** What the executor needs to know about the world at the time of a plan. */
export interface ExecutionContext {
  /** Aborts when this replica stops leading: no write starts after that. */
  readonly signal: AbortSignal;
  /** Current AzureAssignedIdentities by key (cache with our own writes on top). */
  readonly assigned: ReadonlyMap<string, AzureAssignedIdentity>;
  /** ARM call target per target key. */
  readonly armTargets: ReadonlyMap<string, ArmTarget>;
  /** Target key of a node ('' when none). */
  readonly targetOfNode: (nodeName: string) => string;
}

export interface ExecutionStats {
  readonly tasks: number;
  readonly busySkipped: number;
  readonly armCalls: number;
  readonly heldTargets: number;
}

type Op = 'add' | 'remove';

interface KeyWork {
  create?: AssignedSpec;
  update?: AssignedUpdate;
  status?: StatusUpdate;
  delete?: AssignedDelete;
}

/** Thrown inside a task to end it quietly (the reason was already logged or evented). */
class TaskStop extends Error {
  constructor(readonly retryMs: number | undefined) {
    super('task stopped');
  }
}

export class Executor {
  readonly #o: ExecutorOptions;
  readonly #log: Logger;
  readonly #now: () => number;
  /** Keys with a running task, and what that task is making true (see workSignature). */
  readonly #busy = new Map<string, string>();
  /** Keys a cycle wanted something else for while they were busy: re-plan when their task ends. */
  readonly #recheck = new Set<string>();
  readonly #keyFailures = new Map<string, number>();
  readonly #tasks = new Set<Promise<void>>();
  readonly #writeSlots = new Map<string, Semaphore>();
  readonly #allWrites: Semaphore;
  readonly #arm: ArmBook;
  /** Identities (uid, clientID, ARM's client ID) already reported as mismatched: one event per mismatch, not per pod. */
  readonly #mismatchReported = new Set<string>();

  constructor(opts: ExecutorOptions) {
    this.#o = opts;
    this.#log = opts.log;
    this.#now = opts.now ?? Date.now;
    this.#arm = new ArmBook(opts, this.#now);
    this.#allWrites = new Semaphore(opts.maxConcurrentWrites ?? 64);
  }

  /** ARM state per target for the next plan: known attachments minus identities being detached right now. */
  attachments(targetKeys: Iterable<string>): Map<string, TargetAttachment | undefined> {
    return this.#arm.view(targetKeys);
  }

  /** GETs targets whose attachments are unknown (all of them with `force`: the periodic Azure check). */
  refresh(targets: ReadonlyMap<string, ArmTarget>, force: boolean, signal: AbortSignal): Promise<void> {
    return this.#arm.refresh(targets, force, signal);
  }

  /** Forgets a target (its node went away). */
  forgetTarget(key: string): void {
    this.#arm.forget(key);
  }

  isBusy(key: string): boolean {
    return this.#busy.has(key);
  }

  /** Resolves when no task and no ARM call is running (tests, shutdown). */
  async idle(): Promise<void> {
    while (this.#tasks.size > 0 || this.#arm.running > 0) {
      await Promise.allSettled([...this.#tasks, this.#arm.settled()]);
    }
  }

  apply(plan: Plan, ctx: ExecutionContext): ExecutionStats {
    const armCalls = this.#arm.start(plan.targetOps, ctx);
    const work = new Map<string, KeyWork>();
    const at = (key: string): KeyWork => {
      let w = work.get(key);
      if (w === undefined) work.set(key, (w = {}));
      return w;
    };
    for (const c of plan.createAssigned) at(c.key).create = c;
    for (const u of plan.updateAssigned) at(u.after.key).update = u;
    for (const s of plan.statusUpdates) at(s.key).status = s;
    for (const d of plan.deleteAssigned) at(d.key).delete = d;

    let tasks = 0;
    let busySkipped = 0;
    for (const [key, w] of work) {
      if (ctx.signal.aborted) break;
      const signature = workSignature(w, ctx.assigned.get(key));
      const running = this.#busy.get(key);
      if (running !== undefined) {
        // The same intent is already being carried out (the cache just lags): nothing to re-plan afterwards.
        if (running !== signature) this.#recheck.add(key);
        busySkipped++;
        continue;
      }
      tasks++;
      this.#spawn(key, signature, ctx, (signal) => this.#run(key, w, ctx, signal));
    }
    return { tasks, busySkipped, armCalls, heldTargets: this.#arm.heldCount() };
  }

  #spawn(key: string, signature: string, ctx: ExecutionContext, fn: (signal: AbortSignal) => Promise<void>): void {
    this.#busy.set(key, signature);
    const task = fn(ctx.signal)
      .then(
        () => {
          this.#keyFailures.delete(key);
        },
        (err: unknown) => {
          if (ctx.signal.aborted) return;
          const failures = (this.#keyFailures.get(key) ?? 0) + 1;
          this.#keyFailures.set(key, failures);
          const delay = err instanceof TaskStop && err.retryMs !== undefined ? err.retryMs : this.#backoff(failures);
          if (!(err instanceof TaskStop)) this.#log.warn({ aai: key, err, retryInMs: delay }, 'AzureAssignedIdentity write failed');
          this.#o.requeue(delay);
        },
      )
      .finally(() => {
        this.#busy.delete(key);
        this.#tasks.delete(task);
        if (this.#recheck.delete(key) && !ctx.signal.aborted) this.#o.requeue(0);
      });
    this.#tasks.add(task);
  }

  async #run(key: string, w: KeyWork, ctx: ExecutionContext, signal: AbortSignal): Promise<void> {
    if (w.delete !== undefined) return this.#delete(key, w.delete, ctx, signal);
    const current = ctx.assigned.get(key);
    let obj: AzureAssignedIdentity | undefined = current;
    if (w.create !== undefined) obj = await this.#create(key, w.create, ctx, signal);
    if (w.update !== undefined && current !== undefined) obj = await this.#update(key, w.update, current, ctx, signal);
    if (w.status !== undefined && obj !== undefined) {
      const spec = w.create ?? w.update?.after;
      await this.#confirm(key, w.status, obj, spec, ctx, signal);
    }
  }

  async #create(key: string, spec: AssignedSpec, ctx: ExecutionContext, signal: AbortSignal): Promise<AzureAssignedIdentity> {
    const started = this.#now();
    try {
      const created = await this.#write(ctx, spec.nodeName, () => this.#o.writer.create(spec, signal));
      this.#o.metrics.observeAssigned('addition', (this.#now() - started) / 1000);
      this.#o.onWritten(key, created, '');
      this.#log.debug({ aai: key, pod: `${spec.podNamespace}/${spec.pod}`, node: spec.nodeName }, 'AzureAssignedIdentity created');
      return created;
    } catch (err) {
      if (signal.aborted) throw err;
      this.#o.metrics.kubeError('assigned_identity_addition');
      if (statusOf(err) === 409) {
        // Already there (created by us before a restart, or by the previous leader): the cache will show it.
        this.#log.debug({ aai: key }, 'AzureAssignedIdentity already exists');
        throw new TaskStop(this.#backoff(1));
      }
      this.#o.events.warning(bindingSubject(spec.bindingRef), Reasons.BindingApplyError,
        `Applying binding ${spec.bindingRef.name} for pod ${spec.podNamespace}/${spec.pod} failed: ${errorText(err)}`);
      throw err;
    }
  }

  async #update(key: string, u: AssignedUpdate, current: AzureAssignedIdentity, ctx: ExecutionContext, signal: AbortSignal): Promise<AzureAssignedIdentity> {
    let obj = current;
    // Stop NMI serving the old identity before it leaves the VM; the new one is served once attached.
    if (u.after.state === 'Created' && obj.state !== 'Created') {
      const marked = await this.#setState(key, obj, 'Created', ctx, signal);
      if (marked === null) throw new TaskStop(0); // gone: the next cycle creates it afresh
      obj = marked;
    }
    if (u.afterTarget !== undefined) {
      const old = current.identityRef;
      if (old !== null) await this.#awaitArm(u.afterTarget, old.resourceID, 'remove', key, current.bindingRef, ctx);
    }
    const started = this.#now();
    try {
      const replaced = await this.#write(ctx, u.after.nodeName, () =>
        this.#o.writer.replace(u.before, obj.resourceVersion, u.after, signal),
      );
      this.#o.metrics.observeAssigned('update', (this.#now() - started) / 1000);
      this.#o.onWritten(key, replaced, '');
      this.#log.info({ aai: key, pod: `${u.after.podNamespace}/${u.after.pod}`, node: u.after.nodeName }, 'AzureAssignedIdentity updated');
      return replaced;
    } catch (err) {
      if (signal.aborted) throw err;
      this.#o.metrics.kubeError('assigned_identity_update');
      if (statusOf(err) !== 409) {
        this.#o.events.warning(bindingSubject(u.after.bindingRef), Reasons.BindingApplyError,
          `Updating AzureAssignedIdentity ${key} failed: ${errorText(err)}`);
      }
      throw err;
    }
  }

  async #confirm(
    key: string,
    s: StatusUpdate,
    obj: AzureAssignedIdentity,
    spec: AssignedSpec | undefined,
    ctx: ExecutionContext,
    signal: AbortSignal,
  ): Promise<void> {
    const identity = spec?.identityRef ?? obj.identityRef;
    const binding = spec?.bindingRef ?? obj.bindingRef;
    if (s.afterTarget !== undefined) {
      if (identity === null) return;
      const outcome = await this.#awaitArm(s.afterTarget, identity.resourceID, 'add', key, binding, ctx);
      this.#checkClientId(identity, outcome, s.afterTarget);
    }
    if (signal.aborted) return;
    if ((await this.#setState(key, obj, 'Assigned', ctx, signal)) === null) return;
    if (binding !== null) {
      this.#o.events.normal(bindingSubject(binding), Reasons.BindingApplied,
        `Binding ${binding.name} applied on node ${obj.nodeName} for pod ${obj.name}`);
    }
  }

  async #delete(key: string, d: AssignedDelete, ctx: ExecutionContext, signal: AbortSignal): Promise<void> {
    const current = ctx.assigned.get(key);
    if (current === undefined) return;
    if (d.afterTarget !== undefined && current.identityRef !== null) {
      await this.#awaitArm(d.afterTarget, current.identityRef.resourceID, 'remove', key, current.bindingRef, ctx);
    }
    const started = this.#now();
    try {
      let obj: AzureAssignedIdentity | null = current;
      if (d.markUnassigned) obj = await this.#setState(key, current, 'Unassigned', ctx, signal);
      if (obj !== null && !obj.deleting) obj = await this.#write(ctx, current.nodeName, () => this.#o.writer.delete(d, signal));
      if (obj !== null && obj.finalizers.includes(ASSIGNED_IDENTITY_FINALIZER)) {
        const held = obj;
        obj = await this.#write(ctx, current.nodeName, () => this.#o.writer.removeFinalizer(d, held.finalizers, signal));
      }
      this.#o.onWritten(key, obj, current.uid);
      this.#o.metrics.observeAssigned('deletion', (this.#now() - started) / 1000);
      this.#log.debug({ aai: key, cause: d.cause }, 'AzureAssignedIdentity deleted');
      if (d.cause === 'NodeGone' && current.bindingRef !== null) {
        this.#o.events.normal(bindingSubject(current.bindingRef), Reasons.BindingRemoved,
          `Binding ${current.bindingRef.name} removed from node ${current.nodeName} for pod ${current.name}`);
      }
    } catch (err) {
      if (signal.aborted || err instanceof TaskStop) throw err;
      this.#o.metrics.kubeError('assigned_identity_deletion');
      if (d.cause === 'NodeGone' && current.bindingRef !== null) {
        this.#o.events.warning(bindingSubject(current.bindingRef), Reasons.BindingRemoveError,
          `Removing AzureAssignedIdentity ${key} failed: ${errorText(err)}`);
      }
      throw err;
    }
  }

  async #setState(
    key: string,
    obj: AzureAssignedIdentity,
    state: 'Created' | 'Assigned' | 'Unassigned',
    ctx: ExecutionContext,
    signal: AbortSignal,
  ): Promise<AzureAssignedIdentity | null> {
    let patched: AzureAssignedIdentity | null;
    try {
      patched = await this.#write(ctx, obj.nodeName, () => this.#o.writer.setState(obj, state, signal));
    } catch (err) {
      if (signal.aborted) throw err;
      // Never read as "gone": the writer answers null only after checking that the object no longer exists.
      this.#o.metrics.kubeError('update_azure_assigned_identity_status');
      this.#o.events.warning(assignedSubject(obj), Reasons.StatusUpdateError,
        `Updating the status of AzureAssignedIdentity ${key} to ${state} failed: ${errorText(err)}`);
      throw err;
    }
    if (patched === null) {
      this.#o.onWritten(key, null, obj.uid);
      this.#log.info({ aai: key, state }, 'AzureAssignedIdentity gone before its status was written');
      return null;
    }
    this.#o.onWritten(key, patched, '');
    this.#log.debug({ aai: key, state }, 'AzureAssignedIdentity status written');
    return patched;
  }

  /**
   * ARM names the identity's client and principal IDs when it attaches it. An AzureIdentity whose clientID is another
   * one gets tokens IMDS refuses (NMI asks IMDS by that clientID): said once per identity, as a warning event on it.
   */
  #checkClientId(identity: AzureIdentity, outcome: IdentityOutcome, targetKey: string): void {
    if (outcome.status !== 'attached' || outcome.clientId === undefined || identity.type !== 0) return;
    if (outcome.clientId.toLowerCase() === identity.clientID.trim().toLowerCase()) {
      this.#log.debug({ identity: `${identity.namespace}/${identity.name}`, principalId: outcome.principalId }, 'identity attached; ARM confirms its client ID');
      return;
    }
    const seen = `${identity.uid}/${identity.clientID}/${outcome.clientId}`;
    if (this.#mismatchReported.has(seen)) return;
    if (this.#mismatchReported.size >= 10_000) this.#mismatchReported.clear();
    this.#mismatchReported.add(seen);
    const message =
      `AzureIdentity ${identity.namespace}/${identity.name} has spec.clientID ${identity.clientID}, but Azure says identity ` +
      `${identity.resourceID} has client ID ${outcome.clientId}` +
      (outcome.principalId !== undefined ? ` (principal ID ${outcome.principalId})` : '') +
      `; NMI asks IMDS by spec.clientID, which IMDS refuses on ${targetKey}. Set spec.clientID to ${outcome.clientId}.`;
    this.#log.warn({ identity: `${identity.namespace}/${identity.name}`, declared: identity.clientID, azure: outcome.clientId, target: targetKey }, 'AzureIdentity clientID does not match Azure');
    this.#o.events.warning(identitySubject(identity), Reasons.ClientIdMismatch, message);
  }

  /** Waits for the ARM outcome a step depends on; ends the task (quietly) unless it says done. */
  async #awaitArm(targetKey: string, resourceID: string, op: Op, key: string, binding: AzureIdentityBinding | null, ctx: ExecutionContext): Promise<IdentityOutcome> {
    const pending = this.#arm.outcome(targetKey, resourceID, op);
    if (pending === undefined) throw new TaskStop(this.#arm.holdRemainingMs(targetKey));
    const outcome = await pending;
    if (ctx.signal.aborted) throw new TaskStop(undefined);
    const done = op === 'add' ? outcome.status === 'attached' : outcome.status === 'detached' || outcome.status === 'kept';
    if (done) return outcome;
    if (outcome.status === 'failed') {
      if (op === 'add' && binding !== null) {
        this.#o.events.warning(bindingSubject(binding), Reasons.BindingApplyError,
          `Assigning identity ${resourceID} to ${targetKey} for AzureAssignedIdentity ${key} failed (${outcome.reason}): ${outcome.message}`);
      }
      throw new TaskStop(this.#arm.holdRemainingMs(targetKey) ?? this.#backoff(1));
    }
    // Superseded by a later request for the same identity: the next cycle decides again.
    throw new TaskStop(0);
  }

  async #write<T>(ctx: ExecutionContext, nodeName: string, fn: () => Promise<T>): Promise<T> {
    const slotKey = ctx.targetOfNode(nodeName) || `node/${nodeName}`;
    let slot = this.#writeSlots.get(slotKey);
    if (slot === undefined) this.#writeSlots.set(slotKey, (slot = new Semaphore(this.#o.createDeleteBatch)));
    if (ctx.signal.aborted) throw new TaskStop(undefined);
    const perTarget = slot;
    return perTarget.run(() => this.#allWrites.run(() => (ctx.signal.aborted ? Promise.reject(new TaskStop(undefined)) : fn())));
  }

  #backoff(failures: number): number {
    const base = this.#o.retryBaseMs ?? 500;
    const max = this.#o.maxRetryDelayMs ?? 60_000;
    return Math.min(max, base * 2 ** Math.max(0, failures - 1));
  }
}

/* ------------------------------------------------------------------------------------------- ARM book */

/** What ARM has attached per target, the identity changes in flight, and per-target holds after failures. */
class ArmBook {
  /** Canonical IDs known attached; undefined = not known. */
  readonly #known = new Map<string, { ids: Set<string>; systemAssigned: boolean } | undefined>();
  /** Bumped whenever an ARM change starts or ends on a target, so a GET that overlapped one is discarded. */
  readonly #epoch = new Map<string, number>();
  /** Identity changes by `target|op|id`: running (no `settled`), or settled recently (for steps that arrive late). */
  readonly #inflight = new Map<string, { readonly p: Promise<IdentityOutcome>; settled?: { at: number; outcome: IdentityOutcome } }>();
  readonly #removing = new Map<string, Set<string>>();
  readonly #hold = new Map<string, { until: number; failures: number }>();
  readonly #refreshing = new Set<string>();
  readonly #calls = new Set<Promise<unknown>>();
  readonly #callsPerTarget = new Map<string, number>();
  #lastSweep = 0;
  readonly #refreshSlots: Semaphore;

  constructor(
    private readonly o: ExecutorOptions,
    private readonly now: () => number,
  ) {
    this.#refreshSlots = new Semaphore(o.refreshConcurrency ?? 10);
  }

  get running(): number {
    return this.#calls.size;
  }

  settled(): Promise<unknown> {
    return Promise.allSettled([...this.#calls]);
  }

  heldCount(): number {
    const t = this.now();
    let n = 0;
    for (const h of this.#hold.values()) if (h.until > t) n++;
    return n;
  }

  holdRemainingMs(targetKey: string): number | undefined {
    const h = this.#hold.get(targetKey);
    if (h === undefined) return undefined;
    const left = h.until - this.now();
    return left > 0 ? left : undefined;
  }

  forget(key: string): void {
    this.#known.delete(key);
    this.#hold.delete(key);
    this.#epoch.delete(key);
  }

  view(targetKeys: Iterable<string>): Map<string, TargetAttachment | undefined> {
    const out = new Map<string, TargetAttachment | undefined>();
    for (const key of targetKeys) {
      const known = this.#known.get(key);
      if (known === undefined) continue;
      const removing = this.#removing.get(key);
      const ids = removing === undefined ? [...known.ids] : [...known.ids].filter((id) => !removing.has(id));
      out.set(key, { ids, systemAssigned: known.systemAssigned });
    }
    return out;
  }

  /**
   * The outcome a step waits for: the running change, or one that settled moments ago (the step's own Kubernetes
   * write may finish after ARM did). Undefined when there is neither: the next cycle plans again.
   */
  outcome(targetKey: string, resourceID: string, op: Op): Promise<IdentityOutcome> | undefined {
    const fk = flightKey(targetKey, canonicalResourceId(resourceID), op);
    const f = this.#inflight.get(fk);
    if (f === undefined) return undefined;
    if (f.settled === undefined) return f.p;
    if (this.now() - f.settled.at <= RECENT_OUTCOME_MS) return Promise.resolve(f.settled.outcome);
    this.#inflight.delete(fk);
    return undefined;
  }

  #running(fk: string): boolean {
    const f = this.#inflight.get(fk);
    return f !== undefined && f.settled === undefined;
  }

  /** Starts the ARM changes of a plan that are not already in flight; returns how many apply calls were made. */
  start(ops: readonly TargetOp[], ctx: ExecutionContext): number {
    this.#sweep();
    let calls = 0;
    for (const op of ops) {
      const key = op.target.key;
      const target = ctx.armTargets.get(key);
      if (target === undefined || this.holdRemainingMs(key) !== undefined || ctx.signal.aborted) continue;
      const add = op.add.filter((id) => !this.#running(flightKey(key, id, 'add')));
      const remove = op.remove.filter((id) => !this.#running(flightKey(key, id, 'remove')));
      if (add.length === 0 && remove.length === 0) continue;
      calls++;
      this.#call(key, target, add, remove);
    }
    return calls;
  }

  #call(key: string, target: ArmTarget, add: readonly string[], remove: readonly string[]): void {
    this.#bump(key);
    this.#callsPerTarget.set(key, (this.#callsPerTarget.get(key) ?? 0) + 1);
    const removing = this.#removing.get(key) ?? new Set<string>();
    this.#removing.set(key, removing);
    for (const id of remove) removing.add(id);
    const started = this.now();
    const result = this.o.arm.apply(target, { add, remove }).catch((err: unknown) => {
      // arm.ts answers every identity; a rejection is a bug, but it must still end the waiting tasks.
      this.o.log.error({ target: key, err }, 'ARM apply rejected');
      const message = err instanceof Error ? err.message : String(err);
      const failed = (id: string, o: Op): IdentityOutcome => ({ id, key: id, op: o, status: 'failed', reason: 'fatal', message });
      return { target, outcomes: [...remove.map((id) => failed(id, 'remove')), ...add.map((id) => failed(id, 'add'))], patchCount: 0, ok: false };
    });
    const register = (id: string, o: Op): void => {
      const fk = flightKey(key, id, o);
      const p = result.then(
        (r) =>
          r.outcomes.find((x) => x.key === id && x.op === o) ??
          ({ id, key: id, op: o, status: 'failed', reason: 'fatal', message: 'no outcome for this identity' } as IdentityOutcome),
      );
      const entry: { readonly p: Promise<IdentityOutcome>; settled?: { at: number; outcome: IdentityOutcome } } = { p };
      this.#inflight.set(fk, entry);
      void p.then((outcome) => {
        entry.settled = { at: this.now(), outcome };
      });
    };
    for (const id of remove) register(id, 'remove');
    for (const id of add) register(id, 'add');

    const done = result.then((r) => {
      const left = (this.#callsPerTarget.get(key) ?? 1) - 1;
      if (left > 0) this.#callsPerTarget.set(key, left);
      else this.#callsPerTarget.delete(key);
      for (const id of remove) removing.delete(id);
      if (removing.size === 0 && this.#removing.get(key) === removing) this.#removing.delete(key);
      this.#bump(key);
      const known = this.#known.get(key);
      let throttleMs: number | undefined;
      let failed = false;
      for (const o of r.outcomes) {
        if (o.status === 'attached') known?.ids.add(o.key);
        else if (o.status === 'detached') known?.ids.delete(o.key);
        else if (o.status === 'failed') {
          failed = true;
          if (o.retryAfterMs !== undefined) throttleMs = Math.max(throttleMs ?? 0, o.retryAfterMs);
        }
      }
      if (!failed) {
        this.#hold.delete(key);
        this.o.log.debug({ target: key, add: add.length, remove: remove.length, patches: r.patchCount, ms: this.now() - started }, 'ARM identities applied');
        return;
      }
      // What exactly is attached after a failure is uncertain: read it again before trusting it.
      this.#known.set(key, undefined);
      const failures = (this.#hold.get(key)?.failures ?? 0) + 1;
      const base = this.o.retryBaseMs ?? 500;
      const delay = throttleMs ?? Math.min(this.o.maxRetryDelayMs ?? 60_000, base * 2 ** (failures - 1));
      this.#hold.set(key, { until: this.now() + delay, failures });
      const reasons = [...new Set(r.outcomes.filter((o) => o.status === 'failed').map((o) => (o.status === 'failed' ? o.reason : '')))];
      this.o.log.warn({ target: key, reasons, retryInMs: delay }, 'ARM identity change failed; holding the target');
      this.o.requeue(delay);
    });
    this.#calls.add(done);
    void done.finally(() => this.#calls.delete(done));
  }

  async refresh(targets: ReadonlyMap<string, ArmTarget>, force: boolean, signal: AbortSignal): Promise<void> {
    const jobs: Promise<void>[] = [];
    for (const [key, target] of targets) {
      if (signal.aborted) break;
      if (this.#refreshing.has(key) || this.holdRemainingMs(key) !== undefined) continue;
      if (!force && this.#known.get(key) !== undefined) continue;
      if (this.#removing.has(key) || this.#hasInflight(key)) continue; // the outcome will tell
      this.#refreshing.add(key);
      jobs.push(
        this.#refreshSlots
          .run(async () => {
            if (signal.aborted) return;
            const epoch = this.#epoch.get(key) ?? 0;
            const got = await this.o.arm.getIdentities(target);
            if ((this.#epoch.get(key) ?? 0) !== epoch) return; // a change overlapped the GET
            this.#known.set(key, { ids: new Set(got.ids.map(canonicalResourceId)), systemAssigned: got.systemAssigned });
          })
          .catch((err: unknown) => {
            if (signal.aborted) return;
            const failures = (this.#hold.get(key)?.failures ?? 0) + 1;
            const delay = Math.min(this.o.maxRetryDelayMs ?? 60_000, (this.o.retryBaseMs ?? 500) * 2 ** (failures - 1));
            this.#hold.set(key, { until: this.now() + delay, failures });
            this.o.log.warn({ target: key, err, retryInMs: delay }, 'reading ARM identities failed');
            this.o.requeue(delay);
          })
          .finally(() => this.#refreshing.delete(key)),
      );
    }
    await Promise.all(jobs);
  }

  #hasInflight(key: string): boolean {
    return (this.#callsPerTarget.get(key) ?? 0) > 0;
  }

  /** Forgets settled outcomes nobody can ask for any more (at most once a second). */
  #sweep(): void {
    const now = this.now();
    if (now - this.#lastSweep < 1000) return;
    this.#lastSweep = now;
    for (const [k, f] of this.#inflight) if (f.settled !== undefined && now - f.settled.at > RECENT_OUTCOME_MS) this.#inflight.delete(k);
  }

  #bump(key: string): void {
    this.#epoch.set(key, (this.#epoch.get(key) ?? 0) + 1);
  }
}

/** What a task for one key makes true: that key deleted, or present for this node, identity and binding version. */
function workSignature(w: KeyWork, current: AzureAssignedIdentity | undefined): string {
  if (w.delete !== undefined) return 'delete';
  const ref = (o: { namespace: string; name: string; resourceVersion: string } | null): string =>
    o === null ? '-' : `${o.namespace}/${o.name}@${o.resourceVersion}`;
  const spec = w.create ?? w.update?.after;
  if (spec !== undefined) return `ensure|${spec.nodeName}|${ref(spec.identityRef)}|${ref(spec.bindingRef)}`;
  if (current !== undefined) return `ensure|${current.nodeName}|${ref(current.identityRef)}|${ref(current.bindingRef)}`;
  return 'unknown';
}

/** How long a settled ARM outcome still answers steps that ask for it late. */
const RECENT_OUTCOME_MS = 10_000;

function flightKey(targetKey: string, canonicalId: string, op: Op): string {
  return `${targetKey}|${op}|${canonicalId}`;
}

/* ------------------------------------------------------------------------------------------- helpers */

/** A counting semaphore: at most `size` functions run at once, the others wait in order. */
export class Semaphore {
  #active = 0;
  readonly #waiting: Array<() => void> = [];
  constructor(private readonly size: number) {}

  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.#active >= Math.max(1, this.size)) await new Promise<void>((resolve) => this.#waiting.push(resolve));
    this.#active++;
    try {
      return await fn();
    } finally {
      this.#active--;
      this.#waiting.shift()?.();
    }
  }
}

function bindingSubject(b: AzureIdentityBinding): EventSubject {
  return { apiVersion: API_VERSION, kind: Kinds.AzureIdentityBinding, namespace: b.namespace, name: b.name, uid: b.uid, resourceVersion: b.resourceVersion };
}

function identitySubject(i: AzureIdentity): EventSubject {
  return { apiVersion: API_VERSION, kind: Kinds.AzureIdentity, namespace: i.namespace, name: i.name, uid: i.uid, resourceVersion: i.resourceVersion };
}

function assignedSubject(a: AzureAssignedIdentity): EventSubject {
  return { apiVersion: API_VERSION, kind: Kinds.AzureAssignedIdentity, namespace: a.namespace, name: a.name, uid: a.uid, resourceVersion: a.resourceVersion };
}

function statusOf(err: unknown): number | undefined {
  const s = (err as { status?: unknown } | null)?.status;
  return typeof s === 'number' ? s : undefined;
}

function errorText(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const cause = err.cause instanceof Error ? `: ${err.cause.message.split('\n')[0]}` : '';
  return `${err.message}${cause}`;
}

