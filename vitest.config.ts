import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['src/**/*.test.ts', 'test/**/*.test.ts', 'bench/**/*.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    // Each file builds its own app on its own database; PGlite start-up is the slow part.
    testTimeout: 30_000,
    hookTimeout: 120_000,
    pool: 'forks',
    // Files in one worker share its loaded modules: importing the app graph (Fastify, Better
    // Auth, Drizzle, PGlite) cost about 2.5 s per file, 34 files, three CI passes. Safe because
    // src/ keeps no module-level state (each file still builds its own apps on its own
    // database) and the tests that fake timers or spy restore them.
    isolate: false,
    maxWorkers: 2,
    // A test that is skipped or focused by accident must fail the run, not hide.
    allowOnly: false,
  },
});
