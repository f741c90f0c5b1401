import { describe, expect, it } from 'vitest';
describe('toolchain', () => {
  it('runs on a supported Node version', () => {
    const major = Number(process.versions.node.split('.')[0]);
    expect(major).toBeGreaterThanOrEqual(20);
  });
});
