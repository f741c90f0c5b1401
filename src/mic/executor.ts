// Makes a Plan so. apply() hands every VM/VMSS the ARM changes the plan wants there (the per-target workers in
// arm/ own them: coalescing, holds, Retry-After) and names the AzureAssignedIdentity keys with Kubernetes writes
// that depend on no ARM change; the controller queues those keys and runKey() carries out one key's writes (at most
// --createDeleteBatch at a time per VM/VMSS), answering the queue: done, look again later, or an error (the queue's
// rate-limited retry, after which the key is planned afresh). Nothing ever waits for ARM:
// - Items with `afterTarget: K` wait for ARM in the plan's sense: this cycle leaves them; when K's change settles,
//   its worker enqueues a cycle whose plan, seeing what ARM now holds, has them with no `afterTarget`.
//   (An update that must stop NMI serving the old identity marks the AAI Created at once.)
// - A status `Assigned` waiting on K need not wait for that cycle: settled(K) names its key again, and runKey
//   writes it if the worker's record of what ARM holds now has the identity (state, not the call's promise).
import pLimit, { type LimitFunction } from 'p-limit';
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import { realClock, type Clock } from '../common/clock.js';
import { ASSIGNED_IDENTITY_FINALIZER, API_VERSION, Kinds } from '../crds/names.js';
import type { AzureAssignedIdentity, AzureIdentity, AzureIdentityBinding } from '../crds/types.js';
import { canonicalResourceId } from './core/snapshot.js';
import type { AssignedDelete, AssignedSpec, AssignedUpdate, Plan, StatusUpdate } from './core/plan.js';
import { Reasons, type ArmPort, type AssignedIdentityWriter, type EventSink, type EventSubject, type MicMetrics } from './ports.js';

export interface ExecutorOptions {
  readonly writer: AssignedIdentityWriter;
  readonly arm: ArmPort;
  readonly events: EventSink;
  readonly metrics: MicMetrics;
  readonly log: Logger;
  /** Concurrent Kubernetes writes per VM/VMSS (--createDeleteBatch). */
  readonly createDeleteBatch: number;
  /** Concurrent Kubernetes writes in all (default 24, as many AAI keys at once): bounds memory when hundreds of targets have work at once; more only queue in the HTTP pool (32) and live long enough to reach old space. */
  readonly maxConcurrentWrites?: number;
  /** Every object our writes produced; null when the object is gone (uid of what was deleted). */
  readonly onWritten: (key: string, obj: AzureAssignedIdentity | null, deletedUid: string) => void;
  /** Delay before looking again at a key whose create met an existing object (the cache will show it). */
  readonly retryBaseMs?: number;
  readonly clock?: Clock;
}

/** What the executor needs to know about the world at the time of a plan. */
export interface ExecutionContext {
  /** Aborts when this replica stops leading: no write starts after that. */
  readonly signal: AbortSignal;
  /** Current AzureAssignedIdentities by key (cache with our own writes on top), as the plan saw them. */
  readonly assigned: ReadonlyMap<string, AzureAssignedIdentity>;
  /** Target key of a node in the plan's snapshot ('' when none). */
  readonly targetOfNode: (nodeName: string) => string;
}

/** What a plan's execution came to. */
export interface ExecutionOutcome {
  /** Keys with Kubernetes writes to carry out now (runKey each). */
  readonly keys: readonly string[];
  /** Keys whose task is already making the same thing true (the cache just lags). */
  readonly busySkipped: number;
  /** Items left for a later cycle because they wait for an ARM change. */
  readonly deferred: number;
  /** ARM batches started. */
  readonly armCalls: number;
  readonly heldTargets: number;
  /** Plan again after this long: a held target that deferred items wait for. */
  readonly requeueAfterMs?: number;
}

/** What the queue does with a key after runKey: nothing, look again after a delay, or plan afresh (after a failure). */
export type KeyOutcome = 'done' | 'replan' | { readonly requeueAfterMs: number };

/** A plan's `Assigned` write waiting on ARM: the identity (canonical) on the target, and the object to mark. */
interface AwaitingArm {
  readonly target: string;
  readonly id: string;
  readonly spec: AssignedSpec | undefined;
  readonly obj: AzureAssignedIdentity | undefined;
  readonly ctx: ExecutionContext;
}

interface KeyWork {
  create?: AssignedSpec;
  update?: AssignedUpdate;
  status?: StatusUpdate;
  delete?: AssignedDelete;
}

/** Thrown inside a task to end it quietly (the reason was already logged or evented); the key is looked at again. */
class TaskStop extends Error {
  constructor(readonly retryMs: number) {
    super('task stopped');
  }
}

export class Executor {
  readonly #o: ExecutorOptions;
  readonly #log: Logger;
  readonly #clock: Clock;
  readonly #writeSlots = new Map<string, LimitFunction>();
  readonly #allWrites: LimitFunction;
  /** Events already sent: ARM failures by AAI and failure, client-ID mismatches by identity version. */
  readonly #reported = new LRUCache<string, true>({ max: 10_000 });
  /** The latest plan's writes per key, until the queue runs the key. */
  readonly #work = new Map<string, { readonly w: KeyWork; readonly signature: string; readonly ctx: ExecutionContext }>();
  /** Keys with a running task, and what it is making true (see workSignature). */
  readonly #running = new Map<string, string>();
  /** Keys whose last task failed: their retry plans afresh. */
  readonly #failed = new Set<string>();
  /** The latest plan's `Assigned` writes waiting for an identity on a target, by AAI key; and their keys by target. */
  readonly #awaiting = new Map<string, AwaitingArm>();
  readonly #awaitingByTarget = new Map<string, Set<string>>();
  /** Per target, how many of the latest plan's items wait on it that only a new cycle can carry out. */
  readonly #waitingForCycle = new Map<string, number>();

  constructor(opts: ExecutorOptions) {
    this.#o = opts;
    this.#log = opts.log;
    this.#clock = opts.clock ?? realClock;
    this.#allWrites = pLimit(Math.max(1, opts.maxConcurrentWrites ?? 24));
  }

  apply(plan: Plan, ctx: ExecutionContext): ExecutionOutcome {
    for (const [k, slot] of this.#writeSlots) if (slot.activeCount === 0 && slot.pendingCount === 0) this.#writeSlots.delete(k);
    const armCalls = ctx.signal.aborted ? 0 : this.#o.arm.reconcile(plan.targetOps);
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

    // The latest plan wins: what an older plan asked for and no task has taken yet is dropped.
    this.#work.clear();
    this.#awaiting.clear();
    this.#awaitingByTarget.clear();
    this.#waitingForCycle.clear();
    const keys: string[] = [];
    let busySkipped = 0;
    let deferred = 0;
    let requeueAfterMs: number | undefined;
    for (const [key, w] of work) {
      for (const t of [w.delete?.afterTarget, w.update?.afterTarget, w.status?.afterTarget]) {
        if (t === undefined) continue;
        deferred++;
        const held = this.#o.arm.holdRemainingMs(t);
        if (held !== undefined) requeueAfterMs = Math.min(requeueAfterMs ?? Infinity, held);
      }
      const current = ctx.assigned.get(key);
      if (w.status?.afterTarget !== undefined) this.#reportArmFailure(key, w, w.status.afterTarget, ctx);
      const fast = w.status?.afterTarget !== undefined && this.#await(key, w, w.status.afterTarget, current, ctx);
      for (const t of [w.delete?.afterTarget, w.update?.afterTarget, fast ? undefined : w.status?.afterTarget]) {
        if (t !== undefined) this.#waitingForCycle.set(t, (this.#waitingForCycle.get(t) ?? 0) + 1);
      }
      if (!this.#hasWorkNow(w, current)) continue;
      const signature = workSignature(w, current);
      if (this.#running.get(key) === signature) {
        busySkipped++;
        continue;
      }
      this.#work.set(key, { w, signature, ctx });
      keys.push(key);
    }
    return { keys, busySkipped, deferred, armCalls, heldTargets: this.#o.arm.heldCount(), ...(requeueAfterMs !== undefined ? { requeueAfterMs } : {}) };
  }

  /**
   * A target's worker settled: the AAI keys whose `Assigned` write waited on it (worth running again now), and
   * whether a new cycle is needed (a delete or update waits on it, or an identity the keys wait for is still missing).
   */
  settled(targetKey: string): { readonly keys: readonly string[]; readonly replan: boolean } {
    const keys = [...(this.#awaitingByTarget.get(targetKey) ?? [])];
    const missing = keys.some((k) => {
      const a = this.#awaiting.get(k);
      return a === undefined || !this.#armHolds(a);
    });
    return { keys, replan: missing || (this.#waitingForCycle.get(targetKey) ?? 0) > 0 };
  }

  /** Carries out one key's writes from the latest plan. Rejects when a write failed (the queue retries the key). */
  async runKey(key: string): Promise<KeyOutcome> {
    const job = this.#work.get(key);
    const awaiting = this.#awaiting.get(key);
    if (job === undefined && (awaiting === undefined || !this.#armHolds(awaiting) || this.#running.has(key))) {
      return this.#failed.delete(key) ? 'replan' : 'done';
    }
    this.#work.delete(key);
    const ctx = job?.ctx ?? awaiting!.ctx;
    this.#running.set(key, job?.signature ?? 'confirm');
    try {
      if (job !== undefined) await this.#run(key, job.w, ctx);
      // ARM may hold the identity already (or it settled while this key waited in the queue).
      const a = this.#awaiting.get(key);
      if (a !== undefined && a.obj !== undefined && this.#armHolds(a)) {
        this.#awaiting.delete(key);
        this.#awaitingByTarget.get(a.target)?.delete(key);
        await this.#confirm(key, a.obj, a.spec, ctx);
      }
      this.#failed.delete(key);
      return 'done';
    } catch (err) {
      if (ctx.signal.aborted) return 'done';
      this.#failed.add(key);
      if (err instanceof TaskStop) return { requeueAfterMs: err.retryMs };
      this.#log.warn({ aai: key, err }, 'AzureAssignedIdentity write failed');
      throw err;
    } finally {
      this.#running.delete(key);
    }
  }

  /** Lost leadership: nothing queued is carried out any more. */
  forget(): void {
    this.#work.clear();
    this.#failed.clear();
    this.#awaiting.clear();
    this.#awaitingByTarget.clear();
    this.#waitingForCycle.clear();
  }

  /** Remembers an `Assigned` write that waits for its identity on a target (see settled()). */
  #await(key: string, w: KeyWork, target: string, current: AzureAssignedIdentity | undefined, ctx: ExecutionContext): boolean {
    const spec = w.create ?? w.update?.after;
    const identity = spec?.identityRef ?? current?.identityRef ?? null;
    if (identity === null) return false;
    // Only a status on its own, or after a create: an update's replace waits for the next cycle.
    if (w.update !== undefined || w.delete !== undefined) return false;
    this.#awaiting.set(key, { target, id: canonicalResourceId(identity.resourceID), spec, obj: w.create === undefined ? current : undefined, ctx });
    let keys = this.#awaitingByTarget.get(target);
    if (keys === undefined) this.#awaitingByTarget.set(target, (keys = new Set()));
    keys.add(key);
    return true;
  }

  /** The worker's record says ARM holds the identity on the target, with no change of it still in flight. */
  #armHolds(a: AwaitingArm): boolean {
    const view = this.#o.arm.attachments([a.target]).get(a.target);
    return view !== undefined && view.ids.includes(a.id) && view.unsettled?.includes(a.id) !== true;
  }

  /** Whether a key has a write that waits for no ARM change. */
  #hasWorkNow(w: KeyWork, current: AzureAssignedIdentity | undefined): boolean {
    if (w.delete !== undefined) return w.delete.afterTarget === undefined;
    if (w.create !== undefined) return true;
    if (w.update !== undefined) return w.update.afterTarget === undefined || this.#marksCreatedFirst(w.update, current);
    return w.status !== undefined && w.status.afterTarget === undefined;
  }

  /** An update whose old identity leaves the VM first stops NMI serving it at once, before ARM removes it. */
  #marksCreatedFirst(u: AssignedUpdate, current: AzureAssignedIdentity | undefined): boolean {
    return u.after.state === 'Created' && current !== undefined && current.state !== 'Created';
  }

  async #run(key: string, w: KeyWork, ctx: ExecutionContext): Promise<void> {
    if (w.delete !== undefined) return this.#delete(key, w.delete, ctx);
    const current = ctx.assigned.get(key);
    let obj: AzureAssignedIdentity | undefined = current;
    if (w.create !== undefined) {
      obj = await this.#create(key, w.create, ctx);
      const a = this.#awaiting.get(key);
      if (a !== undefined) this.#awaiting.set(key, { ...a, obj });
    }
    if (w.update !== undefined && current !== undefined) {
      if (w.update.afterTarget !== undefined) {
        // Only the Created mark now; the replace comes once ARM has let the old identity go.
        if (this.#marksCreatedFirst(w.update, current)) await this.#setState(key, current, 'Created', ctx);
        return;
      }
      obj = await this.#update(key, w.update, current, ctx);
    }
    if (w.status !== undefined && w.status.afterTarget === undefined && obj !== undefined) {
      await this.#confirm(key, obj, w.create ?? w.update?.after, ctx);
    }
  }

  async #create(key: string, spec: AssignedSpec, ctx: ExecutionContext): Promise<AzureAssignedIdentity> {
    const started = this.#clock.now();
    try {
      const created = await this.#write(ctx, spec.nodeName, () => this.#o.writer.create(spec, ctx.signal));
      this.#o.metrics.observeAssigned('addition', (this.#clock.now() - started) / 1000);
      this.#o.onWritten(key, created, '');
      this.#log.debug({ aai: key, pod: `${spec.podNamespace}/${spec.pod}`, node: spec.nodeName }, 'AzureAssignedIdentity created');
      return created;
    } catch (err) {
      if (ctx.signal.aborted) throw err;
      this.#o.metrics.kubeError('assigned_identity_addition');
      if (statusOf(err) === 409) {
        // Already there (created by us before a restart, or by the previous leader): the cache will show it.
        this.#log.debug({ aai: key }, 'AzureAssignedIdentity already exists');
        throw new TaskStop(this.#o.retryBaseMs ?? 500);
      }
      this.#o.events.warning(bindingSubject(spec.bindingRef), Reasons.BindingApplyError,
        `Applying binding ${spec.bindingRef.name} for pod ${spec.podNamespace}/${spec.pod} failed: ${errorText(err)}`);
      throw err;
    }
  }

  async #update(key: string, u: AssignedUpdate, current: AzureAssignedIdentity, ctx: ExecutionContext): Promise<AzureAssignedIdentity> {
    let obj = current;
    // Stop NMI serving the old identity before the new one is confirmed.
    if (this.#marksCreatedFirst(u, obj)) {
      const marked = await this.#setState(key, obj, 'Created', ctx);
      if (marked === null) throw new TaskStop(0); // gone: the next cycle creates it afresh
      obj = marked;
    }
    const started = this.#clock.now();
    try {
      const replaced = await this.#write(ctx, u.after.nodeName, () => this.#o.writer.replace(u.before, obj.resourceVersion, u.after, ctx.signal));
      this.#o.metrics.observeAssigned('update', (this.#clock.now() - started) / 1000);
      this.#o.onWritten(key, replaced, '');
      this.#log.info({ aai: key, pod: `${u.after.podNamespace}/${u.after.pod}`, node: u.after.nodeName }, 'AzureAssignedIdentity updated');
      return replaced;
    } catch (err) {
      if (ctx.signal.aborted) throw err;
      this.#o.metrics.kubeError('assigned_identity_update');
      if (statusOf(err) !== 409) {
        this.#o.events.warning(bindingSubject(u.after.bindingRef), Reasons.BindingApplyError,
          `Updating AzureAssignedIdentity ${key} failed: ${errorText(err)}`);
      }
      throw err;
    }
  }

  async #confirm(key: string, obj: AzureAssignedIdentity, spec: AssignedSpec | undefined, ctx: ExecutionContext): Promise<void> {
    const identity = spec?.identityRef ?? obj.identityRef;
    const binding = spec?.bindingRef ?? obj.bindingRef;
    if (identity !== null) this.#checkClientId(identity, ctx.targetOfNode(obj.nodeName));
    if ((await this.#setState(key, obj, 'Assigned', ctx)) === null) return;
    if (binding !== null) {
      this.#o.events.normal(bindingSubject(binding), Reasons.BindingApplied,
        `Binding ${binding.name} applied on node ${obj.nodeName} for pod ${obj.name}`);
    }
  }

  async #delete(key: string, d: AssignedDelete, ctx: ExecutionContext): Promise<void> {
    const current = ctx.assigned.get(key);
    if (current === undefined) return;
    const started = this.#clock.now();
    try {
      let obj: AzureAssignedIdentity | null = current;
      if (d.markUnassigned) obj = await this.#setState(key, current, 'Unassigned', ctx);
      if (obj !== null && !obj.deleting) obj = await this.#write(ctx, current.nodeName, () => this.#o.writer.delete(d, ctx.signal));
      if (obj !== null && obj.finalizers.includes(ASSIGNED_IDENTITY_FINALIZER)) {
        const held = obj;
        obj = await this.#write(ctx, current.nodeName, () => this.#o.writer.removeFinalizer(d, held.finalizers, ctx.signal));
      }
      this.#o.onWritten(key, obj, current.uid);
      this.#o.metrics.observeAssigned('deletion', (this.#clock.now() - started) / 1000);
      this.#log.debug({ aai: key, cause: d.cause }, 'AzureAssignedIdentity deleted');
      if (d.cause === 'NodeGone' && current.bindingRef !== null) {
        this.#o.events.normal(bindingSubject(current.bindingRef), Reasons.BindingRemoved,
          `Binding ${current.bindingRef.name} removed from node ${current.nodeName} for pod ${current.name}`);
      }
    } catch (err) {
      if (ctx.signal.aborted || err instanceof TaskStop) throw err;
      this.#o.metrics.kubeError('assigned_identity_deletion');
      if (d.cause === 'NodeGone' && current.bindingRef !== null) {
        this.#o.events.warning(bindingSubject(current.bindingRef), Reasons.BindingRemoveError,
          `Removing AzureAssignedIdentity ${key} failed: ${errorText(err)}`);
      }
      throw err;
    }
  }

  async #setState(key: string, obj: AzureAssignedIdentity, state: 'Created' | 'Assigned' | 'Unassigned', ctx: ExecutionContext): Promise<AzureAssignedIdentity | null> {
    let patched: AzureAssignedIdentity | null;
    try {
      patched = await this.#write(ctx, obj.nodeName, () => this.#o.writer.setState(obj, state, ctx.signal));
    } catch (err) {
      if (ctx.signal.aborted) throw err;
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

  /** An AAI whose identity ARM failed to attach: one warning event per failure (the worker retries on its own). */
  #reportArmFailure(key: string, w: KeyWork, targetKey: string, ctx: ExecutionContext): void {
    const identity = w.create?.identityRef ?? w.update?.after.identityRef ?? ctx.assigned.get(key)?.identityRef ?? null;
    const binding = w.create?.bindingRef ?? w.update?.after.bindingRef ?? ctx.assigned.get(key)?.bindingRef ?? null;
    if (identity === null || binding === null) return;
    const failure = this.#o.arm.failure(targetKey, canonicalResourceId(identity.resourceID));
    if (failure === undefined) return;
    const seen = `arm|${key}|${failure.seq}`;
    if (this.#reported.get(seen) !== undefined) return;
    this.#reported.set(seen, true);
    const o = failure.outcome;
    this.#o.events.warning(bindingSubject(binding), Reasons.BindingApplyError,
      `Assigning identity ${identity.resourceID} to ${targetKey} for AzureAssignedIdentity ${key} failed (${o.reason}): ${o.message}`);
  }

  /**
   * ARM names the identity's client and principal IDs when it attaches it. An AzureIdentity whose clientID is another
   * one gets tokens IMDS refuses (NMI asks IMDS by that clientID): said once per identity, as a warning event on it.
   */
  #checkClientId(identity: AzureIdentity, targetKey: string): void {
    if (identity.type !== 0 || targetKey === '') return;
    const seen = this.#o.arm.attached(targetKey, canonicalResourceId(identity.resourceID));
    if (seen?.clientId === undefined) return;
    if (seen.clientId.toLowerCase() === identity.clientID.trim().toLowerCase()) return;
    const once = `clientId|${identity.uid}/${identity.clientID}/${seen.clientId}`;
    if (this.#reported.get(once) !== undefined) return;
    this.#reported.set(once, true);
    const message =
      `AzureIdentity ${identity.namespace}/${identity.name} has spec.clientID ${identity.clientID}, but Azure says identity ` +
      `${identity.resourceID} has client ID ${seen.clientId}` +
      (seen.principalId !== undefined ? ` (principal ID ${seen.principalId})` : '') +
      `; NMI asks IMDS by spec.clientID, which IMDS refuses on ${targetKey}. Set spec.clientID to ${seen.clientId}.`;
    this.#log.warn({ identity: `${identity.namespace}/${identity.name}`, declared: identity.clientID, azure: seen.clientId, target: targetKey }, 'AzureIdentity clientID does not match Azure');
    this.#o.events.warning(identitySubject(identity), Reasons.ClientIdMismatch, message);
  }

  async #write<T>(ctx: ExecutionContext, nodeName: string, fn: () => Promise<T>): Promise<T> {
    const slotKey = ctx.targetOfNode(nodeName) || `node/${nodeName}`;
    let slot = this.#writeSlots.get(slotKey);
    if (slot === undefined) this.#writeSlots.set(slotKey, (slot = pLimit(Math.max(1, this.#o.createDeleteBatch))));
    // Kept while idle (a limiter per write was most of a write's garbage); apply() drops the idle ones.
    return slot(() => this.#allWrites(() => (ctx.signal.aborted ? Promise.reject(new TaskStop(0)) : fn())));
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
