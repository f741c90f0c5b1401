// The pod view's freshness from the pod reflector's last-heard time, and the live check as a GET of the pod.

import type { KubeConfig } from '@kubernetes/client-node';
import type { PodView } from '../../crds/types.js';
import { podViewFrom } from '../../crds/types.js';
import { describeError, getJson, httpStatus } from '../../kube/index.js';
import { compareLivePod } from '../core/live-caller.js';
import type { LiveCallerCheck, PodViewFreshness } from '../ports.js';

export interface PodFreshnessOptions {
  readonly kubeConfig: KubeConfig;
  readonly node: string;
  /** When the pod watch last heard from the API server (ms since the epoch; 0: never). */
  readonly lastHeardMs: () => number;
  readonly maxStalenessMs: number;
  /** A live GET that takes longer fails (the caller gets 503); default 2 s. */
  readonly timeoutMs?: number;
}

export function podViewFreshness(opts: PodFreshnessOptions): PodViewFreshness {
  const timeoutMs = opts.timeoutMs ?? 2_000;
  // Concurrent checks of one caller share one GET: a pod's burst must not become a burst at the API server.
  const inFlight = new Map<string, Promise<LiveCallerCheck>>();

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
      let pending = inFlight.get(key);
      if (pending === undefined) {
        pending = check(pod, ip).finally(() => inFlight.delete(key));
        inFlight.set(key, pending);
      }
      return pending;
    },
  };
}
