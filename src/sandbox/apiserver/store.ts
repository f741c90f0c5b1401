// The emulator's etcd: objects indexed by resource and namespace, one global resourceVersion counter,
// a bounded event history for watches, and synchronous fan-out to live watchers.

import type { JsonObject } from './json.js';

export type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';

export interface StoredEvent {
  readonly rv: number;
  readonly key: string;
  readonly namespace: string;
  readonly type: EventType;
  readonly object: JsonObject;
  /** The object before a MODIFIED, so selector watches can turn it into ADDED/DELETED. */
  readonly prev?: JsonObject;
}

export interface Subscriber {
  readonly key: string;
  onEvent(ev: StoredEvent): void;
}

export class Store {
  private rv: number;
  private readonly data = new Map<string, Map<string, Map<string, JsonObject>>>();
  private history: StoredEvent[] = [];
  /** Every event with rv > compactedRv is still in `history`. */
  private compactedRv: number;
  private readonly subscribers = new Map<string, Set<Subscriber>>();

  constructor(private readonly historyLimit: number) {
    this.rv = 1;
    this.compactedRv = this.rv;
  }

  currentRv(): number {
    return this.rv;
  }

  oldestWatchableRv(): number {
    return this.compactedRv;
  }

  /** Reserves the next resourceVersion for a write about to be committed. */
  nextRv(): number {
    this.rv += 1;
    return this.rv;
  }

  get(key: string, namespace: string, name: string): JsonObject | undefined {
    return this.data.get(key)?.get(namespace)?.get(name);
  }

  /** Objects of one resource, in one namespace or all; sorted by namespace then name (etcd key order). */
  list(key: string, namespace?: string): JsonObject[] {
    const byNs = this.data.get(key);
    if (!byNs) return [];
    const namespaces = namespace === undefined ? [...byNs.keys()].sort() : [namespace];
    const out: JsonObject[] = [];
    for (const ns of namespaces) {
      const byName = byNs.get(ns);
      if (!byName) continue;
      for (const name of [...byName.keys()].sort()) out.push(byName.get(name) as JsonObject);
    }
    return out;
  }

  countIn(key: string, namespace: string): number {
    return this.data.get(key)?.get(namespace)?.size ?? 0;
  }

  keys(): string[] {
    return [...this.data.keys()];
  }

  /** Commits an object whose metadata.resourceVersion is `rv` (from nextRv) and tells watchers. */
  put(key: string, namespace: string, name: string, obj: JsonObject, rv: number, prev?: JsonObject): void {
    let byNs = this.data.get(key);
    if (!byNs) this.data.set(key, (byNs = new Map()));
    let byName = byNs.get(namespace);
    if (!byName) byNs.set(namespace, (byName = new Map()));
    byName.set(name, obj);
    this.record(prev ? { rv, key, namespace, type: 'MODIFIED', object: obj, prev } : { rv, key, namespace, type: 'ADDED', object: obj });
  }

  /** Removes an object; `finalObj` is what watchers see in the DELETED event (carrying `rv`). */
  remove(key: string, namespace: string, name: string, finalObj: JsonObject, rv: number): void {
    const byName = this.data.get(key)?.get(namespace);
    if (!byName?.delete(name)) return;
    if (byName.size === 0) this.data.get(key)?.delete(namespace);
    this.record({ rv, key, namespace, type: 'DELETED', object: finalObj });
  }

  /** Events of one resource after `rv`, or 'expired' if some of them were forgotten. */
  eventsSince(rv: number, key: string): StoredEvent[] | 'expired' {
    if (rv < this.compactedRv) return 'expired';
    let lo = 0;
    let hi = this.history.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((this.history[mid] as StoredEvent).rv <= rv) lo = mid + 1;
      else hi = mid;
    }
    const out: StoredEvent[] = [];
    for (let i = lo; i < this.history.length; i++) {
      const ev = this.history[i] as StoredEvent;
      if (ev.key === key) out.push(ev);
    }
    return out;
  }

  /** Forgets all history: a watch from any earlier resourceVersion now gets 410 Gone. */
  compact(): void {
    this.history = [];
    this.compactedRv = this.rv;
  }

  subscribe(sub: Subscriber): () => void {
    let set = this.subscribers.get(sub.key);
    if (!set) this.subscribers.set(sub.key, (set = new Set()));
    set.add(sub);
    return () => set.delete(sub);
  }

  subscribersOf(key: string): Subscriber[] {
    return [...(this.subscribers.get(key) ?? [])];
  }

  private record(ev: StoredEvent): void {
    this.history.push(ev);
    if (this.history.length > this.historyLimit * 2) {
      const drop = this.history.length - this.historyLimit;
      this.compactedRv = (this.history[drop - 1] as StoredEvent).rv;
      this.history = this.history.slice(drop);
    }
    const subs = this.subscribers.get(ev.key);
    if (subs) for (const s of [...subs]) s.onEvent(ev);
  }
}
