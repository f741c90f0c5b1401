// Public surface of src/crds: import from here or from the individual modules.
export * from './types.js';
export * from './names.js';
export * from './normalize.js';
export * from './validate.js';
export * from './namespace-policy.js';
export * from './credential-policy.js';
