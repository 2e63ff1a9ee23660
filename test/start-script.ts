import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';

const PACKAGE_JSON = fileURLToPath(new URL('../package.json', import.meta.url));

/**
 * The node options `npm start` gives the service (package.json), so that the bench and the
 * end-to-end tests run it as users do: `node <these> dist/server.js`.
 */
export function startScriptNodeOptions(): string[] {
  const manifest = z
    .object({ scripts: z.object({ start: z.string() }) })
    .parse(JSON.parse(readFileSync(PACKAGE_JSON, 'utf8')));
  const { start } = manifest.scripts;
  const match = /^node((?: --\S+)*) dist\/server\.js$/.exec(start);
  if (match === null) {
    throw new Error(
      `package.json's start script is not "node [--options] dist/server.js": ${start}`,
    );
  }
  return (match[1] ?? '').split(' ').filter((option) => option !== '');
}
