// A stand-in for the original MIC's leader election (client-go 0.23 EndpointsResourceLock), written from its wire
// format and not with our lock code: the record is JSON in the Endpoints annotation
// control-plane.alpha.kubernetes.io/leader, times RFC3339 in whole seconds. It holds the lock and renews it
// every `renewMs` until stopped (and, like the original, never releases it: the record has to expire).
import type { CoreV1Api } from '@kubernetes/client-node';

export const ORIGINAL_LEADER_ANNOTATION = 'control-plane.alpha.kubernetes.io/leader';

export interface OriginalMicLock {
  /** Stops renewing (the record stays as last written). */
  stop(): Promise<void>;
  /** Epoch ms of the last successful renewal (0 before the first). */
  lastRenew(): number;
}

export function holdOriginalMicLock(
  core: CoreV1Api,
  opts: { namespace?: string; name?: string; identity: string; leaseDurationSeconds: number; renewMs?: number },
): OriginalMicLock {
  const namespace = opts.namespace ?? 'default';
  const name = opts.name ?? 'aad-pod-identity-mic';
  const acquired = Date.now();
  let last = 0;
  let running = true;
  const rfc3339 = (ms: number): string => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
  const renew = async (): Promise<void> => {
    const now = Date.now();
    const record = JSON.stringify({
      holderIdentity: opts.identity,
      leaseDurationSeconds: opts.leaseDurationSeconds,
      acquireTime: rfc3339(acquired),
      renewTime: rfc3339(now),
      leaderTransitions: 0,
    });
    let ep;
    try {
      ep = await core.readNamespacedEndpoints({ name, namespace });
    } catch {
      await core.createNamespacedEndpoints({ namespace, body: { metadata: { name, namespace, annotations: { [ORIGINAL_LEADER_ANNOTATION]: record } } } });
      last = now;
      return;
    }
    ep.metadata = { ...ep.metadata, annotations: { ...ep.metadata?.annotations, [ORIGINAL_LEADER_ANNOTATION]: record } };
    await core.replaceNamespacedEndpoints({ name, namespace, body: ep });
    last = now;
  };
  const loop = (async () => {
    while (running) {
      await renew().catch(() => undefined);
      await new Promise((r) => setTimeout(r, opts.renewMs ?? 250));
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
    },
    lastRenew: () => last,
  };
}

/** The leader election record in the Endpoints annotation, parsed (undefined when absent). */
export async function readOriginalLeaderRecord(core: CoreV1Api, namespace = 'default', name = 'aad-pod-identity-mic'): Promise<Record<string, unknown> | undefined> {
  try {
    const ep = await core.readNamespacedEndpoints({ name, namespace });
    const raw = ep.metadata?.annotations?.[ORIGINAL_LEADER_ANNOTATION];
    return raw === undefined ? undefined : (JSON.parse(raw) as Record<string, unknown>);
  } catch {
    return undefined;
  }
}
