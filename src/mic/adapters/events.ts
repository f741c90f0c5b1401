// EventSink over the kube EventRecorder, with client-go's per-object spam filter: each involved object gets a token
// bucket (burst 25, one more every 5 minutes), so 5,000 pods on one binding cannot flood the API server with
// "binding applied" events. The recorder itself aggregates identical repeats into a count.
import { realClock } from '../../common/clock.js';
import type { EventRecorder } from '../../kube/events.js';
import type { Logger } from 'pino';
import type { EventSink, EventSubject } from '../ports.js';

export interface EventSinkOptions {
  readonly burst?: number;
  readonly refillEveryMs?: number;
  /** Bound on objects remembered by the filter. */
  readonly maxObjects?: number;
  readonly now?: () => number;
  readonly log: Logger;
  /** Only the leader writes: events are dropped while this says false. */
  readonly enabled?: () => boolean;
}

export function kubeEventSink(recorder: EventRecorder, opts: EventSinkOptions): EventSink {
  const burst = opts.burst ?? 25;
  const refillEveryMs = opts.refillEveryMs ?? 300_000;
  const maxObjects = opts.maxObjects ?? 10_000;
  const now = opts.now ?? realClock.now;
  const buckets = new Map<string, { tokens: number; at: number }>();

  const allow = (s: EventSubject): boolean => {
    const key = `${s.kind}/${s.namespace}/${s.name}/${s.uid}`;
    const t = now();
    let b = buckets.get(key);
    if (b === undefined) {
      if (buckets.size >= maxObjects) buckets.delete(buckets.keys().next().value as string);
      b = { tokens: burst, at: t };
      buckets.set(key, b);
    }
    b.tokens = Math.min(burst, b.tokens + (t - b.at) / refillEveryMs);
    b.at = t;
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  };

  const emit = (s: EventSubject, type: 'Normal' | 'Warning', reason: string, message: string): void => {
    if (opts.enabled !== undefined && !opts.enabled()) return;
    if (!allow(s)) {
      opts.log.debug({ kind: s.kind, namespace: s.namespace, name: s.name, reason }, 'event dropped by the spam filter');
      return;
    }
    void recorder.event(
      {
        apiVersion: s.apiVersion,
        kind: s.kind,
        name: s.name,
        namespace: s.namespace,
        ...(s.uid !== '' ? { uid: s.uid } : {}),
        ...(s.resourceVersion ? { resourceVersion: s.resourceVersion } : {}),
      },
      type,
      reason,
      message,
    );
  };

  return {
    normal: (s, reason, message) => emit(s, 'Normal', reason, message),
    warning: (s, reason, message) => emit(s, 'Warning', reason, message),
  };
}
