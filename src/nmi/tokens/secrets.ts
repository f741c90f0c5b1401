// Reading the Secret an AzureIdentity's clientPassword points at, and picking the credential out of it.
// The original took "the first value it iterates" for type 1 (random with several keys); we choose deterministically.
import { secretNamespaceRefusal } from '../../crds/credential-policy.js';
import { TokenError, type SecretRef } from './types.js';

/** Port: the decoded `data` of a Secret (values are raw bytes). NMI implements it over the Kubernetes API. */
export interface SecretReader {
  get(namespace: string, name: string): Promise<Record<string, Buffer>>;
}

/** The slice of client-node's CoreV1Api we need; structural so tests and other clients can provide it. */
export interface SecretApi {
  readNamespacedSecret(param: { name: string; namespace: string }): Promise<{ data?: { [key: string]: string } }>;
}

/** SecretReader over @kubernetes/client-node's CoreV1Api (`data` values are base64 on the wire). */
export function kubeSecretReader(core: SecretApi): SecretReader {
  return {
    async get(namespace, name) {
      const secret = await core.readNamespacedSecret({ name, namespace });
      const out: Record<string, Buffer> = {};
      for (const [k, v] of Object.entries(secret.data ?? {})) out[k] = Buffer.from(v, 'base64');
      return out;
    },
  };
}

/** A SecretReader that calls `onError` for every failed read (the original's `get_secret` Kubernetes API error count). */
export function countingSecretReader(inner: SecretReader, onError: () => void): SecretReader {
  return {
    async get(namespace, name) {
      try {
        return await inner.get(namespace, name);
      } catch (err) {
        onError();
        throw err;
      }
    },
  };
}

/**
 * Read the referenced Secret, turning every failure into an `invalid` TokenError. A Secret outside the identity's
 * namespace is refused (`refused`) before any read, unless `allowCrossNamespace` (NMI's
 * `--allow-cross-namespace-secrets`). Messages name the Secret for NMI's log; the pod only sees `publicMessage`.
 */
export async function readSecret(
  reader: SecretReader,
  ref: SecretRef | undefined,
  identityNamespace: string,
  allowCrossNamespace = false,
): Promise<Record<string, Buffer>> {
  if (!ref || !ref.name || !ref.namespace) {
    throw new TokenError('invalid', 'identity has no clientPassword secret reference with both name and namespace', {
      publicMessage: 'the identity has no clientPassword secret reference with both name and namespace',
    });
  }
  const refusal = secretNamespaceRefusal(identityNamespace, ref, { allowCrossNamespaceSecrets: allowCrossNamespace });
  if (refusal) throw new TokenError('refused', `identity in namespace ${identityNamespace} refused: ${refusal.reason}`);
  try {
    return await reader.get(ref.namespace, ref.name);
  } catch (cause) {
    throw new TokenError('invalid', `failed to read secret ${ref.namespace}/${ref.name}`, { cause });
  }
}

/**
 * Type 1. The original took the first value Go's map iteration gave, which with several keys is a random one. We
 * take, in order: the value under `clientSecret`; the only key's; the only non-empty value (other keys empty); the
 * value every non-empty key holds, when they all hold the same. Several different values and none under
 * `clientSecret` is ambiguous: the original would send a randomly chosen one to AAD (working by chance, and
 * sending unrelated values as a client secret), so it is an error rather than a guess. Errors give the number of
 * keys, never their names or values (a key name can be a secret too).
 */
export function selectClientSecret(data: Record<string, Buffer>, ref: SecretRef): string {
  const keys = Object.keys(data).sort();
  const where = `secret ${ref.namespace}/${ref.name}`;
  if (keys.length === 0) throw new TokenError('invalid', `${where} has no data`);
  let text: string;
  if (Object.hasOwn(data, 'clientSecret')) text = (data['clientSecret'] ?? Buffer.alloc(0)).toString('utf8');
  else {
    const values = new Set(keys.map((k) => (data[k] ?? Buffer.alloc(0)).toString('utf8')).filter((v) => v !== ''));
    if (values.size > 1) {
      throw new TokenError(
        'invalid',
        `${where} has ${keys.length} keys holding ${values.size} different values and none is named clientSecret; cannot tell which is the secret (put it under clientSecret)`,
      );
    }
    text = [...values][0] ?? '';
  }
  if (text === '') throw new TokenError('invalid', `${where}: the client secret is empty`);
  return text;
}

/** Type 2: the PKCS#12 bytes under `certificate` and its password under `password` (may be empty). */
export function selectCertificate(data: Record<string, Buffer>, ref: SecretRef): { pfx: Buffer; password: string } {
  const where = `secret ${ref.namespace}/${ref.name}`;
  const pfx = data['certificate'];
  if (!pfx || pfx.length === 0) {
    throw new TokenError('invalid', `${where} has no certificate key (it has ${Object.keys(data).length} other keys)`);
  }
  const password = data['password']?.toString('utf8') ?? '';
  return { pfx, password };
}
