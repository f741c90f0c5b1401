// MIC's controller: informers (our Reflector) on labelled pods, nodes, AzureIdentity, AzureIdentityBinding,
// AzureAssignedIdentity (and Namespaces, with --namespace-identity-policy=enforce). Their stores are the one cache:
// each keeps the normalised view MIC plans from (PodView, ResolvedNode, ...), made once at ingest, and nothing else.
// Events only enqueue the single `sync` key of a deduplicating work queue; each cycle plans from memory (never relisting), hands ARM changes to the per-target
// workers and queues the AAI keys with Kubernetes writes to make; the queue's workers run those keys, each with an
// outcome (done, requeue after, or an error for the queue's rate-limited retry). A settled ARM change enqueues a cycle.
// Informers run on every replica (fast failover); the queue, the timers and every write run only while leading.
//
// Our own writes are overlaid on the AAI cache until the watch shows them (same resourceVersion), so a cycle that
// runs before the echo neither repeats a write nor undoes one. The echo of our own write does not enqueue a cycle.
import { isDeepStrictEqual } from 'node:util';
import type { KubeAccess } from '../kube/access.js';
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import { ASSIGNED_IDENTITY_FINALIZER, collectionPath, Plurals, POD_LABEL, POD_LABEL_SELECTOR } from '../crds/names.js';
import { parseNamespacePolicy, type NamespacePolicies, type NamespacePolicy } from '../crds/namespace-policy.js';
import { normalizeAssignedIdentity, normalizeAzureIdentity, normalizeBinding } from '../crds/normalize.js';
import {
  nodeViewFrom,
  podViewFrom,
  type AzureAssignedIdentity,
  type AzureIdentity,
  type AzureIdentityBinding,
  type PodView,
} from '../crds/types.js';
import { Reflector, WorkQueue, type KubeObject, type ReflectorEvent, type ReflectorOptions, type Store } from '../kube/index.js';
import { realClock, type Clock } from '../common/clock.js';
import { assignedKey, type ClusterSnapshot, type ComputeTargetRef, type MicPolicy } from './core/snapshot.js';
import { resolveNode, type ResolvedNode } from './adapters/targets.js';
import { Executor, type ExecutorOptions } from './executor.js';
import { Reconciler, type ClusterView } from './reconciler.js';
import type { EventSink, MicMetrics } from './ports.js';
import type { FederationRunner } from './federation/runner.js';

export interface ControllerOptions {
  readonly kubeConfig: KubeAccess;
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
  /** Federated mode's credential writer; absent: --enable-federated-identities is off. */
  readonly federation?: FederationRunner;
}

export const SYNC_KEY = 'sync';
/** Queue items for one AzureAssignedIdentity's writes: `aai:<namespace>/<name>`. */
const AAI_ITEM = 'aai:';

interface Tracked<T> {
  readonly view: T;
  readonly legacy: readonly string[];
}

/** What the start/stop/sync logic needs of a reflector, whatever its view type. */
interface Informer {
  start(): void;
  stop(): Promise<void>;
  synced(): Promise<boolean>;
  readonly hasSynced: boolean;
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
  // The informers; their stores hold the views, keyed `namespace/name` (nodes and namespaces: `name`).
  readonly #pods: Reflector<KubeObject, PodView>;
  /** Indexed `byTarget` (the VM/VMSS key). */
  readonly #nodes: Reflector<KubeObject, ResolvedNode>;
  /** Indexed `legacy` (value 'yes': used legacy field names). */
  readonly #identities: Reflector<KubeObject, Tracked<AzureIdentity>>;
  readonly #bindings: Reflector<KubeObject, Tracked<AzureIdentityBinding>>;
  readonly #assigned: Reflector<KubeObject, AzureAssignedIdentity>;
  /** Namespaces with a permitted-identities annotation, by name (only under enforce); others are not kept. */
  readonly #namespaces: Reflector<KubeObject, NamespacePolicy> | undefined;
  readonly #reflectors: readonly Informer[];
  /** Our own AAI writes the AAI store has not shown yet: an explicit, small input to the plan. */
  readonly #own = new Map<string, OwnWrite>();
  readonly #refs = new EmbeddedRefs();

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
      ...(opts.federation !== undefined ? { federation: opts.federation } : {}),
    });
    const common = {
      kubeConfig: opts.kubeConfig,
      log: this.#log,
      clock: this.#clock,
      ...(opts.watchTimeoutSeconds !== undefined ? { watchTimeoutSeconds: opts.watchTimeoutSeconds } : {}),
      ...(opts.reflectorBackoff !== undefined ? { backoff: opts.reflectorBackoff } : {}),
    };
    this.#pods = new Reflector(this.#podInformer(common));
    this.#nodes = new Reflector(this.#nodeInformer(common));
    this.#identities = new Reflector(
      this.#trackedInformer(common, collectionPath(Plurals.AzureIdentity), 'azureidentities', normalizeAzureIdentity),
    );
    this.#bindings = new Reflector(
      this.#trackedInformer(common, collectionPath(Plurals.AzureIdentityBinding), 'azureidentitybindings', normalizeBinding),
    );
    this.#assigned = new Reflector(this.#assignedInformer(common));
    this.#namespaces = opts.policy.namespaceIdentityPolicy === 'enforce' ? new Reflector(this.#namespaceInformer(common)) : undefined;
    this.#reflectors = [this.#pods, this.#nodes, this.#identities, this.#bindings, this.#assigned, ...(this.#namespaces ? [this.#namespaces] : [])];
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
    for (const a of this.#assigned.store.values()) counts[a.state] = (counts[a.state] ?? 0) + 1;
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
      workers: 1 + (this.#o.executor.maxConcurrentWrites ?? 24),
      baseDelayMs: 100,
      maxDelayMs: 30_000,
    });
    const timers: NodeJS.Timeout[] = [];
    this.#term = { queue, signal, timers };
    if (this.#o.azureCheckIntervalMs > 0) {
      timers.push(setInterval(() => void this.#azureCheck(signal), this.#o.azureCheckIntervalMs));
    }
    signal.addEventListener('abort', () => this.#stopActing(queue, timers), { once: true });
    // A credential known to exist now (or a Retry-After passed): plan again, as after an ARM settle.
    this.#o.federation?.start(() => this.#enqueue());
    queue.start();
    queue.add(SYNC_KEY);
    this.#log.info({ pods: this.#pods.store.size, nodes: this.#nodes.store.size, assigned: this.#assigned.store.size }, 'acting as leader');
  }

  /** Waits until the queue is empty and no write or ARM call is running (tests and benchmarks). */
  async idle(): Promise<void> {
    const arm = this.#o.executor.arm;
    for (;;) {
      const queue = this.#term?.queue;
      await queue?.idle();
      await arm.idle();
      await this.#o.federation?.idle();
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
    this.#o.federation?.stop();
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
    this.#o.federation?.resync();
    if (!signal.aborted) this.#enqueue();
  }

  /* ----------------------------------------------------------------------------------- cluster view */

  #view(): ClusterView {
    const now = this.#clock.now();
    const ttl = this.#o.ownWriteTtlMs ?? 30_000;
    const cache = this.#assigned.store;
    const written = new Map<string, AzureAssignedIdentity>();
    const deleted = new Set<string>();
    for (const [key, w] of this.#own) {
      const cached = cache.get(key);
      if (now - w.at > ttl) {
        this.#own.delete(key);
        continue;
      }
      if (w.obj === null) {
        if (cached !== undefined && cached.uid !== w.uid) {
          this.#own.delete(key); // re-created since: the tombstone is stale
          continue;
        }
        deleted.add(key);
      } else if (cached !== undefined && cached.resourceVersion === w.obj.resourceVersion) {
        this.#own.delete(key);
      } else {
        written.set(key, w.obj);
      }
    }
    const assigned = new AssignedView(cache, written, deleted);
    const nodes = this.#nodes.store;
    const identities = this.#identities.store;
    const bindings = this.#bindings.store;
    const pods = this.#pods.store;
    const namespacePolicies: NamespacePolicies = new Map(this.#namespaces?.store.entries() ?? []);
    return {
      snapshot: (): Omit<ClusterSnapshot, 'attachments'> => ({
        pods: pods.list(),
        nodes: Array.from(nodes.values(), (r) => r.node),
        identities: Array.from(identities.values(), (t) => t.view),
        bindings: Array.from(bindings.values(), (t) => t.view),
        assigned: assigned.list(),
        pending: { deleted },
        namespacePolicies,
      }),
      assignedByKey: assigned,
      *legacy() {
        for (const t of identities.byIndex('legacy', 'yes')) yield { object: t.view, kind: 'AzureIdentity' as const, fields: t.legacy };
        for (const t of bindings.byIndex('legacy', 'yes')) yield { object: t.view, kind: 'AzureIdentityBinding' as const, fields: t.legacy };
      },
      identity: (ns, name) => identities.get(`${ns}/${name}`)?.view,
      binding: (ns, name) => bindings.get(`${ns}/${name}`)?.view,
      pod: (ns, name) => pods.get(`${ns}/${name}`),
    };
  }

  /** Every VM/VMSS a known node runs on, once. */
  #targets(): Map<string, ComputeTargetRef> {
    const out = new Map<string, ComputeTargetRef>();
    for (const r of this.#nodes.store.values()) {
      const t = r.node.target;
      if (t !== undefined && !out.has(t.key)) out.set(t.key, t);
    }
    return out;
  }

  #ownWrite(key: string, obj: AzureAssignedIdentity | null, uid: string): void {
    const cached = this.#assigned.store.get(key);
    if (obj !== null && cached?.resourceVersion === obj.resourceVersion) {
      this.#own.delete(key); // the echo came first
      return;
    }
    if (obj === null && (cached === undefined || cached.uid !== uid)) {
      this.#own.delete(key);
      return;
    }
    this.#own.set(key, { obj: obj === null ? null : this.#refs.assigned(obj), uid, at: this.#clock.now() });
  }

  /* ----------------------------------------------------------------------------------- informers */

  // Each informer's transform makes the view; its handlers only decide whether the change can matter and enqueue.

  #podInformer(common: InformerCommon): ReflectorOptions<KubeObject, PodView> {
    return {
      ...common,
      path: '/api/v1/pods',
      name: 'pods',
      labelSelector: POD_LABEL_SELECTOR,
      transform: (raw) => podViewFrom(raw) ?? undefined,
      handlers: {
        onAdd: () => this.#enqueue(),
        onUpdate: (old, pod) => {
          // As the original, only changes that can change an assignment wake the controller.
          if (
            old.uid !== pod.uid ||
            old.nodeName !== pod.nodeName ||
            old.labels[POD_LABEL] !== pod.labels[POD_LABEL] ||
            old.deleting !== pod.deleting ||
            isFinished(old) !== isFinished(pod)
          ) {
            this.#enqueue();
          }
        },
        onDelete: () => this.#enqueue(),
      },
    };
  }

  #nodeInformer(common: InformerCommon): ReflectorOptions<KubeObject, ResolvedNode> {
    const warnIfUnusable = (r: ResolvedNode, old?: ResolvedNode): void => {
      if (r.problem !== undefined && old?.node.providerID !== r.node.providerID) {
        this.#log.warn({ node: r.node.name, providerID: r.node.providerID, problem: r.problem }, 'node has no usable Azure provider ID');
      }
    };
    return {
      ...common,
      path: '/api/v1/nodes',
      name: 'nodes',
      transform: (raw) => {
        const view = nodeViewFrom(raw);
        return view === null ? undefined : resolveNode(view);
      },
      indexers: { byTarget: (r) => (r.node.target ? [r.node.target.key] : []) },
      handlers: {
        onAdd: (r) => {
          warnIfUnusable(r);
          this.#enqueue();
        },
        onUpdate: (old, r) => {
          warnIfUnusable(r, old);
          if (old.node.providerID !== r.node.providerID) this.#enqueue();
        },
        onDelete: (gone) => {
          const targetKey = gone.node.target?.key;
          if (targetKey !== undefined && this.#nodes.store.keysByIndex('byTarget', targetKey).length === 0) {
            this.#o.executor.arm.forget(targetKey);
          }
          this.#enqueue();
        },
      },
    };
  }

  #trackedInformer<V extends { namespace: string; name: string }>(
    common: InformerCommon,
    path: string,
    name: string,
    normalize: (obj: KubeObject) => { value: V | null; legacyFields: readonly string[]; problems: readonly string[] },
  ): ReflectorOptions<KubeObject, Tracked<V>> {
    return {
      ...common,
      path,
      name,
      transform: (raw) => {
        const n = normalize(raw);
        if (n.problems.length > 0) {
          this.#log.debug({ kind: raw.kind, namespace: raw.metadata?.namespace, name: raw.metadata?.name, problems: n.problems }, 'normalised with problems');
        }
        return n.value === null ? undefined : { view: n.value, legacy: n.legacyFields };
      },
      indexers: { legacy: (t) => (t.legacy.length > 0 ? ['yes'] : []) },
      handlers: {
        onAdd: () => this.#enqueue(),
        onUpdate: () => this.#enqueue(),
        onDelete: () => this.#enqueue(),
      },
    };
  }

  #assignedInformer(common: InformerCommon): ReflectorOptions<KubeObject, AzureAssignedIdentity> {
    // Our write's echo: we hold this very version already normalised, and there is nothing new to plan.
    const ownEcho = (key: string, view: AzureAssignedIdentity): boolean => {
      const own = this.#own.get(key)?.obj;
      if (own === undefined || own === null || own !== view) return false;
      this.#own.delete(key);
      return true;
    };
    const changed = (key: string, view: AzureAssignedIdentity): void => {
      if (ownEcho(key, view)) return;
      this.#enqueue();
    };
    return {
      ...common,
      path: collectionPath(Plurals.AzureAssignedIdentity),
      name: 'azureassignedidentities',
      transform: (raw) => {
        const key = assignedKey(raw.metadata?.namespace ?? '', raw.metadata?.name ?? '');
        const own = this.#own.get(key)?.obj;
        if (own !== undefined && own !== null && own.resourceVersion === raw.metadata?.resourceVersion) return own;
        const view = normalizeAssignedIdentity(raw).value;
        return view === null ? undefined : this.#refs.assigned(view);
      },
      onEvent: (e: ReflectorEvent) => {
        // After a relist the cache is at least as new as our earlier writes: stop overlaying them.
        if (e.type === 'listed') {
          const cutoff = this.#clock.now() - 2000;
          for (const [k, w] of this.#own) if (w.at < cutoff) this.#own.delete(k);
          this.#enqueue();
        }
      },
      handlers: {
        onAdd: (view, key) => changed(key, view),
        onUpdate: (_old, view, key) => changed(key, view),
        onDelete: (view, key) => {
          const own = this.#own.get(key);
          if (own !== undefined && own.obj === null && own.uid === view.uid) {
            this.#own.delete(key); // our delete's echo
            return;
          }
          this.#enqueue();
        },
      },
    };
  }

  #namespaceInformer(common: InformerCommon): ReflectorOptions<KubeObject, NamespacePolicy> {
    const warnIfInvalid = (name: string, policy: NamespacePolicy): void => {
      if (policy.problems.length > 0) {
        this.#log.warn({ namespace: name, problems: policy.problems }, 'invalid permitted-identities annotation: the namespace may use no identity');
      }
    };
    return {
      ...common,
      path: '/api/v1/namespaces',
      name: 'namespaces',
      // A namespace without the annotation permits nothing, as a missing one: only annotated ones are kept.
      transform: (raw) => parseNamespacePolicy(raw.metadata?.annotations ?? {}),
      handlers: {
        onAdd: (policy, name) => {
          warnIfInvalid(name, policy);
          this.#enqueue();
        },
        onUpdate: (old, policy, name) => {
          // Only an annotation change can change an assignment.
          if (JSON.stringify(old) === JSON.stringify(policy)) return;
          warnIfInvalid(name, policy);
          this.#enqueue();
        },
        onDelete: () => this.#enqueue(),
      },
    };
  }
}

type InformerCommon = Pick<ReflectorOptions<KubeObject>, 'kubeConfig' | 'log' | 'clock' | 'watchTimeoutSeconds' | 'backoff'>;

/**
 * The AAI store with our own not-yet-seen writes laid over it (written: our version wins; deleted: absent), read
 * through without copying the store into a new map for every cycle.
 */
class AssignedView implements ReadonlyMap<string, AzureAssignedIdentity> {
  readonly #store: Store<AzureAssignedIdentity>;
  readonly #written: ReadonlyMap<string, AzureAssignedIdentity>;
  readonly #deleted: ReadonlySet<string>;

  constructor(store: Store<AzureAssignedIdentity>, written: ReadonlyMap<string, AzureAssignedIdentity>, deleted: ReadonlySet<string>) {
    this.#store = store;
    this.#written = written;
    this.#deleted = deleted;
  }

  get(key: string): AzureAssignedIdentity | undefined {
    if (this.#deleted.has(key)) return undefined;
    return this.#written.get(key) ?? this.#store.get(key);
  }

  has(key: string): boolean {
    return this.get(key) !== undefined;
  }

  get size(): number {
    let n = this.#store.size;
    for (const key of this.#written.keys()) if (!this.#store.has(key)) n++;
    for (const key of this.#deleted) if (this.#store.has(key) && !this.#written.has(key)) n--;
    return n;
  }

  /** Every AAI as the plan should see it. */
  list(): AzureAssignedIdentity[] {
    const out: AzureAssignedIdentity[] = [];
    this.forEach((a) => out.push(a));
    return out;
  }

  forEach(fn: (value: AzureAssignedIdentity, key: string, map: ReadonlyMap<string, AzureAssignedIdentity>) => void): void {
    this.#store.forEach((cached, key) => {
      if (this.#deleted.has(key)) return;
      fn(this.#written.get(key) ?? cached, key, this);
    });
    for (const [key, a] of this.#written) if (!this.#store.has(key)) fn(a, key, this);
  }

  *entries(): MapIterator<[string, AzureAssignedIdentity]> {
    const all: Array<[string, AzureAssignedIdentity]> = [];
    this.forEach((a, key) => all.push([key, a]));
    yield* all;
  }

  *keys(): MapIterator<string> {
    for (const [key] of this.entries()) yield key;
  }

  *values(): MapIterator<AzureAssignedIdentity> {
    yield* this.list();
  }

  [Symbol.iterator](): MapIterator<[string, AzureAssignedIdentity]> {
    return this.entries();
  }
}

/**
 * Every AAI embeds a copy of its AzureIdentity and binding; the 10,000 AAIs of 500 identities need only 500 copies.
 * A ref is shared when it is the same object version (key, uid, resourceVersion) and equal in every field.
 */
class EmbeddedRefs {
  readonly #identities = new LRUCache<string, AzureIdentity>({ max: 4096 });
  readonly #bindings = new LRUCache<string, AzureIdentityBinding>({ max: 4096 });

  assigned(a: AzureAssignedIdentity): AzureAssignedIdentity {
    const identityRef = canonical(this.#identities, a.identityRef);
    const bindingRef = canonical(this.#bindings, a.bindingRef);
    // Nearly every AAI carries exactly our finalizer: one shared array instead of 10,000 copies of it.
    const finalizers = a.finalizers.length === 1 && a.finalizers[0] === OUR_FINALIZER[0] ? OUR_FINALIZER : a.finalizers;
    if (identityRef === a.identityRef && bindingRef === a.bindingRef && finalizers === a.finalizers) return a;
    // Spelled out: `{ ...a, identityRef }` would give each copy a hidden class of its own.
    return {
      namespace: a.namespace,
      name: a.name,
      uid: a.uid,
      resourceVersion: a.resourceVersion,
      labels: a.labels,
      annotations: a.annotations,
      creationTimestamp: a.creationTimestamp,
      finalizers,
      deleting: a.deleting,
      identityRef,
      bindingRef,
      pod: a.pod,
      podNamespace: a.podNamespace,
      nodeName: a.nodeName,
      state: a.state,
      podUid: a.podUid,
    };
  }
}

const OUR_FINALIZER: readonly string[] = Object.freeze([ASSIGNED_IDENTITY_FINALIZER]);

function canonical<T extends { namespace: string; name: string; uid: string; resourceVersion: string }>(
  cache: LRUCache<string, T>,
  ref: T | null,
): T | null {
  if (ref === null) return null;
  const key = `${ref.namespace}/${ref.name}/${ref.uid}/${ref.resourceVersion}`;
  const known = cache.get(key);
  if (known !== undefined && (known === ref || isDeepStrictEqual(known, ref))) return known;
  cache.set(key, ref);
  return ref;
}

function isFinished(pod: PodView): boolean {
  return pod.phase === 'Succeeded' || pod.phase === 'Failed';
}
