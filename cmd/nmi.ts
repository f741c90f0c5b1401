// NMI entry point: parse flags once, build, start, stop on SIGTERM (keeping the iptables rules: fail closed), exit.
// `--uninstall-iptables` is the one path that removes the rules: it does only that and exits.

import { createLogger, fileDestination, stdoutDestination } from '../src/common/log.js';
import { startProfileServer } from '../src/common/profile.js';
import { onStopSignals, stopWithin } from '../src/common/signals.js';
import { loadKubeConfig } from '../src/kube/kubeconfig.js';
import { parseNmiConfig, nmiUsage } from '../src/nmi/config.js';
import { CHAIN, createIptables } from '../src/nmi/iptables.js';
import { detectKubenet, KUBENET_REFUSAL } from '../src/nmi/kubenet.js';
import { bearerTokenFileProblem } from '../src/nmi/metrics-endpoint.js';
import { startNmi, type KubenetStatus } from '../src/nmi/nmi.js';
import { readFileSync } from 'node:fs';
import { parseAzureJson, rawFromEnv, resolveCloudEnvironment } from '../src/azure/cloud-config.js';

const VERSION = '0.1.0';
const STOP_DEADLINE_MS = 20_000;
// A readdir of a small root-owned directory: cheap enough to poll until the runtime writes its CNI config.
const KUBENET_RECHECK_MS = 2_000;

async function main(): Promise<number> {
  const parsed = parseNmiConfig(process.argv.slice(2), process.env);
  if (!parsed.ok) {
    for (const error of parsed.errors) process.stderr.write(`nmi: ${error}\n`);
    process.stderr.write('Run with --help to list the flags.\n');
    return 2;
  }
  const config = parsed.value;
  if (config.help) {
    process.stdout.write(nmiUsage());
    return 0;
  }
  if (config.version) {
    process.stdout.write(`nmi ${VERSION}\n`);
    return 0;
  }
  const stdout = stdoutDestination();
  const logger = createLogger({
    format: config.logFormat,
    level: config.logVerbosity >= 4 ? 'debug' : 'info',
    base: { app: 'nmi', node: config.node },
    destination: stdout,
  });
  // Lives until the process exits.
  if (config.enableProfile) {
    logger.warn(
      { profilePort: config.profilePort },
      '--enableProfile: a heap snapshot holds every token NMI has in memory, and any host-network process can read it on 127.0.0.1; turn it off once done debugging',
    );
    await startProfileServer({ port: config.profilePort, logger });
  }
  if (config.ignoredFlags.length > 0) {
    logger.warn({ flags: config.ignoredFlags }, 'klog flags have no effect here (logs are one line per event on stderr; see --log-format and -v)');
  }

  if (config.uninstallIptables) {
    const iptables = createIptables(
      { metadataIp: config.metadataIp, metadataPort: config.metadataPort, nmiHost: config.nmiListenAddress, nmiPort: config.nmiPort },
      { binary: config.iptablesBinary },
    );
    try {
      const existed = (await iptables.listChain()) !== undefined;
      await iptables.cleanup();
      logger.info({ chain: CHAIN, existed }, 'iptables rules removed: pods on this node now reach the instance metadata service directly');
      process.stdout.write(`${JSON.stringify({ uninstalled: true, chain: CHAIN, existed })}\n`);
      return 0;
    } catch (error) {
      logger.error({ err: error, chain: CHAIN }, 'removing the iptables rules failed');
      return 1;
    }
  }

  if (config.metricsBearerTokenFile !== '') {
    const problem = bearerTokenFileProblem(config.metricsBearerTokenFile);
    if (problem !== undefined) {
      logger.fatal({ metricsBearerTokenFile: config.metricsBearerTokenFile }, problem);
      return 1;
    }
  }

  const kubenetSources = { kubeletConfig: config.kubeletConfig, cniConfDir: config.cniConfDir };
  let kubenetRecheck = false;
  // Looked at even when allowed, so that /status (and doctor) can say what the node is.
  const detected = detectKubenet(kubenetSources);
  for (const note of detected.notes) logger.warn({ kubeletConfig: config.kubeletConfig, cniConfDir: config.cniConfDir }, note);
  if (!config.allowNetworkPluginKubenet) {
    if (detected.kubenet !== undefined) {
      logger.fatal({ kubeletConfig: config.kubeletConfig, cniConfDir: config.cniConfDir, reason: detected.kubenet }, KUBENET_REFUSAL);
      return 1;
    }
    // The runtime writes its CNI config once the node has a pod CIDR, possibly after NMI started: look again.
    kubenetRecheck = !detected.cniNetworkFound && config.cniConfDir !== '';
  } else if (detected.kubenet !== undefined) {
    logger.warn({ reason: detected.kubenet }, 'the node is kubenet-shaped; running because --allow-network-plugin-kubenet=true');
  }
  const kubenet: KubenetStatus = detected.kubenet !== undefined ? 'kubenet-allowed' : detected.cniNetworkFound ? 'not-kubenet' : 'unknown';

  // Audit records are JSON lines whatever --log-format says: they are for a log pipeline, not for reading.
  let auditDestination = stdout;
  if (config.auditLog !== 'off' && config.auditLogFile !== '') {
    try {
      auditDestination = fileDestination(config.auditLogFile);
    } catch (error) {
      logger.fatal({ err: error, auditLogFile: config.auditLogFile }, '--audit-log-file cannot be written: fix the path or its permissions, or leave it empty to write audit records to stdout');
      stdout.flushSync();
      return 1;
    }
  }
  const auditLogger = createLogger({ format: 'json', level: 'info', base: { app: 'nmi', node: config.node, audit: true }, destination: auditDestination });
  const flushOutput = () => {
    for (const d of new Set([stdout, auditDestination])) {
      try {
        d.flushSync();
      } catch {
        // Nothing more can be done at exit: the stream is closed or the disk is full.
      }
    }
  };

  const userAgent = `aad-pod-identity/NMI/${VERSION}${config.customUserAgent ? ` ${config.customUserAgent}` : ''}`;
  const kubeConfig = loadKubeConfig({ ...(config.kubeconfig ? { kubeconfigPath: config.kubeconfig } : {}), userAgent });
  let federation: { tenantId: string; authorityHost: string } | undefined;
  if (config.enableFederatedIdentities) {
    try {
      federation = federationCloud(config.cloudconfig);
    } catch (error) {
      logger.fatal({ err: error, cloudconfig: config.cloudconfig }, '--enable-federated-identities: the tenant and cloud cannot be read (give --cloudconfig=/etc/kubernetes/azure.json, or env TENANT_ID and CLOUD)');
      stdout.flushSync();
      return 1;
    }
  }
  const nmi = await startNmi(config, { kubeConfig, logger, auditLogger, kubenet, ...(federation !== undefined ? { federation } : {}) });
  process.stdout.write(`${JSON.stringify({ ready: true, url: nmi.url, probe: nmi.probeUrl, metrics: nmi.metricsUrl })}\n`);

  return new Promise<number>((resolve) => {
    let stopping = false;
    const recheck = kubenetRecheck
      ? setInterval(() => {
          const detected = detectKubenet(kubenetSources);
          if (detected.kubenet !== undefined) {
            clearInterval(recheck);
            if (stopping) return;
            stopping = true;
            logger.fatal({ kubeletConfig: config.kubeletConfig, cniConfDir: config.cniConfDir, reason: detected.kubenet }, KUBENET_REFUSAL);
            // stop() keeps the DNAT rules: pods get refused connections, never the real IMDS.
            void nmi
              .stop()
              .catch((error: unknown) => logger.error({ err: error }, 'stop failed'))
              .finally(() => resolve(1));
          } else if (detected.cniNetworkFound) {
            clearInterval(recheck);
            logger.info({ cniConfDir: config.cniConfDir }, 'CNI network config found; not kubenet-shaped');
          }
        }, KUBENET_RECHECK_MS)
      : undefined;
    const stop = (signal: string) => {
      if (stopping) return;
      stopping = true;
      if (recheck) clearInterval(recheck);
      logger.info({ signal }, 'stopping');
      void stopWithin(() => nmi.stop().then(flushOutput), STOP_DEADLINE_MS, logger).then(resolve);
    };
    onStopSignals(stop, (signal) => logger.info({ signal }, 'already stopping; finishing the cleanup first'));
  });
}

/**
 * The tenant and the Azure AD authority of federated exchanges: azure.json's tenantId and cloud (or env TENANT_ID and
 * CLOUD), AZURE_AUTHORITY_HOST overriding the cloud's authority as for MIC. Nothing else in the file is kept.
 */
function federationCloud(path: string | undefined): { tenantId: string; authorityHost: string } {
  const raw = path !== undefined ? parseAzureJson(readFileSync(path, 'utf8'), path) : rawFromEnv(process.env);
  if (raw.tenantId === '') throw new Error(`${path ?? 'environment'}: tenantId (env TENANT_ID) is required for federated identities`);
  const envFile = process.env['AZURE_ENVIRONMENT_FILEPATH'];
  const authority = process.env['AZURE_AUTHORITY_HOST'] || resolveCloudEnvironment(raw.cloud, envFile ? readFileSync(envFile, 'utf8') : undefined).activeDirectoryEndpoint;
  return { tenantId: raw.tenantId, authorityHost: authority };
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`nmi: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exit(1);
  },
);
