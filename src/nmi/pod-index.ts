// The node's pods by IP, answering "who is calling?": a view over the pod reflector's store, which keeps each pod of
// this node as its PodView (the transform at ingest) indexed by IP, so NMI holds every pod once.
// Fail closed: an IP two live pods claim, or that a pod being deleted holds, names nobody.

import type { PodView } from '../crds/types.js';
import { keyOf, Store } from '../kube/store.js';
import { ChangeNotifier } from './notify.js';
import type { CallerLookup, PodDirectory } from './ports.js';
import { realClock } from '../common/clock.js';

export interface PodIndexOptions {
  readonly nodeName: string;
  /** How long a lookup waits for an unknown IP to appear (the original retried 4 x 300 ms). */
  readonly lookupWaitMs?: number;
  readonly nowMs?: () => number;
}

export class PodIndex implements PodDirectory {
  /** The one copy of this node's pods: the pod reflector fills it (transform: `viewOf`), upsert/remove in tests. */
  readonly store = new Store<PodView>({ byIP: (pod) => pod.podIPs });
  private readonly changes = new ChangeNotifier();
  /** lookup()'s answers since the last change: the hot path asks the same few IPs over and over. */
  private readonly answers = new Map<string, CallerLookup>();
  private readonly lookupWaitMs: number;
  private readonly now: () => number;

  constructor(private readonly options: PodIndexOptions) {
    this.lookupWaitMs = options.lookupWaitMs ?? 1200;
    this.now = options.nowMs ?? realClock.now;
  }

  /** The pod's view, if it is one of this node's (the reflector's transform: other nodes' pods are not kept). */
  viewOf(pod: PodView | null): PodView | undefined {
    return pod !== null && pod.nodeName === this.options.nodeName ? pod : undefined;
  }

  /** The store changed under us (a reflector event): answers given so far may be stale, and waiters may look again. */
  changed(): void {
    this.answers.clear();
    this.changes.notify();
  }

  upsert(pod: PodView): void {
    const key = keyOf(pod.namespace, pod.name);
    if (this.viewOf(pod) === undefined) this.store.delete(key);
    else this.store.set(key, pod, { uid: pod.uid, resourceVersion: pod.resourceVersion });
    this.changed();
  }

  remove(namespace: string, name: string): void {
    if (this.store.delete(keyOf(namespace, name)) !== undefined) this.changed();
  }

  /** Replaces everything (after a relist). */
  replaceAll(pods: readonly PodView[]): void {
    this.store.clear();
    for (const pod of pods) {
      if (this.viewOf(pod) !== undefined) this.store.set(keyOf(pod.namespace, pod.name), pod, { uid: pod.uid, resourceVersion: pod.resourceVersion });
    }
    this.changed();
  }

  get size(): number {
    return this.store.size;
  }

  findByName(namespace: string, name: string): PodView | undefined {
    return this.store.get(keyOf(namespace, name));
  }

  async findByIp(ip: string, signal: AbortSignal): Promise<CallerLookup> {
    const deadline = this.now() + this.lookupWaitMs;
    for (;;) {
      const found = this.lookup(ip);
      if (found.kind !== 'unknown' || signal.aborted) return found;
      const remaining = deadline - this.now();
      if (remaining <= 0) return found;
      await this.changes.wait(remaining, signal);
    }
  }

  /** The decision at this instant, without waiting. */
  lookup(ip: string): CallerLookup {
    const known = this.answers.get(ip);
    if (known !== undefined) return known;
    const found = this.decide(ip);
    if (this.answers.size >= 4096) this.answers.clear();
    this.answers.set(ip, found);
    return found;
  }

  private decide(ip: string): CallerLookup {
    const claimants = this.store
      .byIndex('byIP', ip)
      // A finished pod keeps its IP in status after the IP went back to the pool; hostNetwork pods share the node's.
      .filter((pod) => !pod.hostNetwork && pod.phase !== 'Succeeded' && pod.phase !== 'Failed');
    if (claimants.length === 0) return { kind: 'unknown', reason: `failed to match pod IP ${ip} with a pod on this node` };
    const names = claimants.map((p) => `${p.namespace}/${p.name}`).sort();
    if (claimants.length > 1) return { kind: 'ambiguous', reason: `pod IP ${ip} is claimed by several pods: ${names.join(', ')}` };
    const pod = claimants[0];
    if (pod.deleting) return { kind: 'ambiguous', reason: `pod ${names[0]} with IP ${ip} is being deleted` };
    if (pod.phase !== 'Pending' && pod.phase !== 'Running') {
      return { kind: 'unknown', reason: `pod ${names[0]} with IP ${ip} is in phase ${pod.phase || 'unknown'}` };
    }
    return { kind: 'pod', pod };
  }
}
