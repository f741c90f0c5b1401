// What NMI's request handlers need from the rest of the process, as small interfaces: the composition root
// (nmi.ts) wires them to informers, the token provider and IMDS; tests wire them to the emulators.

import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AzureIdentity, PodView } from '../crds/types.js';
import type { DeclaredIdentities } from './core/node-path.js';
import type { SelectInput } from './core/select.js';
import type { Token } from './core/imds-body.js';
import type { CallerLookup, LiveCallerCheck } from './core/decide.js';

export type { CallerLookup, LiveCallerCheck } from './core/decide.js';

export interface PodDirectory {
  /** The one live (Pending/Running, not deleting) pod on this node with this IP; waits briefly for the cache. */
  findByIp(ip: string, signal: AbortSignal): Promise<CallerLookup>;
  /** The decision at this instant, without waiting (the hot path: no promise, no abort signal). */
  lookup?(ip: string): CallerLookup;
  /** A pod of this node by namespace/name (for /host/token). */
  findByName(namespace: string, name: string): PodView | undefined;
}

/** How far NMI may trust its pod view (`--pod-view-max-staleness`), and the live check used when it may not. */
export interface PodViewFreshness {
  /** True when the API server confirmed the pod view (a list, an event or a bookmark) within the bound. */
  isFresh(nowMs: number): boolean;
  /** Asks the API server about `pod` now: same uid, on this node, live, and at `ip` when given. */
  confirmLive(pod: PodView, ip: string | undefined): Promise<LiveCallerCheck>;
  /** The bound, for log lines. */
  readonly maxStalenessMs: number;
}

export interface IdentityState {
  /** Everything `selectIdentity` reads for this pod, from the informer caches, at this instant. */
  selectionFor(pod: PodView): Omit<SelectInput, 'pod' | 'request'>;
  /** What AzureIdentities declare, for the node path; undefined until NMI has listed them (then refuse: 503). */
  declaredIdentities(): DeclaredIdentities | undefined;
  /** The AzureIdentity as NMI watches it now (its spec.mode decides the token source); absent: unknown. */
  liveIdentity?(namespace: string, name: string): AzureIdentity | undefined;
  /** Resolves when anything identity-related changes (AAI, binding, identity, exception), or after `timeoutMs`. */
  waitForChange(timeoutMs: number, signal: AbortSignal): Promise<void>;
}

export interface TokenIssuer {
  /**
   * Throws a TokenError-like error whose HTTP status `statusForError` can map. `caller` (the pod's uid) pays for a
   * cache miss it starts (per-pod miss limit).
   */
  tokensFor(identity: AzureIdentity, resource: string, requestedClientId: string | undefined, caller?: string, federatedFor?: PodView): Promise<readonly Token[]>;
  /**
   * The node's own identity (exception or MIC pod): by client ID, by resource ID, or IMDS's default. `vet` runs on a
   * freshly fetched token before it is cached: an error it returns is thrown instead, and nothing is cached.
   * `caller` pays for a cache miss it starts, as for `tokensFor`.
   */
  nodeToken(
    resource: string,
    identity: NodeIdentityRequest,
    vet?: (token: Token) => Error | undefined,
    caller?: string,
  ): Promise<Token>;
  /** Forget cached node-identity tokens (a token the node path may no longer serve). */
  forgetNodeTokens?(): void;
  /** Tokens that can be served right now from a cache, without waiting; undefined when a fetch would be needed. */
  cachedTokensFor?(identity: AzureIdentity, resource: string, federatedFor?: PodView): readonly Token[] | undefined;
  /**
   * (`tokensFor`/`cachedTokensFor` with `federatedFor`: a Federated identity's token for that pod's service account.)
   * 403 when the upstream token endpoint or NMI's credential policy refused, 429 when the caller is over its miss
   * limit, 503 when it could not be reached.
   */
  statusForError(error: unknown): 403 | 429 | 503;
  /** True when IMDS answered 400 "Identity not found" (the node path passes that answer on as IMDS gave it). */
  isIdentityNotFound?(error: unknown): boolean;
  /**
   * The part of the error the pod may read: never a Secret's name, namespace, keys or content. Without it the pod
   * gets a generic sentence.
   */
  messageForError?(error: unknown): string;
  /** Seconds for Retry-After when the error is a throttling one. */
  retryAfterSeconds?(error: unknown): number | undefined;
}

/** Warning events on a pod (federated refusals); never throws. */
export interface PodEvents {
  warning(pod: PodView, reason: string, message: string): void;
}

export interface NodeIdentityRequest {
  readonly clientId?: string;
  readonly resourceId?: string;
  /** By principal ID: IMDS chooses, and the token it returns is vetted like any other. */
  readonly objectId?: string;
}

export interface MetadataProxy {
  /** Replays the request to IMDS and streams the answer back; answers 500 itself on transport failure. */
  forward(req: IncomingMessage, res: ServerResponse): Promise<void>;
}

export interface NmiMetrics {
  observeRequest(route: string, status: number, namespace: string, resource: string, seconds: number): void;
  countKubeError(operation: string): void;
  /** One call to IMDS or AAD for a token (`adal_token_msi`, `adal_token_msi_userassignedid`, `adal_token`). */
  observeUpstream(operation: string, seconds: number, failed: boolean): void;
  /**
   * A token request that waited for its identity (no AzureAssignedIdentity yet, or one still Created): `ready` when
   * the wait ended with an identity (or the node's) to use, `timeout` when the retry budget ran out or the pod's
   * assignments settled without one.
   */
  observeIdentityWait?(result: 'ready' | 'timeout', seconds: number): void;
}
