import { once } from 'node:events';
import { createServer } from 'node:net';

/**
 * A port on 127.0.0.1 that was free a moment ago (nothing listens there until someone takes
 * it). Node built-ins only, so that the bench can use it without loading the tests or the app.
 */
export async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  server.close();
  await once(server, 'close');
  if (address === null || typeof address === 'string') throw new Error('no port assigned');
  return address.port;
}

/** `databaseUrl` with its host and port replaced by 127.0.0.1:`port` (a local bouncer or proxy). */
export function atLocalPort(databaseUrl: string, port: number): string {
  const url = new URL(databaseUrl);
  url.hostname = '127.0.0.1';
  url.port = String(port);
  return url.toString();
}
