// `npm run azure-emulator -- [--port N] [--host H] [--state-file F] [--ca-out FILE] [--tenant-id T]
//   [--subscription-id S] [--lro sync|async] [--token-lifetime SECONDS] [--latency OPERATION=MS ...]
//   [--fic-propagation MS] [--trust-issuer-ca PEMFILE ...] [--log-level L]`:
// runs the Azure emulator (ARM + AAD over HTTPS, admin API under /_admin, IMDS listeners from the state file)
// until SIGINT/SIGTERM, after printing one JSON `ready` line.

import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { createLogger, type LogLevel } from '../src/common/log.js';
import { EMULATOR_OPERATIONS, startAzureEmulator, type EmulatorOperation, type LroMode } from '../src/sandbox/cloud/index.js';
import { applySeedState, parseSeedState } from '../src/sandbox/cloud/seed.js';
import { parseArgvOrExit, parsePort, runMain, serveUntilSignal } from './lib/serve.js';

interface AzureEmulatorCliConfig {
  readonly host: string;
  readonly port: number;
  readonly stateFile: string | undefined;
  readonly caOut: string | undefined;
  readonly tenantId: string | undefined;
  readonly subscriptionId: string | undefined;
  readonly lro: LroMode;
  readonly tokenLifetimeSeconds: number | undefined;
  /** `--latency vmss_patch=2000 --latency fic_put=1000`: what `setLatency` sets, from the start. */
  readonly latencyMs: Partial<Record<EmulatorOperation, number>>;
  readonly ficPropagationMs: number;
  readonly trustIssuerCaFiles: readonly string[];
  readonly logLevel: LogLevel;
}

function parseConfig(argv: readonly string[]): AzureEmulatorCliConfig {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      host: { type: 'string', default: '127.0.0.1' },
      port: { type: 'string', default: '0' },
      'state-file': { type: 'string' },
      'ca-out': { type: 'string' },
      'tenant-id': { type: 'string' },
      'subscription-id': { type: 'string' },
      lro: { type: 'string', default: 'async' },
      'token-lifetime': { type: 'string' },
      latency: { type: 'string', multiple: true },
      'fic-propagation': { type: 'string', default: '0' },
      'trust-issuer-ca': { type: 'string', multiple: true },
      'log-level': { type: 'string', default: 'warn' },
    },
    strict: true,
  });
  const port = parsePort(values.port);
  if (values.lro !== 'sync' && values.lro !== 'async') throw new Error(`--lro: expected sync or async, got ${values.lro}`);
  const lifetime = values['token-lifetime'] === undefined ? undefined : Number(values['token-lifetime']);
  if (lifetime !== undefined && (!Number.isInteger(lifetime) || lifetime < 1)) throw new Error('--token-lifetime: not a positive integer');
  const level = values['log-level'] ?? 'warn';
  if (!['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].includes(level)) throw new Error(`--log-level: unknown level ${level}`);
  const latencyMs: Partial<Record<EmulatorOperation, number>> = {};
  for (const spec of values.latency ?? []) {
    const m = /^([a-z_]+)=(\d+)$/.exec(spec);
    if (!m) throw new Error(`--latency: expected OPERATION=MS (e.g. vmss_patch=2000, fic_put=1000), got ${spec}`);
    if (!(EMULATOR_OPERATIONS as readonly string[]).includes(m[1] ?? '')) {
      throw new Error(`--latency: unknown operation ${m[1]}; known: ${EMULATOR_OPERATIONS.join(', ')}`);
    }
    latencyMs[m[1] as EmulatorOperation] = Number(m[2]);
  }
  const propagation = Number(values['fic-propagation']);
  if (!Number.isInteger(propagation) || propagation < 0) throw new Error('--fic-propagation: not a non-negative integer (ms)');
  return Object.freeze({
    host: values.host ?? '127.0.0.1',
    port,
    stateFile: values['state-file'],
    caOut: values['ca-out'],
    tenantId: values['tenant-id'],
    subscriptionId: values['subscription-id'],
    lro: values.lro,
    tokenLifetimeSeconds: lifetime,
    latencyMs,
    ficPropagationMs: propagation,
    trustIssuerCaFiles: values['trust-issuer-ca'] ?? [],
    logLevel: level as LogLevel,
  });
}

async function main(): Promise<void> {
  const config = parseArgvOrExit(parseConfig);
  const seed = config.stateFile ? parseSeedState(await readFile(config.stateFile, 'utf8')) : {};
  const emulator = await startAzureEmulator({
    host: config.host,
    port: config.port,
    lro: config.lro,
    latencyMs: config.latencyMs,
    federation: {
      propagationMs: config.ficPropagationMs,
      trustedIssuerCas: await Promise.all(config.trustIssuerCaFiles.map((f) => readFile(f, 'utf8'))),
    },
    logger: createLogger({ level: config.logLevel, base: { app: 'azure-emulator' } }),
    ...(config.caOut ? { caFile: config.caOut } : {}),
    ...(config.tenantId ? { tenantId: config.tenantId } : {}),
    ...(config.subscriptionId ? { subscriptionId: config.subscriptionId } : {}),
    ...(config.tokenLifetimeSeconds ? { tokenLifetimeSeconds: config.tokenLifetimeSeconds } : {}),
  });
  const seeded = await applySeedState(emulator, seed);
  serveUntilSignal(emulator, {
    url: emulator.url,
    admin: `${emulator.url}/_admin`,
    caFile: emulator.caFile,
    tenantId: emulator.tenantId,
    subscriptionId: emulator.subscriptionId,
    identities: seeded.identities,
    imds: seeded.imds,
  });
}

runMain('azure-emulator', main);
