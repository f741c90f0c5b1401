// The node's pods by IP, fed by the pod informer (field selector spec.nodeName), answering "who is calling?".
// Fail closed: an IP two live pods claim, or that a pod being deleted holds, names nobody.

import type { PodView } from '../crds/types.js';
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
  private readonly byKey = new Map<string, PodView>();
  private readonly byIp = new Map<string, Set<string>>();
  private readonly changes = new ChangeNotifier();
  /** lookup()'s answers since the last change: the hot path asks the same few IPs over and over. */
  private readonly answers = new Map<string, CallerLookup>();
  private readonly lookupWaitMs: number;
  private readonly now: () => number;

  constructor(private readonly options: PodIndexOptions) {
    this.lookupWaitMs = options.lookupWaitMs ?? 1200;
    this.now = options.nowMs ?? realClock.now;
  }

  upsert(pod: PodView): void {
    this.answers.clear();
    const key = `${pod.namespace}/${pod.name}`;
    this.removeKey(key);
    if (pod.nodeName !== this.options.nodeName) return;
    this.byKey.set(key, pod);
    for (const ip of pod.podIPs) {
      let keys = this.byIp.get(ip);
      if (keys === undefined) this.byIp.set(ip, (keys = new Set()));
      keys.add(key);
    }
    this.changes.notify();
  }

  remove(namespace: string, name: string): void {
    this.answers.clear();
    if (this.removeKey(`${namespace}/${name}`)) this.changes.notify();
  }

  /** Replaces everything (after a relist). */
  replaceAll(pods: readonly PodView[]): void {
    this.answers.clear();
    this.byKey.clear();
    this.byIp.clear();
    for (const pod of pods) this.upsert(pod);
    this.changes.notify();
  }

  get size(): number {
    return this.byKey.size;
  }

  findByName(namespace: string, name: string): PodView | undefined {
    return this.byKey.get(`${namespace}/${name}`);
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
    const claimants = [...(this.byIp.get(ip) ?? [])]
      .map((key) => this.byKey.get(key))
      .filter((pod): pod is PodView => pod !== undefined)
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

  private removeKey(key: string): boolean {
    const old = this.byKey.get(key);
    if (old === undefined) return false;
    this.byKey.delete(key);
    for (const ip of old.podIPs) {
      const keys = this.byIp.get(ip);
      keys?.delete(key);
      if (keys?.size === 0) this.byIp.delete(ip);
    }
    return true;
  }
}
