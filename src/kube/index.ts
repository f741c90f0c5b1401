// Kubernetes plumbing shared by MIC and NMI.
export * from './errors.js';
export * from './ratelimit.js';
// loadKubeConfig (client-node's KubeConfig, with its whole generated API) is imported from './kubeconfig.js' directly.
export { loadKubeAccess, type KubeAccess, type LoadKubeAccessOptions } from './access.js';
export * from './store.js';
export * from './list.js';
export * from './reflector.js';
export * from './workqueue.js';
export * from './leader.js';
export * from './http.js';
export * from './events.js';
export { silentLogger, type Logger } from '../common/log.js';
