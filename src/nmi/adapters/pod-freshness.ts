// The pod view's freshness from the pod reflector's last-heard time, and the live check as a GET of the pod.

import type { KubeConfig } from '@kubernetes/client-node';
import type { PodView } from '../../crds/types.js';
import { podViewFrom } from '../../crds/types.js';
import { describeError, getJson, httpStatus } from '../../kube/index.js';
import { compareLivePod } from '../core/live-caller.js';
import type { LiveCallerCheck, PodViewFreshness } from '../ports.js';
import { realClock } from '../../common/clock.js';

export interface PodFreshnessOptions {
  readonly kubeConfig: KubeConfig;
  readonly node: string;
  /** When the pod watch last heard from the API server (ms since the epoch; 0: never). */
  readonly lastHeardMs: () => number;
  readonly maxStalenessMs: number;
  /** A live GET that takes longer fails (the caller gets 503); default 2 s. */
  readonly timeoutMs?: number;
  /** A confirmation is reused this long for the same pod and IP (default 1 s): one GET per pod per second at most. */
  readonly confirmationTtlMs?: number;
  readonly nowMs?: () => number;
}

export function podViewFreshness(opts: PodFreshnessOptions): PodViewFreshness {
  const timeoutMs = opts.timeoutMs ?? 2_000;
  const ttlMs = opts.confirmationTtlMs ?? 1_000;
  const now = opts.nowMs ?? realClock.now;
  // Concurrent checks of one caller share one GET, and a confirmation serves for ttlMs: a pod's burst must not become
  // a burst at an API server that is likely struggling already (its watch went silent).
  const inFlight = new Map<string, Promise<LiveCallerCheck>>();
  const confirmed = new Map<string, number>();

  async function check(pod: PodView, ip: string | undefined): Promise<LiveCallerCheck> {
    const path = `/api/v1/namespaces/${encodeURIComponent(pod.namespace)}/pods/${encodeURIComponent(pod.name)}`;
    let live: PodView | null;
    try {
      live = podViewFrom(await getJson(opts.kubeConfig, path, {}, AbortSignal.timeout(timeoutMs)));
    } catch (error) {
      if (httpStatus(error) !== 404) return { kind: 'unavailable', reason: `GET pod ${pod.namespace}/${pod.name} failed: ${describeError(error)}` };
      live = null;
    }
    const compared = compareLivePod(pod, live, opts.node, ip);
    return compared.ok ? { kind: 'confirmed' } : { kind: 'refuted', reason: compared.reason };
  }

  return {
    maxStalenessMs: opts.maxStalenessMs,
    isFresh: (nowMs) => nowMs - opts.lastHeardMs() <= opts.maxStalenessMs,
    confirmLive(pod, ip) {
      const key = `${pod.uid}\u0000${ip ?? ''}`;
      const until = confirmed.get(key);
      if (until !== undefined) {
        if (now() < until) return Promise.resolve({ kind: 'confirmed' });
        confirmed.delete(key);
      }
      let pending = inFlight.get(key);
      if (pending === undefined) {
        pending = check(pod, ip)
          .catch((error: unknown): LiveCallerCheck => ({ kind: 'unavailable', reason: `live check failed: ${describeError(error)}` }))
          .then((result) => {
          inFlight.delete(key);
          if (result.kind === 'confirmed' && ttlMs > 0) {
            if (confirmed.size >= 4096) confirmed.clear();
            confirmed.set(key, now() + ttlMs);
          }
          return result;
        });
        inFlight.set(key, pending);
      }
      return pending;
    },
  };
}
