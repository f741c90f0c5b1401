// MIC's federated identity credential writer: makes one user-assigned identity carry the credentials the core
// wants (src/mic/core/federation.ts), through @azure/arm-msi.
//
// Decisions (callers depend on them):
// - One worker per identity, at most one ARM call in flight under it: Azure refuses concurrent writes under one
//   identity (409 ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity). Identities run in parallel.
// - Coalesced: a sync with the same credential set joins the run under way; a different set replaces any waiting one
//   and makes the run under way re-plan after its current call (the newest set wins). Every waiter gets the outcome
//   of the run that finally covered it.
// - Only our credentials are updated or deleted (isOwnFederatedCredential: our prefix, this cluster's issuer, the name
//   we would give that subject). A foreign credential with the same issuer, subject and audience counts as present.
// - The 20-per-identity limit is a skip with a reason in the outcome, never an ARM call that must fail.
// - 409 and 5xx/network errors are retried after backoff, 429 after Retry-After (when that wait is at most
//   maxThrottleWaitMs, else the outcome says when to come back); a missing identity (404) is the outcome `gone`.
// - The list of credentials is kept per identity and re-read when older than relistAfterMs or after any failure,
//   so a steady cluster costs no ARM call per sync.
import type { TokenCredential } from '@azure/core-auth';
import type { ManagedServiceIdentityClient } from '@azure/arm-msi';
import type { Logger } from 'pino';
import { backoffDelay, type BackoffOptions } from '../../common/backoff.js';
import type { Clock } from '../../common/clock.js';
import { abortReason, isAbortError } from '../../common/errors.js';
import {
  FEDERATED_AUDIENCE,
  isOwnFederatedCredential,
  MAX_FEDERATED_CREDENTIALS,
} from '../../crds/federation.js';
import { classifyArmError, type ArmErrorClass } from '../arm/errors.js';
import type { DesiredCredential, DesiredIdentityCredentials } from '../core/federation.js';

/* ------------------------------------------------------------------------------------------- the port */

/** Where a user-assigned identity lives in ARM. */
export interface IdentityLocation {
  readonly subscriptionID: string;
  readonly resourceGroup: string;
  readonly name: string;
}

/** A federated identity credential as ARM holds it. */
export interface FederatedCredentialRecord {
  readonly name: string;
  readonly issuer: string;
  readonly subject: string;
  readonly audiences: readonly string[];
}

/** The three calls MIC makes under an identity. Errors are thrown as the SDK throws them (RestError). */
export interface FederatedCredentialPort {
  list(identity: IdentityLocation): Promise<FederatedCredentialRecord[]>;
  createOrUpdate(identity: IdentityLocation, credential: DesiredCredential): Promise<FederatedCredentialRecord>;
  delete(identity: IdentityLocation, name: string): Promise<void>;
}

export interface MsiPortOptions {
  readonly credential: TokenCredential;
  /** ARM base URL (https). */
  readonly endpoint: string;
  /** Token scope (sovereign clouds have their own). */
  readonly scope?: string;
  /** Extra CA to trust (the emulator's). */
  readonly caPem?: string;
}

/** The port over @azure/arm-msi, one client per subscription, with the SDK's own retries off (the writer owns them). */
export function msiFederatedCredentialPort(opts: MsiPortOptions): FederatedCredentialPort {
  const clients = new Map<string, ManagedServiceIdentityClient>();
  const clientFor = async (subscriptionID: string): Promise<ManagedServiceIdentityClient> => {
    let client = clients.get(subscriptionID);
    if (client === undefined) {
      const { ManagedServiceIdentityClient: Client } = await loadArmMsi();
      client = clients.get(subscriptionID) ?? new Client(opts.credential, subscriptionID, {
        endpoint: opts.endpoint,
        credentialScopes: [opts.scope ?? 'https://management.azure.com/.default'],
        retryOptions: { maxRetries: 0 },
        ...(opts.caPem ? { tlsOptions: { ca: opts.caPem } } : {}),
      });
      clients.set(subscriptionID, client);
    }
    return client;
  };
  return {
    async list(id) {
      const out: FederatedCredentialRecord[] = [];
      for await (const fic of (await clientFor(id.subscriptionID)).federatedIdentityCredentials.list(id.resourceGroup, id.name)) {
        out.push(recordOf(fic));
      }
      return out;
    },
    async createOrUpdate(id, c) {
      const made = await (await clientFor(id.subscriptionID)).federatedIdentityCredentials.createOrUpdate(id.resourceGroup, id.name, c.name, {
        issuer: c.issuer,
        subject: c.subject,
        audiences: [...c.audiences],
      });
      return recordOf({ ...made, name: made.name ?? c.name });
    },
    async delete(id, name) {
      await (await clientFor(id.subscriptionID)).federatedIdentityCredentials.delete(id.resourceGroup, id.name, name);
    },
  };
}

/**
 * @azure/arm-msi is loaded on the first credential call: a MIC with no Federated identity never needs it, and its
 * modules cost ~3 MB of live heap, which V8 lets grow to ~4x before a full collection.
 */
let armMsi: Promise<typeof import('@azure/arm-msi')> | undefined;
function loadArmMsi(): Promise<typeof import('@azure/arm-msi')> {
  armMsi ??= import('@azure/arm-msi');
  return armMsi;
}

function recordOf(fic: { name?: string; issuer?: string; subject?: string; audiences?: string[] }): FederatedCredentialRecord {
  return { name: fic.name ?? '', issuer: fic.issuer ?? '', subject: fic.subject ?? '', audiences: fic.audiences ?? [] };
}

/* ---------------------------------------------------------------------------------------- the outcome */

export interface ReadyCredential {
  readonly subject: string;
  readonly name: string;
  /** Not made by MIC (a user's credential with the same issuer, subject and audience). */
  readonly foreign: boolean;
  /** When this writer created or rewrote it (Azure AD may take minutes to honour it); absent when it was there. */
  readonly writtenAtMs?: number;
}

export type CredentialSkipCode = 'FederatedCredentialLimit' | 'ForeignCredentialConflict';

export interface CredentialSkip {
  readonly subject: string;
  readonly name: string;
  readonly code: CredentialSkipCode;
  /** For events and explain: names the identity and the count, never another tenant's objects. */
  readonly reason: string;
}

export interface CredentialFailure {
  readonly name: string;
  readonly subject: string;
  readonly operation: 'create' | 'update' | 'delete';
  readonly status?: number;
  readonly reason: string;
}

export type FederatedSyncOutcome =
  | {
      readonly kind: 'synced';
      readonly key: string;
      /** Desired credentials that exist now, by subject order. */
      readonly ready: readonly ReadyCredential[];
      readonly created: readonly string[];
      readonly updated: readonly string[];
      readonly deleted: readonly string[];
      readonly skipped: readonly CredentialSkip[];
      /** ARM refused these for good (4xx other than 404/409/429); the rest of the set was still applied. */
      readonly failed: readonly CredentialFailure[];
    }
  /** The user-assigned identity does not exist (404). */
  | { readonly kind: 'gone'; readonly key: string; readonly reason: string }
  /** Throttled longer than the writer waits in-line, or retries ran out: sync again after retryAfterMs. */
  | { readonly kind: 'retry'; readonly key: string; readonly reason: string; readonly retryAfterMs: number }
  /** stop() was called (lost leadership). */
  | { readonly kind: 'cancelled'; readonly key: string };

/* ----------------------------------------------------------------------------------------- the writer */

export interface FederatedCredentialWriterOptions {
  readonly port: FederatedCredentialPort;
  readonly clock: Clock;
  /** The cluster's service-account issuer, exactly as its tokens carry it (ownership is judged against it). */
  readonly issuer: string;
  /** Default 20 (Azure's limit). */
  readonly maxPerIdentity?: number;
  /** Backoff for 409 and transient errors; default 1 s doubling to 30 s. */
  readonly backoff?: BackoffOptions;
  /** Attempts per ARM call before the outcome is `retry`; default 6. */
  readonly maxAttempts?: number;
  /** Longest Retry-After waited in-line; a longer one ends the run with `retry`. Default 60 s. */
  readonly maxThrottleWaitMs?: number;
  /** Re-read an identity's credentials when the copy is older than this; default 5 min. */
  readonly relistAfterMs?: number;
  readonly logger?: Logger;
}

const DEFAULT_BACKOFF: BackoffOptions = { initialMs: 1_000, maxMs: 30_000 };

export class FederatedCredentialWriter {
  private readonly workers = new Map<string, IdentityWorker>();
  /** The last set asked for per identity: where it lives, so reconcile() can empty it once nothing wants it. */
  private readonly lastDesired = new Map<string, DesiredIdentityCredentials>();
  private readonly stopping = new AbortController();

  constructor(private readonly opts: FederatedCredentialWriterOptions) {}

  /**
   * Syncs every identity of `desired` (all of MIC's federated identities), and removes our credentials from each
   * identity this writer synced before that is missing from it (its AzureIdentity was deleted or switched back to
   * Attached); such an identity is forgotten once that is done. Outcomes in the order synced: `desired`, then those.
   * Identities seen only by an earlier MIC process are not known here.
   */
  async reconcile(desired: readonly DesiredIdentityCredentials[]): Promise<FederatedSyncOutcome[]> {
    const wanted = new Set(desired.map((d) => d.key));
    const stale = [...this.lastDesired.values()]
      .filter((d) => !wanted.has(d.key))
      .map((d) => ({ ...d, credentials: [], azureIdentities: [] }));
    const outcomes = await Promise.all([...desired, ...stale].map((d) => this.sync(d)));
    for (const o of outcomes) {
      const done = o.kind === 'gone' || (o.kind === 'synced' && o.failed.length === 0);
      if (!wanted.has(o.key) && done && this.lastDesired.get(o.key)?.credentials.length === 0) {
        this.lastDesired.delete(o.key);
        if (this.workers.get(o.key)?.busy() === false) this.workers.delete(o.key);
      }
    }
    return outcomes;
  }

  /** Makes the identity carry exactly `desired.credentials` of ours (and no other of ours). */
  sync(desired: DesiredIdentityCredentials): Promise<FederatedSyncOutcome> {
    if (this.stopping.signal.aborted) return Promise.resolve({ kind: 'cancelled', key: desired.key });
    this.lastDesired.set(desired.key, desired);
    let worker = this.workers.get(desired.key);
    if (worker === undefined) {
      worker = new IdentityWorker(desired.key, this.opts, this.stopping.signal, () => {
        if (this.workers.get(desired.key) === worker && worker?.idle()) this.workers.delete(desired.key);
      });
      this.workers.set(desired.key, worker);
    }
    return worker.submit(desired);
  }

  /** Forget what is known of an identity's credentials (the next sync lists them again). */
  invalidate(key: string): void {
    this.workers.get(key)?.invalidate();
  }

  /** Forget what is known of every identity's credentials: the next reconcile lists each one from ARM again. */
  invalidateAll(): void {
    for (const worker of this.workers.values()) worker.invalidate();
  }

  /** Cancels every wait; runs end with `cancelled` after their current ARM call. Later syncs are cancelled at once. */
  stop(): void {
    this.stopping.abort(new DOMException('federated credential writer stopped', 'AbortError'));
  }
}

/* ------------------------------------------------------------------------------------------ internals */

interface Submission {
  readonly desired: DesiredIdentityCredentials;
  readonly fingerprint: string;
  readonly waiters: Array<(o: FederatedSyncOutcome) => void>;
}

class Gone extends Error {}
class RetryLater extends Error {
  constructor(
    message: string,
    readonly retryAfterMs: number,
  ) {
    super(message);
  }
}
class Refused extends Error {
  constructor(readonly cls: Extract<ArmErrorClass, { kind: 'fatal' | 'identity' }>) {
    super(cls.message);
  }
}
class Superseded extends Error {}

const DUPLICATE_PAIR = /issuer and subject combination already exists/i;

class IdentityWorker {
  private running: Submission | undefined;
  private waiting: Submission | undefined;
  private known: { records: Map<string, FederatedCredentialRecord>; atMs: number } | undefined;
  private readonly maxPer: number;
  private readonly backoff: BackoffOptions;
  private readonly maxAttempts: number;
  private readonly maxThrottleWaitMs: number;
  private readonly relistAfterMs: number;
  /** When a run fails in a way no delay was asked for, come back after the longest backoff. */
  private readonly giveBackMs: number;

  constructor(
    private readonly key: string,
    private readonly opts: FederatedCredentialWriterOptions,
    private readonly signal: AbortSignal,
    private readonly onIdle: () => void,
  ) {
    this.maxPer = opts.maxPerIdentity ?? MAX_FEDERATED_CREDENTIALS;
    this.backoff = opts.backoff ?? DEFAULT_BACKOFF;
    this.maxAttempts = Math.max(1, opts.maxAttempts ?? 6);
    this.maxThrottleWaitMs = opts.maxThrottleWaitMs ?? 60_000;
    this.relistAfterMs = opts.relistAfterMs ?? 300_000;
    this.giveBackMs = this.backoff.maxMs ?? DEFAULT_BACKOFF.maxMs ?? 30_000;
  }

  busy(): boolean {
    return this.running !== undefined || this.waiting !== undefined;
  }

  idle(): boolean {
    return this.running === undefined && this.waiting === undefined && this.known === undefined;
  }

  invalidate(): void {
    this.known = undefined;
  }

  submit(desired: DesiredIdentityCredentials): Promise<FederatedSyncOutcome> {
    const fingerprint = JSON.stringify(desired.credentials.map((c) => [c.name, c.issuer, c.subject, c.audiences]));
    return new Promise((resolve) => {
      if (this.running?.fingerprint === fingerprint && this.waiting === undefined) {
        this.running.waiters.push(resolve);
        return;
      }
      const carried = this.waiting?.waiters ?? [];
      this.waiting = { desired, fingerprint, waiters: [...carried, resolve] };
      if (this.running === undefined) void this.loop();
    });
  }

  private async loop(): Promise<void> {
    while (this.waiting !== undefined) {
      const current = this.waiting;
      this.waiting = undefined;
      this.running = current;
      let outcome: FederatedSyncOutcome | undefined;
      try {
        outcome = await this.run(current.desired);
      } catch (err) {
        if (err instanceof Superseded) {
          // The newer submission takes over every waiter of this one.
          const next = this.waiting as Submission | undefined;
          if (next !== undefined) next.waiters.unshift(...current.waiters);
          else this.waiting = current;
        } else {
          this.known = undefined;
          outcome = this.failureOutcome(err);
        }
      }
      this.running = undefined;
      if (outcome !== undefined) for (const w of current.waiters) w(outcome);
    }
    if (this.known === undefined) this.onIdle();
  }

  private failureOutcome(err: unknown): FederatedSyncOutcome {
    if (err instanceof Gone) return { kind: 'gone', key: this.key, reason: err.message };
    if (err instanceof RetryLater) return { kind: 'retry', key: this.key, reason: err.message, retryAfterMs: err.retryAfterMs };
    if (isAbortError(err) || this.signal.aborted) return { kind: 'cancelled', key: this.key };
    if (err instanceof Refused) {
      return { kind: 'retry', key: this.key, reason: `ARM refused listing the credentials: ${err.message}`, retryAfterMs: this.giveBackMs };
    }
    const message = err instanceof Error ? err.message : String(err);
    return { kind: 'retry', key: this.key, reason: message, retryAfterMs: this.giveBackMs };
  }

  private async run(desired: DesiredIdentityCredentials): Promise<FederatedSyncOutcome> {
    const created: string[] = [];
    const updated: string[] = [];
    const deleted: string[] = [];
    const failed: CredentialFailure[] = [];
    const written = new Map<string, number>();
    // Names whose write ARM refused in this run: not tried again before the next run.
    const refused = new Set<string>();
    let relistedForDuplicate = false;

    for (;;) {
      const records = await this.records(desired);
      const plan = this.plan(desired, records, refused);
      const step = plan.steps[0];
      if (step === undefined) {
        return {
          kind: 'synced',
          key: this.key,
          ready: plan.ready.map((r) => {
            const at = written.get(r.name);
            return at === undefined ? r : { ...r, writtenAtMs: at };
          }),
          created,
          updated,
          deleted,
          skipped: plan.skipped,
          failed,
        };
      }
      this.checkSuperseded(desired);
      try {
        if (step.operation === 'delete') {
          await this.call(`delete ${step.name}`, () => this.opts.port.delete(desired, step.name));
          this.known?.records.delete(step.name);
          deleted.push(step.name);
        } else {
          const made = await this.call(`${step.operation} ${step.name}`, () => this.opts.port.createOrUpdate(desired, step.credential));
          this.known?.records.set(step.name, { ...made, name: step.name });
          (step.operation === 'create' ? created : updated).push(step.name);
          written.set(step.name, this.opts.clock.now());
        }
        this.opts.logger?.info({ identity: desired.resourceID, credential: step.name, operation: step.operation }, 'federated identity credential written');
      } catch (err) {
        if (!(err instanceof Refused)) throw err;
        if (step.operation !== 'delete' && DUPLICATE_PAIR.test(err.message) && !relistedForDuplicate) {
          // Someone made a credential for this issuer and subject meanwhile: read the list again and re-plan.
          relistedForDuplicate = true;
          this.known = undefined;
          continue;
        }
        failed.push({
          name: step.name,
          subject: step.operation === 'delete' ? (this.known?.records.get(step.name)?.subject ?? '') : step.credential.subject,
          operation: step.operation,
          ...(err.cls.status === undefined ? {} : { status: err.cls.status }),
          reason: err.message,
        });
        this.opts.logger?.warn({ identity: desired.resourceID, credential: step.name, operation: step.operation, err: err.message }, 'ARM refused a federated identity credential write');
        refused.add(step.name);
      }
    }
  }

  private checkSuperseded(desired: DesiredIdentityCredentials): void {
    if (this.signal.aborted) throw abortReason(this.signal);
    const next = this.waiting;
    if (next !== undefined && next.desired !== desired) throw new Superseded();
  }

  private async records(desired: DesiredIdentityCredentials): Promise<Map<string, FederatedCredentialRecord>> {
    const now = this.opts.clock.now();
    if (this.known !== undefined && now - this.known.atMs < this.relistAfterMs) return this.known.records;
    const list = await this.call('list', () => this.opts.port.list(desired));
    this.known = { records: new Map(list.map((r) => [r.name, r])), atMs: this.opts.clock.now() };
    return this.known.records;
  }

  /** The next writes, deletes first (they free slots for the creates), then updates and creates in subject order. */
  private plan(
    desired: DesiredIdentityCredentials,
    records: Map<string, FederatedCredentialRecord>,
    excluded: ReadonlySet<string>,
  ): Plan {
    const issuer = this.opts.issuer;
    const wanted = new Set(desired.credentials.map((c) => c.subject));
    const all = [...records.values()];
    const ready: ReadyCredential[] = [];
    const skipped: CredentialSkip[] = [];
    const steps: Step[] = [];
    for (const r of all) {
      if (isOwnFederatedCredential(r, issuer) && !wanted.has(r.subject) && !excluded.has(r.name)) {
        steps.push({ operation: 'delete', name: r.name });
      }
    }
    let count = all.length - steps.length;
    const creates: DesiredCredential[] = [];
    for (const c of desired.credentials) {
      const same = all.filter((r) => r.issuer === c.issuer && r.subject === c.subject);
      const own = same.find((r) => r.name === c.name);
      const usable = same.find((r) => r.audiences.includes(FEDERATED_AUDIENCE));
      if (own !== undefined) {
        if (sameAudiences(own.audiences, c.audiences)) ready.push({ subject: c.subject, name: c.name, foreign: false });
        else if (!excluded.has(c.name)) steps.push({ operation: 'update', name: c.name, credential: c });
      } else if (usable !== undefined) {
        ready.push({ subject: c.subject, name: usable.name, foreign: true });
      } else if (same.length > 0) {
        skipped.push({
          subject: c.subject,
          name: c.name,
          code: 'ForeignCredentialConflict',
          reason:
            `identity ${desired.name} already has a federated credential not made by MIC for subject ${c.subject} ` +
            `whose audiences do not include ${FEDERATED_AUDIENCE}; Azure allows one per issuer and subject: fix or delete it`,
        });
      } else if (!excluded.has(c.name)) {
        creates.push(c);
      }
    }
    for (const c of creates) {
      if (count < this.maxPer) {
        steps.push({ operation: 'create', name: c.name, credential: c });
        count++;
      } else {
        const foreign = all.filter((r) => !isOwnFederatedCredential(r, issuer)).length;
        skipped.push({
          subject: c.subject,
          name: c.name,
          code: 'FederatedCredentialLimit',
          reason:
            `identity ${desired.name} already has ${this.maxPer} federated identity credentials (Azure's limit; ` +
            `${foreign} not made by MIC), so service account ${c.subject} gets none: use another identity for it, ` +
            `or remove the bindings of service accounts that no longer need this one`,
        });
      }
    }
    ready.sort((a, b) => (a.subject < b.subject ? -1 : a.subject > b.subject ? 1 : 0));
    return { steps, ready, skipped };
  }

  /** One ARM call with the writer's retry rules. */
  private async call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      if (this.signal.aborted) throw abortReason(this.signal);
      try {
        return await fn();
      } catch (err) {
        const cls = classifyArmError(err, this.opts.clock.now());
        const computed = backoffDelay(attempt, this.backoff);
        switch (cls.kind) {
          case 'notFound':
            throw new Gone(`the user-assigned identity ${this.key} does not exist (${what}): ${cls.message}`);
          case 'throttled': {
            const wait = cls.retryAfterMs ?? computed;
            if (wait > this.maxThrottleWaitMs || attempt + 1 >= this.maxAttempts) {
              throw new RetryLater(`ARM throttled ${what} under ${this.key}`, wait);
            }
            this.opts.logger?.info({ identity: this.key, operation: what, delayMs: wait }, 'ARM throttled a federated credential call; waiting as asked');
            await this.opts.clock.sleep(wait, this.signal);
            break;
          }
          case 'retryable': {
            const wait = Math.max(computed, cls.retryAfterMs ?? 0);
            if (attempt + 1 >= this.maxAttempts) {
              throw new RetryLater(`${what} under ${this.key} failed ${attempt + 1} times: ${cls.message}`, wait);
            }
            this.opts.logger?.info({ identity: this.key, operation: what, delayMs: wait, status: cls.status, code: cls.code }, 'federated credential call failed; retrying');
            await this.opts.clock.sleep(wait, this.signal);
            break;
          }
          default:
            throw new Refused(cls);
        }
      }
    }
  }
}

type Step =
  | { readonly operation: 'delete'; readonly name: string }
  | { readonly operation: 'create' | 'update'; readonly name: string; readonly credential: DesiredCredential };

interface Plan {
  readonly steps: readonly Step[];
  readonly ready: readonly ReadyCredential[];
  readonly skipped: readonly CredentialSkip[];
}

function sameAudiences(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}
