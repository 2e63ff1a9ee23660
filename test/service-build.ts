import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url));

/**
 * The service compiled for the end-to-end tests, which then start it as `npm start` does
 * (`node <start options> <build>/server.js`) instead of through tsx: tsx's loader cost each
 * server start about 2.5 s of CPU more (its hooks see every module the service imports),
 * and the tests start some 30 servers per run on a 2-core machine.
 *
 * The files of tsconfig.build.json (what `npm run build` compiles into dist/), each
 * transpiled on its own, without type checking: `npm test` type-checks before Vitest starts,
 * and the sources are written for isolated transpilation (`isolatedModules`). The directory
 * sits beside src/, as dist/ does, so that what the code finds relative to itself
 * (drizzle/, public/) is what it finds in dist/. Each run has its own.
 */
export function compileService(): { dir: string; remove(): void } {
  const configPath = join(REPO_ROOT, 'tsconfig.build.json');
  const { config, error } = ts.readConfigFile(configPath, (path) => ts.sys.readFile(path));
  if (error !== undefined)
    throw new Error(ts.flattenDiagnosticMessageText(error.messageText, '\n'));
  const parsed = ts.parseJsonConfigFileContent(config, ts.sys, REPO_ROOT);
  const sourceRoot = join(REPO_ROOT, 'src');
  const dir = mkdtempSync(join(REPO_ROOT, '.test-build-'));
  try {
    for (const file of parsed.fileNames) {
      const { outputText } = ts.transpileModule(readFileSync(file, 'utf8'), {
        fileName: file,
        compilerOptions: {
          ...parsed.options,
          // What NodeNext emits for this package ("type": "module"), which a single file
          // cannot tell transpileModule.
          module: ts.ModuleKind.ESNext,
          sourceMap: false,
        },
      });
      const target = join(dir, relative(sourceRoot, file)).replace(/\.ts$/, '.js');
      mkdirSync(dirname(target), { recursive: true });
      writeFileSync(target, outputText);
    }
  } catch (failure) {
    rmSync(dir, { recursive: true, force: true });
    throw failure;
  }
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}
