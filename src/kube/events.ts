// Kubernetes Events (core/v1) with client-go-style aggregation: repeats of the same (object, type, reason, message)
// within a window bump `count` and `lastTimestamp` on the existing Event instead of creating a new one.
// Recording never throws: an Event is a diagnostic, never a reason for a reconcile to fail.
import type { CoreV1Event, V1ObjectReference } from '@kubernetes/client-node';
import { describeError, isNotFound } from './errors.js';
import { silentLogger, type Logger } from '../common/log.js';
import { patchOptions } from './http.js';
import type { KubeObject } from './store.js';
import { realClock } from '../common/clock.js';

export type EventType = 'Normal' | 'Warning';

/** The part of `CoreV1Api` used here (a `CoreV1Api` instance satisfies it). */
export interface EventClient {
  createNamespacedEvent(param: { namespace: string; body: CoreV1Event }): Promise<CoreV1Event>;
  patchNamespacedEvent(
    param: { name: string; namespace: string; body: object },
    options?: ReturnType<typeof patchOptions>,
  ): Promise<CoreV1Event>;
}

export interface InvolvedObject {
  readonly apiVersion?: string;
  readonly kind: string;
  readonly name: string;
  readonly namespace?: string;
  readonly uid?: string;
  readonly resourceVersion?: string;
  readonly fieldPath?: string;
}

export interface EventRecorderOptions {
  readonly client: EventClient;
  /** `source.component`, e.g. `aad-pod-identity-mic`. */
  readonly component: string;
  /** `source.host`, e.g. the node name. */
  readonly host?: string;
  /** Repeats within this window are aggregated (default 10 min, as client-go). */
  readonly aggregateWindowMs?: number;
  /** Bound on remembered events (default 4096). */
  readonly maxEntries?: number;
  readonly log?: Logger;
  readonly now?: () => number;
  /** Event writes in flight at once (default 4): the rest wait as plain records, not as chains of promises. */
  readonly maxConcurrentWrites?: number;
}

/** An event waiting to be written: data only, so thousands queued cost little (and little survives to old space). */
interface Pending {
  readonly key: string;
  readonly ref: InvolvedObject;
  readonly type: EventType;
  readonly reason: string;
  readonly message: string;
  readonly done: () => void;
}

interface Seen {
  readonly name: string;
  readonly namespace: string;
  count: number;
  lastSeen: number;
}

export class EventRecorder {
  readonly #o: EventRecorderOptions;
  readonly #log: Logger;
  readonly #now: () => number;
  readonly #seen = new Map<string, Seen>();
  /** Waiting events, oldest first. */
  readonly #queue: Pending[] = [];
  /** Aggregation keys being written: one write at a time per key, so repeats count up instead of racing to create. */
  readonly #writing = new Set<string>();
  #seq = 0;

  constructor(opts: EventRecorderOptions) {
    this.#o = opts;
    this.#log = (opts.log ?? silentLogger()).child({ component: 'event-recorder' });
    this.#now = opts.now ?? realClock.now;
  }

  normal(obj: InvolvedObject | KubeObject, reason: string, message: string): Promise<void> {
    return this.event(obj, 'Normal', reason, message);
  }

  warning(obj: InvolvedObject | KubeObject, reason: string, message: string): Promise<void> {
    return this.event(obj, 'Warning', reason, message);
  }

  /** Records an Event; resolves when written (or when the failure is logged). Never rejects. */
  event(obj: InvolvedObject | KubeObject, type: EventType, reason: string, message: string): Promise<void> {
    let ref: InvolvedObject;
    try {
      ref = toInvolvedObject(obj);
    } catch (err) {
      this.#log.warn({ err: describeError(err), reason }, 'event for an object without name/kind dropped');
      return Promise.resolve();
    }
    const key = [ref.kind, ref.namespace ?? '', ref.name, ref.uid ?? '', type, reason, message].join('\u0000');
    return new Promise<void>((done) => {
      this.#queue.push({ key, ref, type, reason, message, done });
      this.#pump();
    });
  }

  /** Starts waiting writes, oldest first, up to the limit, skipping keys whose earlier event is still being written. */
  #pump(): void {
    const max = Math.max(1, this.#o.maxConcurrentWrites ?? 4);
    while (this.#writing.size < max && this.#queue.length > 0) {
      let i = 0;
      while (i < this.#queue.length && this.#writing.has(this.#queue[i]!.key)) i++;
      if (i === this.#queue.length) return;
      const e = i === 0 ? this.#queue.shift()! : this.#queue.splice(i, 1)[0]!;
      this.#writing.add(e.key);
      void this.#write(e.key, e.ref, e.type, e.reason, e.message).finally(() => {
        this.#writing.delete(e.key);
        e.done();
        this.#pump();
      });
    }
  }

  async #write(key: string, ref: InvolvedObject, type: EventType, reason: string, message: string): Promise<void> {
    const now = this.#now();
    const window = this.#o.aggregateWindowMs ?? 10 * 60_000;
    const seen = this.#seen.get(key);
    try {
      if (seen && now - seen.lastSeen < window) {
        const patched = await this.#bump(seen, now);
        if (patched) return;
      }
      await this.#create(key, ref, type, reason, message, now);
    } catch (err) {
      this.#seen.delete(key);
      this.#log.warn({ err: describeError(err), reason, object: `${ref.kind} ${ref.namespace ?? ''}/${ref.name}` }, 'cannot record event');
    }
  }

  // false when the Event is gone (expired by TTL): the caller creates a new one.
  async #bump(seen: Seen, now: number): Promise<boolean> {
    const count = seen.count + 1;
    try {
      await this.#o.client.patchNamespacedEvent(
        { name: seen.name, namespace: seen.namespace, body: { count, lastTimestamp: wireTime(now) } },
        patchOptions('merge'),
      );
    } catch (err) {
      if (isNotFound(err)) return false;
      throw err;
    }
    seen.count = count;
    seen.lastSeen = now;
    return true;
  }

  async #create(key: string, ref: InvolvedObject, type: EventType, reason: string, message: string, now: number): Promise<void> {
    // Events of cluster-scoped objects (nodes) live in "default", as with client-go.
    const namespace = ref.namespace || 'default';
    const name = `${ref.name}.${this.#uniqueSuffix(now)}`;
    const involvedObject: V1ObjectReference = {
      apiVersion: ref.apiVersion,
      kind: ref.kind,
      name: ref.name,
      namespace: ref.namespace,
      uid: ref.uid,
      resourceVersion: ref.resourceVersion,
      fieldPath: ref.fieldPath,
    };
    const body: CoreV1Event = {
      apiVersion: 'v1',
      kind: 'Event',
      metadata: { name, namespace },
      involvedObject,
      reason,
      message,
      type,
      count: 1,
      firstTimestamp: new Date(secondsPrecision(now)),
      lastTimestamp: new Date(secondsPrecision(now)),
      source: { component: this.#o.component, host: this.#o.host },
      reportingComponent: this.#o.component,
      reportingInstance: this.#o.host ?? '',
    };
    await this.#o.client.createNamespacedEvent({ namespace, body });
    this.#remember(key, { name, namespace, count: 1, lastSeen: now });
  }

  #remember(key: string, seen: Seen): void {
    this.#seen.delete(key);
    this.#seen.set(key, seen);
    const max = this.#o.maxEntries ?? 4096;
    while (this.#seen.size > max) {
      const oldest = this.#seen.keys().next().value;
      if (oldest === undefined) break;
      this.#seen.delete(oldest);
    }
  }

  // client-go names events "<object>.<unix nanos in hex>"; a sequence number keeps names unique within a millisecond.
  #uniqueSuffix(now: number): string {
    this.#seq = (this.#seq + 1) % 1_000_000;
    return (BigInt(now) * 1_000_000n + BigInt(this.#seq)).toString(16);
  }
}

function toInvolvedObject(obj: InvolvedObject | KubeObject): InvolvedObject {
  if ('name' in obj && typeof obj.name === 'string' && 'kind' in obj && typeof obj.kind === 'string') return obj as InvolvedObject;
  const k = obj as KubeObject;
  const name = k.metadata?.name;
  const kind = k.kind;
  if (!name || !kind) throw new Error('object needs kind and metadata.name');
  return {
    apiVersion: k.apiVersion,
    kind,
    name,
    namespace: k.metadata?.namespace,
    uid: k.metadata?.uid,
    resourceVersion: k.metadata?.resourceVersion,
  };
}

function secondsPrecision(ms: number): number {
  return Math.floor(ms / 1000) * 1000;
}

/** metav1.Time on the wire: RFC 3339, second precision. */
function wireTime(ms: number): string {
  return new Date(secondsPrecision(ms)).toISOString().replace(/\.\d{3}Z$/, 'Z');
}
