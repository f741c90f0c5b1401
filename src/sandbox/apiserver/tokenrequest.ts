// POST serviceaccounts/NAME/token: the TokenRequest subresource as pkg/registry/core/serviceaccount/storage/token.go
// serves it at 1.32 (defaulting, validation, the bound object with its uid, node info for pod-bound tokens), and the
// check a TokenReview makes of a token that binding ties to objects that may have gone since.

import type { ApiCore, WriteResult } from './core.js';
import { ApiError, badRequest, conflict, invalid, type StatusCause } from './errors.js';
import { isObject, type Json, type JsonObject } from './json.js';
import type { ObjectClaim, ServiceAccountIssuer, ServiceAccountTokenPayload } from './issuer.js';
import { timestamp } from './objects.js';
import type { ResourceType } from './resources.js';

export interface TokenRequestPolicy {
  /** `--api-audiences`: what an empty `spec.audiences` becomes (default: the issuer). */
  apiAudiences: readonly string[];
  /** `--service-account-max-token-expiration` in seconds; 0 = no cap. */
  maxExpirationSeconds: number;
}

export const TOKEN_REQUEST_API_VERSION = 'authentication.k8s.io/v1';
const MIN_EXPIRATION_SECONDS = 600;
const MAX_EXPIRATION_SECONDS = 2 ** 32;
const DEFAULT_EXPIRATION_SECONDS = 3600;
/** A bound object marked for deletion stops backing its tokens this long after its deletionTimestamp. */
const DELETION_GRACE_MS = 60_000;

export async function createServiceAccountToken(
  core: ApiCore, issuer: ServiceAccountIssuer, policy: TokenRequestPolicy, namespace: string, saName: string, body: Json,
): Promise<WriteResult> {
  const req = decodeTokenRequest(body);
  const m = req.metadata;
  if (typeof m.name === 'string' && m.name !== '' && m.name !== saName) {
    throw invalid('TokenRequest', 'authentication.k8s.io', saName, [{ reason: 'FieldValueInvalid', field: 'metadata.name', message: `Invalid value: ${JSON.stringify(m.name)}: must match the service account name if specified` }]);
  }
  if (typeof m.namespace === 'string' && m.namespace !== '' && m.namespace !== namespace) {
    throw invalid('TokenRequest', 'authentication.k8s.io', saName, [{ reason: 'FieldValueInvalid', field: 'metadata.namespace', message: `Invalid value: ${JSON.stringify(m.namespace)}: must match the service account namespace if specified` }]);
  }
  const sa = core.get(coreType(core, 'serviceaccounts'), namespace, saName);
  const saUid = String((sa.metadata as JsonObject).uid);
  const spec = req.spec;
  if (spec.audiences.length === 0) spec.audiences = [...policy.apiAudiences];
  const causes = validateExpiration(spec.expirationSeconds);
  if (causes.length > 0) throw invalid('TokenRequest', 'authentication.k8s.io', '', causes);

  const bound = spec.boundObjectRef ? resolveBoundObject(core, namespace, saName, spec.boundObjectRef) : {};
  const warnings: string[] = [];
  if (policy.maxExpirationSeconds > 0 && spec.expirationSeconds > policy.maxExpirationSeconds) {
    warnings.push(`requested expiration of ${spec.expirationSeconds} seconds shortened to ${policy.maxExpirationSeconds} seconds`);
    spec.expirationSeconds = policy.maxExpirationSeconds;
  }
  const minted = await issuer.mint({
    namespace,
    serviceAccount: { name: saName, uid: saUid },
    audiences: spec.audiences,
    expirationSeconds: spec.expirationSeconds,
    ...bound,
  });
  const outSpec: JsonObject = { audiences: [...spec.audiences], expirationSeconds: spec.expirationSeconds };
  if (spec.boundObjectRef) outSpec.boundObjectRef = { ...spec.boundObjectRef };
  return {
    status: 201,
    body: {
      kind: 'TokenRequest',
      apiVersion: TOKEN_REQUEST_API_VERSION,
      metadata: { name: saName, namespace, creationTimestamp: null },
      spec: outSpec,
      status: { token: minted.token, expirationTimestamp: timestamp(minted.expiresAtMs) },
    },
    warnings,
  };
}

export interface ReviewResult {
  authenticated: boolean;
  /** Why not, in the authenticator's words, as TokenReview's status.error carries it (empty when authenticated). */
  error: string;
  /** The emulator's own account of why, for tests and logs (the real server logs it at V(4)). */
  detail?: string;
  payload?: ServiceAccountTokenPayload;
  username?: string;
  uid?: string;
  groups?: string[];
  extra?: Record<string, string[]>;
  audiences?: string[];
}

/**
 * What the service-account authenticator concludes about a token (pkg/serviceaccount/claims.go's validator): signed
 * by us, unexpired, for one of `audiences` when given, and every object it names still there with the same uid
 * (a bound object being deleted counts for 60 s after its deletionTimestamp).
 */
export async function reviewServiceAccountToken(
  core: ApiCore, issuer: ServiceAccountIssuer, token: string, audiences: readonly string[], nowMs: number,
): Promise<ReviewResult> {
  let payload: ServiceAccountTokenPayload;
  try {
    payload = await issuer.verify(token);
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    return { authenticated: false, error: `invalid bearer token, ${why}`, detail: why };
  }
  const tokenAud = Array.isArray(payload.aud) ? payload.aud : [String(payload.aud)];
  const matched = audiences.length === 0 ? tokenAud : tokenAud.filter((a) => audiences.includes(a));
  if (matched.length === 0) {
    const why = `token audiences ${JSON.stringify(tokenAud)} is invalid for the target audiences ${JSON.stringify(audiences)}`;
    return { authenticated: false, error: `invalid bearer token, ${why}`, detail: why };
  }
  const kube = payload['kubernetes.io'];
  if (!isObject(kube as unknown as Json)) return { authenticated: false, error: 'invalid bearer token, Token could not be validated.', detail: 'no kubernetes.io claim' };
  const checks: [string, string, ObjectClaim | undefined][] = [
    ['serviceaccounts', kube.namespace, { name: kube.serviceaccount.name, uid: kube.serviceaccount.uid }],
    ['pods', kube.namespace, kube.pod],
    ['secrets', kube.namespace, kube.secret],
    // A pod-bound token's node is information only; a node-bound token lives as long as its Node.
    ['nodes', '', kube.pod ? undefined : kube.node],
  ];
  for (const [plural, ns, ref] of checks) {
    if (!ref) continue;
    const live = core.store.get(core.key(coreType(core, plural)), ns, ref.name);
    const m = live ? (live.metadata as JsonObject) : undefined;
    const what = ({ serviceaccounts: 'ServiceAccount', pods: 'Pod', secrets: 'Secret', nodes: 'Node' } as Record<string, string>)[plural] ?? plural;
    const where = ns === '' ? ref.name : `${ns}/${ref.name}`;
    if (!m) return invalidated(`${what} ${where} has been deleted`);
    if (ref.uid !== undefined && m.uid !== ref.uid) return invalidated(`${what} UID (${String(m.uid)}) does not match claim (${ref.uid})`);
    if (typeof m.deletionTimestamp === 'string' && Date.parse(m.deletionTimestamp) + DELETION_GRACE_MS < nowMs) {
      return invalidated(`${what} ${where} is being deleted`);
    }
  }
  const extra: Record<string, string[]> = { 'authentication.kubernetes.io/credential-id': [`JTI=${payload.jti}`] };
  if (kube.pod) {
    extra['authentication.kubernetes.io/pod-name'] = [kube.pod.name];
    if (kube.pod.uid) extra['authentication.kubernetes.io/pod-uid'] = [kube.pod.uid];
  }
  if (kube.node) {
    extra['authentication.kubernetes.io/node-name'] = [kube.node.name];
    if (kube.node.uid) extra['authentication.kubernetes.io/node-uid'] = [kube.node.uid];
  }
  return {
    authenticated: true,
    error: '',
    payload,
    username: payload.sub,
    uid: kube.serviceaccount.uid,
    groups: ['system:serviceaccounts', `system:serviceaccounts:${kube.namespace}`, 'system:authenticated'],
    extra,
    audiences: matched,
  };
}

function invalidated(detail: string): ReviewResult {
  return { authenticated: false, error: 'invalid bearer token, service account token has been invalidated', detail };
}

/**
 * POST /apis/authentication.k8s.io/v1/tokenreviews (pkg/registry/authentication/tokenreview): the verdict on a token,
 * for the audiences asked (default: the API server's).
 */
export async function createTokenReview(
  core: ApiCore, issuer: ServiceAccountIssuer, apiAudiences: readonly string[], body: Json, nowMs: number,
): Promise<WriteResult> {
  if (!isObject(body)) throw badRequest('the object provided is unrecognized (must be of type TokenReview)');
  if (body.kind !== undefined && body.kind !== '' && body.kind !== 'TokenReview') {
    throw badRequest(`the kind in the body (${String(body.kind)}) does not match the expected kind (TokenReview)`);
  }
  const spec = isObject(body.spec) ? body.spec : {};
  const token = typeof spec.token === 'string' ? spec.token : '';
  if (token === '') throw badRequest('token is required for TokenReview in authentication');
  const asked = Array.isArray(spec.audiences) ? spec.audiences.filter((a): a is string => typeof a === 'string') : [];
  const verdict = await reviewServiceAccountToken(core, issuer, token, asked.length > 0 ? asked : apiAudiences, nowMs);
  const status: JsonObject = verdict.authenticated
    ? {
      authenticated: true,
      user: { username: verdict.username ?? '', uid: verdict.uid ?? '', groups: verdict.groups ?? [], extra: verdict.extra ?? {} },
      audiences: verdict.audiences ?? [],
    }
    : { user: {}, error: verdict.error };
  const outSpec: JsonObject = { token };
  if (asked.length > 0) outSpec.audiences = asked;
  return {
    status: 201,
    body: { kind: 'TokenReview', apiVersion: TOKEN_REQUEST_API_VERSION, metadata: { creationTimestamp: null }, spec: outSpec, status },
    warnings: [],
  };
}

interface BoundObjectRef {
  kind: string;
  apiVersion: string;
  name: string;
  uid: string;
}

interface DecodedTokenRequest {
  metadata: JsonObject;
  spec: { audiences: string[]; expirationSeconds: number; boundObjectRef?: BoundObjectRef };
}

/**
 * Decoding into authentication/v1.TokenRequest with v1 defaulting (expirationSeconds 3600). A field of the wrong
 * JSON type fails the whole request, as Go's decoder does: a bound reference that cannot be read must never turn
 * into an unbound token.
 */
function decodeTokenRequest(body: Json): DecodedTokenRequest {
  if (!isObject(body)) throw badRequest('the object provided is unrecognized (must be of type TokenRequest)');
  if (body.kind !== undefined && body.kind !== '' && body.kind !== 'TokenRequest') {
    throw badRequest(`the kind in the body (${String(body.kind)}) does not match the expected kind (TokenRequest)`);
  }
  if (body.apiVersion !== undefined && body.apiVersion !== '' && body.apiVersion !== TOKEN_REQUEST_API_VERSION) {
    throw badRequest(`the API version in the data (${String(body.apiVersion)}) does not match the expected API version (${TOKEN_REQUEST_API_VERSION})`);
  }
  const metadata = objectField(body, 'metadata', 'TokenRequest.metadata', 'v1.ObjectMeta');
  const spec = objectField(body, 'spec', 'TokenRequest.spec', 'v1.TokenRequestSpec');
  for (const key of ['name', 'namespace', 'uid']) {
    if (metadata[key] !== undefined && metadata[key] !== null && typeof metadata[key] !== 'string') throw cannotUnmarshal(metadata[key], `ObjectMeta.metadata.${key}`, 'string');
  }
  const audiences = spec.audiences ?? [];
  if (!Array.isArray(audiences) || !audiences.every((a): a is string => typeof a === 'string')) {
    throw cannotUnmarshal(spec.audiences, 'TokenRequestSpec.spec.audiences', '[]string');
  }
  const exp = spec.expirationSeconds ?? DEFAULT_EXPIRATION_SECONDS;
  if (typeof exp !== 'number' || !Number.isInteger(exp)) throw cannotUnmarshal(exp, 'TokenRequestSpec.spec.expirationSeconds', 'int64');
  const out: DecodedTokenRequest = { metadata, spec: { audiences: [...audiences], expirationSeconds: exp } };
  if (spec.boundObjectRef !== undefined && spec.boundObjectRef !== null) {
    const r = objectField(spec, 'boundObjectRef', 'TokenRequestSpec.spec.boundObjectRef', 'v1.BoundObjectReference');
    const str = (key: string): string => {
      const v = r[key];
      if (v === undefined || v === null) return '';
      if (typeof v !== 'string') throw cannotUnmarshal(v, `BoundObjectReference.spec.boundObjectRef.${key}`, 'string');
      return v;
    };
    out.spec.boundObjectRef = { kind: str('kind'), apiVersion: str('apiVersion'), name: str('name'), uid: str('uid') };
  }
  return out;
}

/** An object-valued field: absent or null is empty, anything else but an object is a decoding error. */
function objectField(parent: JsonObject, key: string, goField: string, goType: string): JsonObject {
  const v = parent[key];
  if (v === undefined || v === null) return {};
  if (!isObject(v)) throw cannotUnmarshal(v, goField, goType);
  return v;
}

function cannotUnmarshal(value: Json | undefined, goField: string, goType: string): ApiError {
  const jsonType = Array.isArray(value) ? 'array' : value === null ? 'null' : typeof value === 'object' ? 'object' : typeof value;
  return badRequest(`TokenRequest in version "v1" cannot be handled as a TokenRequest: json: cannot unmarshal ${jsonType} into Go struct field ${goField} of type ${goType}`);
}

function validateExpiration(seconds: number): StatusCause[] {
  if (seconds < MIN_EXPIRATION_SECONDS) {
    return [{ reason: 'FieldValueInvalid', field: 'spec.expirationSeconds', message: `Invalid value: ${seconds}: may not specify a duration less than 10 minutes` }];
  }
  if (seconds > MAX_EXPIRATION_SECONDS) {
    return [{ reason: 'FieldValueInvalid', field: 'spec.expirationSeconds', message: `Invalid value: ${seconds}: may not specify a duration larger than 2^32 seconds` }];
  }
  return [];
}

/** The bound object's claims; the pod's node comes along as ServiceAccountTokenPodNodeInfo (beta, on) adds it. */
function resolveBoundObject(core: ApiCore, namespace: string, saName: string, ref: BoundObjectRef): { pod?: ObjectClaim; secret?: ObjectClaim; node?: ObjectClaim } {
  const gv = parseGroupVersion(ref.apiVersion);
  // The registry's key function refuses an empty name before any lookup.
  const known = gv.group === '' && ['Pod', 'Node', 'Secret'].includes(ref.kind);
  if (known && ref.name === '') throw badRequest('Name parameter required.');
  let uid: string;
  let claims: { pod?: ObjectClaim; secret?: ObjectClaim; node?: ObjectClaim };
  if (gv.group === '' && ref.kind === 'Pod') {
    const pod = core.get(coreType(core, 'pods'), namespace, ref.name);
    const spec = isObject(pod.spec) ? pod.spec : {};
    // The ServiceAccount admission plugin gives a pod without one `default`.
    const podSa = typeof spec.serviceAccountName === 'string' && spec.serviceAccountName !== '' ? spec.serviceAccountName : 'default';
    if (podSa !== saName) throw badRequest(`cannot bind token for serviceaccount "${saName}" to pod running with different serviceaccount name.`);
    uid = String((pod.metadata as JsonObject).uid);
    claims = { pod: { name: ref.name, uid } };
    const nodeName = typeof spec.nodeName === 'string' ? spec.nodeName : '';
    if (nodeName !== '') {
      const node = core.store.get(core.key(coreType(core, 'nodes')), '', nodeName);
      // A Node that is not there is tolerated: its name only.
      claims.node = node ? { name: nodeName, uid: String((node.metadata as JsonObject).uid) } : { name: nodeName };
    }
  } else if (gv.group === '' && ref.kind === 'Node') {
    const node = core.get(coreType(core, 'nodes'), undefined, ref.name);
    uid = String((node.metadata as JsonObject).uid);
    claims = { node: { name: ref.name, uid } };
  } else if (gv.group === '' && ref.kind === 'Secret') {
    const secret = core.get(coreType(core, 'secrets'), namespace, ref.name);
    uid = String((secret.metadata as JsonObject).uid);
    claims = { secret: { name: ref.name, uid } };
  } else {
    throw badRequest(`cannot bind token to object of type ${gv.group}/${gv.version}, Kind=${ref.kind}`);
  }
  if (ref.uid !== '' && ref.uid !== uid) {
    throw conflict({ group: gv.group, plural: ref.kind }, ref.name, `the UID in the bound object reference (${ref.uid}) does not match the UID in record. The object might have been deleted and then recreated`);
  }
  return claims;
}

/** schema.FromAPIVersionAndKind: `v1` is the core group; an unparsable apiVersion leaves group and version empty. */
function parseGroupVersion(apiVersion: string): { group: string; version: string } {
  if (apiVersion === '') return { group: '', version: '' };
  const parts = apiVersion.split('/');
  if (parts.length === 1) return { group: '', version: apiVersion };
  if (parts.length === 2) return { group: parts[0] ?? '', version: parts[1] ?? '' };
  return { group: '', version: '' };
}

function coreType(core: ApiCore, plural: string): ResourceType {
  const t = core.registry.get('', 'v1', plural);
  if (!t) throw new ApiError(500, 'InternalError', `Internal error occurred: no core/v1 ${plural}`);
  return t;
}
