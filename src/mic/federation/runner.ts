// The federated credential writer as MIC's controller drives it, the way an ArmWorker carries VM identities: each
// cycle hands over the whole desired set (want), the writer makes it so (per identity, serialised, coalesced), and
// what it reports becomes FederationState, the plan's input that says which credentials are known to exist. When
// that state changes, or a Retry-After passes, onSettled asks for a cycle, whose plan marks the waiting AAIs Assigned.
//
// One writer per leadership term: stop() (lost leadership) stops it, and the next term starts a new one that lists
// every identity afresh.
import type { Logger } from 'pino';
import type { Clock } from '../../common/clock.js';
import type { DesiredIdentityCredentials } from '../core/federation.js';
import type { FederationRefusal, FederationState } from '../core/snapshot.js';
import {
  FederatedCredentialWriter,
  type FederatedCredentialPort,
  type FederatedCredentialWriterOptions,
  type FederatedSyncOutcome,
} from './credentials.js';

export interface FederationRunnerOptions {
  readonly port: FederatedCredentialPort;
  readonly clock: Clock;
  /** The cluster's service-account issuer, byte for byte. */
  readonly issuer: string;
  readonly log: Logger;
  /** Extra writer knobs (tests: short backoff). */
  readonly writer?: Omit<FederatedCredentialWriterOptions, 'port' | 'clock' | 'issuer' | 'logger'>;
}

export class FederationRunner {
  readonly #o: FederationRunnerOptions;
  #writer: FederatedCredentialWriter | undefined;
  #term: AbortController | undefined;
  #onSettled: () => void = () => undefined;
  /** The newest desired set not yet handed to the writer (a run is under way). */
  #next: readonly DesiredIdentityCredentials[] | undefined;
  #lastFingerprint = '';
  #running: Promise<void> | undefined;
  readonly #ready = new Map<string, ReadonlySet<string>>();
  readonly #refused = new Map<string, ReadonlyMap<string, FederationRefusal>>();
  #retryTimer = false;

  constructor(opts: FederationRunnerOptions) {
    this.#o = opts;
  }

  get issuer(): string {
    return this.#o.issuer;
  }

  /** What is known now, for the snapshot. */
  state(): FederationState {
    return { ready: this.#ready, refused: this.#refused };
  }

  /** Leadership began: a new writer; `onSettled` asks the controller for a cycle. */
  start(onSettled: () => void): void {
    this.stop();
    this.#term = new AbortController();
    this.#onSettled = onSettled;
    this.#writer = new FederatedCredentialWriter({
      ...this.#o.writer,
      port: this.#o.port,
      clock: this.#o.clock,
      issuer: this.#o.issuer,
      logger: this.#o.log,
    });
  }

  /** Lost leadership: the writer stops after its current ARM call; what was known is forgotten. */
  stop(): void {
    this.#term?.abort();
    this.#term = undefined;
    this.#writer?.stop();
    this.#writer = undefined;
    this.#next = undefined;
    this.#lastFingerprint = '';
    this.#ready.clear();
    this.#refused.clear();
    this.#retryTimer = false;
  }

  /**
   * The credentials every federated identity should carry, from this cycle. An unchanged set that was already
   * applied costs nothing (the writer keeps its list of each identity's credentials); a new one waits for the run
   * under way and then replaces whatever waited before it.
   */
  want(desired: readonly DesiredIdentityCredentials[]): void {
    if (this.#writer === undefined) return;
    const fingerprint = JSON.stringify(desired.map((d) => [d.key, d.credentials.map((c) => c.name)]));
    if (fingerprint === this.#lastFingerprint && this.#next === undefined) return;
    this.#lastFingerprint = fingerprint;
    this.#next = desired;
    if (this.#running === undefined) this.#running = this.#drain();
  }

  /**
   * The periodic Azure check (--identity-assignment-reconcile-interval): what ARM holds is listed again, so a
   * credential of ours deleted behind MIC's back is written again by the next cycle (level-triggered, as the
   * VM/VMSS check re-attaches what ARM lost).
   */
  resync(): void {
    if (this.#writer === undefined) return;
    this.#writer.invalidateAll();
    this.#lastFingerprint = '';
  }

  /** Resolves once no run is under way (tests, idle()). */
  async idle(): Promise<void> {
    while (this.#running !== undefined) await this.#running;
  }

  async #drain(): Promise<void> {
    try {
      for (;;) {
        const desired = this.#next;
        const writer = this.#writer;
        if (desired === undefined || writer === undefined) return;
        this.#next = undefined;
        const outcomes = await writer.reconcile(desired);
        if (writer !== this.#writer) return; // stopped meanwhile
        if (this.#apply(desired, outcomes)) this.#onSettled();
      }
    } catch (err) {
      this.#o.log.warn({ err }, 'federated credential sync failed');
      this.#later(1_000);
    } finally {
      this.#running = undefined;
    }
  }

  /** Folds outcomes into the state; true when it changed. A `retry` comes back after its delay. */
  #apply(desired: readonly DesiredIdentityCredentials[], outcomes: readonly FederatedSyncOutcome[]): boolean {
    const before = JSON.stringify([[...this.#ready].map(([k, v]) => [k, [...v]]), [...this.#refused].map(([k, v]) => [k, [...v]])]);
    const byKey = new Map(desired.map((d) => [d.key, d]));
    let retryMs: number | undefined;
    for (const o of outcomes) {
      switch (o.kind) {
        case 'synced': {
          this.#ready.set(o.key, new Set(o.ready.map((r) => r.subject)));
          const refused = new Map<string, FederationRefusal>();
          for (const s of o.skipped) {
            refused.set(s.subject, { code: s.code === 'FederatedCredentialLimit' ? 'FederatedCredentialLimit' : 'FederatedCredentialFailed', reason: s.reason });
          }
          for (const f of o.failed) {
            refused.set(f.subject, { code: 'FederatedCredentialFailed', reason: `Azure refused to ${f.operation} federated credential ${f.name}: ${f.reason}` });
          }
          this.#refused.set(o.key, refused);
          if (o.failed.length > 0) retryMs = Math.min(retryMs ?? Infinity, 30_000);
          if (!byKey.has(o.key) || byKey.get(o.key)?.credentials.length === 0) {
            this.#ready.delete(o.key);
            this.#refused.delete(o.key);
          }
          break;
        }
        case 'gone': {
          this.#ready.delete(o.key);
          const d = byKey.get(o.key);
          const refused = new Map<string, FederationRefusal>();
          for (const c of d?.credentials ?? []) {
            refused.set(c.subject, { code: 'FederatedCredentialFailed', reason: `user-assigned identity ${d?.name ?? o.key} does not exist in Azure: ${o.reason}` });
          }
          if (refused.size > 0) this.#refused.set(o.key, refused);
          else this.#refused.delete(o.key);
          break;
        }
        case 'retry':
          this.#o.log.info({ identity: o.key, retryAfterMs: o.retryAfterMs, reason: o.reason }, 'federated credentials: retrying later');
          retryMs = Math.min(retryMs ?? Infinity, o.retryAfterMs);
          break;
        case 'cancelled':
          break;
      }
    }
    // Whatever did not fully apply is written again: the next cycle's want() must not be a no-op.
    if (retryMs !== undefined) {
      this.#lastFingerprint = '';
      this.#later(retryMs);
    }
    const after = JSON.stringify([[...this.#ready].map(([k, v]) => [k, [...v]]), [...this.#refused].map(([k, v]) => [k, [...v]])]);
    return before !== after;
  }

  /** Asks for a cycle after `ms` (one pending at a time), unless the term ends first. */
  #later(ms: number): void {
    const term = this.#term;
    if (term === undefined || this.#retryTimer) return;
    this.#retryTimer = true;
    this.#lastFingerprint = '';
    void this.#o.clock.sleep(Math.max(0, ms), term.signal).then(
      () => {
        if (this.#term !== term) return;
        this.#retryTimer = false;
        this.#onSettled();
      },
      () => undefined,
    );
  }
}
