import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // Integration tests start their own servers on random ports; forks keep process-global SDK state apart.
    pool: 'forks',
    reporters: ['default'],
  },
});
