// A pod's program: asks for a token with @azure/identity's ManagedIdentityCredential, exactly as an application on
// AKS would (no endpoint, no secret), and prints one JSON line with the token's identity claims.
//
//   node examples/pod-token.mjs [--scope S] [--client-id ID | --resource-id ID] [--max-retries N] [--timeout-ms MS]
//
// Exit 0 with {"ok":true,...} when a token came back, 1 with {"ok":false,...} otherwise.
import { ManagedIdentityCredential } from '@azure/identity';

const args = new Map();
for (let i = 2; i < process.argv.length; i += 2) args.set(process.argv[i].replace(/^--/, ''), process.argv[i + 1]);
const scope = args.get('scope') ?? 'https://management.azure.com/.default';
const timeoutMs = Number(args.get('timeout-ms') ?? 60000);

const options = {};
if (args.has('client-id')) options.clientId = args.get('client-id');
if (args.has('resource-id')) options.resourceId = args.get('resource-id');
if (args.has('max-retries')) options.retryOptions = { maxRetries: Number(args.get('max-retries')) };

const print = (value, code) => {
  process.stdout.write(`${JSON.stringify(value)}\n`);
  process.exit(code);
};

// getToken has no deadline of its own when the endpoint accepts and never answers.
setTimeout(() => print({ ok: false, error: 'Timeout', message: `no answer within ${timeoutMs} ms` }, 1), timeoutMs).unref();

try {
  const token = await new ManagedIdentityCredential(options).getToken(scope);
  const claims = JSON.parse(Buffer.from(token.token.split('.')[1], 'base64url').toString('utf8'));
  const { appid, oid, aud, tid, xms_mirid } = claims;
  print({ ok: true, claims: { appid, oid, aud, tid, xms_mirid }, expiresOn: token.expiresOnTimestamp }, 0);
} catch (error) {
  const cause = error?.cause;
  print({ ok: false, error: error?.name ?? 'Error', message: String(error?.message ?? error).split('\n')[0], status: cause?.statusCode ?? cause?.status }, 1);
}
