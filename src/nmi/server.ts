// NMI's token server: a request listener that routes as the original (upstream-behaviour §3.2) and answers a pod's
// IMDS token request with a token for that pod's own identity, and nothing else. No listen() here: nmi.ts and tests do it.

import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import express, { type Express } from 'express';
import type { Logger } from 'pino';
import type { NamespacePolicies } from '../crds/namespace-policy.js';
import type { AzureIdentity, PodView } from '../crds/types.js';
import { namespacePolicyDenial } from './core/namespace-policy.js';
import { hostTokenBody, IDENTITY_NOT_FOUND, imdsTokenBody, METADATA_HEADER_MISSING, type IssuedToken } from './core/imds-body.js';
import { routeRequest } from './core/routes.js';
import { NODE_PATH_REMEDY, nodeRequestRefusal, nodeTokenRefusal, type NodeRefusal } from './core/node-path.js';
import { principalKey, selectIdentity, servableIdentities, type Selection, type SelectPolicy } from './core/select.js';
import { parseTokenRequest, type TokenRequest } from './core/token-request.js';
import type { IdentityState, MetadataProxy, NmiMetrics, NodeIdentityRequest, PodDirectory, PodViewFreshness, TokenIssuer } from './ports.js';
import { tokenIdentityOf, tokenObjectIdOf } from './tokens/claims.js';
import { GENERIC_FAILURE_MESSAGE } from './tokens/types.js';
import { FairCaps } from './fair-caps.js';
import { NO_AUDIT, newAuditFacts, type AuditFacts, type AuditTrail, type RefusalKind } from './audit.js';

export interface NmiServerConfig {
  readonly metadataHeaderRequired: boolean;
  readonly blockInstanceMetadata: boolean;
  readonly operationMode: 'standard' | 'managed';
  readonly forceNamespaced: boolean;
  /** --namespace-identity-policy: 'enforce' checks the Namespace annotations before serving a bound identity. */
  readonly namespaceIdentityPolicy?: 'off' | 'enforce';
  readonly micNamespace: string;
  readonly micServiceAccount: string;
  readonly retryAttemptsForCreated: number;
  readonly retryAttemptsForAssigned: number;
  readonly findIdentityRetryIntervalMs: number;
  readonly setRetryAfterHeader: boolean;
  /** Token requests one pod IP may have waiting in the full path; beyond it 429 (default 1024). */
  readonly maxRequestsPerCaller?: number;
  /** Token requests waiting in all (default 2048): bounds memory; at the cap the busiest pod makes room for others. */
  readonly maxRequestsTotal?: number;
}

export interface NmiServerDeps {
  readonly config: NmiServerConfig;
  readonly pods: PodDirectory;
  readonly identities: IdentityState;
  readonly tokens: TokenIssuer;
  readonly proxy: MetadataProxy;
  readonly logger: Logger;
  readonly metrics?: NmiMetrics;
  /** When given, a pod view older than its bound is confirmed live before anything is served (else 503). */
  readonly freshness?: PodViewFreshness;
  readonly nowMs?: () => number;
  /** The namespaces' identity policies as NMI's Namespace informer sees them (read under enforce; none: deny all). */
  readonly namespacePolicies?: NamespacePolicies;
  /** Where each token served and each refusal is recorded (default: nowhere). */
  readonly audit?: AuditTrail;
}

/** The original's Retry-After for `--set-retry-after-header`. */
const RETRY_AFTER_SECONDS = '20';

type Request = IncomingMessage & { readonly originalUrl?: string };
type Response = ServerResponse;

/**
 * The token server as a plain `node:http` request listener: NMI's hot path. It reads nothing express adds, and
 * express's router cost a measurable share of a cached-token request (bench/nmi.ts).
 */
export function createNmiRequestListener(deps: NmiServerDeps): (req: IncomingMessage, res: ServerResponse) => void {
  const { handle: handler, answerFromCache } = createRequestHandler(deps);
  return (req, res) => {
    try {
      if (answerFromCache(req, res)) return;
    } catch (error) {
      // Nothing was sent: the full path below decides and answers.
      deps.logger.warn({ err: error, path: pathOf(req) }, 'warm path failed; taking the full path');
    }
    handler(req, res).catch((error: unknown) => {
      deps.logger.error({ err: error, path: pathOf(req) }, 'request handler failed');
      if (!res.headersSent) sendText(res, 500, 'internal error');
      else res.destroy();
    });
  };
}

/**
 * `Expect: 100-continue` handled by NMI rather than by Node: a token request has no body to wait for, so it gets its
 * final answer directly (RFC 9110 allows that); only a request NMI forwards to IMDS is told to continue. Node's own
 * handling could put a `100 Continue` between the bytes of a pipelined earlier response.
 */
export function handleExpectContinue(
  server: Server,
  listener: (req: IncomingMessage, res: ServerResponse) => void,
  policy: { readonly blockInstanceMetadata: boolean },
): void {
  server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    if (routeRequest(q === -1 ? url : url.slice(0, q), policy).kind === 'proxy') res.writeContinue();
    listener(req, res);
  });
}

/** The same listener inside an express app, for callers that want one. */
export function createNmiApp(deps: NmiServerDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.set('query parser', false);
  app.use(createNmiRequestListener(deps));
  return app;
}

function createRequestHandler(deps: NmiServerDeps) {
  const { config, logger } = deps;
  const now = deps.nowMs ?? Date.now;
  const policy: SelectPolicy = {
    mode: config.operationMode,
    forceNamespaced: config.forceNamespaced,
    micNamespace: config.micNamespace,
    micServiceAccount: config.micServiceAccount,
    // The original's wait for a pod with nothing assigned: a pod started longer ago has had its assignments made.
    settleAfterMs: config.retryAttemptsForCreated * config.findIdentityRetryIntervalMs,
  };
  const principals = new PrincipalIds();
  const inputFor = (pod: PodView, request: TokenRequest) => ({
    pod,
    request,
    ...deps.identities.selectionFor(pod),
    nowMs: now(),
    principalIds: principals.known,
  });

  const enforced = config.namespaceIdentityPolicy === 'enforce';
  const noPolicies: NamespacePolicies = new Map();
  /** Under enforce, why this pod may not have this identity's token (undefined when off or permitted). */
  const policyDenial = (pod: PodView, identity: AzureIdentity) =>
    enforced ? namespacePolicyDenial(deps.namespacePolicies ?? noPolicies, pod, identity) : undefined;

  const audit = deps.audit ?? NO_AUDIT;
  const bodies = new TokenBodies();
  const refusals = new RefusalLog(logger, now);
  // Token requests waiting in the full path, per caller IP.
  const waiting = new FairCaps<Admission>(() => ({
    perCaller: config.maxRequestsPerCaller ?? DEFAULT_MAX_WAITING_PER_POD,
    total: config.maxRequestsTotal ?? DEFAULT_MAX_WAITING,
  }));

  /**
   * The warm path, synchronous: a well-formed token request from a known pod whose identity is Assigned and whose
   * token is cached is answered here, with exactly the checks of the full path and no waiting. Returns false, having
   * sent nothing, whenever anything would need a wait, a fetch or an error answer: the full path then handles it.
   */
  function answerFromCache(req: Request, res: Response): boolean {
    const cached = deps.tokens.cachedTokensFor;
    const lookup = deps.pods.lookup;
    if (cached === undefined || lookup === undefined || req.httpVersionMajor !== 1) return false;
    // Only body-less requests (as the SDKs send): answering before a body is read would skip its parsing errors.
    const length = req.headers['content-length'];
    if (req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0')) return false;
    // Node writes `100 Continue` for these; answering in the same tick can put it after our headers on the wire.
    if (req.headers['expect'] !== undefined) return false;
    const started = now();
    // A view the API server has not confirmed lately may name a deleted pod whose IP another pod now has.
    if (deps.freshness !== undefined && !deps.freshness.isFresh(started)) return false;
    if (routeRequest(pathOf(req), { blockInstanceMetadata: config.blockInstanceMetadata }).kind !== 'token') return false;
    if (!hasMetadataHeader(req)) return false;
    const ip = remoteIp(req);
    if (ip === '') return false;
    const parsed = parseTokenRequest(queryOf(req));
    if (!parsed.ok) return false;
    const caller = lookup.call(deps.pods, ip);
    if (caller.kind !== 'pod') return false;
    const pod = caller.pod;
    const selection = selectIdentity(inputFor(pod, parsed.request), policy);
    if (selection.kind !== 'identity') return false;
    if (enforced && policyDenial(pod, selection.identity) !== undefined) return false;
    const tokens = cached.call(deps.tokens, selection.identity, parsed.request.resource);
    if (tokens === undefined || tokens.length !== 1) return false;
    sendJsonText(res, 200, bodies.text(tokens[0], parsed.request.resource, now() / 1000));
    const elapsedMs = now() - started;
    deps.metrics?.observeRequest('token', 200, pod.namespace, parsed.request.resource, elapsedMs / 1000);
    audit.hit(pod, selection.identity, parsed.request.resource, elapsedMs);
    return true;
  }

  return { handle, answerFromCache };

  async function handle(req: Request, res: Response): Promise<void> {
    const started = now();
    if (req.httpVersionMajor !== 1) return sendText(res, 505, 'HTTP Version Not Supported');
    const route = routeRequest(pathOf(req), { blockInstanceMetadata: config.blockInstanceMetadata });
    const outcome: Outcome = { namespace: '', ...newAuditFacts(remoteIp(req)) };
    try {
      switch (route.kind) {
        case 'token':
          return await bounded(req, res, outcome, (abort) => tokenRoute(req, res, outcome, abort));
        case 'host-token':
          outcome.path = 'host-token';
          return await bounded(req, res, outcome, (abort) => hostTokenRoute(req, res, outcome, abort));
        case 'invalid':
          refusals.log(remoteIp(req), { path: pathOf(req), reason: route.reason }, 'refused request path');
          return sendText(res, 400, 'Invalid request');
        case 'instance-blocked':
          return sendText(res, 403, 'Request blocked by AAD Pod Identity NMI');
        case 'proxy':
          if (!hasMetadataHeader(req)) return sendMetadataHeaderMissing(res);
          return await deps.proxy.forward(req, res);
      }
    } catch (error) {
      outcome.refusal ??= 'internal-error';
      throw error;
    } finally {
      const elapsedMs = now() - started;
      deps.metrics?.observeRequest(route.kind, res.statusCode, outcome.namespace, outcome.resource, elapsedMs / 1000);
      // The one place every token request's decision is known: what it learnt, and the status it was answered with.
      if (route.kind === 'token' || route.kind === 'host-token') {
        // Not answered yet: the handler threw (the listener answers 500), or the caller went away (499, as nginx logs it).
        if (!res.headersSent && outcome.refusal !== 'internal-error') outcome.refusal = 'client-gone';
        audit.answered(outcome, res.headersSent ? res.statusCode : outcome.refusal === 'internal-error' ? 500 : 499, elapsedMs);
      }
    }
  }

  /**
   * Caps what one pod and all pods together can keep waiting (each waiting request holds a socket and its state):
   * beyond a pod's own cap it gets 429 with Retry-After. When the total is reached, a pod holding fewer requests than
   * the pod holding the most still gets in: that pod's newest waiting request is answered 429 to make room. So one
   * pod (or a few) can never keep another pod's first request out, and memory stays bounded by the total.
   */
  async function bounded(req: Request, res: Response, outcome: Outcome, work: (abort: LazyAbort) => Promise<void>): Promise<void> {
    const ip = remoteIp(req);
    const abort = lazyAbort(req, res);
    const admission: Admission = {
      shed: () => {
        outcome.refusal = 'too-many-waiting';
        abort.abort();
        tooManyWaiting(res);
      },
    };
    const admitted = waiting.admit(ip, admission);
    if (admitted.kind !== 'admitted') {
      const flag = admitted.kind === 'caller-full' ? '--max-waiting-requests-per-pod' : '--max-waiting-requests';
      const where = admitted.kind === 'caller-full' ? 'from this pod' : 'on this node';
      refusals.log(ip, { waiting: waiting.total, callerWaiting: admitted.held }, `too many token requests waiting ${where} (${flag}); refused`);
      outcome.refusal = 'too-many-waiting';
      return tooManyWaiting(res);
    }
    if (admitted.evicted !== undefined) {
      const { caller, item } = admitted.evicted;
      refusals.log(caller, { waiting: waiting.total, callerWaiting: waiting.held(caller) }, 'node-wide waiting cap (--max-waiting-requests) reached: newest request of the pod holding the most answered 429 to admit another pod');
      item.shed();
    }
    try {
      await work(abort);
    } finally {
      waiting.release(ip, admission);
    }
  }

  function hasMetadataHeader(req: Request): boolean {
    return !config.metadataHeaderRequired || req.headers['metadata'] === 'true';
  }

  async function tokenRoute(req: Request, res: Response, outcome: Outcome, abort: LazyAbort): Promise<void> {
    if (!hasMetadataHeader(req)) return refuse(outcome, 'metadata-header-missing', () => sendMetadataHeaderMissing(res));
    const ip = remoteIp(req);
    if (ip === '') return refuse(outcome, 'unknown-caller', () => sendText(res, 500, 'request remote address is empty'));
    const parsed = parseTokenRequest(queryOf(req));
    if (!parsed.ok) return refuse(outcome, 'bad-request', () => sendText(res, parsed.status, parsed.reason));
    const request = parsed.request;
    noteRequest(outcome, request);

    const known = deps.pods.lookup?.(ip);
    const caller = known?.kind === 'pod' ? known : await deps.pods.findByIp(ip, abort.signal());
    if (caller.kind !== 'pod') {
      refusals.log(ip, { reason: caller.reason }, 'token request from an unidentified caller denied');
      outcome.refusal = caller.kind === 'ambiguous' ? 'ambiguous-caller' : 'unknown-caller';
      // The detail (which pods claim the IP) stays in the log: the caller is not told about other pods.
      return sendText(res, 500, `failed to match pod IP ${ip} with a single live pod on this node`);
    }
    const pod = caller.pod;
    outcome.namespace = pod.namespace;
    outcome.pod = pod;
    // Bindings are built only when a line is written: a child logger per request was a hot-path cost.
    const log = lazyChild(logger, ip, () => ({ pod: pod.name, namespace: pod.namespace, remote: ip, resource: request.resource }));

    const { selection, learnError } = await awaitSelection(pod, request, abort);
    if (abort.aborted()) return;
    // The pod at this IP must still be the one we decided for: a pod deleted and replaced while we waited gets nothing.
    const again = deps.pods.lookup?.(ip) ?? (await deps.pods.findByIp(ip, abort.signal()));
    if (again.kind !== 'pod' || again.pod.uid !== pod.uid) {
      refusals.log(log, { reason: again.kind === 'pod' ? 'pod at this IP changed' : again.reason }, 'caller changed while waiting; denied');
      outcome.refusal = 'caller-changed';
      return sendText(res, 500, `pod at ${ip} changed while the request waited`);
    }
    if (!(await confirmedLive(res, log, again.pod, ip))) return refuse(outcome, 'stale-view');

    switch (selection.kind) {
      case 'node':
        outcome.path = selection.via;
        return serveNodeIdentity(res, log, outcome, request, selection.reason, pod.uid);
      case 'unbound': {
        // Its own identities' tokens could not be read to match object_id: that is not "not found".
        if (learnError !== undefined) return refuseUnreadablePrincipal(res, log, outcome, learnError);
        refusals.log(log, { reason: selection.reason }, 'no bound identity matches the request; answered as IMDS does');
        outcome.refusal = 'unbound';
        return sendImdsError(res, 400, IDENTITY_NOT_FOUND);
      }
      case 'pending':
      case 'none': {
        refusals.log(log, { reason: selection.reason }, 'no identity for the pod');
        outcome.refusal = selection.kind === 'pending' ? 'not-assigned' : 'no-identity';
        // Both modes, as the original: in managed mode a binding may still be created.
        if (config.setRetryAfterHeader) {
          res.setHeader('Retry-After', RETRY_AFTER_SECONDS);
          return sendText(res, 503, selection.reason);
        }
        return sendText(res, 404, notFoundMessage(pod, selection));
      }
      case 'identity': {
        outcome.path = 'binding';
        outcome.identity = selection.identity;
        if (refusedByPolicy(res, log, outcome, pod, selection.identity)) return;
        return serveTokens(res, log, outcome, pod.uid, selection.identity, request, (tokens) => {
          const nowSeconds = now() / 1000;
          if (tokens.length === 1) return bodies.text(tokens[0], request.resource, nowSeconds);
          return JSON.stringify(tokens.map((t) => imdsTokenBody(t, request.resource, nowSeconds)));
        });
      }
    }
  }

  /**
   * The node's own identity for an excepted or MIC pod, never one an AzureIdentity declares: checked on the request
   * before IMDS is asked, and on the token IMDS returns (before it is cached, and again when served from the cache).
   */
  async function serveNodeIdentity(res: Response, log: LazyLogger, outcome: Outcome, request: TokenRequest, why: string, caller: string): Promise<void> {
    const declared = deps.identities.declaredIdentities();
    if (declared === undefined) {
      refusals.log(log, { reason: why }, 'node identity refused: AzureIdentities not listed yet');
      outcome.refusal = 'identities-not-listed';
      return sendText(res, 503, 'NMI has not yet listed AzureIdentities; retry shortly');
    }
    const refused = nodeRequestRefusal(request, declared);
    if (refused !== undefined) return refuseNodeIdentity(res, log, outcome, refused, why);
    const check = (token: IssuedToken): Error | undefined => {
      const current = deps.identities.declaredIdentities();
      const r = current === undefined ? undefined : nodeTokenRefusal(tokenIdentityOf(token), current);
      return r === undefined ? undefined : new NodeIdentityRefused(r);
    };
    // The vet runs only on a token fetched for this request: then it was a cache miss.
    outcome.cache = 'hit';
    const vet = (token: IssuedToken): Error | undefined => {
      outcome.cache = 'miss';
      return check(token);
    };
    let token: IssuedToken;
    try {
      token = await deps.tokens.nodeToken(request.resource, nodeIdentityRequest(request), vet, caller);
    } catch (error) {
      if (error instanceof NodeIdentityRefused) return refuseNodeIdentity(res, log, outcome, error.refusal, why);
      if (deps.tokens.statusForError(error) === 429) return sendThrottled(res, log, outcome, error);
      if (deps.tokens.isIdentityNotFound?.(error) === true) {
        // As IMDS answered: the same answer a declared identity's refusal gets, so neither tells the pod more.
        refusals.log(log, { err: messageOf(error), nodePath: why }, 'node identity not found by IMDS; answered as IMDS did');
        outcome.refusal = 'upstream-error';
        return sendImdsError(res, 400, IDENTITY_NOT_FOUND);
      }
      refusals.log(log, { err: error }, 'node token request failed');
      outcome.refusal = 'upstream-error';
      return sendText(res, 403, `failed to get the node identity's token: ${messageOf(error)}`);
    }
    // A token cached before an AzureIdentity declared its identity: not served, and forgotten.
    const stale = check(token);
    if (stale instanceof NodeIdentityRefused) {
      deps.tokens.forgetNodeTokens?.();
      return refuseNodeIdentity(res, log, outcome, stale.refusal, why);
    }
    refusals.log(log, { reason: why }, 'serving the node identity', 'info');
    return sendJson(res, 200, imdsTokenBody(token, request.resource, now() / 1000));
  }

  function refuseNodeIdentity(res: Response, log: LazyLogger, outcome: Outcome, refusal: NodeRefusal, why: string): void {
    // Rate-limited: a pod probing IDs must not flood the log. The pod gets IMDS's "Identity not found" (refusal.body).
    refusals.log(log, { reason: refusal.reason, nodePath: why, allow: NODE_PATH_REMEDY }, 'node identity refused; answered as IMDS does for an identity the VM does not have');
    outcome.refusal = 'node-path-declared-identity';
    return sendImdsError(res, refusal.status, refusal.body);
  }

  async function hostTokenRoute(req: Request, res: Response, outcome: Outcome, abort: LazyAbort): Promise<void> {
    const podns = headerValue(req, 'podns');
    const podname = headerValue(req, 'podname');
    if (podns === '' || podname === '') return refuse(outcome, 'bad-request', () => sendText(res, 400, "missing 'podname' and 'podns' from request header"));
    const ip = remoteIp(req);
    if (ip !== '127.0.0.1' && ip !== '::1') return refuse(outcome, 'unknown-caller', () => sendText(res, 500, 'request remote address is not from a host'));
    const parsed = parseTokenRequest(queryOf(req));
    if (!parsed.ok) return refuse(outcome, 'bad-request', () => sendText(res, parsed.status, parsed.reason));
    outcome.namespace = podns;
    noteRequest(outcome, parsed.request);
    const pod = deps.pods.findByName(podns, podname);
    const log = lazyChild(logger, `${podns}/${podname}`, () => ({ pod: podname, namespace: podns, remote: ip, route: 'host-token' }));
    if (pod === undefined) return refuse(outcome, 'pod-not-found', () => sendText(res, 404, `pod ${podns}/${podname} is not on this node`));
    outcome.pod = pod;
    const { selection, learnError } = await awaitSelection(pod, parsed.request, abort);
    if (abort.aborted()) return;
    if (selection.kind === 'unbound' && learnError !== undefined) return refuseUnreadablePrincipal(res, log, outcome, learnError);
    if (selection.kind !== 'identity') {
      refusals.log(log, { reason: selection.reason }, 'no identity for the pod');
      outcome.refusal = selection.kind === 'pending' ? 'not-assigned' : selection.kind === 'unbound' ? 'unbound' : 'no-identity';
      const message = selection.kind === 'node' ? `pod ${podns}/${podname} has no identity` : selection.kind === 'unbound' ? selection.reason : notFoundMessage(pod, selection);
      return sendText(res, 404, message);
    }
    if (!(await confirmedLive(res, log, pod, undefined))) return refuse(outcome, 'stale-view');
    const identity = selection.identity;
    outcome.identity = identity;
    if (refusedByPolicy(res, log, outcome, pod, identity)) return;
    return serveTokens(res, log, outcome, pod.uid, identity, parsed.request, (tokens) =>
      JSON.stringify(hostTokenBody(tokens[0], parsed.request.resource, identity.clientID, now() / 1000)),
    );
  }

  async function serveTokens(
    res: Response,
    log: LazyLogger,
    outcome: Outcome,
    caller: string,
    identity: AzureIdentity,
    request: TokenRequest,
    render: (tokens: readonly IssuedToken[]) => string | Buffer,
  ): Promise<void> {
    let tokens: readonly IssuedToken[];
    // Miss: no token was cached when the request came (it was fetched upstream, or the request joined that fetch).
    outcome.cache = deps.tokens.cachedTokensFor?.(identity, request.resource) !== undefined ? 'hit' : 'miss';
    try {
      tokens = await deps.tokens.tokensFor(identity, request.resource, request.clientId, caller);
    } catch (error) {
      const status = deps.tokens.statusForError(error);
      if (status === 429) return sendThrottled(res, log, outcome, error);
      refusals.log(log, { err: error, identity: `${identity.namespace}/${identity.name}`, status }, 'token acquisition failed');
      outcome.refusal = 'upstream-error';
      // The log has the detail; the body only what the issuer says a pod may read.
      return sendText(res, status, `failed to get a token for identity ${identity.namespace}/${identity.name}: ${upstreamDetail(error)}`);
    }
    if (tokens.length === 0) return refuse(outcome, 'no-token', () => sendText(res, 503, 'no token was issued'));
    // A success line per request at info cost more than the rest of a cached answer (bench/nmi.ts): debug only.
    if (log.isLevelEnabled('debug')) log.debug({ identity: `${identity.namespace}/${identity.name}` }, 'token served');
    return sendJsonText(res, 200, render(tokens));
  }

  /** Under enforce, answers the namespace policy's refusal (and returns true) when the pod may not have `identity`. */
  function refusedByPolicy(res: Response, log: LazyLogger, outcome: Outcome, pod: PodView, identity: AzureIdentity): boolean {
    const denial = policyDenial(pod, identity);
    if (denial === undefined) return false;
    refusals.log(log, { identity: `${identity.namespace}/${identity.name}`, reason: denial.reason }, 'identity not permitted by the namespace policy; denied');
    outcome.refusal = 'namespace-policy';
    sendText(res, denial.status, denial.body);
    return true;
  }

  /** What a pod may read of an upstream failure: only what the issuer says is safe (no Secret names, keys or content). */
  function upstreamDetail(error: unknown): string {
    return deps.tokens.messageForError?.(error) ?? GENERIC_FAILURE_MESSAGE;
  }

  /** The pod started too many upstream fetches lately (per-pod miss limit): 429 with Retry-After, as IMDS throttles. */
  function sendThrottled(res: Response, log: LazyLogger, outcome: Outcome, error: unknown): void {
    outcome.refusal = 'miss-rate';
    const seconds = deps.tokens.retryAfterSeconds?.(error) ?? 1;
    refusals.log(log, { retryAfterSeconds: seconds }, 'too many token cache misses from this pod (--pod-token-miss-rate, --pod-token-miss-burst); refused');
    res.setHeader('Retry-After', String(seconds));
    sendText(res, 429, 'too many new token requests from this pod; retry later');
  }

  /**
   * True when the pod view is fresh, or the API server confirms `pod` live right now. Otherwise answers 503 with
   * Retry-After (the view catches up once the watch is heard again) and logs why.
   */
  async function confirmedLive(res: Response, log: LazyLogger, pod: PodView, ip: string | undefined): Promise<boolean> {
    const freshness = deps.freshness;
    if (freshness === undefined || freshness.isFresh(now())) return true;
    const live = await freshness.confirmLive(pod, ip);
    if (live.kind === 'confirmed') return true;
    refusals.log(
      log,
      { reason: live.reason, check: live.kind, maxStalenessMs: freshness.maxStalenessMs },
      'pod view is stale (no watch event or bookmark within --pod-view-max-staleness) and the caller could not be confirmed live; denied',
    );
    res.setHeader('Retry-After', '1');
    sendText(res, 503, "NMI's view of this node's pods is out of date and the caller could not be confirmed; retry later");
    return false;
  }

  /**
   * Re-decides on every identity change until a decision is final, the pod's assignments are settled, or the
   * original's wait budget is spent.
   */
  async function awaitSelection(pod: PodView, request: TokenRequest, abort: LazyAbort): Promise<{ selection: Selection; learnError?: unknown }> {
    const interval = config.findIdentityRetryIntervalMs;
    const noneBudget = config.retryAttemptsForCreated * interval;
    const createdBudget = (config.retryAttemptsForCreated + config.retryAttemptsForAssigned) * interval;
    const started = now();
    // With nothing assigned, the wait lasts until the pod is as old as the window (at most about a second longer than
    // the original's, start times being whole seconds): then it is settled, or something is still outstanding.
    const settlesAt = pod.startedAtMs === undefined ? undefined : pod.startedAtMs + noneBudget + 1;
    const noneDeadline = Math.max(started + noneBudget, Math.min(settlesAt ?? 0, started + noneBudget + 2_000));
    let waited = false;
    for (;;) {
      let selection = selectIdentity(inputFor(pod, request), policy);
      // An object_id not matched yet: read the principal IDs of the pod's own identities, then decide again.
      const learn = request.objectId !== undefined && selection.kind !== 'node' && selection.kind !== 'identity';
      const learnError = learn ? await learnPrincipals(pod, request.resource) : undefined;
      if (learn) selection = selectIdentity(inputFor(pod, request), policy);
      const done = { selection, ...(learnError !== undefined ? { learnError } : {}) };
      if (abort.aborted()) return done;
      if (selection.kind !== 'pending') {
        // A wait that ends with an identity (or the node's) is `ready`; one the pod outlived (settled) is a timeout.
        const found = selection.kind === 'identity' || selection.kind === 'node';
        if (waited) deps.metrics?.observeIdentityWait?.(found ? 'ready' : 'timeout', (now() - started) / 1000);
        return done;
      }
      const remaining = (selection.created ? started + createdBudget : noneDeadline) - now();
      if (remaining <= 0) {
        if (waited) deps.metrics?.observeIdentityWait?.('timeout', (now() - started) / 1000);
        return done;
      }
      waited = true;
      // A pod that ages past the window mid-wait is settled then: look again at that moment.
      const settlesIn = settlesAt === undefined ? interval : settlesAt - now();
      await deps.identities.waitForChange(Math.max(1, Math.min(remaining, interval, settlesIn > 0 ? settlesIn : interval)), abort.signal());
    }
  }

  /**
   * An `object_id` names an identity by its principal ID, which only its tokens tell for certain: read it from the
   * tokens of the identities this pod may be served anyway (never another's), for the resource it asked for, so
   * the token served next comes from the cache. Returns the last failure, if a token could not be had.
   */
  async function learnPrincipals(pod: PodView, resource: string): Promise<unknown> {
    let failure: unknown;
    for (const identity of servableIdentities({ pod, ...deps.identities.selectionFor(pod) }, policy)) {
      const key = principalKey(identity);
      if (principals.known.has(key) || policyDenial(pod, identity) !== undefined) continue;
      try {
        // The pod pays for the fetch it starts, as for any miss: else object_id with ever new resources IMDS refuses
        // (nothing learnt, nothing cached) would be an IMDS call each, past --pod-token-miss-rate.
        const tokens = await deps.tokens.tokensFor(identity, resource, undefined, pod.uid);
        const oid = tokens[0] === undefined ? undefined : tokenObjectIdOf(tokens[0]);
        if (oid !== undefined) principals.set(key, oid.toLowerCase());
      } catch (error) {
        failure = error;
      }
    }
    return failure;
  }

  function refuseUnreadablePrincipal(res: Response, log: LazyLogger, outcome: Outcome, error: unknown): void {
    const status = deps.tokens.statusForError(error);
    if (status === 429) return sendThrottled(res, log, outcome, error);
    outcome.refusal = 'upstream-error';
    refusals.log(log, { err: error, status }, "object_id could not be matched: a token of the pod's own identity failed");
    return sendText(res, status, `cannot tell which of the pod's identities object_id names: ${upstreamDetail(error)}`);
  }
}

/** Principal IDs read from the tokens of identities NMI served or fetched, by principalKey; bounded. */
class PrincipalIds {
  readonly known = new Map<string, string>();
  set(key: string, principalId: string): void {
    if (this.known.size >= 16_384) this.known.clear();
    this.known.set(key, principalId);
  }
}

/** A node-path token that must not be served: thrown from the vet so that the cache keeps nothing. */
class NodeIdentityRefused extends Error {
  constructor(readonly refusal: NodeRefusal) {
    super(refusal.reason);
  }
}

/** IMDS takes one selector; msi_res_id and mi_res_id are synonyms there, so the resource ID goes as msi_res_id. */
function nodeIdentityRequest(request: TokenRequest): NodeIdentityRequest {
  if (request.clientId !== undefined) return { clientId: request.clientId };
  if (request.resourceId !== undefined) return { resourceId: request.resourceId };
  if (request.objectId !== undefined) return { objectId: request.objectId };
  return {};
}

/** What a request's handling learnt: the metrics' labels and the audit record's facts. */
interface Outcome extends AuditFacts {
  namespace: string;
}

/** Notes why the request is refused, then answers it (`send`), for one-line refusals. */
function refuse(outcome: Outcome, kind: RefusalKind, send?: () => void): void {
  outcome.refusal = kind;
  send?.();
}

function noteRequest(outcome: Outcome, request: TokenRequest): void {
  outcome.resource = request.resource;
  if (request.clientId !== undefined) outcome.requestedClientId = request.clientId;
  if (request.resourceId !== undefined) outcome.requestedResourceId = request.resourceId;
  if (request.objectId !== undefined) outcome.requestedObjectId = request.objectId;
}

function notFoundMessage(pod: PodView, selection: Extract<Selection, { kind: 'pending' | 'none' }>): string {
  if (selection.kind === 'none') return selection.reason;
  const state = selection.created ? 'ASSIGNED' : 'CREATED';
  return `getting assigned identities for pod ${pod.namespace}/${pod.name} in ${state} state failed: ${selection.reason}. Check MIC pod logs for identity assignment errors`;
}

function pathOf(req: Request): string {
  const url = req.originalUrl || req.url || '/';
  const q = url.indexOf('?');
  return q === -1 ? url : url.slice(0, q);
}

function queryOf(req: Request): string {
  const url = req.originalUrl || req.url || '';
  const q = url.indexOf('?');
  return q === -1 ? '' : url.slice(q + 1);
}

/** IPv4 as the original; an IPv4-mapped IPv6 address is read as its IPv4 form. */
export function remoteIp(req: { socket: { remoteAddress?: string | undefined } }): string {
  const address = req.socket.remoteAddress ?? '';
  return address.startsWith('::ffff:') ? address.slice(7) : address;
}

function headerValue(req: Request, name: string): string {
  const value = req.headers[name];
  return typeof value === 'string' ? value.trim() : '';
}

/**
 * Every line a pod's request can cause (refusals, the node identity served) is logged at most once per caller and
 * message every 10 s, with the count of those not logged: a pod flooding NMI (each request with new pod-chosen
 * resource and client_id values, up to 2,048 characters each) must not turn into a flood of log lines that rotates
 * other pods' audit records off the node.
 */
class RefusalLog {
  private readonly last = new Map<string, { atMs: number; suppressed: number }>();
  constructor(
    private readonly logger: Logger,
    private readonly now: () => number,
  ) {}

  log(who: string | LazyLogger, fields: Record<string, unknown>, msg: string, level: 'warn' | 'info' = 'warn'): void {
    const key = `${typeof who === 'string' ? who : who.key}\u0000${msg}`;
    const t = this.now();
    const seen = this.last.get(key);
    if (seen !== undefined && t - seen.atMs < 10_000) {
      seen.suppressed++;
      return;
    }
    if (this.last.size >= 4096) this.last.clear();
    this.last.set(key, { atMs: t, suppressed: 0 });
    const extra = { ...fields, ...(seen && seen.suppressed > 0 ? { notLogged: seen.suppressed } : {}) };
    if (typeof who === 'string') this.logger[level]({ remote: who, ...extra }, msg);
    else who[level](extra, msg);
  }
}

/** A waiting token request, as `bounded` tracks it. */
interface Admission {
  /** Answers 429 and stops the request's waits (it was chosen to make room). */
  shed(): void;
}

const DEFAULT_MAX_WAITING_PER_POD = 1024;
const DEFAULT_MAX_WAITING = 2048;

function tooManyWaiting(res: Response): void {
  if (res.headersSent || res.destroyed) return;
  res.setHeader('Retry-After', '1');
  sendText(res, 429, 'too many token requests in flight');
}

interface LazyAbort {
  /** The request's abort signal, made on first use. */
  signal(): AbortSignal;
  /** True once the caller went away or the request was shed (false while no signal was ever needed: nothing waited). */
  aborted(): boolean;
  /** Stops whatever the request waits for. */
  abort(): void;
}

/** The abort signal is made only when something has to wait: creating one per request was a hot-path cost. */
function lazyAbort(req: Request, res: Response): LazyAbort {
  let controller: AbortController | undefined;
  const get = () => (controller ??= abortOnClose(req, res));
  return {
    signal: () => get().signal,
    aborted: () => controller?.signal.aborted === true,
    abort: () => get().abort(),
  };
}

function abortOnClose(req: Request, res: Response): AbortController {
  const controller = new AbortController();
  res.once('close', () => {
    if (!res.writableFinished) controller.abort();
  });
  req.once('aborted', () => controller.abort());
  return controller;
}

function sendJson(res: Response, status: number, body: unknown): void {
  sendJsonText(res, status, JSON.stringify(body));
}

function sendJsonText(res: Response, status: number, text: string | Buffer): void {
  if (res.headersSent || res.destroyed) return;
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

/**
 * The serialised IMDS body of a single token, reused within one second: it depends only on the token, the resource
 * as asked and the current second (expires_in). Keyed by the token text itself, so a body is never another token's.
 */
class TokenBodies {
  private readonly byToken = new Map<string, Map<string, { second: number; text: Buffer }>>();

  text(token: IssuedToken, resource: string, nowSeconds: number): Buffer {
    const second = Math.floor(nowSeconds);
    let forToken = this.byToken.get(token.accessToken);
    const hit = forToken?.get(resource);
    if (hit !== undefined && hit.second === second) return hit.text;
    const text = Buffer.from(JSON.stringify(imdsTokenBody(token, resource, nowSeconds)));
    if (forToken === undefined) {
      if (this.byToken.size >= 4096) this.byToken.clear();
      this.byToken.set(token.accessToken, (forToken = new Map()));
    }
    if (forToken.size >= 64) forToken.clear();
    forToken.set(resource, { second, text });
    return text;
  }
}

/** Error bodies as Go's http.Error writes them, which the original used. */
function sendText(res: Response, status: number, message: string): void {
  if (res.headersSent || res.destroyed) return;
  const text = `${message}\n`;
  res.writeHead(status, {
    'Content-Type': 'text/plain; charset=utf-8',
    'X-Content-Type-Options': 'nosniff',
    'Content-Length': Buffer.byteLength(text),
  });
  res.end(text);
}

function sendMetadataHeaderMissing(res: Response): void {
  if (res.headersSent || res.destroyed) return;
  const text = `${JSON.stringify(METADATA_HEADER_MISSING)}\n`;
  res.writeHead(400, { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

/** An error in IMDS's own shape and content type, byte for byte as IMDS sends it. */
function sendImdsError(res: Response, status: number, body: { error: string; error_description: string }): void {
  if (res.headersSent || res.destroyed) return;
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** The parts of a pino logger the handlers use, with the child's bindings made only when a line is written. */
interface LazyLogger {
  /** Who the lines are about (the remote IP), for rate-limited logging. */
  readonly key: string;
  isLevelEnabled(level: string): boolean;
  debug(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

function lazyChild(logger: Logger, key: string, bindings: () => Record<string, unknown>): LazyLogger {
  return new DeferredChild(logger, key, bindings);
}

class DeferredChild implements LazyLogger {
  private child: Logger | undefined;
  constructor(
    private readonly logger: Logger,
    readonly key: string,
    private readonly bindings: () => Record<string, unknown>,
  ) {}
  isLevelEnabled(level: string): boolean {
    return this.logger.isLevelEnabled(level);
  }
  debug(obj: object, msg: string): void {
    this.get().debug(obj, msg);
  }
  info(obj: object, msg: string): void {
    this.get().info(obj, msg);
  }
  warn(obj: object, msg: string): void {
    this.get().warn(obj, msg);
  }
  private get(): Logger {
    return (this.child ??= this.logger.child(this.bindings()));
  }
}
