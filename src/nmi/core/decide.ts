// The one decision for a pod's IMDS token request: from what NMI knows (the facts), either the answer, or which fact
// it still needs. The shell gathers what it can synchronously (the pod index, the identity state, the token cache) and
// calls decide; a warm request is answered from that first call, with no promise. Only when a fact needs a wait (the
// pod cache, an assignment, a live check of the pod, a token fetch) does the shell fetch it and call decide again, so
// the cached answer and the fetched answer go through the very same checks, in the same order.

import { namespacePolicyDenial } from './namespace-policy.js';
import type { NamespacePolicies } from '../../crds/namespace-policy.js';
import { identityMode, type AzureIdentity, type PodView } from '../../crds/types.js';
import { IDENTITY_NOT_FOUND, METADATA_HEADER_MISSING, type Token } from './imds-body.js';
import type { Selection } from './select.js';
import type { ParsedTokenRequest, TokenRequest } from './token-request.js';

export type CallerLookup =
  | { readonly kind: 'pod'; readonly pod: PodView }
  | { readonly kind: 'unknown'; readonly reason: string }
  | { readonly kind: 'ambiguous'; readonly reason: string };

export type LiveCallerCheck =
  | { readonly kind: 'confirmed' }
  /** The API server contradicts the cached view: the caller is not the pod the cache names. */
  | { readonly kind: 'refuted'; readonly reason: string }
  /** The API server could not be asked (error, timeout): nothing can be confirmed. */
  | { readonly kind: 'unavailable'; readonly reason: string };

/** Why a token request got no token: one of NMI's refusals (docs/audit.md lists them with their statuses). */
export type RefusalKind =
  | 'bad-request'
  | 'metadata-header-missing'
  | 'unknown-caller'
  | 'ambiguous-caller'
  | 'caller-changed'
  | 'pod-not-found'
  | 'not-assigned'
  | 'no-identity'
  | 'unbound'
  | 'namespace-policy'
  | 'federation-disabled'
  | 'invalid-mode'
  | 'identity-changing'
  | 'node-path-declared-identity'
  | 'identities-not-listed'
  | 'stale-view'
  | 'too-many-waiting'
  | 'miss-rate'
  | 'upstream-error'
  | 'no-token'
  | 'client-gone'
  | 'internal-error';

/** A failed upstream call as the token issuer classifies it: what the pod may read, and nothing else. */
export interface UpstreamFailure {
  readonly status: 403 | 429 | 503;
  /** The part of the error a pod may read (never a Secret's name, keys or content). */
  readonly publicMessage: string;
  /** Seconds for Retry-After when throttled. */
  readonly retryAfterSeconds?: number;
  /** The error itself, for NMI's log only. */
  readonly error: unknown;
}

export interface DecidePolicy {
  readonly metadataHeaderRequired: boolean;
  readonly setRetryAfterHeader: boolean;
  /** Under enforce, the Namespace policies NMI watches; undefined: off (nothing checked). */
  readonly namespacePolicies: NamespacePolicies | undefined;
  /** `--pod-view-max-staleness` in ms, for the stale-view log line. */
  readonly maxStalenessMs?: number;
  /** `--enable-federated-identities`: a Federated identity's tokens come from federating the pod's service account. */
  readonly federatedIdentities?: boolean;
}

/** Where an identity's tokens come from: IMDS (or AAD for a service principal), or federation of the pod's service account. */
export type TokenSource = 'attached' | 'federated';

/** What is known about one token request. Absent optional facts are not known yet. */
export interface TokenFacts {
  readonly ip: string;
  /** The `Metadata: true` header was sent. */
  readonly metadataHeader: boolean;
  readonly parsed: ParsedTokenRequest;
  /** Who holds the IP; `waited`: after the brief wait for the pod cache (final even when not a pod). */
  readonly caller?: { readonly lookup: CallerLookup; readonly waited: boolean };
  /**
   * The identity decision for the caller; `final`: after the wait for assignments and object_id matching, with
   * `again` the caller at the IP after that wait (undefined: no wait happened, the caller is the same).
   */
  readonly selection?: {
    readonly selection: Selection;
    readonly final: boolean;
    readonly again?: CallerLookup;
    /** A token of the pod's own identities failed while matching object_id. */
    readonly learnFailure?: UpstreamFailure;
  };
  /** 'fresh': the pod view is trusted as it is; else the live check's result. */
  readonly live?: 'fresh' | LiveCallerCheck;
  /** The identity's tokens: from the cache (`hit`) or fetched (`miss`), or why they could not be had. */
  readonly tokens?:
    | { readonly kind: 'tokens'; readonly tokens: readonly Token[]; readonly cache: 'hit' | 'miss' }
    | { readonly kind: 'failed'; readonly failure: UpstreamFailure };
}

/** What the shell must find out before decide can answer. */
export type Need =
  /** The caller is not in the pod cache right now: wait briefly for it (findByIp). */
  | { readonly kind: 'caller' }
  /** The selection is pending or needs object_id matching: wait for assignments, then look the caller up again. */
  | { readonly kind: 'selection'; readonly pod: PodView; readonly request: TokenRequest }
  /** The pod view is stale: ask the API server whether the pod is live. */
  | { readonly kind: 'live'; readonly pod: PodView }
  /**
   * The identity's token is not cached: fetch it (charged to the pod), from `source`; a federated token is the pod's
   * service account's (cached per identity, service account and resource).
   */
  | { readonly kind: 'tokens'; readonly pod: PodView; readonly identity: AzureIdentity; readonly request: TokenRequest; readonly source: TokenSource }
  /** The node path (exception, MIC): the shell serves the node's own identity, with its own checks. */
  | { readonly kind: 'node'; readonly pod: PodView; readonly request: TokenRequest; readonly via: 'exception' | 'mic'; readonly why: string };

/** A line for NMI's log (rate-limited per caller by the shell). */
export interface LogLine {
  readonly level: 'warn' | 'info' | 'debug';
  readonly fields: Readonly<Record<string, unknown>>;
  readonly msg: string;
}

/** The answer to the pod: the status and body, and what the metrics, the audit and the log learn from it. */
export interface Answer {
  readonly status: number;
  /**
   * 'text': Go's http.Error (text/plain, nosniff, a trailing newline); 'imds': IMDS's JSON error (with a charset);
   * 'json': a JSON body as the original sent it; 'tokens': the IMDS token body of these tokens.
   */
  readonly body:
    | { readonly kind: 'text'; readonly message: string }
    | { readonly kind: 'imds'; readonly json: string }
    | { readonly kind: 'json'; readonly json: string }
    | { readonly kind: 'tokens'; readonly tokens: readonly Token[]; readonly resource: string };
  readonly retryAfter?: string;
  readonly pod?: PodView;
  readonly request?: TokenRequest;
  readonly identity?: AzureIdentity;
  readonly path?: 'binding' | 'exception' | 'mic';
  readonly cache?: 'hit' | 'miss';
  readonly refusal?: RefusalKind;
  readonly log?: LogLine;
  /** A Warning event for the pod (federated refusals), written when the log line is (same limiter). */
  readonly event?: { readonly reason: string; readonly message: string };
}

export type Verdict = { readonly kind: 'answer'; readonly answer: Answer } | { readonly kind: 'need'; readonly need: Need };

const IDENTITY_NOT_FOUND_TEXT = JSON.stringify(IDENTITY_NOT_FOUND);
const METADATA_HEADER_MISSING_TEXT = `${JSON.stringify(METADATA_HEADER_MISSING)}\n`;

/** What a pod is told when a Federated identity cannot be served here; the reason (the flag) is in NMI's log. */
export const FEDERATION_REFUSED_MESSAGE = 'token acquisition failed; the NMI log on this node says why';
export const FEDERATION_FLAG = '--enable-federated-identities';

/** The original's Retry-After for `--set-retry-after-header`. */
const RETRY_AFTER_SECONDS = '20';

/** Decides what a token request gets from the facts at hand, or names the one fact still missing. */
export function decideToken(facts: TokenFacts, policy: DecidePolicy): Verdict {
  if (policy.metadataHeaderRequired && !facts.metadataHeader) {
    return answer({ status: 400, body: { kind: 'imds', json: METADATA_HEADER_MISSING_TEXT }, refusal: 'metadata-header-missing' });
  }
  const { ip, parsed } = facts;
  if (ip === '') return answer(text(500, 'request remote address is empty', { refusal: 'unknown-caller' }));
  if (!parsed.ok) return answer(text(parsed.status, parsed.reason, { refusal: 'bad-request' }));
  const request = parsed.request;

  const caller = facts.caller;
  if (caller === undefined || (caller.lookup.kind !== 'pod' && !caller.waited)) return need({ kind: 'caller' });
  if (caller.lookup.kind !== 'pod') {
    // The detail (which pods claim the IP) stays in the log: the caller is not told about other pods.
    return answer(
      text(500, `failed to match pod IP ${ip} with a single live pod on this node`, {
        request,
        refusal: caller.lookup.kind === 'ambiguous' ? 'ambiguous-caller' : 'unknown-caller',
        log: warn({ reason: caller.lookup.reason }, 'token request from an unidentified caller denied'),
      }),
    );
  }
  const pod = caller.lookup.pod;

  const decided = facts.selection;
  if (decided === undefined || (!decided.final && needsWait(decided.selection, request))) return need({ kind: 'selection', pod, request });
  const selection = decided.selection;
  // The pod at this IP must still be the one we decided for: a pod deleted and replaced while we waited gets nothing.
  const again = decided.again;
  if (again !== undefined && (again.kind !== 'pod' || again.pod.uid !== pod.uid)) {
    return answer(
      text(500, `pod at ${ip} changed while the request waited`, {
        request,
        pod,
        refusal: 'caller-changed',
        log: warn({ reason: again.kind === 'pod' ? 'pod at this IP changed' : again.reason }, 'caller changed while waiting; denied'),
      }),
    );
  }

  const live = facts.live;
  if (live === undefined) return need({ kind: 'live', pod });
  if (live !== 'fresh' && live.kind !== 'confirmed') {
    return answer(
      text(503, "NMI's view of this node's pods is out of date and the caller could not be confirmed; retry later", {
        request,
        pod,
        retryAfter: '1',
        refusal: 'stale-view',
        log: warn(
          { reason: live.reason, check: live.kind, maxStalenessMs: policy.maxStalenessMs },
          'pod view is stale (no watch event or bookmark within --pod-view-max-staleness) and the caller could not be confirmed live; denied',
        ),
      }),
    );
  }

  switch (selection.kind) {
    case 'node':
      return need({ kind: 'node', pod, request, via: selection.via, why: selection.reason });
    case 'unbound': {
      // Its own identities' tokens could not be read to match object_id: that is not "not found".
      if (decided.learnFailure !== undefined) return answer(unreadablePrincipal(decided.learnFailure, { request, pod }));
      return answer({
        status: 400,
        body: { kind: 'imds', json: IDENTITY_NOT_FOUND_TEXT },
        request,
        pod,
        refusal: 'unbound',
        log: warn({ reason: selection.reason }, 'no bound identity matches the request; answered as IMDS does'),
      });
    }
    case 'pending':
    case 'none': {
      const refusal = selection.kind === 'pending' ? 'not-assigned' : 'no-identity';
      const log = warn({ reason: selection.reason }, 'no identity for the pod');
      // Both modes, as the original: in managed mode a binding may still be created.
      if (policy.setRetryAfterHeader) return answer(text(503, selection.reason, { request, pod, retryAfter: RETRY_AFTER_SECONDS, refusal, log }));
      return answer(text(404, notFoundMessage(pod, selection), { request, pod, refusal, log }));
    }
    case 'identity': {
      const identity = selection.identity;
      const denial = policy.namespacePolicies === undefined ? undefined : namespacePolicyDenial(policy.namespacePolicies, pod, identity);
      if (denial !== undefined) {
        return answer(
          text(denial.status, denial.body, {
            request,
            pod,
            identity,
            path: 'binding',
            refusal: 'namespace-policy',
            log: warn({ identity: `${identity.namespace}/${identity.name}`, reason: denial.reason }, 'identity not permitted by the namespace policy; denied'),
          }),
        );
      }
      const route = tokenRoute(selection, policy);
      if (route.kind === 'refused') {
        return answer(
          text(route.status, `failed to get a token for identity ${identity.namespace}/${identity.name}: ${FEDERATION_REFUSED_MESSAGE}`, {
            request,
            pod,
            identity,
            path: 'binding',
            refusal: route.refusal,
            ...(route.retryAfter !== undefined ? { retryAfter: route.retryAfter } : {}),
            log: warn({ identity: `${identity.namespace}/${identity.name}`, reason: route.reason }, route.msg),
          }),
        );
      }
      const served = { request, pod, identity: route.identity, path: 'binding' as const };
      const tokens = facts.tokens;
      if (tokens === undefined) return need({ kind: 'tokens', pod, identity: route.identity, request, source: route.source });
      if (tokens.kind === 'tokens' && tokens.tokens.length > 0) {
        // The warm path's answer: nothing else is built for it.
        return answer({ status: 200, body: { kind: 'tokens', tokens: tokens.tokens, resource: request.resource }, ...served, cache: tokens.cache });
      }
      const missed = { ...served, cache: tokens.kind === 'tokens' ? tokens.cache : ('miss' as const) };
      if (tokens.kind === 'tokens') return answer(text(503, 'no token was issued', { ...missed, refusal: 'no-token' }));
      const failure = tokens.failure;
      if (failure.status === 429) return answer(throttled(failure, missed));
      const name = `${identity.namespace}/${identity.name}`;
      const message = `failed to get a token for identity ${name}: ${failure.publicMessage}`;
      return answer(
        text(failure.status, message, {
          ...missed,
          refusal: 'upstream-error',
          log: warn({ err: failure.error, identity: name, status: failure.status, ...(route.source === 'federated' ? { source: 'federated' } : {}) }, 'token acquisition failed'),
          // The pod's owner reads why on the pod: Azure AD refused its service account's token for this identity.
          ...(route.source === 'federated' ? { event: { reason: 'FederatedTokenFailed', message } } : {}),
        }),
      );
    }
  }
}

export type TokenRoute =
  | { readonly kind: 'source'; readonly source: TokenSource; readonly identity: AzureIdentity }
  | {
      readonly kind: 'refused';
      readonly status: 403 | 503;
      readonly refusal: RefusalKind;
      readonly reason: string;
      readonly msg: string;
      readonly retryAfter?: string;
    };

/**
 * Where a selected identity's tokens come from. The live AzureIdentity's spec.mode decides (the AAI's copy may have
 * lost `mode` to pruning); a Federated identity is never served from the node's IMDS: without the flag it is refused.
 * Used by every path that fetches a pod's identity's token (decide, object_id matching, /host/token).
 */
export function tokenRoute(selection: { readonly identity: AzureIdentity; readonly live?: AzureIdentity }, policy: Pick<DecidePolicy, 'federatedIdentities'>): TokenRoute {
  const copy = selection.identity;
  const live = selection.live;
  const mode = identityMode(live ?? copy);
  if (mode === null) {
    return {
      kind: 'refused',
      status: 403,
      refusal: 'invalid-mode',
      reason: `spec.mode ${JSON.stringify((live ?? copy).invalidMode ?? '')} is neither Attached nor Federated`,
      msg: 'identity has an invalid spec.mode; denied (fix spec.mode on the AzureIdentity)',
    };
  }
  if (mode === 'Federated') {
    if (policy.federatedIdentities !== true) {
      return {
        kind: 'refused',
        status: 403,
        refusal: 'federation-disabled',
        reason: `the identity is Federated and this NMI runs without ${FEDERATION_FLAG}`,
        msg: `federated identity refused: start NMI with ${FEDERATION_FLAG} (the chart's federation.enabled) to serve it; never served from the node's IMDS`,
      };
    }
    const identity = live ?? copy;
    // The AAI was written for another client ID than the identity now has: MIC has not caught up yet.
    if (live !== undefined && live.clientID.toLowerCase() !== copy.clientID.toLowerCase()) {
      return {
        kind: 'refused',
        status: 503,
        refusal: 'identity-changing',
        retryAfter: '1',
        reason: "the AzureIdentity's clientID differs from the one its AzureAssignedIdentity was written for",
        msg: 'federated identity is being changed; retry shortly',
      };
    }
    return { kind: 'source', source: 'federated', identity };
  }
  return { kind: 'source', source: 'attached', identity: copy };
}

/** A selection that can still change with waiting: pending, or an object_id not matched to the pod's identities yet. */
function needsWait(selection: Selection, request: TokenRequest): boolean {
  if (selection.kind === 'pending') return true;
  return request.objectId !== undefined && selection.kind !== 'node' && selection.kind !== 'identity';
}

/** The pod's own identity's token failed while matching object_id. */
export function unreadablePrincipal(failure: UpstreamFailure, about: Pick<Answer, 'pod' | 'request'>): Answer {
  if (failure.status === 429) return throttled(failure, about);
  return text(failure.status, `cannot tell which of the pod's identities object_id names: ${failure.publicMessage}`, {
    ...about,
    refusal: 'upstream-error',
    log: warn({ err: failure.error, status: failure.status }, "object_id could not be matched: a token of the pod's own identity failed"),
  });
}

/** The pod started too many upstream fetches lately (per-pod miss limit): 429 with Retry-After, as IMDS throttles. */
export function throttled(failure: UpstreamFailure, about: Omit<Answer, 'status' | 'body'>): Answer {
  const seconds = failure.retryAfterSeconds ?? 1;
  return text(429, 'too many new token requests from this pod; retry later', {
    ...about,
    retryAfter: String(seconds),
    refusal: 'miss-rate',
    log: warn({ retryAfterSeconds: seconds }, 'too many token cache misses from this pod (--pod-token-miss-rate, --pod-token-miss-burst); refused'),
  });
}

export function notFoundMessage(pod: PodView, selection: Extract<Selection, { kind: 'pending' | 'none' }>): string {
  if (selection.kind === 'none') return selection.reason;
  const state = selection.created ? 'ASSIGNED' : 'CREATED';
  return `getting assigned identities for pod ${pod.namespace}/${pod.name} in ${state} state failed: ${selection.reason}. Check MIC pod logs for identity assignment errors`;
}

function text(status: number, message: string, rest: Omit<Answer, 'status' | 'body'> = {}): Answer {
  return { status, body: { kind: 'text', message }, ...rest };
}

function warn(fields: Record<string, unknown>, msg: string): LogLine {
  return { level: 'warn', fields, msg };
}

function answer(a: Answer): Verdict {
  return { kind: 'answer', answer: a };
}

function need(n: Need): Verdict {
  return { kind: 'need', need: n };
}
