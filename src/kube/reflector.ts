// List+watch loop on client-node's low-level Watch, replacing its ListWatch (which never asks for bookmarks, stops
// for good on any error but 410, keys by name only and turns throwing handlers into unhandled rejections).
//
// States: list (paged) -> watch from the list's resourceVersion -> on clean close or client timeout re-watch from the
// last seen resourceVersion -> on 410 (HTTP or ERROR event) relist and diff against the store -> on any other failure
// retry with jittered exponential backoff, forever, until stop().
//
// The store is the consumer's one cache: `transform` makes each object into the view the consumer reads, at ingest
// (a list page at a time), and the store keeps only views, filed under `indexers`:
//   const r = new Reflector({ kubeConfig, path: '/api/v1/pods', transform: (raw) => podViewFrom(raw) ?? undefined,
//                             indexers: { byIP: (v) => [v.podIP] }, handlers: { onAdd: (view, key) => enqueue(key) } });
//   r.store.get('ns/name'); r.store.byIndex('byIP', ip); r.store.list();
import type { KubeConfig } from '@kubernetes/client-node';
// Deep import: client-node's index loads its whole generated API (see access.ts).
import { Watch } from '@kubernetes/client-node/dist/watch.js';
import type { KubeAccess } from './access.js';
import { Backoff, type BackoffOptions } from '../common/backoff.js';
import { realClock, sleep, type Clock } from '../common/clock.js';
import { describeError, httpStatus, isGone, retryAfterMs } from './errors.js';
import { listPage, type ListOptions, type ListPage } from './list.js';
import { silentLogger, type Logger } from '../common/log.js';
import { objectKey, Store, type IndexFunc, type KubeObject } from './store.js';

/** Handlers get views (what the transform made), with the store key. They should only enqueue. */
export interface ReflectorHandlers<V> {
  onAdd?(view: V, key: string): void;
  onUpdate?(oldView: V, newView: V, key: string): void;
  /** Receives the last view the store held. */
  onDelete?(view: V, key: string): void;
}

/** Lifecycle transitions, for logs and metrics. */
export type ReflectorEvent =
  | { readonly type: 'listed'; readonly items: number; readonly pages: number; readonly resourceVersion: string }
  | { readonly type: 'watching'; readonly resourceVersion: string; readonly timeoutSeconds: number }
  | { readonly type: 'watchEnded'; readonly reason: 'closed' | 'timeout'; readonly events: number }
  | { readonly type: 'relist'; readonly reason: 'gone' | 'interval' }
  | { readonly type: 'error'; readonly phase: 'list' | 'watch'; readonly error: unknown; readonly retryInMs: number };

export interface ReflectorOptions<T extends KubeObject, V = T> {
  readonly kubeConfig: KubeAccess;
  /** Collection path without query, e.g. `/api/v1/pods` or `/apis/aadpodidentity.k8s.io/v1/azureidentities`. */
  readonly path: string;
  /** Name for logs (default: the path). */
  readonly name?: string;
  readonly labelSelector?: string;
  readonly fieldSelector?: string;
  /** `limit` of each list page (default 500). */
  readonly pageSize?: number;
  /**
   * Lists one page. Default: a raw GET through the KubeConfig (plain JSON). A custom function must return plain
   * JSON objects too (not client-node class instances), so that listed and watched objects look alike.
   */
  readonly list?: (opts: ListOptions) => Promise<ListPage<T>>;
  /**
   * Turns each listed or watched object into the view the consumer reads, once, at ingest; the store keeps only the
   * view, and the raw object is dropped. `undefined` (or a throw) means "not of interest": the key is left out of the
   * store (and removed from it, with `onDelete`, if an earlier version was in). Default: the object itself.
   * Must be pure and must not keep references into the raw object it is not meant to keep.
   */
  readonly transform?: (raw: T) => V | undefined;
  /** Indexes of the store, over views: `{ byNode: (v) => [v.nodeName] }`, read with `store.byIndex('byNode', n)`. */
  readonly indexers?: Readonly<Record<string, IndexFunc<V>>>;
  /** Store to fill (default: a new one with `indexers`). */
  readonly store?: Store<V>;
  readonly handlers?: ReflectorHandlers<V>;
  /** Time source for backoff sleeps, relist intervals and `lastHeardMs` (default: the real clock). */
  readonly clock?: Clock;
  /** Server-side watch timeout; default a random value in [300, 600] s for each watch, spreading reconnects. */
  readonly watchTimeoutSeconds?: number | (() => number);
  /** Abort a watch that received no bytes for this long (default: the watch timeout + 30 s). */
  readonly inactivityTimeoutMs?: number;
  /** A watch that ends sooner than this with no event counts as a failure and backs off (default 1000 ms). */
  readonly minWatchDurationMs?: number;
  /** Relist at most this often as a safety net against missed events (default: never). */
  readonly relistIntervalMs?: number;
  /** Retry backoff (default 800 ms doubling to 30 s, 20 % jitter). */
  readonly backoff?: BackoffOptions;
  readonly onEvent?: (e: ReflectorEvent) => void;
  readonly log?: Logger;
}

type WatchOutcome =
  | { readonly kind: 'stopped' }
  | { readonly kind: 'gone' }
  | { readonly kind: 'closed' | 'timeout'; readonly events: number; readonly durationMs: number };

/** A listed object made into its view (or `undefined`: not of interest), with what the store records of it. */
interface Ingested<V> {
  readonly view: V | undefined;
  readonly uid: string | undefined;
  readonly resourceVersion: string | undefined;
}

export class Reflector<T extends KubeObject = KubeObject, V = T> {
  readonly store: Store<V>;
  readonly #opts: ReflectorOptions<T, V>;
  readonly #log: Logger;
  readonly #clock: Clock;
  readonly #transform: (raw: T) => V | undefined;
  readonly #handlers: ReflectorHandlers<V>;
  readonly #listFn: (opts: ListOptions) => Promise<ListPage<T>>;
  #abort: AbortController | undefined;
  #loop: Promise<void> | undefined;
  #stopped = false;
  #resourceVersion = '';
  #hasSynced = false;
  #lastListAt = 0;
  // When the API server last told us something about this collection (a list, or any watch event including bookmarks).
  #lastHeardMs = 0;
  // Whether the watch that just failed had been working (events or a long life): then its failure starts a fresh backoff.
  #lastWatchHealthy = false;
  #resolveSynced!: (ok: boolean) => void;
  readonly #synced: Promise<boolean>;

  constructor(opts: ReflectorOptions<T, V>) {
    this.#opts = opts;
    this.#clock = opts.clock ?? realClock;
    this.#transform = opts.transform ?? ((raw: T) => raw as unknown as V);
    this.store = opts.store ?? new Store<V>(opts.indexers);
    this.#handlers = opts.handlers ?? {};
    this.#log = (opts.log ?? silentLogger()).child({ component: 'reflector', resource: opts.name ?? opts.path });
    this.#listFn = opts.list ?? ((o) => listPage<T>(opts.kubeConfig, opts.path, o));
    this.#synced = new Promise((resolve) => {
      this.#resolveSynced = resolve;
    });
  }

  /** Starts listing and watching in the background. */
  start(): void {
    if (this.#stopped) throw new Error('reflector was stopped; create a new one');
    if (this.#loop) return;
    const abort = new AbortController();
    this.#abort = abort;
    this.#loop = this.#run(abort.signal).catch((err: unknown) => {
      // #run handles its own errors; reaching this is a bug, but it must not crash the process.
      this.#log.error({ err }, 'reflector loop failed');
    });
  }

  /** Aborts the open list/watch and any pending retry; resolves when nothing is left running. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#abort?.abort();
    this.#resolveSynced(false);
    await this.#loop;
  }

  /** Resolves `true` once the first list is in the store, or `false` if stopped before that. Never rejects. */
  synced(): Promise<boolean> {
    return this.#synced;
  }

  get hasSynced(): boolean {
    return this.#hasSynced;
  }

  /**
   * When the API server last confirmed this view (ms since the epoch; 0 before the first list): the end of a list, or
   * any watch event, bookmarks included. A view not heard of for long may be missing events (a silent watch).
   */
  get lastHeardMs(): number {
    return this.#lastHeardMs;
  }

  /** The resourceVersion the next watch would start from. */
  get lastSyncResourceVersion(): string {
    return this.#resourceVersion;
  }

  async #run(signal: AbortSignal): Promise<void> {
    const backoff = new Backoff({ initialMs: 800, maxMs: 30_000, ...this.#opts.backoff });
    const minWatchMs = this.#opts.minWatchDurationMs ?? 1000;
    let needList = true;
    while (!signal.aborted) {
      const phase: 'list' | 'watch' = needList ? 'list' : 'watch';
      try {
        if (needList) {
          await this.#list(signal);
          if (signal.aborted) return;
          needList = false;
          backoff.reset();
        }
        const outcome = await this.#watchOnce(signal);
        if (outcome.kind === 'stopped') return;
        if (outcome.kind === 'gone') {
          this.#log.info({ resourceVersion: this.#resourceVersion }, 'watch resourceVersion expired (410), relisting');
          this.#emit({ type: 'relist', reason: 'gone' });
          needList = true;
          continue;
        }
        this.#emit({ type: 'watchEnded', reason: outcome.kind, events: outcome.events });
        if (outcome.events === 0 && outcome.durationMs < minWatchMs) {
          // A server that accepts and at once closes must not make us spin.
          if (!(await sleep(backoff.next(), signal, this.#clock))) return;
        } else {
          backoff.reset();
        }
        const interval = this.#opts.relistIntervalMs;
        if (interval !== undefined && this.#clock.now() - this.#lastListAt >= interval) {
          this.#emit({ type: 'relist', reason: 'interval' });
          needList = true;
        }
      } catch (err) {
        if (signal.aborted) return;
        if (isGone(err) && phase === 'watch') {
          this.#log.info({ resourceVersion: this.#resourceVersion }, 'watch answered 410 Gone, relisting');
          this.#emit({ type: 'relist', reason: 'gone' });
          needList = true;
          continue;
        }
        // A long-lived watch cut by the network is not a repeated failure: retry it soon.
        if (phase === 'watch' && this.#lastWatchHealthy) backoff.reset();
        // A 410 on a list means the continue token expired: relist from the start, after a backoff.
        const delay = Math.max(backoff.next(), retryAfterMs(err) ?? 0);
        this.#log.warn({ phase, err: describeError(err), retryInMs: delay }, `${phase} failed, retrying`);
        this.#emit({ type: 'error', phase, error: err, retryInMs: delay });
        if (!(await sleep(delay, signal, this.#clock))) return;
      }
    }
  }

  async #list(signal: AbortSignal): Promise<void> {
    // Each page is made into views as it arrives, so at most one page of raw objects is alive at a time.
    const listed = new Map<string, Ingested<V>>();
    let cont: string | undefined;
    let resourceVersion = '';
    let pages = 0;
    do {
      const page = await this.#listFn({
        labelSelector: this.#opts.labelSelector,
        fieldSelector: this.#opts.fieldSelector,
        limit: this.#opts.pageSize ?? 500,
        continue: cont,
        signal,
      });
      if (signal.aborted) return;
      pages++;
      for (const item of page.items) this.#ingestListed(item, listed);
      resourceVersion = page.resourceVersion || resourceVersion;
      cont = page.continue || undefined;
    } while (cont);
    this.#replace(listed);
    this.#resourceVersion = resourceVersion;
    this.#lastListAt = this.#clock.now();
    this.#lastHeardMs = this.#lastListAt;
    this.#log.debug({ items: listed.size, pages, resourceVersion }, 'listed');
    this.#emit({ type: 'listed', items: listed.size, pages, resourceVersion });
    if (!this.#hasSynced) {
      this.#hasSynced = true;
      this.#resolveSynced(true);
    }
  }

  #ingestListed(item: T, listed: Map<string, Ingested<V>>): void {
    let key: string;
    try {
      key = objectKey(item);
    } catch {
      this.#log.warn('listed object without metadata.name ignored');
      return;
    }
    const uid = item.metadata?.uid;
    const resourceVersion = item.metadata?.resourceVersion;
    const cached = this.store.meta(key);
    // Unchanged since we last saw it (a relist): keep the view we have, without transforming again.
    if (cached !== undefined && resourceVersion !== undefined && cached.resourceVersion === resourceVersion && cached.uid === uid) {
      listed.set(key, { view: this.store.get(key), uid, resourceVersion });
      return;
    }
    listed.set(key, { view: this.#safeTransform(item, key), uid, resourceVersion });
  }

  /** Makes the store equal to what was listed, telling handlers what changed: gone -> delete, new uid -> delete + add. */
  #replace(listed: ReadonlyMap<string, Ingested<V>>): void {
    for (const key of this.store.keys()) {
      if (listed.get(key)?.view !== undefined) continue;
      const removed = this.store.delete(key);
      if (removed !== undefined) this.#notifyDelete(removed, key);
    }
    for (const [key, item] of listed) if (item.view !== undefined) this.#apply(key, item);
  }

  #apply(key: string, item: Ingested<V>): void {
    const view = item.view;
    if (view === undefined) {
      // Not of interest any more: it leaves the store as if deleted.
      const removed = this.store.delete(key);
      if (removed !== undefined) this.#notifyDelete(removed, key);
      return;
    }
    const before = this.store.meta(key);
    const result = this.store.set(key, view, { uid: item.uid, resourceVersion: item.resourceVersion });
    switch (result.kind) {
      case 'added':
        this.#notify('add', () => this.#handlers.onAdd?.(view, key));
        break;
      case 'updated':
        // Unchanged objects (same resourceVersion, e.g. after a relist) produce no event.
        if (before?.resourceVersion !== item.resourceVersion) {
          this.#notify('update', () => this.#handlers.onUpdate?.(result.previous, view, key));
        }
        break;
      case 'replaced':
        this.#notifyDelete(result.previous, key);
        this.#notify('add', () => this.#handlers.onAdd?.(view, key));
        break;
    }
  }

  #safeTransform(raw: T, key: string): V | undefined {
    try {
      return this.#transform(raw);
    } catch (err) {
      this.#log.warn({ key, err: describeError(err) }, 'object the transform could not read ignored');
      return undefined;
    }
  }

  #notifyDelete(view: V, key: string): void {
    this.#notify('delete', () => this.#handlers.onDelete?.(view, key));
  }


  #watchOnce(signal: AbortSignal): Promise<WatchOutcome> {
    const timeoutSeconds = this.#watchTimeoutSeconds();
    // Watch reads only getCurrentCluster() and applySecurityAuthentication(), which every KubeAccess has.
    const watch = new Watch(this.#opts.kubeConfig as KubeConfig);
    // requestTimeoutMs is private in client-node's typings; it is the inactivity timeout we need to lower.
    (watch as unknown as { requestTimeoutMs: number }).requestTimeoutMs =
      this.#opts.inactivityTimeoutMs ?? (timeoutSeconds + 30) * 1000;
    const started = this.#clock.now();
    const rv = this.#resourceVersion;
    this.#emit({ type: 'watching', resourceVersion: rv, timeoutSeconds });
    this.#log.debug({ resourceVersion: rv, timeoutSeconds }, 'watching');

    return new Promise<WatchOutcome>((resolve, reject) => {
      let settled = false;
      let events = 0;
      let gone = false;
      let failure: Error | undefined;
      let controller: AbortController | undefined;

      const settle = (fn: () => void): void => {
        if (settled) return;
        settled = true;
        signal.removeEventListener('abort', onStop);
        fn();
      };
      const onStop = (): void => {
        controller?.abort();
        settle(() => resolve({ kind: 'stopped' }));
      };
      signal.addEventListener('abort', onStop, { once: true });

      const onEvent = (type: string, obj: unknown): void => {
        if (settled || gone || failure) return; // nothing after a stop, a 410 or an error counts
        if (type === 'ERROR') {
          if (isGone(obj)) gone = true;
          else failure = new WatchStatusError(obj);
          controller?.abort();
          return;
        }
        events++;
        this.#lastHeardMs = this.#clock.now();
        this.#handleWatchEvent(type, obj);
      };

      const done = (err: unknown): void => {
        const durationMs = this.#clock.now() - started;
        this.#lastWatchHealthy = events > 0 || durationMs >= (this.#opts.minWatchDurationMs ?? 1000);
        if (gone) settle(() => resolve({ kind: 'gone' }));
        else if (failure) settle(() => reject(failure));
        else if (signal.aborted) settle(() => resolve({ kind: 'stopped' }));
        else if (err === null || err === undefined) settle(() => resolve({ kind: 'closed', events, durationMs }));
        else if (isTimeout(err)) settle(() => resolve({ kind: 'timeout', events, durationMs }));
        else settle(() => reject(err));
      };

      const params: Record<string, string | number | boolean | undefined> = {
        resourceVersion: rv || undefined,
        allowWatchBookmarks: true,
        timeoutSeconds,
        labelSelector: this.#opts.labelSelector,
        fieldSelector: this.#opts.fieldSelector,
      };
      watch.watch(this.#opts.path, params, onEvent, done).then(
        (c) => {
          controller = c;
          // Stopped (or failed) while the request was in flight: close it now that we hold its controller.
          if (settled || gone || failure) c.abort();
        },
        (err: unknown) => done(err ?? new Error('watch failed')),
      );
    });
  }

  #handleWatchEvent(type: string, raw: unknown): void {
    if (!isKubeObject(raw)) {
      this.#log.warn({ type }, 'watch event without an object ignored');
      return;
    }
    const obj = raw as T;
    const rv = obj.metadata?.resourceVersion;
    switch (type) {
      case 'ADDED':
      case 'MODIFIED':
      case 'DELETED': {
        let key: string;
        try {
          key = objectKey(obj);
        } catch {
          this.#log.warn({ type }, 'watch event with an object without metadata.name ignored');
          break;
        }
        if (type === 'DELETED') {
          const removed = this.store.delete(key, obj.metadata?.uid);
          if (removed !== undefined) this.#notifyDelete(removed, key);
        } else {
          this.#apply(key, { view: this.#safeTransform(obj, key), uid: obj.metadata?.uid, resourceVersion: rv });
        }
        break;
      }
      case 'BOOKMARK':
        break;
      default:
        this.#log.warn({ type }, 'unknown watch event type ignored');
        return;
    }
    if (rv) this.#resourceVersion = rv;
  }

  #notify(kind: 'add' | 'update' | 'delete', fn: () => unknown): void {
    try {
      const r = fn();
      if (r instanceof Promise) r.catch((err: unknown) => this.#log.error({ err, handler: kind }, 'event handler failed'));
    } catch (err) {
      this.#log.error({ err, handler: kind }, 'event handler failed');
    }
  }

  #emit(e: ReflectorEvent): void {
    try {
      this.#opts.onEvent?.(e);
    } catch (err) {
      this.#log.error({ err }, 'onEvent callback failed');
    }
  }

  #watchTimeoutSeconds(): number {
    const t = this.#opts.watchTimeoutSeconds;
    if (typeof t === 'number') return t;
    if (typeof t === 'function') return t();
    return 300 + Math.floor(Math.random() * 301);
  }
}

/** A non-410 ERROR event on a watch stream (its object is a `Status`). */
export class WatchStatusError extends Error {
  readonly statusCode: number | undefined;
  readonly status: unknown;

  constructor(status: unknown) {
    const code = httpStatus(status);
    const msg = isRecord(status) && typeof status.message === 'string' ? status.message : 'watch ERROR event';
    super(`watch error${code !== undefined ? ` ${code}` : ''}: ${msg}`);
    this.name = 'WatchStatusError';
    this.statusCode = code;
    this.status = status;
  }
}

function isTimeout(err: unknown): boolean {
  return isRecord(err) && err.name === 'TimeoutError';
}

function isKubeObject(v: unknown): v is KubeObject {
  return isRecord(v) && (v.metadata === undefined || isRecord(v.metadata));
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null;
}
