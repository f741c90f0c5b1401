// MIC's controller: informers (our Reflector) on labelled pods, nodes, AzureIdentity, AzureIdentityBinding,
// AzureAssignedIdentity (and Namespaces, with --namespace-identity-policy=enforce) keep normalised views in memory; events only enqueue the single `sync` key of a
// deduplicating work queue; each cycle plans from memory (never relisting), hands ARM changes to the per-target
// workers and queues the AAI keys with Kubernetes writes to make; the queue's workers run those keys, each with an
// outcome (done, requeue after, or an error for the queue's rate-limited retry). A settled ARM change enqueues a cycle.
// Informers run on every replica (fast failover); the queue, the timers and every write run only while leading.
//
// Our own writes are overlaid on the AAI cache until the watch shows them (same resourceVersion), so a cycle that
// runs before the echo neither repeats a write nor undoes one. The echo of our own write does not enqueue a cycle.
import type { KubeConfig } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { collectionPath, Plurals, POD_LABEL, POD_LABEL_SELECTOR } from '../crds/names.js';
import { parseNamespacePolicy, type NamespacePolicy } from '../crds/namespace-policy.js';
import { normalizeAssignedIdentity, normalizeAzureIdentity, normalizeBinding } from '../crds/normalize.js';
import {
  nodeViewFrom,
  podViewFrom,
  type AzureAssignedIdentity,
  type AzureIdentity,
  type AzureIdentityBinding,
  type PodView,
} from '../crds/types.js';
import { Reflector, WorkQueue, type KubeObject, type ReflectorEvent } from '../kube/index.js';
import { realClock, type Clock } from '../common/clock.js';
import { assignedKey, type ClusterSnapshot, type ComputeTargetRef, type MicPolicy } from './core/snapshot.js';
import { resolveNode, type ResolvedNode } from './adapters/targets.js';
import { Executor, type ExecutorOptions } from './executor.js';
import { Reconciler, type ClusterView } from './reconciler.js';
import type { EventSink, MicMetrics } from './ports.js';

export interface ControllerOptions {
  readonly kubeConfig: KubeConfig;
  readonly log: Logger;
  readonly metrics: MicMetrics;
  readonly events: EventSink;
  readonly policy: MicPolicy;
  readonly executor: Omit<ExecutorOptions, 'onWritten' | 'log' | 'metrics' | 'events' | 'clock'>;
  readonly clock?: Clock;
  /** Periodic full cycle (--syncRetryDuration). */
  readonly syncRetryMs: number;
  /** Periodic GET of every VM/VMSS to re-attach what ARM lost (--identity-assignment-reconcile-interval); 0 = off. */
  readonly azureCheckIntervalMs: number;
  /** Least time between cycle starts; a cycle also waits as long as the previous one took. Default 20 ms. */
  readonly minCycleIntervalMs?: number;
  /** How long our own writes are overlaid when their echo never comes (a relist skipped it). Default 30 s. */
  readonly ownWriteTtlMs?: number;
  /** Server-side watch timeout for the informers (tests use short ones). */
  readonly watchTimeoutSeconds?: number;
  readonly reflectorBackoff?: { readonly initialMs: number; readonly maxMs: number };
}

export const SYNC_KEY = 'sync';
/** Queue items for one AzureAssignedIdentity's writes: `aai:<namespace>/<name>`. */
const AAI_ITEM = 'aai:';

interface Tracked<T> {
  readonly view: T;
  readonly legacy: readonly string[];
}

interface OwnWrite {
  /** null: deleted by us (tombstone for `uid`). */
  readonly obj: AzureAssignedIdentity | null;
  readonly uid: string;
  readonly at: number;
}

export class MicController {
  readonly #o: ControllerOptions;
  readonly #log: Logger;
  readonly #clock: Clock;
  readonly #reflectors: Reflector[];
  readonly #pods = new Map<string, PodView>();
  readonly #nodes = new Map<string, ResolvedNode>();
  readonly #identities = new Map<string, Tracked<AzureIdentity>>();
  readonly #bindings = new Map<string, Tracked<AzureIdentityBinding>>();
  readonly #assigned = new Map<string, AzureAssignedIdentity>();
  /** Namespace → its parsed permitted-identities policy (undefined: no annotation); filled only under enforce. */
  readonly #namespaces = new Map<string, NamespacePolicy | undefined>();
  readonly #own = new Map<string, OwnWrite>();
  readonly #executor: Executor;
  readonly #reconciler: Reconciler;
  #term: { queue: WorkQueue; signal: AbortSignal; timers: NodeJS.Timeout[] } | undefined;
  #lastCycleEnd = 0;
  #lastCycleMs = 0;
  #cycles = 0;
  #lastCycleAt = 0;

  constructor(opts: ControllerOptions) {
    this.#o = opts;
    this.#log = opts.log;
    this.#clock = opts.clock ?? realClock;
    this.#executor = new Executor({
      ...opts.executor,
      log: opts.log.child({ component: 'executor' }),
      metrics: opts.metrics,
      events: opts.events,
      clock: this.#clock,
      onWritten: (key, obj, uid) => this.#ownWrite(key, obj, uid),
    });
    // What ARM holds on a target changed (or a hold passed): the AAIs whose Assigned waits on that target look at it
    // at once, and a cycle plans again from that state when anything else waits on it.
    opts.executor.arm.onSettled((target) => {
      const term = this.#term;
      if (term === undefined || term.signal.aborted) return;
      const { keys, replan } = this.#executor.settled(target);
      for (const key of keys) term.queue.add(AAI_ITEM + key);
      if (replan) this.#enqueue();
    });
    this.#reconciler = new Reconciler({
      executor: this.#executor,
      arm: opts.executor.arm,
      clock: this.#clock,
      events: opts.events,
      metrics: opts.metrics,
      policy: opts.policy,
      log: opts.log.child({ component: 'reconciler' }),
    });
    this.#reflectors = this.#informers();
  }

  /** Starts the informers (on every replica). */
  start(): void {
    for (const r of this.#reflectors) r.start();
  }

  /** Resolves true once every informer has listed, false if stopped first. */
  async synced(): Promise<boolean> {
    const all = await Promise.all(this.#reflectors.map((r) => r.synced()));
    return all.every(Boolean);
  }

  get hasSynced(): boolean {
    return this.#reflectors.every((r) => r.hasSynced);
  }

  /** True while this replica runs cycles (leading and synced). */
  get acting(): boolean {
    return this.#term !== undefined && !this.#term.signal.aborted;
  }

  /** AzureAssignedIdentities in the cache by state (for the metrics gauge); undefined until the informers listed. */
  assignedStateCounts(): Record<string, number> | undefined {
    if (!this.hasSynced) return undefined;
    const counts: Record<string, number> = {};
    for (const a of this.#assigned.values()) counts[a.state] = (counts[a.state] ?? 0) + 1;
    return counts;
  }

  /** Cycles run since start, and when the last one finished (for tests and /readyz details). */
  get cycleStats(): { readonly cycles: number; readonly lastCycleAt: number } {
    return { cycles: this.#cycles, lastCycleAt: this.#lastCycleAt };
  }

  /** Called when this replica becomes leader: wait for the caches, then reconcile until `signal` aborts. */
  async startActing(signal: AbortSignal): Promise<void> {
    if (!(await this.synced()) || signal.aborted) return;
    const queue = new WorkQueue({
      name: 'mic',
      log: this.#log,
      process: (item) => (item === SYNC_KEY ? this.#cycle(signal) : this.#runKey(item.slice(AAI_ITEM.length), signal)),
      // One cycle at a time (the queue never runs a key twice at once) beside the writes of as many AAIs.
      workers: 1 + (this.#o.executor.maxConcurrentWrites ?? 64),
      baseDelayMs: 100,
      maxDelayMs: 30_000,
    });
    const timers: NodeJS.Timeout[] = [];
    this.#term = { queue, signal, timers };
    if (this.#o.azureCheckIntervalMs > 0) {
      timers.push(setInterval(() => void this.#azureCheck(signal), this.#o.azureCheckIntervalMs));
    }
    signal.addEventListener('abort', () => this.#stopActing(queue, timers), { once: true });
    queue.start();
    queue.add(SYNC_KEY);
    this.#log.info({ pods: this.#pods.size, nodes: this.#nodes.size, assigned: this.#assigned.size }, 'acting as leader');
  }

  /** Waits until the queue is empty and no write or ARM call is running (tests and benchmarks). */
  async idle(): Promise<void> {
    const arm = this.#o.executor.arm;
    for (;;) {
      const queue = this.#term?.queue;
      await queue?.idle();
      await arm.idle();
      // A settled ARM change enqueues a cycle: idle only when both stayed quiet.
      if (queue === undefined || queue.shuttingDown || queue.length === 0) {
        await queue?.idle();
        return;
      }
    }
  }

  async stop(): Promise<void> {
    const term = this.#term;
    if (term !== undefined) this.#stopActing(term.queue, term.timers);
    await Promise.all(this.#reflectors.map((r) => r.stop()));
  }

  #stopActing(queue: WorkQueue, timers: NodeJS.Timeout[]): void {
    for (const t of timers) clearInterval(t);
    // No ARM call, hold or settle callback outlives leadership; the next term reads ARM afresh.
    this.#o.executor.arm.cancel();
    this.#executor.forget();
    void queue.shutDown({ drain: false });
    if (this.#term?.queue === queue) this.#term = undefined;
    this.#log.info('stopped acting');
  }

  #enqueue(): void {
    const term = this.#term;
    if (term === undefined || term.signal.aborted) return;
    term.queue.add(SYNC_KEY);
  }

  /** One cycle: its outcome is the queue's to act on (an error is retried with backoff, else resync later). */
  async #cycle(signal: AbortSignal): Promise<{ requeueAfterMs: number } | void> {
    // Let events gather: never more than one cycle per max(min interval, last plan's duration).
    const gap = Math.max(this.#o.minCycleIntervalMs ?? 20, this.#lastCycleMs);
    const wait = this.#lastCycleEnd + gap - this.#clock.now();
    if (wait > 0) await this.#clock.sleep(wait, signal).catch(() => undefined);
    if (signal.aborted) return;
    const started = this.#clock.now();
    let result;
    try {
      result = this.#reconciler.cycle(this.#view(), signal);
    } finally {
      this.#lastCycleEnd = this.#clock.now();
      this.#lastCycleMs = this.#lastCycleEnd - started;
      this.#lastCycleAt = this.#lastCycleEnd;
      this.#cycles++;
    }
    const queue = this.#term?.queue;
    if (signal.aborted || queue === undefined) return;
    for (const key of result.stats.keys) queue.add(AAI_ITEM + key);
    // Learn what ARM has on targets not read yet, so the next plans need no ARM call for what is already true.
    void this.#o.executor.arm.refresh(this.#targets().values(), false).catch((err: unknown) => this.#log.warn({ err }, 'ARM refresh failed'));
    return { requeueAfterMs: Math.min(this.#o.syncRetryMs, result.stats.requeueAfterMs ?? Infinity) };
  }

  /** One AAI's writes; a failure rejects, so the queue retries the key with backoff (and it is then planned afresh). */
  async #runKey(key: string, signal: AbortSignal): Promise<{ requeueAfterMs: number } | void> {
    const outcome = await this.#executor.runKey(key);
    if (signal.aborted || outcome === 'done') return;
    if (outcome === 'replan') this.#enqueue();
    else return outcome;
  }

  /** The periodic Azure check: re-read every VM/VMSS, then plan (which re-adds what an Assigned AAI lost). */
  async #azureCheck(signal: AbortSignal): Promise<void> {
    try {
      await this.#o.executor.arm.refresh(this.#targets().values(), true);
    } catch (err) {
      this.#log.warn({ err }, 'periodic ARM identity check failed');
    }
    if (!signal.aborted) this.#enqueue();
  }

  /* ----------------------------------------------------------------------------------- cluster view */

  #view(): ClusterView {
    const now = this.#clock.now();
    const ttl = this.#o.ownWriteTtlMs ?? 30_000;
    const assigned = new Map(this.#assigned);
    const deleted = new Set<string>();
    for (const [key, w] of this.#own) {
      const cached = this.#assigned.get(key);
      if (now - w.at > ttl) {
        this.#own.delete(key);
        continue;
      }
      if (w.obj === null) {
        if (cached !== undefined && cached.uid !== w.uid) {
          this.#own.delete(key); // re-created since: the tombstone is stale
          continue;
        }
        assigned.delete(key);
        deleted.add(key);
      } else if (cached !== undefined && cached.resourceVersion === w.obj.resourceVersion) {
        this.#own.delete(key);
      } else {
        assigned.set(key, w.obj);
      }
    }
    const nodes = this.#nodes;
    const identities = this.#identities;
    const bindings = this.#bindings;
    const pods = this.#pods;
    const namespacePolicies = this.#namespaces;
    return {
      snapshot: (): Omit<ClusterSnapshot, 'attachments'> => ({
        pods: [...pods.values()],
        nodes: [...nodes.values()].map((r) => r.node),
        identities: [...identities.values()].map((t) => t.view),
        bindings: [...bindings.values()].map((t) => t.view),
        assigned: [...assigned.values()],
        pending: { deleted },
        namespacePolicies,
      }),
      assignedByKey: assigned,
      *legacy() {
        for (const t of identities.values()) if (t.legacy.length > 0) yield { object: t.view, kind: 'AzureIdentity' as const, fields: t.legacy };
        for (const t of bindings.values()) if (t.legacy.length > 0) yield { object: t.view, kind: 'AzureIdentityBinding' as const, fields: t.legacy };
      },
      identity: (ns, name) => identities.get(`${ns}/${name}`)?.view,
      binding: (ns, name) => bindings.get(`${ns}/${name}`)?.view,
      pod: (ns, name) => pods.get(`${ns}/${name}`),
    };
  }

  /** Every VM/VMSS a known node runs on, once. */
  #targets(): Map<string, ComputeTargetRef> {
    const out = new Map<string, ComputeTargetRef>();
    for (const r of this.#nodes.values()) {
      const t = r.node.target;
      if (t !== undefined && !out.has(t.key)) out.set(t.key, t);
    }
    return out;
  }

  #ownWrite(key: string, obj: AzureAssignedIdentity | null, uid: string): void {
    const cached = this.#assigned.get(key);
    if (obj !== null && cached?.resourceVersion === obj.resourceVersion) {
      this.#own.delete(key); // the echo came first
      return;
    }
    if (obj === null && (cached === undefined || cached.uid !== uid)) {
      this.#own.delete(key);
      return;
    }
    this.#own.set(key, { obj, uid, at: this.#clock.now() });
  }

  /* ----------------------------------------------------------------------------------- informers */

  #informers(): Reflector[] {
    const o = this.#o;
    const common = {
      kubeConfig: o.kubeConfig,
      log: this.#log,
      ...(o.watchTimeoutSeconds !== undefined ? { watchTimeoutSeconds: o.watchTimeoutSeconds } : {}),
      ...(o.reflectorBackoff !== undefined ? { backoff: o.reflectorBackoff } : {}),
    };
    const key = (obj: KubeObject): string => `${obj.metadata?.namespace ?? ''}/${obj.metadata?.name ?? ''}`;

    const pods = new Reflector({
      ...common,
      path: '/api/v1/pods',
      name: 'pods',
      labelSelector: POD_LABEL_SELECTOR,
      handlers: {
        onAdd: (obj) => this.#upsertPod(obj),
        onUpdate: (_old, obj) => this.#upsertPod(obj),
        onDelete: (obj) => {
          if (this.#pods.delete(key(obj))) this.#enqueue();
        },
      },
    });
    const nodes = new Reflector({
      ...common,
      path: '/api/v1/nodes',
      name: 'nodes',
      handlers: {
        onAdd: (obj) => this.#upsertNode(obj),
        onUpdate: (_old, obj) => this.#upsertNode(obj),
        onDelete: (obj) => {
          const name = obj.metadata?.name ?? '';
          const gone = this.#nodes.get(name);
          this.#nodes.delete(name);
          const targetKey = gone?.node.target?.key;
          if (targetKey !== undefined && ![...this.#nodes.values()].some((r) => r.node.target?.key === targetKey)) {
            this.#o.executor.arm.forget(targetKey);
          }
          this.#enqueue();
        },
      },
    });
    const identities = new Reflector({
      ...common,
      path: collectionPath(Plurals.AzureIdentity),
      name: 'azureidentities',
      handlers: {
        onAdd: (obj) => this.#upsertTracked(this.#identities, normalizeAzureIdentity(obj), obj),
        onUpdate: (_old, obj) => this.#upsertTracked(this.#identities, normalizeAzureIdentity(obj), obj),
        onDelete: (obj) => {
          this.#identities.delete(key(obj));
          this.#enqueue();
        },
      },
    });
    const bindings = new Reflector({
      ...common,
      path: collectionPath(Plurals.AzureIdentityBinding),
      name: 'azureidentitybindings',
      handlers: {
        onAdd: (obj) => this.#upsertTracked(this.#bindings, normalizeBinding(obj), obj),
        onUpdate: (_old, obj) => this.#upsertTracked(this.#bindings, normalizeBinding(obj), obj),
        onDelete: (obj) => {
          this.#bindings.delete(key(obj));
          this.#enqueue();
        },
      },
    });
    const assigned = new Reflector({
      ...common,
      path: collectionPath(Plurals.AzureAssignedIdentity),
      name: 'azureassignedidentities',
      onEvent: (e: ReflectorEvent) => {
        // After a relist the cache is at least as new as our earlier writes: stop overlaying them.
        if (e.type === 'listed') {
          const cutoff = this.#clock.now() - 2000;
          for (const [k, w] of this.#own) if (w.at < cutoff) this.#own.delete(k);
          this.#enqueue();
        }
      },
      handlers: {
        onAdd: (obj) => this.#upsertAssigned(obj),
        onUpdate: (_old, obj) => this.#upsertAssigned(obj),
        onDelete: (obj) => {
          const k = assignedKey(obj.metadata?.namespace ?? '', obj.metadata?.name ?? '');
          const cached = this.#assigned.get(k);
          this.#assigned.delete(k);
          const own = this.#own.get(k);
          if (own !== undefined && own.obj === null && own.uid === (cached?.uid ?? obj.metadata?.uid)) {
            this.#own.delete(k); // our delete's echo
            return;
          }
          this.#enqueue();
        },
      },
    });
    const all = [pods, nodes, identities, bindings, assigned];
    if (o.policy.namespaceIdentityPolicy === 'enforce') {
      all.push(
        new Reflector({
          ...common,
          path: '/api/v1/namespaces',
          name: 'namespaces',
          handlers: {
            onAdd: (obj) => this.#upsertNamespace(obj),
            onUpdate: (_old, obj) => this.#upsertNamespace(obj),
            onDelete: (obj) => {
              if (this.#namespaces.delete(obj.metadata?.name ?? '')) this.#enqueue();
            },
          },
        }),
      );
    }
    return all;
  }

  #upsertNamespace(obj: KubeObject): void {
    const name = obj.metadata?.name ?? '';
    if (name === '') return;
    const policy = parseNamespacePolicy(obj.metadata?.annotations ?? {});
    const old = this.#namespaces.get(name);
    const known = this.#namespaces.has(name);
    this.#namespaces.set(name, policy);
    if (policy !== undefined && policy.problems.length > 0 && JSON.stringify(old) !== JSON.stringify(policy)) {
      this.#log.warn({ namespace: name, problems: policy.problems }, 'invalid permitted-identities annotation: the namespace may use no identity');
    }
    // Only an annotation change can change an assignment.
    if (!known || JSON.stringify(old) !== JSON.stringify(policy)) this.#enqueue();
  }

  #upsertPod(obj: KubeObject): void {
    const pod = podViewFrom(obj);
    if (pod === null) return;
    const k = `${pod.namespace}/${pod.name}`;
    const old = this.#pods.get(k);
    this.#pods.set(k, pod);
    // As the original, only changes that can change an assignment wake the controller.
    if (
      old === undefined ||
      old.uid !== pod.uid ||
      old.nodeName !== pod.nodeName ||
      old.labels[POD_LABEL] !== pod.labels[POD_LABEL] ||
      old.deleting !== pod.deleting ||
      isFinished(old) !== isFinished(pod)
    ) {
      this.#enqueue();
    }
  }

  #upsertNode(obj: KubeObject): void {
    const view = nodeViewFrom(obj);
    if (view === null) return;
    const old = this.#nodes.get(view.name);
    const resolved = resolveNode(view);
    this.#nodes.set(view.name, resolved);
    if (resolved.problem !== undefined && old?.node.providerID !== view.providerID) {
      this.#log.warn({ node: view.name, providerID: view.providerID, problem: resolved.problem }, 'node has no usable Azure provider ID');
    }
    if (old === undefined || old.node.providerID !== view.providerID) this.#enqueue();
  }

  #upsertTracked<T extends { namespace: string; name: string }>(
    map: Map<string, Tracked<T>>,
    n: { value: T | null; legacyFields: readonly string[]; problems: readonly string[] },
    obj: KubeObject,
  ): void {
    if (n.problems.length > 0) {
      this.#log.debug({ kind: obj.kind, namespace: obj.metadata?.namespace, name: obj.metadata?.name, problems: n.problems }, 'normalised with problems');
    }
    if (n.value === null) return;
    map.set(`${n.value.namespace}/${n.value.name}`, { view: n.value, legacy: n.legacyFields });
    this.#enqueue();
  }

  #upsertAssigned(obj: KubeObject): void {
    const k = assignedKey(obj.metadata?.namespace ?? '', obj.metadata?.name ?? '');
    const ownObj = this.#own.get(k)?.obj;
    if (ownObj !== undefined && ownObj !== null && ownObj.resourceVersion === obj.metadata?.resourceVersion) {
      // Our write's echo: we hold this very version already normalised, and there is nothing new to plan.
      this.#assigned.set(k, ownObj);
      this.#own.delete(k);
      return;
    }
    const n = normalizeAssignedIdentity(obj);
    if (n.value === null) return;
    this.#assigned.set(k, n.value);
    this.#enqueue();
  }
}

function isFinished(pod: PodView): boolean {
  return pod.phase === 'Succeeded' || pod.phase === 'Failed';
}
