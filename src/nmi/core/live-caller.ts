// Whether the pod the API server returns right now is still the caller NMI's cached view names: used when that view
// is too old to trust (a silent watch may have hidden a deletion and the IP's reuse by another pod).

import type { PodView } from '../../crds/types.js';

export type LiveComparison = { readonly ok: true } | { readonly ok: false; readonly reason: string };

/**
 * `live` is the pod as the API server returned it by namespace/name (null: not found). It confirms `cached` only if it
 * is the same object (uid), on this node, not being deleted, in phase Pending or Running (as the pod index accepts),
 * not host-network, and, when the caller came from `ip`, still holding that IP.
 */
export function compareLivePod(cached: PodView, live: PodView | null, node: string, ip: string | undefined): LiveComparison {
  const name = `${cached.namespace}/${cached.name}`;
  if (live === null) return { ok: false, reason: `pod ${name} no longer exists` };
  if (live.uid !== cached.uid) return { ok: false, reason: `pod ${name} was recreated (uid ${cached.uid} is gone)` };
  if (live.nodeName !== node) return { ok: false, reason: `pod ${name} is not on node ${node}` };
  if (live.deleting) return { ok: false, reason: `pod ${name} is being deleted` };
  if (live.phase !== 'Pending' && live.phase !== 'Running') {
    return { ok: false, reason: `pod ${name} is in phase ${live.phase || 'unknown'}` };
  }
  if (live.hostNetwork) return { ok: false, reason: `pod ${name} uses the host network` };
  if (ip !== undefined && !live.podIPs.includes(ip)) return { ok: false, reason: `pod ${name} no longer has IP ${ip}` };
  return { ok: true };
}
