// NMI entry point: parse flags once, build, start, stop on SIGTERM (keeping the iptables rules: fail closed), exit.
// `--uninstall-iptables` is the one path that removes the rules: it does only that and exits.

import { readFileSync } from 'node:fs';
import { createLogger } from '../src/common/log.js';
import { loadKubeConfig } from '../src/kube/index.js';
import { parseNmiConfig, nmiUsage } from '../src/nmi/config.js';
import { CHAIN, createIptables } from '../src/nmi/iptables.js';
import { KUBENET_REFUSAL, kubeletUsesKubenet } from '../src/nmi/kubenet.js';
import { startNmi } from '../src/nmi/nmi.js';

const VERSION = '0.1.0';

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
  const logger = createLogger({
    format: config.logFormat,
    level: config.logVerbosity >= 4 ? 'debug' : 'info',
    base: { app: 'nmi', node: config.node },
  });

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

  if (!config.allowNetworkPluginKubenet) {
    let kubeletDefaults = '';
    try {
      kubeletDefaults = readFileSync(config.kubeletConfig, 'utf8');
    } catch {
      // No kubelet defaults file: nothing says kubenet.
    }
    if (kubeletUsesKubenet(kubeletDefaults)) {
      logger.fatal({ kubeletConfig: config.kubeletConfig }, KUBENET_REFUSAL);
      return 1;
    }
  }

  const userAgent = `aad-pod-identity/NMI/${VERSION}${config.customUserAgent ? ` ${config.customUserAgent}` : ''}`;
  const kubeConfig = loadKubeConfig({ ...(config.kubeconfig ? { kubeconfigPath: config.kubeconfig } : {}), userAgent });
  const nmi = await startNmi(
    {
      node: config.node,
      listenAddress: config.nmiListenAddress,
      port: config.nmiPort,
      probeAddress: config.probeBindAddress || '0.0.0.0',
      probePort: config.httpProbePort,
      metricsAddress: config.metricsBindAddress || '0.0.0.0',
      metricsPort: config.prometheusPort,
      imdsEndpoint: config.imdsEndpoint,
      enableScaleFeatures: config.enableScaleFeatures,
      manageIptables: config.manageIptables,
      intercept: { metadataIp: config.metadataIp, metadataPort: config.metadataPort },
      iptablesBinary: config.iptablesBinary,
      iptUpdateIntervalMs: config.iptUpdateIntervalMs,
      enableConntrackDeletion: config.enableConntrackDeletion,
      prefetch: config.prefetch,
      prefetchResources: config.prefetchResources,
      tokenCacheSize: config.tokenCacheSize,
      tokenRefreshBeforeMs: config.tokenRefreshBeforeMs,
      metadataHeaderRequired: config.metadataHeaderRequired,
      blockInstanceMetadata: config.blockInstanceMetadata,
      operationMode: config.operationMode,
      forceNamespaced: config.forceNamespaced,
      namespaceIdentityPolicy: config.namespaceIdentityPolicy,
      micNamespace: config.micNamespace,
      retryAttemptsForCreated: config.retryAttemptsForCreated,
      retryAttemptsForAssigned: config.retryAttemptsForAssigned,
      findIdentityRetryIntervalMs: config.findIdentityRetryIntervalMs,
      setRetryAfterHeader: config.setRetryAfterHeader,
      allowCrossNamespaceSecrets: config.allowCrossNamespaceSecrets,
      allowedAdEndpoints: config.allowedAdEndpoints,
      startupTaint: config.startupTaint,
    },
    kubeConfig,
    logger,
  );
  process.stdout.write(`${JSON.stringify({ ready: true, url: nmi.url, probe: nmi.probeUrl, metrics: nmi.metricsUrl })}\n`);

  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) return;
      stopping = true;
      logger.info({ signal }, 'stopping');
      const deadline = setTimeout(() => {
        logger.error('stop took longer than 20 s; exiting');
        resolve(1);
      }, 20_000);
      nmi
        .stop()
        .then(() => resolve(0))
        .catch((error: unknown) => {
          logger.error({ err: error }, 'stop failed');
          resolve(1);
        })
        .finally(() => clearTimeout(deadline));
    };
    // `on`, not `once`: a second signal (a terminal's Ctrl-C plus a relayed one) must not kill us mid-cleanup.
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
  });
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`nmi: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exit(1);
  },
);
