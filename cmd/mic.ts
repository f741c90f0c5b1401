// MIC entry point: parse flags once into a frozen config, build the logger, kube config and ARM client, start MIC,
// and on SIGTERM/SIGINT stop it within a deadline. The only place MIC reads process.env or exits.
//
// Emulator runs (no real Azure) point ARM and AAD elsewhere with `--arm-endpoint` plus the env var
// AZURE_AUTHORITY_HOST (AAD authority for the service principal, the variable @azure/identity itself reads);
// trust the emulator's CA with NODE_EXTRA_CA_CERTS.
import { readFileSync } from 'node:fs';
import { parseCloudConfig, type AzureCloudConfig } from '../src/azure/cloud-config.js';
import { armCredential } from '../src/azure/credentials.js';
import { errorMessage } from '../src/common/errors.js';
import { createLogger } from '../src/common/log.js';
import { startProfileServer } from '../src/common/profile.js';
import { onStopSignals, stopWithin } from '../src/common/signals.js';
import { loadKubeAccess } from '../src/kube/index.js';
import { reloadableArm } from '../src/mic/arm/wiring.js';
import { micUsage, parseMicConfig, type MicConfig } from '../src/mic/config.js';
import { startMic } from '../src/mic/mic.js';

const VERSION = '0.1.0';
const STOP_DEADLINE_MS = 20_000;

async function main(): Promise<number> {
  const parsed = parseMicConfig(process.argv.slice(2), process.env);
  if (!parsed.ok) {
    for (const error of parsed.errors) process.stderr.write(`mic: ${error}\n`);
    process.stderr.write('Run with --help to list the flags.\n');
    return 2;
  }
  const config = parsed.value;
  if (config.help) {
    process.stdout.write(micUsage());
    return 0;
  }
  if (config.version) {
    process.stdout.write(`mic ${VERSION}\n`);
    return 0;
  }
  const logger = createLogger({
    format: config.logFormat,
    level: config.logVerbosity >= 4 ? 'debug' : 'info',
    base: { app: 'mic' },
  });
  // Lives until the process exits.
  if (config.enableProfile) await startProfileServer({ port: config.profilePort, logger });
  if (config.ignoredFlags.length > 0) {
    logger.warn({ flags: config.ignoredFlags }, 'klog flags have no effect here (logs are one line per event on stderr; see --log-format and -v)');
  }

  let cloud: AzureCloudConfig;
  let fileText: string | undefined;
  try {
    fileText = config.cloudconfig !== undefined ? readFileSync(config.cloudconfig, 'utf8') : undefined;
    cloud = cloudConfig(config, fileText);
  } catch (err) {
    process.stderr.write(`mic: ${errorMessage(err)}\n`);
    return 2;
  }

  const userAgent = `aad-pod-identity/MIC/${VERSION}${config.customUserAgent ? ` ${config.customUserAgent}` : ''}`;
  // No --kubeconfig: KUBECONFIG, ~/.kube/config, then the pod's service account (client-node's default order), as NMI.
  // Our own loader, not client-node's KubeConfig, which would load its whole generated API (~26 MB of live heap).
  const kubeConfig = loadKubeAccess({ ...(config.kubeconfig ? { kubeconfigPath: config.kubeconfig } : {}), userAgent, env: process.env });
  const clusterIdentity = cloud.auth.kind === 'managedIdentity' ? cloud.auth.userAssignedIdentityId : undefined;
  const arm = reloadableArm({
    config,
    cloud,
    credential: armCredential(cloud),
    credentialFor: (next) => armCredential(next),
    logger,
    ...(clusterIdentity ? { clusterIdentityClientId: clusterIdentity } : {}),
  });

  const mic = await startMic(config, {
    kubeConfig,
    logger,
    ...(clusterIdentity ? { clusterIdentityClientId: clusterIdentity } : {}),
    cloudAuthority: cloud.environment.activeDirectoryEndpoint,
    armClient: arm.factory,
    federatedCredentials: arm.federatedCredentials,
    // Re-read on change, as the original's fsnotify watcher did (credential rotation without a restart).
    ...(config.cloudconfig !== undefined && fileText !== undefined
      ? {
          cloudConfigFile: {
            path: config.cloudconfig,
            initialText: fileText,
            parse: (text: string) => cloudConfig(config, text),
            apply: (next: AzureCloudConfig) => arm.reload(next),
          },
        }
      : {}),
  });
  process.stdout.write(`${JSON.stringify({ ready: true, probe: mic.probeUrl, metrics: mic.metricsUrl })}\n`);

  return new Promise<number>((resolve) => {
    onStopSignals(
      (signal) => {
        logger.info({ signal }, 'stopping');
        void stopWithin(() => mic.stop(), STOP_DEADLINE_MS, logger).then(resolve);
      },
      (signal) => logger.info({ signal }, 'already stopping; finishing the cleanup first'),
    );
  });
}

/** azure.json (--cloudconfig) or the admin-secret env vars; --arm-endpoint (+ AZURE_AUTHORITY_HOST) override the cloud's. */
function cloudConfig(config: MicConfig, fileText: string | undefined): AzureCloudConfig {
  const envFile = process.env['AZURE_ENVIRONMENT_FILEPATH'];
  const sources = {
    ...(fileText !== undefined ? { fileText, filePath: config.cloudconfig } : {}),
    env: process.env,
    ...(envFile ? { environmentFileText: readFileSync(envFile, 'utf8') } : {}),
  };
  if (config.armEndpoint === undefined) return parseCloudConfig(sources);
  // Without AZURE_AUTHORITY_HOST the named cloud's AAD stays in use.
  const authority = process.env['AZURE_AUTHORITY_HOST'] || parseCloudConfig(sources).environment.activeDirectoryEndpoint;
  return parseCloudConfig({
    ...sources,
    customEndpoints: { resourceManagerEndpoint: config.armEndpoint, activeDirectoryEndpoint: authority },
  });
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`mic: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
