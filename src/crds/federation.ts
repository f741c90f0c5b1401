// Federated mode's fixed vocabulary, shared by MIC (which writes federated identity credentials) and NMI (which
// presents the matching service-account token): the subject, the audience, and the names MIC gives the credentials.
import { createHash } from 'node:crypto';

/** The one audience of every credential MIC writes, and the audience NMI asks TokenRequest for. */
export const FEDERATED_AUDIENCE = 'api://AzureADTokenExchange';

/** Every credential MIC creates is named with this prefix; MIC never updates or deletes a credential without it. */
export const FEDERATED_CREDENTIAL_PREFIX = 'aadpodid-';

/** Azure's name rule for federated identity credentials: 3–120 characters, first alphanumeric (federation.md §2.3). */
export const FEDERATED_CREDENTIAL_NAME = /^[A-Za-z0-9][A-Za-z0-9_-]{2,119}$/;

/** Most federated identity credentials Azure keeps under one user-assigned identity. */
export const MAX_FEDERATED_CREDENTIALS = 20;

const SUBJECT_PREFIX = 'system:serviceaccount:';
const HASH_HEX = 10;
const MAX_NAME = 120;
// prefix + readable + '-' + hash
const MAX_READABLE = MAX_NAME - FEDERATED_CREDENTIAL_PREFIX.length - 1 - HASH_HEX;

/** The subject Kubernetes puts in a service account's tokens (`sub`), byte for byte. */
export function serviceAccountSubject(namespace: string, serviceAccount: string): string {
  return `${SUBJECT_PREFIX}${namespace}:${serviceAccount}`;
}

/** namespace and service account of a service-account subject, or null for any other subject. */
export function parseServiceAccountSubject(subject: string): { namespace: string; serviceAccount: string } | null {
  if (!subject.startsWith(SUBJECT_PREFIX)) return null;
  const rest = subject.slice(SUBJECT_PREFIX.length);
  const colon = rest.indexOf(':');
  if (colon <= 0 || colon === rest.length - 1 || rest.indexOf(':', colon + 1) !== -1) return null;
  return { namespace: rest.slice(0, colon), serviceAccount: rest.slice(colon + 1) };
}

/**
 * The name MIC gives the credential for (issuer, subject): `aadpodid-<namespace>-<serviceaccount>-<10 hex>`, the
 * readable part cut to fit 120 characters and any character Azure refuses turned into '-'. The hash (SHA-256 of
 * issuer + "\n" + subject) makes it unique per pair, so two clusters sharing one identity never collide.
 */
export function federatedCredentialName(issuer: string, subject: string): string {
  const parsed = parseServiceAccountSubject(subject);
  const readable = (parsed === null ? 'subject' : `${parsed.namespace}-${parsed.serviceAccount}`)
    .replace(/[^A-Za-z0-9_-]/g, '-')
    .slice(0, MAX_READABLE);
  const hash = createHash('sha256').update(`${issuer}\n${subject}`).digest('hex').slice(0, HASH_HEX);
  return `${FEDERATED_CREDENTIAL_PREFIX}${readable}-${hash}`;
}

/**
 * True when MIC made this credential for this cluster: our prefix, our issuer, and exactly the name we would give its
 * (issuer, subject). Anything else (a user's credential, another cluster's, one renamed by hand) is never touched.
 */
export function isOwnFederatedCredential(fic: { name: string; issuer: string; subject: string }, issuer: string): boolean {
  return (
    fic.name.startsWith(FEDERATED_CREDENTIAL_PREFIX) &&
    fic.issuer === issuer &&
    fic.name === federatedCredentialName(issuer, fic.subject)
  );
}
