// Removes the node startup taint once NMI is ready (its iptables rules in place, its caches synced), so that the
// scheduler places no pod on a node whose metadata traffic is not yet intercepted. Bootstrap only: once the taint is
// gone (or was never there) this is done; a restarted NMI looks again.

import type { CoreV1Api } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { Backoff } from '../common/backoff.js';
import { sleep } from '../common/clock.js';
import { describeError, httpStatus, patchOptions, retryAfterMs } from '../kube/index.js';
import { startupTaintRemoval } from './core/startup-taint.js';

export type StartupTaintOutcome = 'removed' | 'absent' | 'stopped';

export interface StartupTaintOptions {
  readonly core: CoreV1Api;
  readonly node: string;
  /** The taint key (`--startup-taint`). */
  readonly key: string;
  readonly log: Logger;
  readonly signal: AbortSignal;
  readonly backoff?: Backoff;
}

export async function removeStartupTaint(opts: StartupTaintOptions): Promise<StartupTaintOutcome> {
  const { core, node, key, log, signal } = opts;
  const backoff = opts.backoff ?? new Backoff({ initialMs: 200, maxMs: 30_000 });
  for (;;) {
    if (signal.aborted) return 'stopped';
    try {
      const current = await core.readNode({ name: node });
      const removal = startupTaintRemoval(current.spec?.taints, key);
      if (removal === undefined) {
        log.info({ taint: key }, 'startup taint not on this node; nothing to remove');
        return 'absent';
      }
      await core.patchNode({ name: node, body: removal.patch }, patchOptions('json'));
      log.info({ taint: key, removed: removal.removed }, 'startup taint removed: pods may now be scheduled on this node');
      return 'removed';
    } catch (error) {
      if (signal.aborted) return 'stopped';
      const status = httpStatus(error);
      // 422 (a failed `test`: the list changed since it was read) and 409 mean our copy is stale: re-read soon.
      const stale = status === 422 || status === 409;
      const delay = retryAfterMs(error) ?? backoff.next();
      const fields = { err: describeError(error), taint: key, retryMs: delay };
      if (status === 401 || status === 403) {
        log.error({ ...fields, hint: "NMI's ClusterRole needs get and patch on core nodes (see the chart and config/deploy)" }, 'cannot remove the startup taint');
      } else if (status === 404) {
        log.error({ ...fields, hint: `no Node named '${node}': --node (NODE_NAME) must be spec.nodeName` }, 'cannot remove the startup taint');
      } else if (stale) {
        log.info(fields, 'node changed while removing the startup taint; reading it again');
      } else {
        log.warn(fields, 'removing the startup taint failed; retrying');
      }
      if (!(await sleep(delay, signal))) return 'stopped';
    }
  }
}
